"""UNPG (unified negative pair generation) on CosFace / ArcFace."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pairloss.errors import PairLossError
from pairloss.losses.proxy.margin_softmax import ArcFaceLoss, CosFaceLoss
from pairloss.losses.proxy.unpg import UNPGLoss, _order_statistics, unpg
from tests.layouts import LAYOUTS, SEEDS, assert_close, make_batch, value_and_grads

# the submodule (``pairloss.losses.proxy.unpg`` as an attribute is the functional form)
unpg_module = importlib.import_module("pairloss.losses.proxy.unpg")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _batch(seed, layout, n=24, dim=6, extra_classes=2):
    """Embeddings, labels remapped to 0..K-1, and C = K + extra_classes."""
    x, labels = make_batch(seed, layout, n=n, dim=dim)
    labels = torch.unique(labels, return_inverse=True)[1]
    return x, labels, int(labels.max()) + 1 + extra_classes


def _module(c, d, seed=0, **kw):
    torch.manual_seed(seed)
    return UNPGLoss(c, d, **kw).double()


def reference(x, w, labels, base="cosface", margin=None, scale=64.0, wisk=1.5, mlpg=True):
    """Loop-based UNPG, written from the paper's formula and the official filter rule."""
    if margin is None:
        margin = 0.35 if base == "cosface" else 28.6
    m = margin if base == "cosface" else math.radians(margin)
    b, c = x.shape[0], w.shape[0]
    xn = [x[i] / x[i].norm() for i in range(b)]
    wn = [w[k] / w[k].norm() for k in range(c)]
    ys = [int(v) for v in labels]
    negs = [torch.dot(xn[j], xn[k]) for j in range(b) for k in range(j + 1, b) if ys[j] != ys[k]]
    kept = []
    if mlpg and negs:
        if wisk is None:
            kept = negs
        else:
            t = sorted(float(v.detach()) for v in negs)
            q1, q3 = t[int(0.25 * len(t))], t[int(0.75 * len(t))]
            lo, hi = q1 - wisk * (q3 - q1), q3 + wisk * (q3 - q1)
            kept = [v for v in negs if lo <= float(v.detach()) <= hi]
    total = x.new_zeros(())
    for i in range(b):
        logits = []
        for k in range(c):
            cos = torch.dot(xn[i], wn[k])
            if k == ys[i]:
                if base == "cosface":
                    psi = cos - m
                else:
                    theta = torch.acos(cos)
                    psi = (
                        torch.cos(theta + m)
                        if float(theta.detach()) <= math.pi - m
                        else (cos - m * math.sin(m))
                    )
                target = scale * psi
                logits.append(target)
            else:
                logits.append(scale * cos)
        logits += [scale * v for v in kept]
        total = total + torch.logsumexp(torch.stack(logits), 0) - target
    return total / b


# ---------------------------------------------------------------------- reference


@pytest.mark.parametrize("base", ["cosface", "arcface"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", SEEDS)
def test_matches_loop_reference(seed, layout, base):
    x, labels, c = _batch(seed, layout)
    expected = None
    for engine, block in (("dense", None), ("blocked", 7)):
        loss_fn = _module(c, 6, seed, base=base, engine=engine, block_size=block)
        ours = value_and_grads(lambda f=loss_fn: f(x, labels), [x, loss_fn.W])
        if expected is None:
            w = loss_fn.W.detach().clone().requires_grad_(True)
            expected = value_and_grads(lambda w=w: reference(x, w, labels, base), [x, w])
        assert_close(ours, expected)


@pytest.mark.parametrize("wisk", [None, 0.0, 0.5, 3.0])
def test_matches_loop_reference_for_whiskers(wisk):
    x, labels, c = _batch(1, "unbalanced")
    loss_fn = _module(c, 6, 1, wisk=wisk, margin=0.2, scale=10.0)
    ours = value_and_grads(lambda: loss_fn(x, labels), [x, loss_fn.W])
    w = loss_fn.W.detach().clone().requires_grad_(True)
    expected = value_and_grads(
        lambda: reference(x, w, labels, wisk=wisk, margin=0.2, scale=10.0), [x, w]
    )
    assert_close(ours, expected)


def test_filter_drops_outliers():
    """With wisk=0 only the interquartile pairs are kept: the loss differs from no filter."""
    x, labels, c = _batch(2, "balanced")
    full = _module(c, 6, wisk=None, scale=8.0)(x, labels)
    iqr = _module(c, 6, wisk=0.0, scale=8.0)(x, labels)
    assert float(iqr.detach()) < float(full.detach())
    huge = _module(c, 6, wisk=1e6, scale=8.0)(x, labels)
    torch.testing.assert_close(huge, full, rtol=1e-12, atol=0)


# ---------------------------------------------------------------------- identities


@pytest.mark.parametrize("engine", ["dense", "blocked"])
@pytest.mark.parametrize("base", ["cosface", "arcface"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_without_mlpg_equals_base_loss(layout, base, engine):
    x, labels, c = _batch(0, layout)
    ours_fn = _module(c, 6, base=base, mlpg=False, engine=engine, block_size=5)
    cls = CosFaceLoss if base == "cosface" else ArcFaceLoss
    base_fn = cls(c, 6, engine=engine, block_size=5).double()
    with torch.no_grad():
        base_fn.W.copy_(ours_fn.W.T)  # the base losses keep pytorch-metric-learning's [D, C]
    idx = (torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7]), torch.tensor([8, 9, 10, 11]))
    for tup in (None, idx):
        ours = value_and_grads(lambda t=tup: ours_fn(x, labels, t), [x, ours_fn.W])
        theirs = value_and_grads(lambda t=tup: base_fn(x, labels, t), [x, base_fn.W])
        theirs[1][1] = theirs[1][1].T
        assert_close(ours, theirs, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("base", ["cosface", "arcface"])
def test_single_class_batch_equals_base_loss(base):
    """No negative pair in the batch: no MLPG term."""
    x, _ = make_batch(3, "balanced")
    labels = torch.full((24,), 2)
    ours_fn = _module(4, 6, base=base)
    cls = CosFaceLoss if base == "cosface" else ArcFaceLoss
    base_fn = cls(4, 6).double()
    with torch.no_grad():
        base_fn.W.copy_(ours_fn.W.T)  # the base losses keep pytorch-metric-learning's [D, C]
    theirs = value_and_grads(lambda: base_fn(x, labels), [x, base_fn.W])
    theirs[1][1] = theirs[1][1].T
    assert_close(value_and_grads(lambda: ours_fn(x, labels), [x, ours_fn.W]), theirs, rtol=1e-12)


def test_functional_matches_module():
    x, labels, c = _batch(0, "balanced")
    loss_fn = _module(c, 6, base="arcface", margin=20.0, scale=30.0, wisk=1.0)
    w = loss_fn.W.detach().clone().requires_grad_(True)
    assert_close(
        value_and_grads(lambda: loss_fn(x, labels), [x, loss_fn.W]),
        value_and_grads(
            lambda: unpg(x, labels, proxies=w, base="arcface", margin=20.0, scale=30.0, wisk=1.0),
            [x, w],
        ),
        rtol=1e-12,
    )


# ---------------------------------------------------------------------- engines


@pytest.mark.parametrize("block", [1, 5, 7])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_dense_matches_blocked(layout, block):
    x, labels, c = _batch(2, layout)
    dense = _module(c, 6, engine="dense")
    blocked = _module(c, 6, engine="blocked", block_size=block)
    weights = (torch.arange(12), torch.arange(12, 24), torch.arange(12))
    for tup in (None, weights):
        assert_close(
            value_and_grads(lambda t=tup: dense(x, labels, t), [x, dense.W]),
            value_and_grads(lambda t=tup: blocked(x, labels, t), [x, blocked.W]),
            rtol=1e-6,
            atol=1e-9,
        )


@pytest.mark.parametrize("engine", ["dense", "blocked"])
def test_radix_selection_path(monkeypatch, engine):
    """The exact radix selection (used for very large batches) gives the gathered quartiles."""
    x, labels, c = _batch(1, "unbalanced")
    loss_fn = _module(c, 6, engine=engine, block_size=5, wisk=0.5)
    gathered = value_and_grads(lambda: loss_fn(x, labels), [x, loss_fn.W])
    monkeypatch.setattr(unpg_module, "GATHER_MAX_PAIRS", 0)
    radix = value_and_grads(lambda: loss_fn(x, labels), [x, loss_fn.W])
    assert_close(radix, gathered, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_order_statistics(dtype):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(1000, generator=g, dtype=dtype)
    v = torch.cat([v, v[:50], torch.tensor([0.0, -0.0, 1.0, -1.0], dtype=dtype)])
    chunks = list(v.split(97))
    ks = [0, 1, 250, 523, len(v) - 1]
    got = _order_statistics(lambda: iter(chunks), ks, dtype)
    expected = torch.sort(v).values
    for k, q in zip(ks, got):
        assert float(q) == float(expected[k])
        assert q.dtype == dtype


@pytest.mark.parametrize("engine", ["dense", "blocked"])
@pytest.mark.parametrize("base", ["cosface", "arcface"])
def test_gradcheck(engine, base):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 3, 1])

    def f(x, w):
        return unpg(x, labels, proxies=w, base=base, scale=4.0, wisk=0.5, engine=engine,
                    block_size=3)  # fmt: skip

    assert torch.autograd.gradcheck(f, (x, w))


# ---------------------------------------------------------------------- robustness


@settings(deadline=None, max_examples=25)
@given(
    n=st.integers(1, 10),
    c=st.integers(1, 4),
    seed=st.integers(0, 10_000),
    base=st.sampled_from(["cosface", "arcface"]),
    engine=st.sampled_from(["dense", "blocked"]),
)
def test_finite_on_random_input(n, c, seed, base, engine):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, c, (n,), generator=g)
    loss_fn = UNPGLoss(c, 5, base=base, engine=engine, block_size=3).double()
    loss = loss_fn(x, labels)
    gx, gw = torch.autograd.grad(loss, [x, loss_fn.W])
    assert torch.isfinite(loss) and torch.isfinite(gx).all() and torch.isfinite(gw).all()


@pytest.mark.parametrize("engine", ["dense", "blocked"])
def test_degenerate_inputs(engine):
    x, _ = make_batch(0, "balanced")
    cases = {
        "one class": torch.zeros(24, dtype=torch.long),
        "all distinct": torch.arange(24),
        "batch of one": torch.tensor([3]),
    }
    for name, labels in cases.items():
        xx = x[: labels.shape[0]].detach().clone().requires_grad_(True)
        loss_fn = _module(24, 6, engine=engine, block_size=5)
        loss = loss_fn(xx, labels)
        gx, gw = torch.autograd.grad(loss, [xx, loss_fn.W])
        assert torch.isfinite(loss), name
        assert torch.isfinite(gx).all() and torch.isfinite(gw).all(), name


def test_half_precision_and_large_scale():
    x, labels, c = _batch(0, "balanced")
    loss_fn = UNPGLoss(c, 6, scale=1000.0)
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        xx = x.detach().to(dtype).requires_grad_(True)
        loss = loss_fn(xx, labels)
        assert loss.dtype == dtype and torch.isfinite(loss)
        (gx,) = torch.autograd.grad(loss, [xx])
        assert torch.isfinite(gx).all()
    assert loss_fn.W.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"base": "sphereface"}, "base"),
        ({"margin": -0.1}, "margin"),
        ({"base": "arcface", "margin": 200.0}, "margin"),
        ({"scale": 0.0}, "scale"),
        ({"wisk": -1.0}, "wisk"),
        ({"wisk": float("nan")}, "wisk"),
        ({"mlpg": "yes"}, "mlpg"),
    ],
)
def test_bad_hyperparameters(kwargs, name):
    with pytest.raises(PairLossError, match=name):
        UNPGLoss(5, 6, **kwargs)


def test_bad_inputs():
    loss_fn = UNPGLoss(3, 4)
    x = torch.randn(5, 4)
    with pytest.raises(PairLossError, match="labels"):
        loss_fn(x, torch.tensor([0, 1, 2, 3, 0]))
    with pytest.raises(PairLossError, match="ref_emb"):
        loss_fn(x, torch.zeros(5, dtype=torch.long), ref_emb=x, ref_labels=torch.zeros(5))


@pytest.mark.parametrize("engine", ["dense", "blocked"])
def test_frozen_encoder_keeps_the_in_batch_term(engine):
    """Embeddings that need no gradient (torch.no_grad(), a frozen encoder) give the same loss
    and the same class-weight gradient: the blocked engine must not take the base loss's fused
    form, which knows only the class term."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 8, generator=g), torch.arange(40) % 10
    torch.manual_seed(1)
    loss_fn = UNPGLoss(10, 8, engine=engine, block_size=7)
    x_grad = x.clone().requires_grad_(True)
    full = loss_fn(x_grad, y)
    (w_full,) = torch.autograd.grad(full, [loss_fn.W])
    frozen = loss_fn(x, y)
    (w_frozen,) = torch.autograd.grad(frozen, [loss_fn.W])
    with torch.no_grad():
        no_grad = loss_fn(x, y)
    base = CosFaceLoss(10, 8, engine=engine, block_size=7)
    base.proxy_weights().data.copy_(loss_fn.proxy_weights().data)
    assert float(frozen.detach()) > float(base(x, y).detach()) + 1.0  # the in-batch negatives
    torch.testing.assert_close(frozen, full.detach())
    torch.testing.assert_close(no_grad, full.detach())
    torch.testing.assert_close(w_frozen, w_full)


def test_a_subclass_that_changes_the_objective_loses_the_fused_form():
    from pairloss.losses.base import fused_form_applies

    class Shifted(CosFaceLoss):
        def proxy_objective(self, s, pos, neg, start, end, weights, extra):
            return super().proxy_objective(s + 0.1, pos, neg, start, end, weights, extra)

    assert fused_form_applies(CosFaceLoss(3, 4), ("proxy_fused_form",), ("proxy_objective",))
    shifted = Shifted(3, 4)
    assert not fused_form_applies(shifted, ("proxy_fused_form",), ("proxy_objective",))
    x, y = torch.randn(9, 4), torch.arange(9) % 3
    dense = Shifted(3, 4, engine="dense")
    blocked = Shifted(3, 4, engine="blocked", block_size=4)
    blocked.W.data.copy_(dense.W.data)
    with torch.no_grad():
        torch.testing.assert_close(blocked(x, y), dense(x, y))
