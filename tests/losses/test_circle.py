"""Circle loss."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from pairloss.errors import PairLossError
from pairloss.losses.metric.circle import CircleLoss, circle
from pairloss.similarity import DotProductSimilarity, LpDistance
from tests.layouts import LAYOUTS, SEEDS, assert_close, make_batch, make_ref, value_and_grads

# ---------------------------------------------------------------- PML oracle


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("with_ref", [False, True])
def test_pml_oracle_labels(seed, layout, with_ref):
    x, y = make_batch(seed, layout)
    if with_ref:
        r, ry = make_ref(seed)
        inputs, args = [x, r], dict(ref_emb=r, ref_labels=ry)
    else:
        inputs, args = [x], {}
    ours = value_and_grads(
        lambda x=x, y=y, args=args: CircleLoss(engine="dense")(x, y, **args), inputs
    )
    theirs = value_and_grads(lambda: pml_losses.CircleLoss()(x, y, **args), inputs)
    assert_close(ours, theirs)


@pytest.mark.parametrize("m, gamma", [(0.25, 256), (0.25, 128), (0.1, 10)])
def test_pml_oracle_hyperparams(m, gamma):
    x, y = make_batch(3, "unbalanced")
    ours = value_and_grads(lambda: circle(x, y, m=m, gamma=gamma), [x])
    theirs = value_and_grads(lambda: pml_losses.CircleLoss(m=m, gamma=gamma)(x, y), [x])
    assert_close(ours, theirs)


def _random_pairs(n: int, seed: int, count: int = 60):
    g = torch.Generator().manual_seed(seed)
    cells = torch.randperm(n * n, generator=g)
    cells = cells[(cells // n) != (cells % n)][:count]
    rows, cols = cells // n, cells % n
    half = count // 3
    return rows[:half], cols[:half], rows[half:], cols[half:]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("engine", ["dense", "blocked"])
def test_pml_oracle_indices_tuple(seed, engine):
    x, y = make_batch(seed, "unbalanced")
    tuples = [
        pml_miners.MultiSimilarityMiner()(x, y),
        pml_miners.TripletMarginMiner(margin=0.2)(x, y),
        _random_pairs(x.shape[0], seed),
    ]
    for t in tuples:
        ours = value_and_grads(lambda t=t: CircleLoss(engine=engine, block_size=5)(x, y, t), [x])
        theirs = value_and_grads(lambda t=t: pml_losses.CircleLoss()(x, y, t), [x])
        assert_close(ours, theirs)


# ---------------------------------------------------------------- dense vs blocked


@pytest.mark.parametrize("block_size", [1, 5, 7])
@pytest.mark.parametrize("with_ref", [False, True])
def test_dense_vs_blocked(block_size, with_ref):
    for seed, layout in ((0, "balanced"), (1, "singletons"), (2, "two_classes")):
        x, y = make_batch(seed, layout, n=23)
        if with_ref:
            r, ry = make_ref(seed)
            inputs, args = [x, r], dict(ref_emb=r, ref_labels=ry)
        else:
            inputs, args = [x], {}
        dense = value_and_grads(
            lambda x=x, y=y, args=args: CircleLoss(engine="dense")(x, y, **args), inputs
        )
        blocked = value_and_grads(
            lambda x=x, y=y, args=args: CircleLoss(engine="blocked", block_size=block_size)(
                x, y, **args
            ),
            inputs,
        )
        assert_close(blocked, dense, rtol=1e-6, atol=1e-10)


def test_reduction_none_dense_vs_blocked():
    x, y = make_batch(1, "unbalanced", n=17)
    w = torch.linspace(0.5, 2.0, 17, dtype=torch.float64)
    dense = value_and_grads(lambda: (CircleLoss(reduction="none")(x, y) * w).sum(), [x])
    blocked = value_and_grads(
        lambda: (CircleLoss(engine="blocked", block_size=4, reduction="none")(x, y) * w).sum(),
        [x],
    )
    assert_close(blocked, dense, rtol=1e-6, atol=1e-10)


# ---------------------------------------------------------------- gradients


def _frozen_reference(x, y, x0, m, gamma):
    """Circle loss with the self-paced weights computed at ``x0`` and frozen (as the paper
    prescribes: they carry no gradient). Mean over non-zero anchors."""
    z = torch.nn.functional.normalize(x, dim=1)
    z0 = torch.nn.functional.normalize(x0, dim=1)
    rows = []
    n = x.shape[0]
    for i in range(n):
        lp, ln = [], []
        for k in range(n):
            if k == i:
                continue
            s, s0 = z[i] @ z[k], float(z0[i] @ z0[k])
            if y[k] == y[i]:
                lp.append(-gamma * max(1 + m - s0, 0.0) * (s - (1 - m)))
            else:
                ln.append(gamma * max(s0 + m, 0.0) * (s - m))
        if lp and ln:
            rows.append(
                torch.nn.functional.softplus(
                    torch.logsumexp(torch.stack(lp), 0) + torch.logsumexp(torch.stack(ln), 0)
                )
            )
    rows = [r for r in rows if r > 0]
    return torch.stack(rows).mean()


@pytest.mark.parametrize("engine", ["dense", "blocked"])
def test_gradient_against_frozen_weight_finite_differences(engine):
    """gradcheck's check, against the loss with its (detached) weights frozen: the analytic
    gradient of Circle loss deliberately ignores the weights' dependence on the scores, so plain
    gradcheck on the loss itself would compare against a different function."""
    g = torch.Generator().manual_seed(7)
    x0 = torch.randn(8, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])
    m, gamma = 0.4, 8.0
    x = x0.clone().requires_grad_(True)
    (ours,) = torch.autograd.grad(
        CircleLoss(m=m, gamma=gamma, engine=engine, block_size=3)(x, y), x
    )
    ref = torch.zeros_like(x0)
    eps = 1e-6
    for idx in range(x0.numel()):
        d = torch.zeros_like(x0).view(-1)
        d[idx] = eps
        d = d.view_as(x0)
        up = _frozen_reference(x0 + d, y, x0, m, gamma)
        down = _frozen_reference(x0 - d, y, x0, m, gamma)
        ref.view(-1)[idx] = (up - down) / (2 * eps)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-8)
    value = CircleLoss(m=m, gamma=gamma, engine=engine, block_size=3)(x0, y)
    assert value.item() == pytest.approx(_frozen_reference(x0, y, x0, m, gamma).item(), rel=1e-12)


@pytest.mark.parametrize("engine", ["dense", "blocked"])
def test_gradient_equals_frozen_reference_autograd(engine):
    """The gradient equals autograd's gradient of the loop reference with frozen weights."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = CircleLoss(m=0.25, gamma=256, engine=engine, block_size=4)
    (ours,) = torch.autograd.grad(loss(x, y), x)
    (ref,) = torch.autograd.grad(_frozen_reference(x, y, x.detach(), 0.25, 256.0), x)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- properties


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 12),
    dim=st.integers(1, 5),
    n_classes=st.integers(1, 5),
    seed=st.integers(0, 10_000),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    gamma=st.sampled_from([1.0, 80.0, 256.0]),
    engine=st.sampled_from(["dense", "blocked"]),
    dot=st.booleans(),
)
def test_property_finite(n, dim, n_classes, seed, scale, gamma, engine, dot):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, dim, generator=g, dtype=torch.float64) * scale).requires_grad_(True)
    y = torch.randint(0, n_classes, (n,), generator=g)
    kwargs = dict(gamma=gamma, engine=engine, block_size=3)
    if dot:
        kwargs["distance"] = DotProductSimilarity(normalize_embeddings=False)
    loss = CircleLoss(**kwargs)(x, y)
    (grad,) = torch.autograd.grad(loss, [x], allow_unused=True)
    assert torch.isfinite(loss)
    assert grad is None or bool(torch.isfinite(grad).all())


# ---------------------------------------------------------------- degenerate input


@pytest.mark.parametrize("engine", ["dense", "blocked"])
def test_degenerate(engine):
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    cases = (
        (x, torch.zeros(6, dtype=torch.long)),  # one class: no negatives
        (x, torch.arange(6)),  # all distinct: no positives
        (x[:1], torch.zeros(1, dtype=torch.long)),  # batch of one
    )
    for xs, ys in cases:
        loss = CircleLoss(engine=engine, block_size=4)(xs, ys)
        assert loss.item() == 0.0
        (grad,) = torch.autograd.grad(loss, [x], allow_unused=True)
        assert grad is None or bool((grad == 0).all())
        assert pml_losses.CircleLoss()(xs.detach(), ys).item() == 0.0


# ---------------------------------------------------------------- half precision


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("engine", ["dense", "blocked"])
def test_half_precision_gamma_256(dtype, engine):
    g = torch.Generator().manual_seed(0)
    x32 = torch.randn(48, 16, generator=g)
    y = torch.randint(0, 4, (48,), generator=g)
    loss = CircleLoss(m=0.25, gamma=256, engine=engine, block_size=7)
    xh = x32.to(dtype).requires_grad_(True)
    value = loss(xh, y)
    (grad,) = torch.autograd.grad(value, xh)
    assert value.dtype == dtype
    assert torch.isfinite(value) and bool(torch.isfinite(grad).all())
    # the fp32 result on the same (rounded) inputs
    xr = xh.detach().float().requires_grad_(True)
    ref = loss(xr, y)
    (ref_grad,) = torch.autograd.grad(ref, xr)
    tol = 1e-2 if dtype == torch.float16 else 2e-2
    torch.testing.assert_close(value.float(), ref, rtol=tol, atol=tol)
    torch.testing.assert_close(grad.float(), ref_grad, rtol=tol, atol=tol * ref_grad.abs().max())


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        (dict(gamma=0), "gamma"),
        (dict(gamma=-1), "gamma"),
        (dict(gamma=float("inf")), "gamma"),
        (dict(m="a"), "m"),
        (dict(m=float("nan")), "m"),
        (dict(distance=LpDistance()), "distance"),
    ],
)
def test_bad_arguments(kwargs, arg):
    with pytest.raises(PairLossError, match=arg):
        CircleLoss(**kwargs)


def test_functional_matches_module():
    x, y = make_batch(2, "balanced")
    assert circle(x, y, m=0.3, gamma=64).item() == CircleLoss(m=0.3, gamma=64)(x, y).item()
