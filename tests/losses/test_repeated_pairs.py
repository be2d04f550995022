"""A pair listed more than once in an ``indices_tuple`` counts once per listing in the losses
that pytorch-metric-learning computes pair by pair (Contrastive, SNR contrastive, NT-Xent,
Margin), as there: values and gradients against PML 2.9 in float64, on triplet miners' outputs
(each positive pair repeats once per negative), hand-made repeats, pairs and triplets forms,
reference sets, reducers and both engines."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers

import pairloss
from pairloss import reducers
from pairloss.errors import PairLossError
from pairloss.losses.contrastive.ntxent_am import NTXentAMLoss
from pairloss.similarity import CosineSimilarity, LpDistance
from tests.layouts import assert_close, make_batch, make_ref, value_and_grads

# name -> (pairloss class, PML class, pairloss kwargs, PML kwargs)
TWINS = {
    "contrastive": (pairloss.ContrastiveLoss, pml_losses.ContrastiveLoss, {}, {}),
    "contrastive_cosine": (
        pairloss.ContrastiveLoss,
        pml_losses.ContrastiveLoss,
        {"pos_margin": 0.8, "neg_margin": 0.1, "distance": CosineSimilarity()},
        {"pos_margin": 0.8, "neg_margin": 0.1, "distance": pml_distances.CosineSimilarity()},
    ),
    "snr": (
        pairloss.SignalToNoiseRatioContrastiveLoss,
        pml_losses.SignalToNoiseRatioContrastiveLoss,
        {"pos_margin": 0.1, "neg_margin": 1.2},
        {"pos_margin": 0.1, "neg_margin": 1.2},
    ),
    "ntxent": (pairloss.NTXentLoss, pml_losses.NTXentLoss, {}, {}),
    "ntxent_lp": (
        pairloss.NTXentLoss,
        pml_losses.NTXentLoss,
        {"temperature": 0.3, "distance": LpDistance()},
        {"temperature": 0.3, "distance": pml_distances.LpDistance()},
    ),
    "margin": (pairloss.MarginLoss, pml_losses.MarginLoss, {}, {}),
    "margin_learn": (
        pairloss.MarginLoss,
        pml_losses.MarginLoss,
        {"learn_beta": True, "nu": 0.1, "beta": 1.1, "margin": 0.3},
        {"learn_beta": True, "nu": 0.1, "beta": 1.1, "margin": 0.3},
    ),
    "margin_classes": (
        pairloss.MarginLoss,
        pml_losses.MarginLoss,
        {"learn_beta": True, "nu": 0.05, "num_classes": 128},
        {"learn_beta": True, "nu": 0.05, "num_classes": 128},
    ),
}
ENGINES = (("dense", None), ("blocked", 5))


def _losses(name, engine, block_size, ours_extra=None, theirs_extra=None):
    ours_cls, theirs_cls, ours_kw, theirs_kw = TWINS[name]
    ours = ours_cls(**ours_kw, engine=engine, block_size=block_size, **(ours_extra or {}))
    theirs = theirs_cls(**theirs_kw, **(theirs_extra or {}))
    return ours.double(), theirs.double()


def _params(loss):
    return [p for p in loss.parameters() if p.requires_grad]


def _check(name, x, y, tup, ref=None, ours_extra=None, theirs_extra=None, engines=ENGINES):
    """pairloss on both engines against PML: value, gradients of the embeddings (and of the
    reference set and learnable beta)."""
    y = y % 128  # a per-class beta needs labels in [0, num_classes)
    r, ry = ref if ref is not None else (None, None)
    kw = {} if ref is None else {"ref_emb": r, "ref_labels": ry}
    inputs = [x] + ([] if r is None else [r])
    want = None
    for engine, block_size in engines:
        ours, theirs = _losses(name, engine, block_size, ours_extra, theirs_extra)
        got = value_and_grads(partial(ours, x, y, tup, **kw), inputs + _params(ours))
        if want is None:
            want = value_and_grads(partial(theirs, x, y, tup, **kw), inputs + _params(theirs))
        assert torch.isfinite(got[0])
        assert_close(got, want)


def _repeats(tup) -> bool:
    """Whether the tuple, read as pairs, lists a pair twice."""
    a1, p, a2, n = tup if len(tup) == 4 else (tup[0], tup[1], tup[0], tup[2])
    cells = [a1 * 1000 + p, a2 * 1000 + n]
    return any(torch.unique(c).numel() < c.numel() for c in cells)


def _as_pairs(tup):
    a, p, n = tup
    return a, p, a, n


# ------------------------------------------------------------- triplet miners' outputs

MINERS = {
    "tmm_all": lambda: pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="all"),
    "tmm_hard": lambda: pml_miners.TripletMarginMiner(margin=0.5, type_of_triplets="hard"),
    "tmm_semihard": lambda: pml_miners.TripletMarginMiner(margin=0.5, type_of_triplets="semihard"),
    "batch_hard": lambda: pml_miners.BatchHardMiner(),
}
CASES = [
    (0, "balanced"),
    (1, "unbalanced"),
    (2, "two_classes"),
    (3, "singletons"),
]


@pytest.mark.parametrize("miner", sorted(MINERS))
@pytest.mark.parametrize("name", sorted(TWINS))
def test_triplet_miner_tuples_match_pml(name, miner):
    """Triplets form and pairs form (PML's ``convert_to_pairs``) of a triplet miner's output;
    two seeds and label layouts per miner, all four layouts over the miners."""
    first = sorted(MINERS).index(miner)
    for k in range(2):
        seed, layout = CASES[(first + 2 * k) % len(CASES)]
        x, y = make_batch(seed, layout, n=16, dim=5)
        tup = MINERS[miner]()(x.detach(), y)
        if miner.startswith("tmm") and layout != "singletons":
            assert _repeats(tup)
        _check(name, x, y, tup)
        _check(name, x, y, _as_pairs(tup), engines=ENGINES[k:][:1])


@pytest.mark.parametrize("name", sorted(TWINS))
def test_reference_set_matches_pml(name):
    for seed, layout in CASES[:2]:
        x, y = make_batch(seed, layout, n=16, dim=5)
        r, ry = make_ref(seed, dim=5)
        tup = pml_miners.TripletMarginMiner(margin=0.3)(x.detach(), y, r.detach(), ry)
        assert _repeats(tup)
        _check(name, x, y, tup, ref=(r, ry))
        _check(name, x, y, _as_pairs(tup), ref=(r, ry), engines=ENGINES[:1])


# ------------------------------------------------------------- hand-made repeats


def _hand_made(y: torch.Tensor):
    """Triplets in which one positive pair and one negative pair are each listed 3 times, and
    one anchor lists two triplets that share neither partner."""
    pos = [(i, j) for i in range(len(y)) for j in range(len(y)) if i != j and y[i] == y[j]]
    neg = [(i, j) for i in range(len(y)) for j in range(len(y)) if y[i] != y[j]]
    (i, j), (k, m) = pos[0], pos[-1]
    n1 = next(b for a, b in neg if a == i)
    n2 = next(b for a, b in neg if a == k)
    n3 = next(b for a, b in reversed(neg) if a == k and b != n2)
    others = [b for a, b in pos if a == i and b != j]
    a = [i, i, i, k, k, k, k] + [i] * len(others)
    p = [j, j, j, m, m, m, m] + others
    n = [n1, n1, n1, n2, n2, n2, n3] + [n1] * len(others)
    return tuple(torch.tensor(v) for v in (a, p, n))


@pytest.mark.parametrize("name", sorted(TWINS))
def test_hand_made_repeats_match_pml(name):
    for seed, layout in CASES[:3]:
        x, y = make_batch(seed, layout, n=12, dim=4)
        tup = _hand_made(y)
        _check(name, x, y, tup)
        a, p, a2, n = _as_pairs(tup)
        # pairs form, the positive pairs listed in another order than the negative ones
        _check(name, x, y, (a.flip(0), p.flip(0), a2, n))


@pytest.mark.parametrize("name", sorted(TWINS))
def test_pair_listed_as_both_kinds_matches_pml(name):
    """PML's pair-based losses take a pair listed as positive and as negative as both."""
    x, y = make_batch(5, "balanced", n=12, dim=4)
    a1 = torch.tensor([0, 0, 1, 4, 4])
    p = torch.tensor([1, 2, 0, 5, 5])
    a2 = torch.tensor([0, 0, 1, 4, 0])
    n = torch.tensor([1, 7, 9, 0, 1])  # (0, 1) both kinds; (0, 1) twice as a negative
    _check(name, x, y, (a1, p, a2, n))
    _check(name, x, y, (torch.tensor([0, 0, 4]), torch.tensor([1, 2, 5]), torch.tensor([1, 8, 5])))


def test_margin_triplets_that_share_no_pair_match_pml():
    """Two triplets of one anchor with different positives and negatives: PML counts the two
    listed triplets, not the four combinations."""
    x, y = make_batch(6, "balanced", n=12, dim=4)
    tup = (torch.tensor([0, 0, 5]), torch.tensor([1, 2, 6]), torch.tensor([4, 9, 0]))
    assert not _repeats(tup)
    for name in ("margin", "margin_learn", "margin_classes"):
        _check(name, x, y, tup)


# ------------------------------------------------------------- reducers


def _reducer_pairs(name):
    if name.startswith("margin"):  # triplet terms: PerAnchorReducer refuses them
        kinds = ("ThresholdReducer", "MeanReducer")
    else:
        kinds = ("PerAnchorReducer", "ThresholdReducer", "MeanReducer")
    out = []
    turn = sorted(TWINS).index(name)
    for k, kind in enumerate(kinds):  # pairloss's reducer or PML's (translated), in turn
        kw = {"low": 0.05, "high": 2.0} if kind == "ThresholdReducer" else {}
        lib = reducers if (k + turn) % 2 == 0 else pml_reducers
        out.append((getattr(lib, kind)(**kw), getattr(pml_reducers, kind)(**kw)))
    return out


@pytest.mark.parametrize("name", sorted(TWINS))
def test_reducers_see_every_listing(name):
    """With a reducer, the per-pair terms are listed once per listing, with their indices."""
    x, y = make_batch(7, "unbalanced", n=12, dim=5)
    r, ry = make_ref(7, dim=5)
    tup = pml_miners.TripletMarginMiner(margin=0.3)(x.detach(), y)
    ref_tup = pml_miners.TripletMarginMiner(margin=0.3)(x.detach(), y, r.detach(), ry)
    assert _repeats(tup) and _repeats(ref_tup)
    for k, (ours_r, theirs_r) in enumerate(_reducer_pairs(name)):
        given = {"reducer": ours_r}, {"reducer": theirs_r}
        _check(name, x, y, tup, None, *given, ENGINES[k % 2 :][:1])
        _check(name, x, y, _as_pairs(tup), None, *given, ENGINES[(k + 1) % 2 :][:1])
        _check(name, x, y, ref_tup, (r, ry), *given, ENGINES[k % 2 :][:1])


@pytest.mark.parametrize("name", ["contrastive", "ntxent"])
def test_do_nothing_reducer_lists_terms_as_pml(name):
    """The loss dictionary: one term per listing, in PML's order, with PML's indices."""
    x, y = make_batch(8, "balanced", n=12, dim=4)
    tup = pml_miners.TripletMarginMiner(margin=0.5)(x.detach(), y)
    ours, theirs = _losses(name, "dense", None)
    ours.set_reducer(reducers.DoNothingReducer())
    theirs.set_reducer(pml_reducers.DoNothingReducer())
    got, want = ours(x, y, tup), theirs(x, y, tup)
    assert set(got) == set(want)
    for key, entry in want.items():
        torch.testing.assert_close(got[key]["losses"], entry["losses"], rtol=1e-9, atol=1e-12)
        for g, w in zip(got[key]["indices"], entry["indices"]):
            assert torch.equal(g, w)


# ------------------------------------------------------------- the engine path stays


def _no_listing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a tuple without repeats must run on the pair engine")

    for cls in (pairloss.ContrastiveLoss, pairloss.NTXentLoss, pairloss.MarginLoss):
        monkeypatch.setattr(cls, "listed_loss", refuse)


@pytest.mark.parametrize("name", sorted(TWINS))
def test_tuples_without_repeats_run_on_the_engine(name, monkeypatch):
    """Pair miners' tuples list no pair twice: the engine path as before, PML's values."""
    x, y = make_batch(9, "unbalanced", n=16, dim=5)
    pair_tuples = [
        pml_miners.MultiSimilarityMiner(0.2)(x.detach(), y),
        pml_miners.PairMarginMiner(0.2, 0.8)(x.detach(), y),
    ]
    if not name.startswith("margin"):
        # one triplet per anchor: no pair twice (MarginLoss lists every triplet tuple)
        pair_tuples.append(pml_miners.BatchHardMiner()(x.detach(), y))
    _no_listing(monkeypatch)
    for tup in pair_tuples:
        assert not _repeats(tup)
        _check(name, x, y, tup)


def test_own_miner_output_counts_like_the_tuple():
    """``miner=`` with a miner that lists triplets: as its output given as ``indices_tuple``."""
    x, y = make_batch(10, "balanced", n=16, dim=5)
    miner = pairloss.miners.TripletMarginMiner(margin=0.3)
    tup = pml_miners.TripletMarginMiner(margin=0.3)(x.detach(), y)
    for name in ("contrastive", "ntxent", "margin"):
        ours, theirs = _losses(name, "blocked", 5, {"miner": miner})
        assert_close(
            value_and_grads(partial(ours, x, y), [x]),
            value_and_grads(partial(theirs, x, y, tup), [x]),
        )


def test_subclass_with_its_own_objective_reads_the_set_of_pairs():
    """NT-Xent-AM changes the objective and gives no listed form: an explicit tuple stays a set
    of cells for it (NTXent's listed form would drop its margin)."""
    x, y = make_batch(11, "balanced", n=12, dim=4)
    tup = pml_miners.TripletMarginMiner(margin=0.5)(x.detach(), y)
    assert _repeats(tup)
    a, p, a2, n = _as_pairs(tup)
    cells_p, cells_n = torch.unique(a * 12 + p), torch.unique(a2 * 12 + n)
    once = (cells_p // 12, cells_p % 12, cells_n // 12, cells_n % 12)
    loss = NTXentAMLoss(margin=0.1)
    torch.testing.assert_close(loss(x, y, tup), loss(x, y, once))
    both = tuple(torch.tensor(v) for v in ([0, 0], [1, 2], [0, 0], [1, 3]))  # (0, 1) twice
    with pytest.raises(PairLossError, match="both positive and negative"):
        loss(x, y, both)


def test_bad_inputs_with_repeats_are_refused():
    x, y = make_batch(12, "balanced", n=8, dim=4)
    twice = (torch.tensor([0, 0]), torch.tensor([1, 1]), torch.tensor([4, 4]))
    nan = x.detach().clone()
    nan[0, 0] = float("nan")
    for loss in (pairloss.ContrastiveLoss(), pairloss.NTXentLoss(), pairloss.MarginLoss()):
        with pytest.raises(PairLossError, match="indices_tuple"):
            loss(x, y, (torch.tensor([0, 0]), torch.tensor([1, 9]), torch.tensor([4, 4])))
        with pytest.raises(PairLossError, match="labels"):
            loss(x, y[:5], twice)
        with pytest.raises(PairLossError, match="embeddings"):
            loss(nan, y, twice)
        with pytest.raises(PairLossError, match="ref_emb"):
            loss(x, y, twice, ref_emb=torch.randn(5, 3, dtype=x.dtype))
