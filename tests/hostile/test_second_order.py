"""Second-order gradients, generated from the catalogue: the dense engine differentiates every
loss to second order exactly (``gradgradcheck`` in float64, with respect to every floating input
and every learnable parameter); the blocked engine either refuses ``create_graph=True``,
forward-mode AD and ``torch.func`` transforms with a PairLossError naming the engine, or gives
exactly what the dense engine gives."""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call

from pairloss import PairLossError
from pairloss.catalogue import LOSSES, example

from .loss_cases import build, supports_engine
from .mutations import differentiable

ENTRIES = {e.name: e for e in LOSSES}
ENGINES = ("auto", "dense", "blocked")


def _circle_reference(s, pos, neg, m, gamma):
    """Circle loss rows written from the paper (weights detached: a stop-gradient)."""
    ap = torch.relu(1 + m - s.detach())
    an = torch.relu(s.detach() + m)
    lp = torch.where(pos, -gamma * ap * (s - 1 + m), -torch.inf).logsumexp(1)
    ln = torch.where(neg, gamma * an * (s - m), -torch.inf).logsumexp(1)
    valid = pos.any(1) & neg.any(1)
    return torch.nn.functional.softplus(torch.where(valid, lp + ln, -torch.inf))


def _circle(x, y, loss):
    xn = x / x.norm(dim=1, keepdim=True)
    same = y[:, None] == y[None, :]
    eye = torch.eye(len(y), dtype=torch.bool)
    rows = _circle_reference(xn @ xn.T, same & ~eye, ~same, loss.m, loss.gamma)
    return rows.sum() / max(1, int((rows > 0).sum()))


def _proxy_circle(x, y, loss, w):
    xn, wn = x / x.norm(dim=1, keepdim=True), w / w.norm(dim=1, keepdim=True)
    pos = y[:, None] == torch.arange(w.shape[0])[None, :]
    return _circle_reference(xn @ wn.T, pos, ~pos, loss.m, loss.gamma).mean()


def _unit(x):
    return x / x.norm(dim=1, keepdim=True)


def _weighted_ce(z, w):
    return -((w * z.log_softmax(1)).sum(1) / w.sum(1)).mean()


def _cwcl(u, y, loss, v, w):
    """CWCL: weights from the frozen tower's own cosine, a constant of the gradient."""
    un, vn = _unit(u), _unit(v)
    weights = (1 + un.detach() @ un.detach().T) / 2
    z = w.exp() * un @ vn.T
    return (_weighted_ce(z, weights) + _weighted_ce(z.T, weights.T)) / 2


def _hardness_weighted(q, y, loss, d):
    """InfoNCE whose negative logits carry beta * sg(s)."""
    s = _unit(q) @ _unit(d).T
    eye = torch.eye(len(q), dtype=torch.bool)
    z = loss.scale * s + torch.where(eye, 0.0, loss.beta * s.detach())
    return torch.nn.functional.cross_entropy(z, torch.arange(len(q)))


def _isogclr(a, y, loss, b):
    """iSogCLR's surrogate at the first step (moving averages = batch means), weights held
    constant."""
    tau = loss.temperature
    n = len(a)
    eye = torch.eye(n, dtype=torch.bool)
    total = 0.0
    for x, c in ((_unit(a), _unit(b)), (_unit(b), _unit(a))):
        sims = torch.cat([x @ c.T, x @ x.T], dim=1)
        neg = ~torch.cat([eye, eye], dim=1)
        e = torch.where(neg, (sims.detach() / tau).exp(), 0.0)
        u = e.sum(1, keepdim=True) / (2 * (n - 1))
        rows = -(x * c).sum(1) + (e / u * torch.where(neg, sims, 0.0)).sum(1) / (2 * (n - 1))
        total = total + rows.mean()
    return total


def _dynamic_soft_margin(x, y, loss):
    """Dynamic soft margin at the first call (the histogram is the batch's): the CDF weights of
    the triplets' x = d_ap - d_an, from a histogram with linear interpolation between bins,
    are a statistic without gradient (Zhang & Rusinkiewicz, ICCV 2019, eq. 4-6)."""
    xn = _unit(x)
    same = y[:, None] == y[None, :]
    a, p, n = torch.where(
        (same & ~torch.eye(len(y), dtype=torch.bool))[:, :, None] & ~same[:, None, :]
    )
    m = (xn[a] - xn[p]).norm(dim=1) - (xn[a] - xn[n]).norm(dim=1)
    t = (m.detach() - loss.min_val) / loss.delta
    low = torch.floor(t).long().clamp(0, loss.num_bins - 1)
    frac = t - torch.floor(t)
    hist = torch.zeros(loss.num_bins + 1, dtype=x.dtype)
    hist.index_add_(0, low, 1 - frac).index_add_(0, low + 1, frac)
    hist = hist[: loss.num_bins] / hist[: loss.num_bins].sum()
    return (torch.cumsum(hist, 0)[low] * m).mean()


#: Losses whose definition holds some weights constant in the gradient (a stop-gradient): their
#: second derivatives hold them constant too, so they are checked against the formula written
#: with ``detach()`` (the gradient of the gradient is then not the derivative of the gradient,
#: which ``gradgradcheck`` measures numerically). Each is called with the first differentiable
#: input, the labels (None without), the loss, and the other differentiable inputs and
#: learnable parameters.
STOP_GRADIENT = {
    "circle": _circle,
    "proxy_circle": _proxy_circle,
    "cwcl": _cwcl,
    "hardness_weighted_infonce": _hardness_weighted,
    "isogclr": _isogclr,
    "dynamic_soft_margin": _dynamic_soft_margin,
}


def _inputs(entry):
    ex = example(entry, n=6, dim=3, seed=1)
    return ex, list(differentiable(ex.call))


def _as_function(loss, call, floating):
    names = [n for n, p in loss.named_parameters() if p.requires_grad]

    def fn(*tensors):
        args = dict(call)
        args.update(zip(floating, tensors[: len(floating)]))
        params = dict(zip(names, tensors[len(floating) :]))
        return functional_call(loss, params, (), args)

    leaves = [call[k].detach().clone().requires_grad_(True) for k in floating]
    leaves += [
        p.detach().double().clone().requires_grad_(True)
        for n, p in loss.named_parameters()
        if p.requires_grad
    ]
    return fn, leaves


@pytest.mark.parametrize("name", [e.name for e in LOSSES])
def test_dense_second_order_is_exact(name):
    entry = ENTRIES[name]
    ex, floating = _inputs(entry)
    extra = {"engine": "dense"} if supports_engine(entry, ex.init) else {}
    loss = build(entry, ex.init, **extra).double()
    fn, leaves = _as_function(loss, ex.call, floating)
    if name in STOP_GRADIENT:
        x = leaves[0]
        y = ex.call.get("labels")
        ref_args = (x, y, loss) + tuple(leaves[1:])
        (g,) = torch.autograd.grad(fn(*leaves), x, create_graph=True)
        (g_ref,) = torch.autograd.grad(STOP_GRADIENT[name](*ref_args), x, create_graph=True)
        torch.testing.assert_close(g, g_ref)
        v = torch.randn_like(x)
        (h,) = torch.autograd.grad((g * v).sum(), x)
        (h_ref,) = torch.autograd.grad((g_ref * v).sum(), x)
        torch.testing.assert_close(h, h_ref)
        return
    # an input the loss holds constant by definition (a frozen tower, given weights, a
    # stop-gradient target) has no first-order gradient, so none of higher order either; the
    # numerical derivative of the other gradients with respect to it is not what autograd
    # differentiates, so the check runs on the inputs that receive a gradient
    grads = torch.autograd.grad(fn(*leaves), leaves, allow_unused=True)
    live = [i for i, g in enumerate(grads) if g is not None]

    def fn_live(*xs):
        full = list(leaves)
        for i, x in zip(live, xs):
            full[i] = x
        return fn(*full)

    assert torch.autograd.gradgradcheck(
        fn_live, [leaves[i] for i in live], atol=1e-5, rtol=1e-4, fast_mode=True
    )


ENGINE_LOSSES = [e.name for e in LOSSES if supports_engine(e, example(e).init)]


def _reductions(name):
    """The default reduction, and 'none' where the loss has it."""
    out = [None]
    try:
        build(ENTRIES[name], dict(example(ENTRIES[name]).init, reduction="none"))
        out.append("none")
    except (TypeError, PairLossError):
        pass
    return out


def _refused_or_equal(run_blocked, run_dense) -> None:
    """The blocked engine either refuses (a PairLossError naming the engine) or gives what the
    dense engine gives: silently different derivatives are the failure."""
    try:
        got = run_blocked()
    except PairLossError as err:
        assert "engine" in str(err), str(err)
        return
    torch.testing.assert_close(got, run_dense())


@pytest.mark.parametrize("name, reduction", [(n, r) for n in ENGINE_LOSSES for r in _reductions(n)])
def test_blocked_second_order_is_refused_or_exact(name, reduction):
    entry = ENTRIES[name]
    ex, floating = _inputs(entry)
    init = dict(ex.init) if reduction is None else dict(ex.init, reduction=reduction)
    v = torch.randn(ex.call[floating[0]].shape, generator=torch.Generator().manual_seed(3))

    def hessian_vector(engine):
        loss = build(entry, init, engine=engine, block_size=4).double()
        x = ex.call[floating[0]].detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(
            loss(**dict(ex.call, **{floating[0]: x})).sum(), x, create_graph=True
        )
        (h,) = torch.autograd.grad((g * v).sum(), x, allow_unused=True)
        return torch.zeros_like(x) if h is None else h

    _refused_or_equal(lambda: hessian_vector("blocked"), lambda: hessian_vector("dense"))


@pytest.mark.parametrize("name", ENGINE_LOSSES)
def test_blocked_transforms_and_forward_mode_are_refused_or_exact(name):
    entry = ENTRIES[name]
    ex, floating = _inputs(entry)
    key = floating[0]
    x0 = ex.call[key]
    tangent = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4), dtype=x0.dtype)

    def run(loss, x):
        return loss(**dict(ex.call, **{key: x})).sum()

    losses = {e: build(entry, ex.init, engine=e, block_size=4).double() for e in ENGINES}

    def func_grad(engine):
        return torch.func.grad(lambda x: run(losses[engine], x))(x0)

    def forward_mode(engine):
        with fwAD.dual_level():
            out = run(losses[engine], fwAD.make_dual(x0, tangent))
            return fwAD.unpack_dual(out).tangent

    _refused_or_equal(lambda: func_grad("blocked"), lambda: func_grad("dense"))
    _refused_or_equal(lambda: forward_mode("blocked"), lambda: forward_mode("dense"))
    # engine="auto" differentiates under torch.func (on the dense engine)
    torch.testing.assert_close(func_grad("auto"), func_grad("dense"))
