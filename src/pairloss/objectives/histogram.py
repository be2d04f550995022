"""Histogram loss pieces (Ustinova & Lempitsky, "Learning Deep Embeddings with Histogram Loss",
NeurIPS 2016): soft histograms of pair similarities with linear interpolation between nodes,
as pytorch-metric-learning's ``HistogramLoss``."""

from __future__ import annotations

import torch

from .terms import RowTerms


def node_weights(
    d: torch.Tensor, delta: float, n_nodes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For values ``d`` in [-1, 1]: the node r below each value (r = floor((d + 1) / delta),
    taken on the float32 value, and clamped so that d = 1 falls on the last node) and the
    value's weights on nodes r + 1 and r: ((d + 1 - r delta) / delta, ((r + 1) delta - 1 - d) /
    delta), with r delta and (r + 1) delta - 1 in float32 as pytorch-metric-learning computes
    them."""
    r = torch.floor((d.detach().float() + 1) / delta).long().clamp(0, n_nodes - 2)
    low, high = (r * delta).to(d.dtype), ((r + 1) * delta - 1).to(d.dtype)
    return r, (d + 1 - low) / delta, (high - d) / delta


def density(d: torch.Tensor, delta: float, n_nodes: int) -> torch.Tensor:
    """The interpolated histogram of ``d`` [P] over ``n_nodes`` nodes, normalised by P (with
    autograd)."""
    r, upper, lower = node_weights(d, delta, n_nodes)
    out = d.new_zeros(n_nodes)
    out = out.scatter_add(0, r + 1, upper).scatter_add(0, r, lower)
    return out / max(1, d.shape[0])


def histogram_loss(s_pos: torch.Tensor, s_neg: torch.Tensor, delta: float, n_nodes: int):
    """The histogram loss sum_r p-_r Phi+_r of the positive and negative pairs' scores
    ``s_pos`` [P+] and ``s_neg`` [P-] (with autograd), Phi+ the positive histogram's CDF."""
    p_pos = density(s_pos, delta, n_nodes)
    p_neg = density(s_neg, delta, n_nodes)
    return torch.sum(p_neg * torch.cumsum(p_pos, dim=0))


def counted_pairs(
    pos: torch.Tensor,
    neg: torch.Tensor,
    start: int,
    has_pos: torch.Tensor,
    has_neg: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The unordered pairs {i, j} (cells j > i) of a block that the histogram loss counts, as
    pytorch-metric-learning lists them from all triplets: a positive pair when one of its two
    samples has a negative, a negative pair when one of them has a positive."""
    b, n = pos.shape
    rows = torch.arange(start, start + b, device=pos.device)
    upper = torch.arange(n, device=pos.device)[None, :] > rows[:, None]
    pos_c = pos & upper & (has_neg[rows][:, None] | has_neg[None, :])
    neg_c = neg & upper & (has_pos[rows][:, None] | has_pos[None, :])
    return pos_c, neg_c


def histogram_rows(
    s: torch.Tensor,
    pos_c: torch.Tensor,
    neg_c: torch.Tensor,
    delta: float,
    n_nodes: int,
    hist_pos: torch.Tensor,
    hist_neg: torch.Tensor,
) -> None:
    """Add a block's counted pairs to the (unnormalised) histograms ``hist_pos`` and
    ``hist_neg`` (in place, without gradient)."""
    for mask, hist in ((pos_c, hist_pos), (neg_c, hist_neg)):
        d = s[mask]
        r, upper, lower = node_weights(d, delta, n_nodes)
        hist.scatter_add_(0, r + 1, upper.to(hist.dtype)).scatter_add_(0, r, lower.to(hist.dtype))


def histogram_slope_rows(
    s: torch.Tensor,
    pos_c: torch.Tensor,
    neg_c: torch.Tensor,
    delta: float,
    n_nodes: int,
    slope_pos: torch.Tensor,
    slope_neg: torch.Tensor,
) -> list[RowTerms]:
    """The linear surrogate of a block: sum over its counted pairs of slope[r(d)] * d, with
    ``slope_*`` [n_nodes - 1] the loss's derivative with respect to a pair's value in each bin
    (held constant), so that its gradient is the histogram loss's gradient."""
    r, _, _ = node_weights(s, delta, n_nodes)
    c = torch.where(pos_c, slope_pos[r], torch.where(neg_c, slope_neg[r], 0.0))
    values = (c.detach() * s).sum(dim=1)
    zero = torch.zeros_like(values)
    return [RowTerms(values, zero, zero)]
