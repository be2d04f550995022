"""Triplet losses: TripletMarginLoss (PML twin), BatchHardTripletLoss and its soft-margin variant,
SemiHardTripletLoss."""

# The lambdas below are evaluated immediately inside their loop iteration.
# ruff: noqa: B023

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers

from pairloss.errors import PairLossError
from pairloss.losses.metric.triplet import (
    BatchHardSoftMarginTripletLoss,
    BatchHardTripletLoss,
    SemiHardTripletLoss,
    TripletMarginLoss,
    batch_hard_soft_margin_triplet,
    batch_hard_triplet,
    semi_hard_triplet,
    triplet_margin,
)
from pairloss.mining import BatchHardMiner, MultiSimilarityMiner, TripletMarginMiner
from pairloss.similarity import CosineSimilarity, EuclideanDistance, LpDistance
from tests.layouts import LAYOUTS, SEEDS, assert_close, make_batch, make_ref, value_and_grads

ENGINES = ("dense", "blocked")
TYPES = ("all", "hard", "semihard", "easy")


def _ours_sim(name):
    return CosineSimilarity() if name == "cosine" else LpDistance()


def _pml_sim(name):
    return pml_distances.CosineSimilarity() if name == "cosine" else pml_distances.LpDistance()


def _grads_of(fn, inputs):
    return value_and_grads(fn, inputs)


# ---------------------------------------------------------------- TripletMarginLoss vs PML


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("smooth", (False, True))
@pytest.mark.parametrize("sim", ("lp", "cosine"))
def test_triplet_margin_matches_pml_labels(seed, layout, smooth, sim):
    x, y = make_batch(seed, layout)
    r, ry = make_ref(seed)
    for margin in (0.05, 0.4) if seed == 0 else (0.05 + 0.1 * seed,):
        ours = TripletMarginLoss(margin=margin, smooth_loss=smooth, distance=_ours_sim(sim))
        theirs = pml_losses.TripletMarginLoss(
            margin=margin, smooth_loss=smooth, distance=_pml_sim(sim)
        )
        assert_close(_grads_of(lambda: ours(x, y), [x]), _grads_of(lambda: theirs(x, y), [x]))
        assert_close(
            _grads_of(lambda: ours(x, y, ref_emb=r, ref_labels=ry), [x, r]),
            _grads_of(lambda: theirs(x, y, ref_emb=r, ref_labels=ry), [x, r]),
        )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", TYPES)
@pytest.mark.parametrize("smooth", (False, True))
@pytest.mark.parametrize("engine", ENGINES)
def test_triplet_margin_miner_window_matches_pml(seed, kind, smooth, engine):
    x, y = make_batch(seed, "unbalanced")
    for sim in ("lp", "cosine"):
        ours = TripletMarginLoss(
            smooth_loss=smooth, distance=_ours_sim(sim), engine=engine, block_size=5
        )
        theirs = pml_losses.TripletMarginLoss(smooth_loss=smooth, distance=_pml_sim(sim))
        miner = TripletMarginMiner(0.3, kind, distance=_ours_sim(sim))
        pml_miner = pml_miners.TripletMarginMiner(0.3, kind, distance=_pml_sim(sim))
        assert_close(
            _grads_of(lambda: ours(x, y, miner(x, y)), [x]),
            _grads_of(lambda: theirs(x, y, pml_miner(x, y)), [x]),
        )


@pytest.mark.parametrize("kind", TYPES)
def test_triplet_margin_miner_other_space_and_constructor(kind):
    """The miner measures its window in its own distance; miner= in the constructor works."""
    x, y = make_batch(1, "balanced")
    r, ry = make_ref(1)
    for engine in ENGINES:
        miner = TripletMarginMiner(0.3, kind, distance=CosineSimilarity())
        ours = TripletMarginLoss(margin=0.1, miner=miner, engine=engine, block_size=7)
        theirs = pml_losses.TripletMarginLoss(margin=0.1)
        pml_miner = pml_miners.TripletMarginMiner(
            0.3, kind, distance=pml_distances.CosineSimilarity()
        )
        assert_close(
            _grads_of(lambda: ours(x, y), [x]),
            _grads_of(lambda: theirs(x, y, pml_miner(x, y)), [x]),
        )
        assert_close(
            _grads_of(lambda: ours(x, y, ref_emb=r, ref_labels=ry), [x, r]),
            _grads_of(
                lambda: theirs(x, y, pml_miner(x, y, r, ry), ref_emb=r, ref_labels=ry), [x, r]
            ),
        )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_triplet_margin_batch_hard_miner_matches_pml(seed, layout):
    x, y = make_batch(seed, layout)
    for engine in ENGINES:
        ours = TripletMarginLoss(margin=0.2, engine=engine, block_size=5)
        theirs = pml_losses.TripletMarginLoss(margin=0.2)
        assert_close(
            _grads_of(lambda: ours(x, y, BatchHardMiner()(x, y)), [x]),
            _grads_of(lambda: theirs(x, y, pml_miners.BatchHardMiner()(x, y)), [x]),
        )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_triplet_margin_explicit_triplets_match_pml(seed, layout):
    x, y = make_batch(seed, layout)
    r, ry = make_ref(seed)
    mined = pml_miners.TripletMarginMiner(0.3, "all")(x, y)
    # duplicates count as often as they are listed
    triplets = tuple(torch.cat([t, t[:5]]) for t in mined)
    for kwargs in ({}, {"swap": True}, {"smooth_loss": True}, {"distance": "cos"}):
        if kwargs.get("distance") == "cos":
            ours = TripletMarginLoss(distance=CosineSimilarity(), swap=True)
            theirs = pml_losses.TripletMarginLoss(
                distance=pml_distances.CosineSimilarity(), swap=True
            )
        else:
            ours, theirs = TripletMarginLoss(**kwargs), pml_losses.TripletMarginLoss(**kwargs)
        assert_close(
            _grads_of(lambda: ours(x, y, triplets), [x]),
            _grads_of(lambda: theirs(x, y, triplets), [x]),
        )
    # random index lists against a reference set
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, x.shape[0], (40,), generator=g)
    p = torch.randint(0, r.shape[0], (40,), generator=g)
    n = torch.randint(0, r.shape[0], (40,), generator=g)
    for smooth in (False, True):
        ours = TripletMarginLoss(margin=0.3, smooth_loss=smooth)
        theirs = pml_losses.TripletMarginLoss(margin=0.3, smooth_loss=smooth)
        assert_close(
            _grads_of(lambda: ours(x, None, (a, p, n), ref_emb=r, ref_labels=ry), [x, r]),
            _grads_of(lambda: theirs(x, None, (a, p, n), ref_emb=r, ref_labels=ry), [x, r]),
        )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_triplet_margin_pairs_match_pml(seed, layout):
    x, y = make_batch(seed, layout)
    pairs = pml_miners.MultiSimilarityMiner(epsilon=0.2)(x, y)
    duplicated = tuple(torch.cat([t, t[:6]]) for t in pairs)
    for engine in (ENGINES[seed % 2],):
        ours = TripletMarginLoss(margin=0.1, engine=engine, block_size=7)
        theirs = pml_losses.TripletMarginLoss(margin=0.1)
        for idx in (pairs, duplicated):
            assert_close(
                _grads_of(lambda: ours(x, y, idx), [x]), _grads_of(lambda: theirs(x, y, idx), [x])
            )
        # pairloss miner output equals the same miner's pairs
        assert_close(
            _grads_of(lambda: ours(x, y, MultiSimilarityMiner(0.2)(x, y)), [x]),
            _grads_of(lambda: theirs(x, y, pairs), [x]),
        )


def test_semi_hard_is_triplet_margin_with_semihard_miner():
    x, y = make_batch(2, "balanced")
    for engine in ENGINES:
        ours = SemiHardTripletLoss(engine=engine, block_size=5)
        theirs = pml_losses.TripletMarginLoss(margin=0.2)
        assert_close(
            _grads_of(lambda: ours(x, y), [x]),
            _grads_of(
                lambda: theirs(x, y, pml_miners.TripletMarginMiner(0.2, "semihard")(x, y)), [x]
            ),
        )
    torch.testing.assert_close(semi_hard_triplet(x, y), SemiHardTripletLoss()(x, y))


def test_batch_all_equals_enumerated_triplets_for_every_reduction():
    """Batch-all without enumeration = the explicit path over all enumerated triplets."""
    x, y = make_batch(0, "unbalanced")
    r, ry = make_ref(0)
    all_triplets = torch.where(
        (y[:, None] == ry[None, :])[:, :, None] & (y[:, None] != ry[None, :])[:, None, :]
    )
    for reduction in ("mean", "mean_valid", "mean_terms", "mean_nonzero", "sum", "none"):
        for smooth in (False, True):
            loss = TripletMarginLoss(margin=0.3, smooth_loss=smooth, reduction=reduction)
            a = loss(x, y, ref_emb=r, ref_labels=ry)
            b = loss(x, None, all_triplets, ref_emb=r, ref_labels=ry)
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- batch hard


def _batch_hard_loop(x, y, margin, soft, mean_over_all=False):
    """Direct loop over anchors; raw Euclidean distance."""
    terms, n = [], x.shape[0]
    for i in range(n):
        dp = [torch.linalg.norm(x[i] - x[j]) for j in range(n) if j != i and y[j] == y[i]]
        dn = [torch.linalg.norm(x[i] - x[j]) for j in range(n) if y[j] != y[i]]
        if not dp or not dn:
            continue
        gap = torch.stack(dp).max() - torch.stack(dn).min()
        terms.append(torch.log1p(torch.exp(gap)) if soft else torch.clamp(gap + margin, min=0))
    if not terms:
        return x.sum() * 0.0
    return torch.stack(terms).sum() / (n if mean_over_all else len(terms))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("soft", (False, True))
def test_batch_hard_matches_loop_reference(seed, layout, soft):
    x, y = make_batch(seed, layout)
    ref = _grads_of(lambda: _batch_hard_loop(x, y, 5.0, soft), [x])
    for engine in ENGINES:
        if soft:
            ours = BatchHardSoftMarginTripletLoss(engine=engine, block_size=5)
        else:
            ours = BatchHardTripletLoss(engine=engine, block_size=5)
        assert_close(_grads_of(lambda: ours(x, y), [x]), ref)


@pytest.mark.parametrize("seed", SEEDS)
def test_batch_hard_pk_batch_is_sentence_transformers_mean(seed):
    """With P x K batches every anchor is valid, so the mean over all anchors coincides."""
    x, y = make_batch(seed, "balanced")
    for margin in (0.5, 5.0):
        assert_close(
            _grads_of(lambda: batch_hard_triplet(x, y, margin=margin), [x]),
            _grads_of(lambda: _batch_hard_loop(x, y, margin, False, mean_over_all=True), [x]),
        )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_batch_hard_matches_pml_miner_plus_mean_reducer(seed, layout):
    x, y = make_batch(seed, layout)
    r, ry = make_ref(seed)
    for sim in ("euclid", "cosine"):
        if sim == "cosine":
            ours_d, pml_d = CosineSimilarity(), pml_distances.CosineSimilarity()
        else:
            ours_d = EuclideanDistance()
            pml_d = pml_distances.LpDistance(normalize_embeddings=False)
        for margin in (5.0,) if sim == "euclid" else (0.2,):
            theirs = pml_losses.TripletMarginLoss(
                margin=margin, distance=pml_d, reducer=pml_reducers.MeanReducer()
            )
            miner = pml_miners.BatchHardMiner(distance=pml_d)
            for engine in ENGINES:
                ours = BatchHardTripletLoss(margin, distance=ours_d, engine=engine, block_size=7)
                assert_close(
                    _grads_of(lambda: ours(x, y), [x]),
                    _grads_of(lambda: theirs(x, y, miner(x, y)), [x]),
                )
                assert_close(
                    _grads_of(lambda: ours(x, y, ref_emb=r, ref_labels=ry), [x, r]),
                    _grads_of(
                        lambda: theirs(x, y, miner(x, y, r, ry), ref_emb=r, ref_labels=ry),
                        [x, r],
                    ),
                )


def test_soft_margin_hand_case_and_no_overflow():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1])
    # anchor 0: d_p = 5, d_n = 1; anchor 1: d_p = 5, d_n = sqrt(20); anchor 2: no positive
    expected = (F.softplus(torch.tensor(4.0)) + F.softplus(torch.tensor(5 - 20**0.5))) / 2
    got = batch_hard_soft_margin_triplet(x, y)
    torch.testing.assert_close(got, expected.to(got.dtype))
    big = batch_hard_soft_margin_triplet(x * 1e6, y)
    assert torch.isfinite(big) and big > 1e6


# ---------------------------------------------------------------- engines, gradcheck


def _all_losses(engine, block_size):
    kw = {"engine": engine, "block_size": block_size}
    return [
        TripletMarginLoss(**kw),
        TripletMarginLoss(margin=0.3, smooth_loss=True, **kw),
        TripletMarginLoss(margin=0.2, distance=CosineSimilarity(), **kw),
        TripletMarginLoss(margin=0.2, miner=TripletMarginMiner(0.4, "semihard"), **kw),
        TripletMarginLoss(margin=0.2, miner=BatchHardMiner(), **kw),
        SemiHardTripletLoss(**kw),
        BatchHardTripletLoss(margin=0.5, **kw),
        BatchHardTripletLoss(margin=0.1, distance=CosineSimilarity(), **kw),
        BatchHardSoftMarginTripletLoss(**kw),
    ]


@pytest.mark.parametrize("block_size", (1, 5, 7))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_dense_equals_blocked(block_size, layout):
    x, y = make_batch(0, layout)
    r, ry = make_ref(0)
    for dense, blocked in zip(_all_losses("dense", None), _all_losses("blocked", block_size)):
        assert_close(
            _grads_of(lambda: blocked(x, y), [x]),
            _grads_of(lambda: dense(x, y), [x]),
            rtol=1e-6,
            atol=1e-9,
        )
        assert_close(
            _grads_of(lambda: blocked(x, y, ref_emb=r, ref_labels=ry), [x, r]),
            _grads_of(lambda: dense(x, y, ref_emb=r, ref_labels=ry), [x, r]),
            rtol=1e-6,
            atol=1e-9,
        )


@pytest.mark.parametrize("engine", ENGINES)
def test_gradcheck(engine):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 3])
    for loss in _all_losses(engine, 3):
        assert torch.autograd.gradcheck(lambda e, loss=loss: loss(e, y), (x,), fast_mode=True)
    triplets = (torch.tensor([0, 1, 3, 3]), torch.tensor([1, 2, 4, 4]), torch.tensor([6, 3, 0, 5]))
    for loss in (TripletMarginLoss(margin=0.3, swap=True), TripletMarginLoss(smooth_loss=True)):
        assert torch.autograd.gradcheck(lambda e, loss=loss: loss(e, None, triplets), (x,))


# ---------------------------------------------------------------- properties, degenerate input


@settings(deadline=None, max_examples=25)
@given(
    n=st.integers(1, 10),
    dim=st.integers(1, 4),
    n_classes=st.integers(1, 4),
    seed=st.integers(0, 10_000),
    margin=st.floats(0.0, 3.0),
)
def test_property_finite(n, dim, n_classes, seed, margin):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64) * 3
    x[: n // 2] = x[0].clone()  # duplicate rows: zero distances
    x.requires_grad_(True)
    y = torch.randint(0, n_classes, (n,), generator=g)
    losses = [
        TripletMarginLoss(margin=margin),
        TripletMarginLoss(margin=margin, smooth_loss=True, engine="blocked", block_size=3),
        TripletMarginLoss(margin=margin, miner=TripletMarginMiner(margin, "semihard")),
        BatchHardTripletLoss(margin=margin, engine="blocked", block_size=2),
        BatchHardSoftMarginTripletLoss(),
        BatchHardTripletLoss(margin=margin, distance=CosineSimilarity()),
    ]
    for loss in losses:
        value, (grad,) = value_and_grads(lambda: loss(x, y), [x])
        assert torch.isfinite(value) and torch.isfinite(grad).all()


@pytest.mark.parametrize(
    "labels", ([0] * 6, list(range(6)), [0]), ids=("one_class", "distinct", "single")
)
@pytest.mark.parametrize("engine", ENGINES)
def test_degenerate_inputs_give_zero(labels, engine):
    y = torch.tensor(labels)
    x = torch.randn(len(labels), 3, dtype=torch.float64, requires_grad=True)
    for loss in _all_losses(engine, 2):
        value, (grad,) = value_and_grads(lambda: loss(x, y), [x])
        assert value == 0 and torch.all(grad == 0)
    empty = (torch.zeros(0, dtype=torch.long),) * 3
    value, (grad,) = value_and_grads(lambda: TripletMarginLoss()(x, None, empty), [x])
    assert value == 0 and torch.all(grad == 0)


def test_half_precision_is_finite():
    x, y = make_batch(0, "balanced", dtype=torch.float32)
    for dtype in (torch.float16, torch.bfloat16):
        xh = (x.detach() * 50).to(dtype).requires_grad_(True)
        for loss in _all_losses("auto", None):
            value, (grad,) = value_and_grads(lambda: loss(xh, y), [xh])
            assert value.dtype == dtype and torch.isfinite(value) and torch.isfinite(grad).all()


# ---------------------------------------------------------------- options and errors


def test_functional_forms_match_modules():
    x, y = make_batch(1, "unbalanced")
    torch.testing.assert_close(triplet_margin(x, y, margin=0.2), TripletMarginLoss(0.2)(x, y))
    torch.testing.assert_close(batch_hard_triplet(x, y), BatchHardTripletLoss()(x, y))
    torch.testing.assert_close(
        batch_hard_soft_margin_triplet(x, y), BatchHardSoftMarginTripletLoss()(x, y)
    )


@pytest.mark.parametrize("layout", ["balanced", "unbalanced"])
@pytest.mark.parametrize("swap", [False, True])
def test_triplets_per_anchor_int_draws_pml_triplets(layout, swap):
    """An int triplets_per_anchor draws the same triplets as pytorch-metric-learning from the
    same seed (the same generator calls in the same order)."""
    x, y = make_batch(0, layout)
    ours = TripletMarginLoss(margin=0.5, swap=swap, triplets_per_anchor=3)
    theirs = pml_losses.TripletMarginLoss(margin=0.5, swap=swap, triplets_per_anchor=3)
    torch.manual_seed(5)
    a = value_and_grads(lambda: ours(x, y), [x])
    torch.manual_seed(5)
    b = value_and_grads(lambda: theirs(x, y), [x])
    assert_close(a, b)


@pytest.mark.parametrize("layout", ["balanced", "singletons"])
def test_swap_with_labels_matches_pml(layout):
    x, y = make_batch(2, layout)
    ours = value_and_grads(lambda: TripletMarginLoss(0.3, swap=True)(x, y), [x])
    theirs = value_and_grads(lambda: pml_losses.TripletMarginLoss(0.3, swap=True)(x, y), [x])
    assert_close(ours, theirs)


def test_bad_arguments_raise():
    x, y = make_batch(0, "balanced")
    with pytest.raises(PairLossError, match="margin"):
        TripletMarginLoss(margin="a")
    with pytest.raises(PairLossError, match="margin"):
        BatchHardTripletLoss(margin=float("nan"))
    with pytest.raises(PairLossError, match="triplets_per_anchor"):
        TripletMarginLoss(triplets_per_anchor=0)
    with pytest.raises(PairLossError, match="miner"):
        triplets = (torch.tensor([0]), torch.tensor([1]), torch.tensor([5]))
        TripletMarginLoss(miner=BatchHardMiner())(x, y, triplets)
    with pytest.raises(PairLossError, match="miner"):
        SemiHardTripletLoss(miner=BatchHardMiner())
    with pytest.raises(PairLossError, match="indices_tuple"):
        TripletMarginLoss()(x, y, (torch.tensor([0]), torch.tensor([99]), torch.tensor([1])))
    with pytest.raises(PairLossError, match="labels"):
        TripletMarginLoss()(x)


# ---------------------------------------------------------------- scale


def test_batch_all_never_builds_cubic_tensors():
    """B = 512: no single allocation anywhere near B^3; B = 2048 runs in seconds."""
    from torch.profiler import ProfilerActivity, profile

    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 16, generator=g)
    y = torch.randint(0, 128, (512,), generator=g)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        TripletMarginLoss()(x, y)
    biggest = max((e.cpu_memory_usage for e in prof.events()), default=0)
    assert biggest < 64 * 2**20  # a [512]^3 float tensor would be 512 MiB

    x = torch.randn(2048, 16, generator=g)
    y = torch.randint(0, 256, (2048,), generator=g)
    start = time.perf_counter()
    with torch.no_grad():
        value = TripletMarginLoss()(x, y)
    assert time.perf_counter() - start < 5.0
    assert torch.isfinite(value)
