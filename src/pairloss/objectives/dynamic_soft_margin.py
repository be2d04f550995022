"""Dynamic soft margin pieces (Zhang & Rusinkiewicz, "Learning Local Descriptors with a
CDF-Based Dynamic Soft Margin", ICCV 2019), as pytorch-metric-learning's
``DynamicSoftMarginLoss``: a histogram of the triplets' d_ap - d_an kept across calls, whose
cumulative distribution weighs each triplet."""

from __future__ import annotations

import torch

from .terms import RowTerms, composable

# at most this many (positive, negative) pairs of a block handled at once
SLAB_ELEMENTS = 1 << 22


def bins(x: torch.Tensor, min_val: float, delta: float, num_bins: int):
    """(bin index clamped to [0, num_bins - 1], fraction within the bin) of values ``x``."""
    t = (x - min_val) / delta
    return torch.floor(t).long().clamp(0, num_bins - 1), torch.frac(t)


def _triplet_slabs(s: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor):
    """Yield ``(rows, x, keep)`` per slab of a block: x = d_ap - d_an [b, c, N] for a few
    positives per row (``rows`` their columns [b, c]), ``keep`` marking real triplets."""
    from .soft_rank import chosen_columns

    idx, valid = chosen_columns(pos)
    b, n = s.shape
    step = max(1, SLAB_ELEMENTS // max(1, b * n))
    for j0 in range(0, idx.shape[1], step):
        cols = idx[:, j0 : j0 + step]
        x = s.gather(1, cols)[:, :, None] - s[:, None, :]
        keep = valid[:, j0 : j0 + step, None] & neg[:, None, :]
        yield cols, x, keep


def add_triplet_histogram_(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    min_val: float,
    delta: float,
    num_bins: int,
    lower: torch.Tensor,
    upper: torch.Tensor,
    count: torch.Tensor,
) -> None:
    """Add a block's triplets to the raw histogram parts (in place, no gradient): each value
    puts 1 - frac on its bin (``lower``) and frac on the next (``upper``, one longer)."""
    for _, x, keep in _triplet_slabs(s, pos, neg):
        idx, frac = bins(x[keep], min_val, delta, num_bins)
        lower.scatter_add_(0, idx, (1 - frac).to(lower.dtype))
        upper.scatter_add_(0, idx + 1, frac.to(upper.dtype))
        count += keep.sum()


def _cdf_weighted_sums(s, pos, neg, cdf, min_val, delta, num_bins) -> torch.Tensor:
    """Per row, sum of cdf[bin(x)] * x over its triplets, from differentiable operations (the
    weights are constants: the bins are piecewise constant and the histogram a statistic)."""
    values = s.new_zeros(s.shape[0])
    for _, x, keep in _triplet_slabs(s, pos, neg):
        idx, _ = bins(x.detach(), min_val, delta, num_bins)
        values = values + torch.where(keep, cdf[idx] * x, 0.0).sum(dim=(1, 2))
    return values


class _CDFWeighted(torch.autograd.Function):
    """sum over the row's triplets of cdf[bin(d_ap - d_an)] * (d_ap - d_an); the weights are
    constant, so dL/ds is their sums per cell (saved: one [b, N] buffer). Its backward is
    linear in the upstream gradient with constant coefficients, the exact derivative of every
    order."""

    @staticmethod
    def forward(ctx, s, pos, neg, cdf, min_val, delta, num_bins):
        values = s.new_zeros(s.shape[0])
        g = torch.zeros_like(s)
        for cols, x, keep in _triplet_slabs(s, pos, neg):
            idx, _ = bins(x, min_val, delta, num_bins)
            w = torch.where(keep, cdf[idx], 0.0)
            values += (w * x).sum(dim=(1, 2))
            g.scatter_add_(1, cols, w.sum(dim=2))
            g -= w.sum(dim=1)
        ctx.save_for_backward(g)
        return values

    @staticmethod
    def backward(ctx, grad):
        (g,) = ctx.saved_tensors
        return g * grad[:, None], None, None, None, None, None, None


def cdf_weighted_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    cdf: torch.Tensor,
    min_val: float,
    delta: float,
    num_bins: int,
) -> list[RowTerms]:
    """One component: per row the sum of cdf[bin(x)] * x over its triplets, x = d_ap - d_an,
    with the row's triplet count (so 'mean_terms' gives the mean over all triplets)."""
    cdf = cdf.to(s.dtype)
    if composable(s):
        values = _cdf_weighted_sums(s, pos, neg, cdf, min_val, delta, num_bins)
    else:
        values = _CDFWeighted.apply(s, pos, neg, cdf, min_val, delta, num_bins)
    count = pos.sum(dim=1).to(s.dtype) * neg.sum(dim=1).to(s.dtype)
    return [RowTerms(values, count, count)]
