"""Miners as relation transforms give the same pairs as pytorch-metric-learning's miners."""

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

import pairloss
from pairloss import miners
from pairloss.errors import PairLossError

from .layouts import LAYOUTS, SEEDS, make_batch, make_ref


def _pairs(a, b):
    return set(zip(a.tolist(), b.tolist()))


def _pml_pairs(out):
    if len(out) == 3:
        a, p, n = out
        return _pairs(a, p), _pairs(a, n)
    a1, p, a2, n = out
    return _pairs(a1, p), _pairs(a2, n)


CASES = (
    [
        (lambda: miners.MultiSimilarityMiner(0.1), lambda: pml_miners.MultiSimilarityMiner(0.1)),
        (lambda: miners.MultiSimilarityMiner(0.3), lambda: pml_miners.MultiSimilarityMiner(0.3)),
        (lambda: miners.BatchHardMiner(), lambda: pml_miners.BatchHardMiner()),
        (lambda: miners.PairMarginMiner(0.5, 1.1), lambda: pml_miners.PairMarginMiner(0.5, 1.1)),
    ]
    + [
        (
            lambda p=p, n=n: miners.BatchEasyHardMiner(p, n),
            lambda p=p, n=n: pml_miners.BatchEasyHardMiner(p, n),
        )
        for p, n in [
            ("easy", "semihard"),
            ("semihard", "hard"),
            ("hard", "easy"),
            ("all", "hard"),
            ("easy", "all"),
            ("hard", "hard"),
        ]
    ]
    + [
        (
            lambda: miners.BatchEasyHardMiner(
                "hard", "hard", allowed_pos_range=(0.2, 1.2), allowed_neg_range=(0.3, 1.0)
            ),
            lambda: pml_miners.BatchEasyHardMiner(
                "hard", "hard", allowed_pos_range=(0.2, 1.2), allowed_neg_range=(0.3, 1.0)
            ),
        )
    ]
)


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_mined_pairs_match_pml(case, seed, layout):
    ours_f, theirs_f = CASES[case]
    x, y = make_batch(seed, layout)
    x = x.detach()
    a1, p, a2, n = ours_f().indices(x, y)
    pos, neg = _pml_pairs(theirs_f()(x, y))
    assert _pairs(a1, p) == pos
    assert _pairs(a2, n) == neg


@pytest.mark.parametrize("seed", SEEDS)
def test_mined_pairs_match_pml_with_reference_set(seed):
    x, y = make_batch(seed, "unbalanced")
    r, ry = make_ref(seed)
    x, r = x.detach(), r.detach()
    a1, p, a2, n = miners.MultiSimilarityMiner().indices(x, y, r, ry)
    pos, neg = _pml_pairs(pml_miners.MultiSimilarityMiner()(x, y, r, ry))
    assert (_pairs(a1, p), _pairs(a2, n)) == (pos, neg)


def test_bad_strategies_are_rejected():
    with pytest.raises(PairLossError, match="pos_strategy"):
        miners.BatchEasyHardMiner("hardest", "hard")
    with pytest.raises(PairLossError, match="semihard"):
        miners.BatchEasyHardMiner("semihard", "all")
    with pytest.raises(PairLossError, match="type_of_triplets"):
        miners.TripletMarginMiner(type_of_triplets="medium")


def test_miner_call_returns_pml_indices_that_know_their_miner():
    x = torch.randn(8, 3)
    y = torch.arange(8) // 2
    miner = miners.MultiSimilarityMiner()
    out = miner(x, y)
    assert isinstance(out, tuple) and len(out) == 4 and out.miner is miner
    assert out.mined_on(x, y) and not out.mined_on(x.clone(), y)
    assert [t.tolist() for t in out] == [t.tolist() for t in miner.mine(x, y)]


# ---------------------------------------------------------------- pytorch-metric-learning's outputs


def _as_sets(out):
    if len(out) == 3:
        return {tuple(t) for t in zip(*[x.tolist() for x in out])}
    return _pairs(out[0], out[1]), _pairs(out[2], out[3])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("layout", ("balanced", "unbalanced"))
def test_every_miner_gives_pml_indices(seed, layout):
    """The same tuples as pytorch-metric-learning (pairs or triplets; the random miners draw the
    same ones from the same seed), with and without a reference set."""
    x, y = make_batch(seed, layout)
    x = x.detach()
    r, ry = make_ref(seed)
    r = r.detach()
    cases = [
        ("BatchHardMiner", {}),
        ("TripletMarginMiner", {"margin": 0.3, "type_of_triplets": "semihard"}),
        ("TripletMarginMiner", {"margin": -0.1, "type_of_triplets": "hard"}),
        ("TripletMarginMiner", {"margin": 0.2, "type_of_triplets": "easy"}),
        ("AngularMiner", {"angle": 35}),
        ("HDCMiner", {"filter_percentage": 0.3}),
        ("DistanceWeightedMiner", {"cutoff": 0.5, "nonzero_loss_cutoff": 1.4}),
        ("UniformHistogramMiner", {"num_bins": 10, "pos_per_bin": 3, "neg_per_bin": 4}),
    ]
    for name, kw in cases:
        for ref in ((), (r, ry)):
            torch.manual_seed(7)
            ours = getattr(miners, name)(**kw)(x, y, *ref)
            torch.manual_seed(7)
            theirs = getattr(pml_miners, name)(**kw)(x, y, *ref)
            assert len(ours) == len(theirs), name
            if name in ("DistanceWeightedMiner", "UniformHistogramMiner"):
                for a, b in zip(ours, theirs):  # the same draws, in the same order
                    assert torch.equal(a, b), name
            else:
                assert _as_sets(ours) == _as_sets(theirs), name


def test_miner_attributes_and_mine():
    x, y = make_batch(0, "balanced")
    x = x.detach()
    miner = miners.BatchEasyHardMiner(miners.BatchEasyHardMiner.HARD, "easy")
    assert miner.all_batch_mining_strategies == ["hard", "semihard", "easy", "all"]
    out = miner(x, y)
    assert miner.num_pos_pairs == out[0].numel() and miner.num_neg_pairs == out[2].numel()
    assert [t.tolist() for t in miner.mine(x, y, x, y)] == [t.tolist() for t in out]
    trip = miners.BatchHardMiner()(x, y)
    assert len(trip) == 3 and miners.BatchHardMiner().num_triplets == 0
    packed = miners.EmbeddingsAlreadyPackagedAsTriplets()(x[:9])
    assert [t.tolist() for t in packed] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    with pytest.raises(PairLossError, match="multiple of 3"):
        miners.EmbeddingsAlreadyPackagedAsTriplets()(x[:8])
    hdc = miners.HDCMiner(0.5)
    hdc.set_idx_externally(miners.MultiSimilarityMiner()(x, y), y)
    theirs = pml_miners.HDCMiner(0.5)
    theirs.set_idx_externally(pml_miners.MultiSimilarityMiner()(x, y), y)
    assert _as_sets(hdc(x, y)) == _as_sets(theirs(x, y))


def test_triplet_hard_with_negative_margin_keeps_pml_window():
    """ "hard" keeps m <= min(margin, 0): with a negative margin, the triplets violating it."""
    x, y = make_batch(2, "balanced")
    x = x.detach()
    ours = miners.TripletMarginMiner(-0.05, "hard")
    assert ours.window()[1] == -0.05
    assert _as_sets(ours(x, y)) == _as_sets(pml_miners.TripletMarginMiner(-0.05, "hard")(x, y))
    loss = pairloss.TripletMarginLoss(0.1, miner=ours)
    want = pml_losses.TripletMarginLoss(0.1)(
        x, y, pml_miners.TripletMarginMiner(-0.05, "hard")(x, y)
    )
    torch.testing.assert_close(loss(x, y), want)
