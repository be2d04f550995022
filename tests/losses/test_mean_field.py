"""Mean-field losses (Furusawa, ICLR 2024): MeanFieldContrastive and
MeanFieldClassWiseMultiSimilarity."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pairloss.errors import PairLossError
from pairloss.losses.proxy.mean_field import (
    MeanFieldClassWiseMultiSimilarityLoss,
    MeanFieldContrastiveLoss,
    mean_field_class_wise_multi_similarity,
    mean_field_contrastive,
)
from tests.layouts import LAYOUTS, SEEDS, assert_close, make_batch, value_and_grads


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _batch(seed, layout, n=24, dim=6, extra_classes=3):
    """Embeddings, labels remapped to 0..K-1, and C = K + extra_classes (absent classes)."""
    x, labels = make_batch(seed, layout, n=n, dim=dim)
    labels = torch.unique(labels, return_inverse=True)[1]
    return x, labels, int(labels.max()) + 1 + extra_classes


def _cos(a, b):
    return torch.dot(a, b) / (a.norm() * b.norm())


def ref_contrastive(x, w, labels, pos_margin=0.02, neg_margin=0.3, mf_reg=0.0, mf_power=2.0):
    """Loop-based MeanFieldContrastive, from the formula."""
    b, c = x.shape[0], w.shape[0]
    data = x.new_zeros(())
    for i in range(b):
        for k in range(c):
            d = 1 - _cos(x[i], w[k])
            data = data + (torch.relu(d - pos_margin) if k == int(labels[i]) else
                           torch.relu(neg_margin - d))  # fmt: skip
    reg = x.new_zeros(())
    for k in range(c):
        for k2 in range(c):
            if k2 != k:
                h = torch.relu(neg_margin - (1 - _cos(w[k], w[k2])))
                if float(h.detach()) > 0:
                    reg = reg + h**mf_power
    return data / b + mf_reg * reg / c


def ref_class_wise(x, w, labels, alpha=0.01, beta=80.0, base=0.8, mf_reg=0.0, mf_power=2.0):
    """Loop-based MeanFieldClassWiseMultiSimilarity, from the formula."""
    c = w.shape[0]
    members = [[i for i in range(x.shape[0]) if int(labels[i]) == k] for k in range(c)]
    k_batch = sum(1 for m in members if m)

    def mean_exp(k, k2, coef):  # mean over the samples of class k of exp(coef (s_{i k2} - base))
        if not members[k]:
            return x.new_zeros(())
        return torch.stack(
            [torch.exp(coef * (_cos(x[i], w[k2]) - base)) for i in members[k]]
        ).mean()

    pos = sum(torch.log(1 + mean_exp(k, k, -alpha)) for k in range(c) if members[k])
    neg = x.new_zeros(())
    for k in range(c):
        for k2 in range(c):
            if k2 != k:
                neg = neg + torch.log(1 + mean_exp(k, k2, beta) + mean_exp(k2, k, beta))
    reg = x.new_zeros(())
    for k in range(c):
        for k2 in range(c):
            if k2 != k:
                t = _cos(w[k], w[k2]) - base
                reg = reg + (torch.log1p(torch.exp(beta * t)) / beta) ** mf_power
    return pos / (alpha * k_batch) + neg / (2 * beta * k_batch) + mf_reg * reg / c


LOSSES = {
    "contrastive": (MeanFieldContrastiveLoss, ref_contrastive, mean_field_contrastive),
    "class_wise": (
        MeanFieldClassWiseMultiSimilarityLoss,
        ref_class_wise,
        mean_field_class_wise_multi_similarity,
    ),
}
SETTINGS = {
    "contrastive": [{}, {"pos_margin": 0.3, "neg_margin": 1.2, "mf_reg": 0.7, "mf_power": 1.5}],
    "class_wise": [{}, {"alpha": 2.0, "beta": 10.0, "base": 0.3, "mf_reg": 0.7, "mf_power": 3.0}],
}


def _module(name, c, d=6, seed=0, **kw):
    torch.manual_seed(seed)
    return LOSSES[name][0](c, d, **kw).double()


# ---------------------------------------------------------------------- reference


@pytest.mark.parametrize("setting", [0, 1])
@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", SEEDS)
def test_matches_loop_reference(seed, layout, name, setting):
    kw = SETTINGS[name][setting]
    x, labels, c = _batch(seed, layout, n=16)
    expected = None
    ref = LOSSES[name][1]
    for engine, block in (("dense", None), ("blocked", 3)):
        loss_fn = _module(name, c, seed=seed, engine=engine, block_size=block, **kw)
        ours = value_and_grads(lambda f=loss_fn: f(x, labels), [x, loss_fn.W])
        if expected is None:
            w = loss_fn.W.detach().clone().requires_grad_(True)
            expected = value_and_grads(lambda w=w: ref(x, w, labels, **kw), [x, w])
        assert_close(ours, expected)


@pytest.mark.parametrize("name", list(LOSSES))
def test_functional_matches_module(name):
    kw = SETTINGS[name][1]
    x, labels, c = _batch(0, "balanced")
    loss_fn = _module(name, c, **kw)
    w = loss_fn.W.detach().clone().requires_grad_(True)
    fn = LOSSES[name][2]
    assert_close(
        value_and_grads(lambda: loss_fn(x, labels), [x, loss_fn.W]),
        value_and_grads(lambda: fn(x, labels, proxies=w, **kw), [x, w]),
        rtol=1e-12,
    )


def test_contrastive_row_weights():
    """indices_tuple weights the rows (how often each sample appears / the largest count)."""
    x, labels, c = _batch(1, "balanced")
    loss_fn = _module("contrastive", c, reduction="sum")
    idx = (torch.arange(24), torch.arange(24), torch.arange(24))
    torch.testing.assert_close(loss_fn(x, labels, idx), loss_fn(x, labels), rtol=1e-12, atol=0)
    half = (torch.arange(12), torch.arange(12), torch.arange(12))
    torch.testing.assert_close(
        loss_fn(x, labels, half), loss_fn(x[:12], labels[:12]), rtol=1e-12, atol=0
    )


def test_class_wise_default_beta_is_alpha():
    x, labels, c = _batch(2, "unbalanced")
    a = _module("class_wise", c, alpha=3.0, beta=None)(x, labels)
    b = _module("class_wise", c, alpha=3.0, beta=3.0)(x, labels)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---------------------------------------------------------------------- engines


@pytest.mark.parametrize("block", [1, 5, 7])
@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_dense_matches_blocked(layout, name, block):
    kw = SETTINGS[name][1]
    x, labels, c = _batch(2, layout)
    dense = _module(name, c, engine="dense", **kw)
    blocked = _module(name, c, engine="blocked", block_size=block, **kw)
    assert_close(
        value_and_grads(lambda: dense(x, labels), [x, dense.W]),
        value_and_grads(lambda: blocked(x, labels), [x, blocked.W]),
        rtol=1e-6,
        atol=1e-9,
    )


@pytest.mark.parametrize("engine", ["dense", "blocked"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_gradcheck(name, engine):
    kw = dict(SETTINGS[name][1])
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 0, 1])
    fn = LOSSES[name][2]

    def f(x, w):
        return fn(x, labels, proxies=w, engine=engine, block_size=2, **kw)

    assert torch.autograd.gradcheck(f, (x, w))


# ---------------------------------------------------------------------- robustness


@settings(deadline=None, max_examples=25)
@given(
    n=st.integers(1, 10),
    c=st.integers(1, 5),
    seed=st.integers(0, 10_000),
    name=st.sampled_from(list(LOSSES)),
    engine=st.sampled_from(["dense", "blocked"]),
)
def test_finite_on_random_input(n, c, seed, name, engine):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, c, (n,), generator=g)
    loss_fn = LOSSES[name][0](c, 4, engine=engine, block_size=2, mf_reg=0.5).double()
    loss = loss_fn(x, labels)
    gx, gw = torch.autograd.grad(loss, [x, loss_fn.W])
    assert torch.isfinite(loss) and torch.isfinite(gx).all() and torch.isfinite(gw).all()


@pytest.mark.parametrize("engine", ["dense", "blocked"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_degenerate_inputs(name, engine):
    x, _ = make_batch(0, "balanced")
    cases = {
        "one class": (torch.zeros(24, dtype=torch.long), 4),
        "all distinct": (torch.arange(24), 24),
        "batch of one": (torch.tensor([3]), 5),
        "one class vector": (torch.zeros(24, dtype=torch.long), 1),
    }
    for case, (labels, c) in cases.items():
        xx = x[: labels.shape[0]].detach().clone().requires_grad_(True)
        loss_fn = _module(name, c, engine=engine, block_size=5, mf_reg=0.3)
        loss = loss_fn(xx, labels)
        gx, gw = torch.autograd.grad(loss, [xx, loss_fn.W])
        assert torch.isfinite(loss), case
        assert torch.isfinite(gx).all() and torch.isfinite(gw).all(), case
        w = loss_fn.W.detach().clone().requires_grad_(True)
        expected = LOSSES[name][1](xx, w, labels, mf_reg=0.3)
        torch.testing.assert_close(loss, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", list(LOSSES))
def test_half_precision_and_large_scales(name):
    x, labels, c = _batch(0, "balanced")
    kw = {"alpha": 500.0, "beta": 1000.0} if name == "class_wise" else {}
    loss_fn = LOSSES[name][0](c, 6, mf_reg=1.0, **kw)
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        xx = x.detach().to(dtype).requires_grad_(True)
        loss = loss_fn(xx, labels)
        assert loss.dtype == dtype and torch.isfinite(loss)
        gx, gw = torch.autograd.grad(loss, [xx, loss_fn.W])
        assert torch.isfinite(gx).all() and torch.isfinite(gw).all()
    assert loss_fn.W.dtype == torch.float32


@pytest.mark.parametrize(
    "name, kwargs, arg",
    [
        ("contrastive", {"pos_margin": float("nan")}, "pos_margin"),
        ("contrastive", {"neg_margin": "x"}, "neg_margin"),
        ("contrastive", {"mf_reg": -1.0}, "mf_reg"),
        ("contrastive", {"mf_power": 0.0}, "mf_power"),
        ("contrastive", {"mf_reg": 1.0, "reduction": "none"}, "reduction"),
        ("class_wise", {"alpha": 0.0}, "alpha"),
        ("class_wise", {"beta": -1.0}, "beta"),
        ("class_wise", {"base": math.inf}, "base"),
        ("class_wise", {"mf_power": -2.0}, "mf_power"),
        ("class_wise", {"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_hyperparameters(name, kwargs, arg):
    kwargs = dict(kwargs)
    c = kwargs.pop("num_classes", 5)
    with pytest.raises(PairLossError, match=arg):
        LOSSES[name][0](c, 6, **kwargs)(torch.randn(4, 6), torch.tensor([0, 1, 0, 1]))


def test_bad_inputs():
    x = torch.randn(4, 6)
    labels = torch.tensor([0, 1, 0, 1])
    with pytest.raises(PairLossError, match="indices_tuple"):
        MeanFieldClassWiseMultiSimilarityLoss(3, 6)(x, labels, (torch.arange(2),) * 3)
    with pytest.raises(PairLossError, match="labels"):
        MeanFieldContrastiveLoss(2, 6)(x, torch.tensor([0, 1, 2, 1]))
    with pytest.raises(PairLossError, match="ref_emb"):
        MeanFieldContrastiveLoss(2, 6)(x, labels, ref_emb=x, ref_labels=labels)
