"""pytorch-metric-learning's other losses: pairloss gives its values and gradients (float64,
several seeds and label layouts, reference sets, index tuples), on the dense and the blocked
engine, which agree."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml
from pytorch_metric_learning import miners as pml_miners

import pairloss
from pairloss import miners

from ..layouts import assert_close, make_batch, make_ref, value_and_grads

# pytorch-metric-learning's HistogramLoss indexes with a list (a deprecation warning of torch)
pytestmark = pytest.mark.filterwarnings("ignore:Using a non-tuple sequence")

SEEDS = (0, 1)
LAYOUTS = ("balanced", "unbalanced", "singletons")

# name -> list of constructor kwargs (the same for both libraries)
CASES = {
    "AngularLoss": [{}, {"alpha": 25}],
    "FastAPLoss": [{}, {"num_bins": 5}, {"num_bins": 7, "distance": "pml_lp"}],
    "HistogramLoss": [{}, {"n_bins": 10}, {"delta": 0.25}],
    "InstanceLoss": [{}, {"gamma": 4}],
    "IntraPairVarianceLoss": [{}, {"pos_eps": 0.2, "neg_eps": 0.1}, {"distance": "pml_lp"}],
    "LiftedStructureLoss": [{}, {"neg_margin": 0.6, "pos_margin": 0.1}],
    "NCALoss": [{}, {"softmax_scale": 3}],
    "PNPLoss": [{"variant": v, "anneal": 0.2} for v in ("O", "Ds", "Dq", "Iu", "Ib")],
    "RankedListLoss": [
        {"margin": 0.4, "Tn": 4},
        {"margin": 0.8, "Tn": 2, "Tp": 1, "imbalance": 0.3},
    ],
    "SignalToNoiseRatioContrastiveLoss": [{}, {"pos_margin": 0.2, "neg_margin": 1.3}],
    "ThresholdConsistentMarginLoss": [{}, {"margin_plus": 0.3, "margin_minus": -0.1}],
    "TupletMarginLoss": [{}, {"margin": 15, "scale": 8}],
}
ENGINE_LOSSES = list(CASES)
WITH_REF = [
    "AngularLoss",
    "IntraPairVarianceLoss",
    "LiftedStructureLoss",
    "NCALoss",
    "TupletMarginLoss",
]
WITH_TUPLES = [
    "AngularLoss",
    "HistogramLoss",
    "IntraPairVarianceLoss",
    "LiftedStructureLoss",
    "ThresholdConsistentMarginLoss",
    "TupletMarginLoss",
    "FastAPLoss",
    "NCALoss",
]


def _kwargs(kw: dict, ours: bool) -> dict:
    kw = dict(kw)
    if kw.get("distance") == "pml_lp":  # pairloss takes pytorch-metric-learning's object too
        kw["distance"] = pml_distances.LpDistance()
    return kw


def _pair(name: str, kw: dict, **ours_kw):
    return getattr(pairloss, name)(**_kwargs(kw, True), **ours_kw), getattr(pml, name)(
        **_kwargs(kw, False)
    )


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", ENGINE_LOSSES)
def test_labels_match_pml_on_both_engines(name, seed, layout):
    x, y = make_batch(seed, layout, n=20)
    for kw in CASES[name]:
        _, theirs = _pair(name, kw)
        want = value_and_grads(partial(theirs, x, y), [x])
        for engine in ("dense", "blocked"):
            ours, _ = _pair(name, kw, engine=engine, block_size=7)
            assert_close(value_and_grads(partial(ours, x, y), [x]), want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", WITH_REF)
def test_reference_set_matches_pml(name):
    x, y = make_batch(2, "unbalanced", n=16)
    r, ry = make_ref(2)
    ours, theirs = _pair(name, CASES[name][0])
    assert_close(
        value_and_grads(lambda: ours(x, y, ref_emb=r, ref_labels=ry), [x, r]),
        value_and_grads(lambda: theirs(x, y, ref_emb=r, ref_labels=ry), [x, r]),
    )


@pytest.mark.parametrize("name", WITH_TUPLES)
def test_index_tuples_match_pml(name):
    """Pairs from a miner, triplets with repeated pairs, and a pairloss miner's own output (mined
    inside the engine)."""
    x, y = make_batch(3, "balanced", n=20)
    tuples = [
        pml_miners.MultiSimilarityMiner(0.3)(x, y),
        pml_miners.TripletMarginMiner(0.4, "all")(x, y),
    ]
    ours_tuple = miners.MultiSimilarityMiner(0.3)(x, y)
    for tup in tuples:
        ours, theirs = _pair(name, CASES[name][0])
        assert_close(
            value_and_grads(partial(ours, x, y, tup), [x]),
            value_and_grads(partial(theirs, x, y, tup), [x]),
        )
    ours, theirs = _pair(name, CASES[name][0])
    assert_close(
        value_and_grads(lambda: ours(x, y, ours_tuple), [x]),
        value_and_grads(lambda: theirs(x, y, tuple(ours_tuple)), [x]),
    )


def test_smooth_ap_matches_pml_on_sorted_square_batches():
    """pytorch-metric-learning groups consecutive runs of the batch; on batches sorted by class
    with as many samples per class as classes the groups are the classes, and it computes the
    AP in float32 (hence the tolerance on the value)."""
    for seed in SEEDS:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(16, 5, generator=g, dtype=torch.float64, requires_grad=True)
        y = torch.arange(4).repeat_interleave(4)
        for kw in ({}, {"temperature": 0.3}):
            want = value_and_grads(partial(pml.SmoothAPLoss(**kw), x, y), [x])
            for engine in ("dense", "blocked"):
                loss = pairloss.SmoothAPLoss(engine=engine, block_size=5, **kw)
                assert_close(value_and_grads(partial(loss, x, y), [x]), want, rtol=1e-6, atol=1e-7)


def test_dynamic_soft_margin_matches_pml_over_steps():
    """Values and the running histogram over three steps; the gradient with the histogram held
    constant (pytorch-metric-learning differentiates through it, which the paper does not)."""
    g = torch.Generator().manual_seed(0)
    theirs = pml.DynamicSoftMarginLoss()
    real_update = theirs.update_histogram
    theirs.update_histogram = lambda data: real_update(data.detach())
    ours = {e: pairloss.DynamicSoftMarginLoss(engine=e, block_size=7) for e in ("dense", "blocked")}
    for _ in range(3):
        x = torch.randn(20, 5, generator=g, dtype=torch.float64, requires_grad=True)
        y = torch.randint(0, 4, (20,), generator=g)
        want = value_and_grads(partial(theirs, x, y), [x])
        for loss in ours.values():
            assert_close(value_and_grads(partial(loss, x, y), [x]), want)
            torch.testing.assert_close(loss.hist_, theirs.hist_, rtol=1e-9, atol=1e-12)
    x = torch.nn.functional.normalize(torch.randn(7, 8, generator=g, dtype=torch.float64))
    a = pairloss.DynamicSoftMarginLoss(min_val=-3.0)(x[:3], ref_emb=x[3:])
    b = pml.DynamicSoftMarginLoss(min_val=-3.0)(x[:3], ref_emb=x[3:])
    torch.testing.assert_close(a, b)


def test_p2s_grad_matches_pml_with_its_weights():
    for seed in SEEDS:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(20, 6, generator=g, dtype=torch.float64, requires_grad=True)
        y = torch.randint(0, 4, (20,), generator=g)
        for engine in ("dense", "blocked"):
            torch.manual_seed(seed)
            theirs = pml.P2SGradLoss(6, 4)
            torch.manual_seed(seed)
            ours = pairloss.P2SGradLoss(6, 4, engine=engine, block_size=7)
            assert_close(
                value_and_grads(partial(ours, x, y), [x, ours.weight]),
                value_and_grads(partial(theirs, x, y), [x, theirs.weight]),
            )


def test_manifold_matches_pml():
    """The same random proxy assignment from the same seed; exact in float32 (where
    pytorch-metric-learning inverts), to its float32 inverse in float64."""
    g = torch.Generator().manual_seed(0)
    for dtype, rtol in ((torch.float32, 1e-5), (torch.float64, 1e-6)):
        x = torch.randn(12, 6, generator=g, dtype=dtype, requires_grad=True)
        for kw in ({"K": 3}, {"K": 4, "lambdaC": 0.3, "alpha": 0.5, "margin": 0.01}):
            torch.manual_seed(1)
            ours = pairloss.ManifoldLoss(6, **kw).to(dtype)
            torch.manual_seed(1)
            theirs = pml.ManifoldLoss(6, **kw).to(dtype)
            torch.manual_seed(5)
            a = value_and_grads(partial(ours, x), [x, ours.proxies])
            torch.manual_seed(5)
            b = value_and_grads(partial(theirs, x), [x, theirs.proxies])
            assert_close(a, b, rtol=rtol, atol=1e-6)
        own = torch.randint(0, 3, (12,), generator=g)
        torch.manual_seed(1)
        ours = pairloss.ManifoldLoss(6, K=3).to(dtype)
        torch.manual_seed(1)
        theirs = pml.ManifoldLoss(6, K=3).to(dtype)
        torch.testing.assert_close(
            ours(x, indices_tuple=own), theirs(x, indices_tuple=own), rtol=rtol, atol=1e-6
        )


def test_vicreg_matches_pml():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 6, generator=g, dtype=torch.float64, requires_grad=True)
    r = torch.randn(12, 6, generator=g, dtype=torch.float64, requires_grad=True)
    for kw in ({}, {"invariance_lambda": 2, "variance_mu": 3, "covariance_v": 4, "eps": 0.1}):
        assert_close(
            value_and_grads(partial(pairloss.VICRegLoss(**kw), x, ref_emb=r), [x, r]),
            value_and_grads(partial(pml.VICRegLoss(**kw), x, ref_emb=r), [x, r]),
        )


def test_wrappers_match_pml():
    x, y = make_batch(1, "balanced", n=20)
    r = torch.randn_like(x)
    for symmetric in (True, False):
        assert_close(
            value_and_grads(
                partial(
                    pairloss.SelfSupervisedLoss(pairloss.NTXentLoss(), symmetric=symmetric), x, r
                ),
                [x],
            ),
            value_and_grads(
                partial(pml.SelfSupervisedLoss(pml.NTXentLoss(), symmetric=symmetric), x, r), [x]
            ),
        )
    ours = pairloss.MultipleLosses(
        {"c": pairloss.ContrastiveLoss(), "t": pairloss.TupletMarginLoss()},
        miners={"t": miners.MultiSimilarityMiner()},
        weights={"c": 0.3, "t": 2.0},
    )
    theirs = pml.MultipleLosses(
        {"c": pml.ContrastiveLoss(), "t": pml.TupletMarginLoss()},
        miners={"t": pml_miners.MultiSimilarityMiner()},
        weights={"c": 0.3, "t": 2.0},
    )
    assert_close(
        value_and_grads(lambda: ours(x, y), [x]), value_and_grads(lambda: theirs(x, y), [x])
    )
    with pytest.raises(pairloss.PairLossError, match="SelfSupervisedLoss"):
        pairloss.SelfSupervisedLoss(pairloss.ProxyNCALoss(3, 4))


def test_supcon_one_class_batch_gives_zero_as_pml():
    x, _ = make_batch(0, "balanced", n=8)
    one = torch.zeros(8, dtype=torch.long)
    x = x.detach()
    assert float(pairloss.SupConLoss()(x, one)) == float(pml.SupConLoss()(x, one)) == 0.0
    assert float(pairloss.SupConLoss(zero_without_negatives=False)(x, one)) > 0


def test_pml_quirks_that_pairloss_leaves_out():
    """pytorch-metric-learning crashes where pairloss gives the limit value: a cosine of exactly
    1 in HistogramLoss, x = d_ap - d_an beyond the histogram in DynamicSoftMarginLoss."""
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    assert torch.isfinite(pairloss.HistogramLoss(n_bins=4)(x, y))
    with pytest.raises((RuntimeError, IndexError)):
        pml.HistogramLoss(n_bins=4)(x, y)
    far = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.001]], dtype=torch.float64)
    assert torch.isfinite(pairloss.DynamicSoftMarginLoss()(far, torch.tensor([0, 0, 1])))


def test_intra_pair_variance_walks_agree_with_autograd_through_the_means():
    """The slope-per-kind walks (class sums for dot products, two walks before the terms for
    distances) against the means as autograd parameters, for every reduction."""
    x, y = make_batch(4, "unbalanced", n=20)
    for reduction in ("mean", "sum", "mean_valid", "mean_nonzero", "mean_terms"):
        for kw in ({}, {"distance": pairloss.distances.LpDistance()}):
            for engine in ("dense", "blocked"):
                loss = pairloss.IntraPairVarianceLoss(
                    reduction=reduction, engine=engine, block_size=7, **kw
                )
                ours = value_and_grads(partial(loss, x, y), [x])
                loss._walks_apart = lambda: False
                assert_close(ours, value_and_grads(partial(loss, x, y), [x]))
