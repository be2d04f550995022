"""Neighbourhood component analysis row objective (Goldberger et al., "Neighbourhood Components
Analysis", NeurIPS 2004), as pytorch-metric-learning's ``NCALoss``."""

from __future__ import annotations

import torch

from ..relations import BlockPairs
from .pair_margins import positive_logsumexp
from .terms import RowScale, RowTerms, masked_logsumexp


def nca_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    softmax_scale: float,
    is_distance: bool = True,
    weights: torch.Tensor | None = None,
) -> list[RowTerms]:
    """Per anchor i: the negative log of the softmax probability mass of its positives among
    all its candidates,

        -log( sum_{p in P(i)} e^{z_ip} / sum_{c in P(i) u N(i)} e^{z_ic} ),  z = t * (-d)

    (similarities enter as z = t * s), times the row's weight ``weights`` [b] when given. One
    term per anchor with a positive; an anchor without one gives no term (its probability mass
    is 0, which pytorch-metric-learning drops)."""
    z = softmax_scale * (-s if is_distance else s)
    has_pos = pos.any(dim=1)
    loss = masked_logsumexp(z, pos | neg) - masked_logsumexp(z, pos)
    if weights is not None:
        loss = loss * weights
    return [RowTerms.per_anchor(loss, has_pos)]


def nca_fused(
    s: torch.Tensor,
    pairs: BlockPairs,
    grad: torch.Tensor | None,
    scale: RowScale | None,
    coef: float,
    weights: torch.Tensor | None = None,
) -> list[RowTerms]:
    """:func:`nca_rows` (with z = ``coef`` * s) on the sparse form of a block, with dL/ds
    written into ``grad``: one in-place exponential pass over the row (the self cell hidden)
    gives the softmax over all candidates, the positives' log-sum-exp comes from their list;
    dL/dz is the softmax over all cells minus the softmax over the positives."""
    rows = pairs.pos_rows
    work = grad if grad is not None else torch.empty_like(s)
    torch.mul(s, coef, out=work).view(-1).index_fill_(0, pairs.void_flat, float("-inf"))
    top = work.amax(dim=1)
    top = torch.where(torch.isfinite(top), top, 0.0)
    total = work.sub_(top[:, None]).exp_().sum(dim=1)
    has = pairs.n_pos > 0
    zp = coef * s.view(-1)[pairs.pos_flat]
    lse_pos, ep, sum_pos, _ = positive_logsumexp(zp, rows, pairs.n_pos)
    lse_all = torch.log(torch.where(total > 0, total, 1.0)) + top
    loss = torch.where(has, lse_all - lse_pos, 0.0)
    if weights is not None:
        loss = loss * weights
    if grad is not None:
        g = torch.where(has, scale(0), 0.0)
        if weights is not None:
            g = g * weights
        work.mul_((g * coef / torch.where(total > 0, total, 1.0))[:, None])
        work.view(-1).index_add_(0, pairs.pos_flat, -(g * coef / sum_pos)[rows] * ep)
    return [RowTerms.per_anchor(loss, has)]
