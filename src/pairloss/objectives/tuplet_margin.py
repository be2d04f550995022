"""Tuplet margin row objective (Yu & Tao, "Deep Metric Learning with Tuplet Margin Loss", ICCV
2019), as pytorch-metric-learning's ``TupletMarginLoss``."""

from __future__ import annotations

import torch

from ..relations import BlockPairs
from .margin_softmax import _safe_acos
from .pair_margins import negative_logsumexp_
from .terms import RowScale, RowTerms, masked_logsumexp, segment_sum


def shifted_positive(cos: torch.Tensor, margin: float) -> torch.Tensor:
    """cos(theta - margin) of a positive pair's cosine (theta = acos(cos); a finite gradient at
    cos = +-1)."""
    return torch.cos(_safe_acos(cos) - margin)


def softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + e^x), exact and overflow-free."""
    return x.clamp_min(0) + torch.log1p(torch.exp(-x.abs()))


def tuplet_margin_rows(
    s: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, margin: float, scale: float
) -> list[RowTerms]:
    """One term per positive pair (i, p), in cells:

        log(1 + sum_{n in N(i)} e^{scale (s_in - cos(theta_ip - margin))})
          = softplus(LSE_n(scale s_in) - scale cos(theta_ip - margin)),

    0 for a row without negatives. ``s`` are cosines, ``margin`` in radians."""
    has_neg = neg.any(dim=1, keepdim=True)
    lse = masked_logsumexp(scale * s, neg).unsqueeze(1)
    cells = torch.where(pos & has_neg, softplus(lse - scale * shifted_positive(s, margin)), 0.0)
    n_pos = pos.sum(dim=1, dtype=s.dtype)
    return [
        RowTerms(
            cells.sum(dim=1),
            n_pos,
            lambda: (cells.detach() > 0).sum(dim=1).to(s.dtype),
            cells=(cells, pos),
        )
    ]


def tuplet_margin_fused(
    s: torch.Tensor,
    pairs: BlockPairs,
    grad: torch.Tensor | None,
    scale: RowScale | None,
    margin: float,
    scale_factor: float,
) -> list[RowTerms]:
    """:func:`tuplet_margin_rows` on the sparse form of a block, with dL/ds written into
    ``grad``: the negatives' log-sum-exp L in one in-place pass, then per positive cell
    softplus(L - s_f c_p) with c_p = cos(theta_p - margin) (its slope by autograd on the few
    positive cells). A negative cell's gradient is s_f softmax_n times the row's sum of the
    positives' sigmoid(L - s_f c_p)."""
    b, rows = s.shape[0], pairs.pos_rows
    work = grad if grad is not None else torch.empty_like(s)
    lse, total, has_neg = negative_logsumexp_(work.copy_(s), pairs, scale_factor)
    with torch.enable_grad():
        sp = s.view(-1)[pairs.pos_flat].detach().requires_grad_(grad is not None)
        c = shifted_positive(sp, margin)
        dc = torch.autograd.grad(c.sum(), sp)[0] if grad is not None else None
    x = lse[rows] - scale_factor * c.detach()
    live = has_neg[rows]
    term = torch.where(live, softplus(x), 0.0)
    values = segment_sum(term, rows, b)
    if grad is not None:
        g = scale(0)
        sig = torch.where(live, torch.sigmoid(x), 0.0)
        weight = segment_sum(sig, rows, b)
        work.mul_((g * weight * scale_factor / total)[:, None])
        work.view(-1).index_copy_(0, pairs.pos_flat, -g[rows] * scale_factor * sig * dc)
    dtype = s.dtype
    return [
        RowTerms(values, pairs.n_pos.to(dtype), lambda: segment_sum((term > 0).to(dtype), rows, b))
    ]
