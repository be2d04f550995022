"""The tail log-sum-exp of the Plackett-Luce losses: torch.logcumsumexp's value and gradient,
and derivatives of every order that stay exact where the incoming gradient is 0 or an item is
absent (-inf), where torch's own second derivative is NaN."""

import math

import torch
import torch.autograd.forward_ad as fwAD

from pairloss.objectives.tail_logsumexp import tail_logsumexp

VALID = torch.tensor(
    [[True, True, True, False, False], [True] * 5, [True, False, True, True, False]]
)
WEIGHTS = torch.tensor([1.0, 0.5, 0.0, 0.2, 0.0], dtype=torch.float64)


def _torch_tail(x):
    return torch.flip(torch.logcumsumexp(torch.flip(x, [-1]), -1), [-1])


def _terms(x, tail=tail_logsumexp):
    """Weighted Plackett-Luce terms with absent items (the shape p-ListMLE gives them)."""
    xp = torch.where(VALID, x, -math.inf)
    return torch.where(VALID, tail(xp) - xp, 0.0) * WEIGHTS


def _x(scale=1.0):
    g = torch.Generator().manual_seed(0)
    return (scale * torch.randn(3, 5, generator=g, dtype=torch.float64)).requires_grad_(True)


def test_value_and_gradient_are_torch_logcumsumexp_at_any_scale():
    for scale in (1.0, 1e4):
        x = _x(scale)
        torch.testing.assert_close(tail_logsumexp(x), _torch_tail(x), rtol=1e-12, atol=0.0)
        (g,) = torch.autograd.grad((tail_logsumexp(x) * WEIGHTS).sum(), x)
        (g_ref,) = torch.autograd.grad((_torch_tail(x) * WEIGHTS).sum(), x)
        torch.testing.assert_close(g, g_ref)


def test_derivatives_of_every_order_with_zero_weights_and_absent_items():
    x = _x()
    assert torch.autograd.gradcheck(_terms, (x,), check_forward_ad=True)
    assert torch.autograd.gradgradcheck(_terms, (x,), check_fwd_over_rev=True)

    def grad_of(x):
        return torch.autograd.grad(_terms(x).sum(), x, create_graph=True)[0]

    assert torch.autograd.gradgradcheck(grad_of, (x,))  # third order


def test_torch_func_and_forward_mode():
    x = _x().detach()

    def loss(x):
        return (tail_logsumexp(x) * WEIGHTS).sum()

    def reference(x):
        return (_torch_tail(x) * WEIGHTS).sum()

    torch.testing.assert_close(torch.func.hessian(loss)(x[1]), torch.func.hessian(reference)(x[1]))
    torch.testing.assert_close(
        torch.func.vmap(torch.func.grad(loss))(x), torch.func.vmap(torch.func.grad(reference))(x)
    )
    tangent = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    with fwAD.dual_level():
        jvp = fwAD.unpack_dual(_terms(fwAD.make_dual(x, tangent)).sum()).tangent
    torch.testing.assert_close(jvp, (torch.func.grad(lambda x: _terms(x).sum())(x) * tangent).sum())
