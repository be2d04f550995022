r"""Tail log-sum-exp with exact derivatives of every order.

.. math::
    y_k = \log \sum_{m \ge k} e^{x_m}

along the last dimension (a reversed ``torch.logcumsumexp``): the normalisers of the
Plackett-Luce likelihood (ListMLE, p-ListMLE). ``torch.logcumsumexp``'s backward takes the log
of the incoming gradient, so its second derivative is NaN wherever that gradient is exactly 0
(a zero position weight, a padded item). Here the derivatives are two linear maps, closed
under differentiation,

.. math::
    W(a)_j = \sum_{k \le j} a_k e^{x_j - y_k}, \qquad V(u)_k = \sum_{j \ge k} u_j e^{x_j - y_k}

(the gradient of ``y`` is ``W`` of the incoming gradient; ``W`` and ``V`` are each other's
transposes, and their derivatives with respect to ``x`` and ``y`` are ``W`` and ``V`` again), each
evaluated in signed log space (every factor ``e^{x_j - y_k}`` is at most 1), so every order is
exact at any scale and a zero gradient is just a zero. ``x = -inf`` marks an absent item: it
adds nothing to any sum (``y_k = -inf`` where every item from ``k`` on is absent) and gets a zero
gradient. The Functions have forward-mode rules and vmap rules too, so ``torch.func``
(``grad``, ``jvp``, ``vmap``, ``hessian``) and ``torch.autograd.forward_ad`` run through them.
"""

from __future__ import annotations

import torch


def _signed_parts(v: torch.Tensor):
    return ((1.0, v.clamp(min=0)), (-1.0, (-v).clamp(min=0)))


def _log_or_neginf(v: torch.Tensor) -> torch.Tensor:
    return torch.where(v > 0, v.log(), torch.full_like(v, -torch.inf))


def _reverse_lcse(v: torch.Tensor) -> torch.Tensor:
    return torch.flip(torch.logcumsumexp(torch.flip(v, [-1]), dim=-1), [-1])


def _down(a: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``W(a)``: ``sum_{k <= j} a_k e^{x_j - y_k}`` (positions with ``y_k = -inf`` add nothing)."""
    dead = torch.isneginf(y)
    out = torch.zeros_like(x)
    for sign, part in _signed_parts(a):
        logs = torch.where(dead, torch.full_like(y, -torch.inf), _log_or_neginf(part) - y)
        out = out + sign * torch.exp(torch.logcumsumexp(logs, dim=-1) + x)
    return out


def _up(u: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``V(u)``: ``sum_{j >= k} u_j e^{x_j - y_k}`` (0 where ``y_k = -inf``)."""
    dead = torch.isneginf(y)
    out = torch.zeros_like(x)
    for sign, part in _signed_parts(u):
        total = _reverse_lcse(_log_or_neginf(part) + x) - torch.where(dead, 0.0, y)
        out = out + sign * torch.exp(total)
    return torch.where(dead, torch.zeros_like(out), out)


def _zero_or(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if t is None else t


class _Down(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(a, x, y):
        return _down(a, x, y)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs, output)
        ctx.save_for_forward(*inputs, output)

    @staticmethod
    def backward(ctx, grad):
        a, x, y, out = ctx.saved_tensors
        v = _Up.apply(grad, x, y)
        return v, grad * out, -a * v

    @staticmethod
    def jvp(ctx, a_t, x_t, y_t):
        a, x, y, out = ctx.saved_tensors
        a_t, x_t, y_t = (_zero_or(t, x) for t in (a_t, x_t, y_t))
        return _Down.apply(a_t - a * y_t, x, y) + x_t * out


class _Up(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(u, x, y):
        return _up(u, x, y)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs, output)
        ctx.save_for_forward(*inputs, output)

    @staticmethod
    def backward(ctx, grad):
        u, x, y, out = ctx.saved_tensors
        w = _Down.apply(grad, x, y)
        return w, u * w, -grad * out

    @staticmethod
    def jvp(ctx, u_t, x_t, y_t):
        u, x, y, out = ctx.saved_tensors
        u_t, x_t, y_t = (_zero_or(t, x) for t in (u_t, x_t, y_t))
        return _Up.apply(u_t + u * x_t, x, y) - y_t * out


class _TailLogSumExp(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return _reverse_lcse(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output)
        ctx.save_for_forward(inputs[0], output)

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        return _Down.apply(grad, x, y)

    @staticmethod
    def jvp(ctx, x_t):
        x, y = ctx.saved_tensors
        return _Up.apply(x_t, x, y)


def tail_logsumexp(x: torch.Tensor) -> torch.Tensor:
    """``y_k = log sum_{m >= k} exp(x_m)`` along the last dimension (see the module docstring);
    ``-inf`` entries are absent items."""
    return _TailLogSumExp.apply(x)
