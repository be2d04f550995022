"""Miners as relation transforms give the same pairs as pytorch-metric-learning's miners."""

import pytest
import torch
from pytorch_metric_learning import miners as pml_miners

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
