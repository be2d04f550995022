"""Proxy / margin-softmax losses: class weights as the candidates of the pair engine."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from pairloss.errors import PairLossError
from pairloss.losses.proxy.margin_softmax import (
    ArcFaceLoss,
    CosFaceLoss,
    LargeMarginSoftmaxLoss,
    NormalizedSoftmaxLoss,
    SphereFaceLoss,
    SubCenterArcFaceLoss,
    arcface,
    cosface,
    large_margin_softmax,
    normalized_softmax,
    sphereface,
    sub_center_arcface,
)
from pairloss.losses.proxy.proxy_anchor import ProxyAnchorLoss, proxy_anchor
from pairloss.losses.proxy.proxy_circle import ProxyCircleLoss, proxy_circle
from pairloss.losses.proxy.proxy_nca import ProxyNCALoss, proxy_nca
from pairloss.losses.proxy.soft_triple import SoftTripleLoss, soft_triple
from tests.layouts import LAYOUTS, SEEDS, assert_close, make_batch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread avoids scheduling overhead on a loaded machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# name: (our class, PML factory or None, PML weight attribute, PML layout is [D, C], kwargs)
LOSSES = {
    "normalized_softmax": (NormalizedSoftmaxLoss, pml_losses.NormalizedSoftmaxLoss, "W", True),
    "cosface": (CosFaceLoss, pml_losses.CosFaceLoss, "W", True),
    "arcface": (ArcFaceLoss, pml_losses.ArcFaceLoss, "W", True),
    "sub_center_arcface": (
        SubCenterArcFaceLoss,
        lambda c, d, **kw: pml_losses.SubCenterArcFaceLoss(num_classes=c, embedding_size=d, **kw),
        "W",
        True,
    ),
    "large_margin_softmax": (LargeMarginSoftmaxLoss, pml_losses.LargeMarginSoftmaxLoss, "W", True),
    "sphereface": (SphereFaceLoss, pml_losses.SphereFaceLoss, "W", True),
    "proxy_anchor": (ProxyAnchorLoss, pml_losses.ProxyAnchorLoss, "proxies", False),
    "proxy_nca": (ProxyNCALoss, pml_losses.ProxyNCALoss, "proxies", False),
    "soft_triple": (SoftTripleLoss, pml_losses.SoftTripleLoss, "fc", True),
    "proxy_circle": (ProxyCircleLoss, None, None, None),
}
PML_NAMES = [k for k, v in LOSSES.items() if v[1] is not None]
FUNCTIONAL = {
    "normalized_softmax": normalized_softmax,
    "cosface": cosface,
    "arcface": arcface,
    "sub_center_arcface": sub_center_arcface,
    "large_margin_softmax": large_margin_softmax,
    "sphereface": sphereface,
    "proxy_anchor": proxy_anchor,
    "proxy_nca": proxy_nca,
    "soft_triple": soft_triple,
    "proxy_circle": proxy_circle,
}
# extra hyper-parameters exercised in the oracle tests
HYPER = {
    "normalized_softmax": [{"temperature": 0.2}],
    "cosface": [{"margin": 0.1, "scale": 10}],
    "arcface": [{"margin": 80, "scale": 8}, {"margin": 5, "scale": 30}],
    "sub_center_arcface": [{"sub_centers": 2, "margin": 40, "scale": 10}],
    "large_margin_softmax": [{"margin": 3, "scale": 2}, {"margin": 1}],
    "sphereface": [{"margin": 2, "scale": 3}],
    "proxy_anchor": [{"margin": 0.3, "alpha": 8}],
    "proxy_nca": [{"softmax_scale": 4}],
    "soft_triple": [{"centers_per_class": 3, "la": 5, "gamma": 0.5, "margin": 0.2}],
}


def class_labels(layout: str, seed: int, n: int = 24, dim: int = 6):
    """A float64 batch whose labels are remapped to 0..K-1, with C = K + 3 (absent classes)."""
    x, y = make_batch(seed, layout, n=n, dim=dim)
    _, y = torch.unique(y, return_inverse=True)
    return x, y, int(y.max()) + 4


def pair(name: str, c: int, d: int, **kw):
    """(ours, PML) in float64 sharing the same proxies; returns their weight tensors too."""
    ours_cls, pml_cls, attr, _ = LOSSES[name]
    theirs = pml_cls(c, d, **kw).double()
    ours = ours_cls(c, d, **kw).double()
    w = getattr(theirs, attr)
    with torch.no_grad():
        getattr(ours, attr).copy_(w)
    return ours, theirs, w, attr


def val(t: torch.Tensor) -> float:
    return float(t.detach())


def grads(loss, x, w):
    gx, gw = torch.autograd.grad(loss, [x, w])
    return loss.detach(), [gx, gw]


def compare_with_pml(name, x, y, c, engine="dense", indices_tuple=None, **kw):
    ours, theirs, w, attr = pair(name, c, x.shape[1], **kw)
    ours.engine, ours.block_size = engine, 5
    a = grads(ours(x, y, indices_tuple), x, getattr(ours, attr))
    b = grads(theirs(x, y, indices_tuple), x, w)
    assert_close(a, b)


# ---------------------------------------------------------------- PML oracle


@pytest.mark.parametrize("name", PML_NAMES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_pml_oracle(name, seed, layout):
    x, y, c = class_labels(layout, seed)
    compare_with_pml(name, x, y, c)


@pytest.mark.parametrize("name", PML_NAMES)
@pytest.mark.parametrize("engine", ["dense", "blocked"])
def test_pml_oracle_hyperparams(name, engine):
    x, y, c = class_labels("unbalanced", 3)
    for kw in HYPER[name]:
        compare_with_pml(name, x, y, c, engine=engine, **kw)


def _random_triplets(n: int, seed: int, count: int = 15):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randint(0, n, (count,), generator=g) for _ in range(3))


@pytest.mark.parametrize("name", PML_NAMES)
@pytest.mark.parametrize("seed", SEEDS)
def test_pml_oracle_indices_tuple(name, seed):
    x, y, c = class_labels("unbalanced", seed)
    tuples = [
        pml_miners.MultiSimilarityMiner()(x, y),
        pml_miners.TripletMarginMiner(margin=0.2)(x, y),
        _random_triplets(x.shape[0], seed),
    ]
    for t in tuples:
        for engine in ("dense", "blocked"):
            compare_with_pml(name, x, y, c, engine=engine, indices_tuple=t)


def test_same_seed_same_init_as_pml():
    for name in PML_NAMES:
        ours_cls, pml_cls, attr, _ = LOSSES[name]
        torch.manual_seed(7)
        ours = ours_cls(5, 4)
        torch.manual_seed(7)
        theirs = pml_cls(5, 4)
        w = getattr(theirs, attr)
        torch.testing.assert_close(getattr(ours, attr), w, rtol=0, atol=0)


def test_hyper_parameter_attributes_hold_what_pml_holds():
    """After construction PML keeps some hyper-parameters transformed (ArcFace's margin in
    radians, SoftTriple's 1 / gamma, the margin-softmax losses' integer margin): code that
    reads them gets the same numbers."""
    for name in PML_NAMES:
        ours_cls, pml_cls, _, _ = LOSSES[name]
        ours, theirs = ours_cls(5, 4), pml_cls(5, 4)
        for attr in ("margin", "scale", "gamma", "la", "alpha", "temperature", "softmax_scale"):
            if hasattr(theirs, attr):
                assert float(getattr(ours, attr)) == pytest.approx(float(getattr(theirs, attr)))


# ---------------------------------------------------------------- dense vs blocked


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("block_size", [1, 5, 7])
def test_dense_vs_blocked(name, block_size):
    x, y, c = class_labels("singletons", 1, n=23)
    cls = LOSSES[name][0]
    torch.manual_seed(0)
    ours = cls(c, x.shape[1]).double()
    with torch.no_grad():
        ours.weight_parameter().mul_(0.5)
    res = []
    for engine in ("dense", "blocked"):
        ours.engine, ours.block_size = engine, block_size
        res.append(grads(ours(x, y), x, ours.weight_parameter()))
    assert_close(res[1], res[0], rtol=1e-6, atol=1e-9)
    ours.reduction = "none"
    rows = []
    for engine in ("dense", "blocked"):
        ours.engine = engine
        out = ours(x, y)
        rows.append(
            grads((out * torch.linspace(0.5, 2, out.shape[0])).sum(), x, ours.weight_parameter())
        )
    assert_close(rows[1], rows[0], rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------- gradcheck


@pytest.mark.parametrize("name", [n for n in LOSSES if n != "proxy_circle"])
@pytest.mark.parametrize("engine", ["dense", "blocked"])
def test_gradcheck(name, engine):
    """(Circle holds its pair weights constant, so its gradient is not the derivative of its
    value: it is checked against the pair-level Circle loss instead.)"""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.tensor([0, 1, 1, 3, 0])
    cls = LOSSES[name][0]
    small = {"scale": 4} if name not in ("normalized_softmax", "proxy_anchor", "proxy_nca") else {}
    if name in ("soft_triple",):
        small = {"centers_per_class": 2}
    loss = cls(4, 3, engine=engine, block_size=2, **small).double()
    w = loss.proxy_weights().detach().clone().requires_grad_(True)

    def fn(x, w):
        return loss.compute(w, x, y)

    assert torch.autograd.gradcheck(fn, (x, w), fast_mode=True)


# ---------------------------------------------------------------- properties and degenerate


@settings(deadline=None, max_examples=25)
@given(
    name=st.sampled_from(list(LOSSES)),
    n=st.integers(1, 9),
    c=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    engine=st.sampled_from(["dense", "blocked"]),
)
def test_finite_property(name, n, c, seed, engine):
    g = torch.Generator().manual_seed(seed)
    x = (3 * torch.randn(n, 4, generator=g)).requires_grad_(True)
    y = torch.randint(0, c, (n,), generator=g)
    loss = LOSSES[name][0](c, 4, engine=engine, block_size=3)
    value = loss(x, y)
    gx, gw = torch.autograd.grad(value, [x, loss.weight_parameter()])
    assert torch.isfinite(value) and torch.isfinite(gx).all() and torch.isfinite(gw).all()


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("case", ["one_class", "batch_of_one", "all_distinct", "exact_match"])
def test_degenerate(name, case):
    torch.manual_seed(0)
    cls = LOSSES[name][0]
    if case == "one_class":
        loss, x, y = cls(1, 4), torch.randn(6, 4), torch.zeros(6, dtype=torch.long)
    elif case == "batch_of_one":
        loss, x, y = cls(5, 4), torch.randn(1, 4), torch.tensor([2])
    elif case == "all_distinct":
        loss, x, y = cls(6, 4), torch.randn(6, 4), torch.arange(6)
    else:  # embeddings exactly on their class proxy (cos = 1: acos has an infinite slope)
        loss = cls(3, 4)
        x = loss.proxy_weights().detach()[:: loss.proxies_per_class][[0, 1, 2, 1]].clone()
        y = torch.tensor([0, 1, 2, 1])
    x.requires_grad_(True)
    for engine in ("dense", "blocked"):
        loss.engine = engine
        value = loss(x, y)
        gx, gw = torch.autograd.grad(value, [x, loss.weight_parameter()])
        assert torch.isfinite(value) and torch.isfinite(gx).all() and torch.isfinite(gw).all()
        if case == "one_class" and name in ("proxy_circle", "normalized_softmax", "cosface"):
            # one class: no negative column; softmax over one logit (or no circle pair) gives 0
            assert val(value.detach()) == 0.0


# ---------------------------------------------------------------- losses without a twin


def _circle_reference(x, y, w, m, gamma):
    total = 0.0
    for i in range(x.shape[0]):
        xi = x[i] / x[i].norm()
        cos = [float(xi @ (w[c] / w[c].norm())) for c in range(w.shape[0])]
        sp = cos[int(y[i])]
        lp = -gamma * max(1 + m - sp, 0.0) * (sp - (1 - m))
        negs = [gamma * max(cos[c] + m, 0.0) * (cos[c] - m) for c in range(len(cos)) if c != y[i]]
        if not negs:
            continue
        top = max(negs)
        lse = top + math.log(sum(math.exp(v - top) for v in negs))
        z = lp + lse
        total += max(z, 0.0) + math.log1p(math.exp(-abs(z)))
    return total / x.shape[0]


@pytest.mark.parametrize("m, gamma", [(0.25, 256), (0.4, 10), (0.1, 1)])
def test_proxy_circle_reference(m, gamma):
    x, y, c = class_labels("unbalanced", 2)
    loss = ProxyCircleLoss(c, x.shape[1], m=m, gamma=gamma).double()
    for engine in ("dense", "blocked"):
        loss.engine = engine
        value = loss(x, y)
        expected = _circle_reference(x.detach(), y, loss.proxy_weights().detach(), m, gamma)
        assert val(value) == pytest.approx(expected, rel=1e-10)


def test_proxy_circle_equals_pair_circle_on_proxies():
    """Class-level Circle = pair-level Circle of each embedding against the class weights."""
    from pairloss.losses.metric.circle import CircleLoss

    x, y, c = class_labels("balanced", 0)
    loss = ProxyCircleLoss(c, x.shape[1]).double()
    ref = CircleLoss(m=0.25, gamma=256, reduction="mean")
    for engine in ("dense", "blocked"):
        loss.engine = engine
        ours = grads(loss(x, y), x, loss.weight_parameter())
        theirs = grads(
            ref(x, y, ref_emb=loss.weight_parameter(), ref_labels=torch.arange(c)),
            x,
            loss.weight_parameter(),
        )
        assert_close(ours, theirs, rtol=1e-10)


def test_arcface_easy_margin_reference():
    x, y, c = class_labels("unbalanced", 1)
    loss = ArcFaceLoss(c, x.shape[1], margin=30, scale=10, easy_margin=True).double()
    xn = torch.nn.functional.normalize(x.detach(), dim=1)
    wn = torch.nn.functional.normalize(loss.proxy_weights().detach(), dim=1)
    total, m = 0.0, math.radians(30)
    for i in range(x.shape[0]):
        cos = (wn @ xn[i]).tolist()
        t = int(y[i])
        cos[t] = math.cos(math.acos(cos[t]) + m) if cos[t] > 0 else cos[t]
        logits = [10 * v for v in cos]
        top = max(logits)
        total += top + math.log(sum(math.exp(v - top) for v in logits)) - logits[t]
    assert val(loss(x, y)) == pytest.approx(total / x.shape[0], rel=1e-10)


def test_soft_triple_regularizer_reference():
    x, y, c = class_labels("unbalanced", 0)
    k, tau = 3, 0.2
    plain = SoftTripleLoss(c, x.shape[1], centers_per_class=k).double()
    reg = SoftTripleLoss(c, x.shape[1], centers_per_class=k, center_regularization=tau).double()
    with torch.no_grad():
        reg.weight_parameter().copy_(plain.weight_parameter())
    wn = torch.nn.functional.normalize(plain.proxy_weights().detach(), dim=1)
    total = 0.0
    for cl in range(c):
        for a in range(k):
            for b in range(a + 1, k):
                sim = float(wn[cl * k + a] @ wn[cl * k + b])
                total += math.sqrt(2 + 1e-5 - 2 * sim)
    expected = val(plain(x, y)) + tau * total / (c * k * (k - 1))
    assert val(reg(x, y)) == pytest.approx(expected, rel=1e-10)
    # the regulariser reaches the centres' gradient
    gw = torch.autograd.grad(reg(x, y), reg.weight_parameter())[0]
    assert torch.isfinite(gw).all()


def test_proxy_anchor_normalisers():
    """Positive part / proxies with positives, negative part / all proxies (PML's divisors)."""
    x, y, c = class_labels("two_classes", 0)
    loss = ProxyAnchorLoss(c, x.shape[1], reduction="none").double()
    per_proxy = loss(x, y)
    assert per_proxy.shape == (c,)
    loss.reduction = "sum"
    assert val(loss(x, y)) == pytest.approx(val(per_proxy.sum()), rel=1e-12)


# ---------------------------------------------------------------- functional, params, dtypes


@pytest.mark.parametrize("name", list(LOSSES))
def test_functional_matches_module(name):
    x, y, c = class_labels("balanced", 1)
    cls, func = LOSSES[name][0], FUNCTIONAL[name]
    module = cls(c, x.shape[1]).double()
    kw = {}
    if name == "sub_center_arcface":
        kw = {"sub_centers": 3}
    if name == "soft_triple":
        kw = {"centers_per_class": 10}
    w = module.proxy_weights().detach().clone().requires_grad_(True)
    a = grads(module(x, y), x, module.weight_parameter())
    b = grads(func(x, y, proxies=w, **kw), x, w)
    if module.weight_layout == "DC":
        b[1][1] = b[1][1].T
    assert_close(a, b, rtol=1e-12)


@pytest.mark.parametrize("name", list(LOSSES))
def test_autocast_and_bf16_keep_proxies_float32(name):
    torch.manual_seed(0)
    loss = LOSSES[name][0](7, 8)
    x = torch.randn(10, 8, requires_grad=True)
    y = torch.randint(0, 7, (10,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(x.to(torch.bfloat16), y)
    value.float().backward()
    w = loss.weight_parameter()
    assert w.dtype == torch.float32 and w.grad.dtype == torch.float32
    assert torch.isfinite(value.float()) and torch.isfinite(w.grad).all()
    assert value.dtype == torch.bfloat16
    ref = LOSSES[name][0](7, 8)
    with torch.no_grad():
        ref.weight_parameter().copy_(loss.weight_parameter())
    assert val(value) == pytest.approx(val(ref(x, y)), rel=0.05, abs=0.05)


def test_parameters_and_init_options():
    loss = CosFaceLoss(4, 3)
    assert [p is loss.weight_parameter() for p in loss.parameters()] == [True]
    opt = torch.optim.SGD([{"params": loss.parameters(), "lr": 1.0}], lr=0.1)
    assert opt.param_groups[0]["lr"] == 1.0
    for init in ("normal", "xavier_normal", "xavier_uniform", "kaiming_normal", "kaiming_uniform"):
        assert torch.isfinite(CosFaceLoss(4, 3, init=init).W).all()
    ones = CosFaceLoss(4, 3, init=torch.nn.init.ones_)
    assert bool((ones.weight_parameter() == 1).all())


# ---------------------------------------------------------------- bad input


def test_bad_input():
    loss = ArcFaceLoss(5, 4)
    x = torch.randn(6, 4)
    with pytest.raises(PairLossError, match=r"labels.*\[0, 5\)"):
        loss(x, torch.tensor([0, 1, 2, 3, 4, 5]))
    with pytest.raises(PairLossError, match=r"labels.*\[0, 5\)"):
        loss(x, torch.tensor([0, 1, 2, 3, 4, -1]))
    with pytest.raises(PairLossError, match="embeddings"):
        loss(torch.randn(6, 3), torch.zeros(6, dtype=torch.long))
    with pytest.raises(PairLossError, match="labels"):
        loss(x)
    with pytest.raises(PairLossError, match="ref_emb"):
        loss(x, torch.zeros(6, dtype=torch.long), ref_emb=x, ref_labels=torch.zeros(6))
    with pytest.raises(PairLossError, match="proxies"):
        cosface(x, torch.zeros(6, dtype=torch.long), proxies="nope")
    with pytest.raises(PairLossError, match="proxies"):
        sub_center_arcface(x, torch.zeros(6, dtype=torch.long), proxies=torch.randn(5, 4))
    bad = [
        (CosFaceLoss, {"margin": -0.1}, "margin"),
        (CosFaceLoss, {"scale": 0}, "scale"),
        (ArcFaceLoss, {"margin": -1}, "margin"),
        (ArcFaceLoss, {"margin": 180}, "margin"),
        (ArcFaceLoss, {"scale": -64}, "scale"),
        (NormalizedSoftmaxLoss, {"temperature": 0}, "temperature"),
        (SubCenterArcFaceLoss, {"sub_centers": 0}, "sub_centers"),
        (LargeMarginSoftmaxLoss, {"margin": 0}, "margin"),
        (ProxyAnchorLoss, {"alpha": -1}, "alpha"),
        (ProxyNCALoss, {"softmax_scale": 0}, "softmax_scale"),
        (SoftTripleLoss, {"gamma": 0}, "gamma"),
        (SoftTripleLoss, {"la": -1}, "la"),
        (SoftTripleLoss, {"centers_per_class": 0}, "centers_per_class"),
        (SoftTripleLoss, {"center_regularization": -1}, "center_regularization"),
        (ProxyCircleLoss, {"gamma": 0}, "gamma"),
        (CosFaceLoss, {"init": "bogus"}, "init"),
    ]
    for cls, kw, arg in bad:
        with pytest.raises(PairLossError, match=arg):
            cls(5, 4, **kw)
    with pytest.raises(PairLossError, match="num_classes"):
        CosFaceLoss(0, 4)
    with pytest.raises(PairLossError, match="embedding_size"):
        CosFaceLoss(3, 0)
