"""FastAP row objective (Cakir et al., "Deep Metric Learning to Rank", CVPR 2019), as
pytorch-metric-learning's ``FastAPLoss`` (adapted there from the official code)."""

from __future__ import annotations

import torch

from ..relations import BlockPairs
from .terms import RowScale, RowTerms


def fast_ap_from_histograms(
    h_pos: torch.Tensor, h_all: torch.Tensor, n_pos: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``1 - FastAP_i`` [b] from the soft histograms ``h_pos``, ``h_all`` [b, bins] of each row's
    positives and candidates, and whether the row has a positive (``n_pos`` [b] > 0)."""
    cum_pos = torch.cumsum(h_pos, dim=1)
    cum_all = torch.cumsum(h_all, dim=1)
    product = h_pos * cum_pos
    safe = (product > 0) & (cum_all > 0)
    ratio = torch.where(safe, product / torch.where(safe, cum_all, 1.0), 0.0)
    has = n_pos > 0
    ap = ratio.sum(dim=1) / torch.where(has, n_pos, 1.0)
    return 1 - ap, has


def fast_ap_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    num_bins: int,
    histogram_max: float,
    weights: torch.Tensor | None = None,
) -> list[RowTerms]:
    """Per anchor i with positives, 1 - FastAP_i (times its weight ``weights`` [b]):

        h+_k = sum_{p} pulse_k(d_ip),  h_k = h+_k + sum_n pulse_k(d_in),
        pulse_k(d) = [1 - |d - c_k| / delta]+,  c_k = k delta (k = 0..num_bins),
        delta = histogram_max / num_bins,
        FastAP_i = (1 / |P(i)|) sum_k h+_k H+_k / H_k  (over k with h+_k H+_k > 0 and H_k > 0),

    H+ and H the cumulative sums over k. The distances' soft histograms are built one bin
    centre at a time (no [bins, b, N] tensor). Anchors without a positive give no term."""
    delta = histogram_max / num_bins
    n_pos = pos.sum(dim=1, dtype=s.dtype)
    h_pos, h_all = [], []
    for k in range(num_bins + 1):
        pulse = torch.relu(1 - torch.abs(s - k * delta) / delta)
        hp = torch.where(pos, pulse, 0.0).sum(dim=1)
        h_pos.append(hp)
        h_all.append(hp + torch.where(neg, pulse, 0.0).sum(dim=1))
    loss, has = fast_ap_from_histograms(torch.stack(h_pos, dim=1), torch.stack(h_all, dim=1), n_pos)
    if weights is not None:
        loss = loss * weights
    return [RowTerms.per_anchor(loss, has)]


def _bin_cells(u: torch.Tensor, num_bins: int, rows: torch.Tensor, width: int):
    """The two bins each scaled distance ``u`` (= d / delta) falls between: flat index
    ``row * width + floor(u) + 1`` into [b, width] histograms (column j: bin j - 1 of the
    lower pulse, bin j of the upper one), the lower and upper pulse heights (0 outside the
    bins 0..num_bins) and where the pulses have a slope (the support, off the bin centres)."""
    k0 = torch.floor(u)
    frac = u - k0
    lower_in = (k0 >= 0) & (k0 <= num_bins)
    upper_in = (k0 >= -1) & (k0 < num_bins)
    w_lower = torch.where(lower_in, 1 - frac, 0.0)
    w_upper = torch.where(upper_in, frac, 0.0)
    sloped = (lower_in | upper_in) & (frac != 0)
    index = k0.clamp_(-1, num_bins + 1).add_(1).to(torch.long).add_(rows * width)
    return index, w_lower, w_upper, sloped


def fast_ap_fused(
    s: torch.Tensor,
    pairs: BlockPairs,
    grad: torch.Tensor | None,
    scale: RowScale | None,
    num_bins: int,
    histogram_max: float,
    weights: torch.Tensor | None = None,
) -> list[RowTerms]:
    """:func:`fast_ap_rows` on the sparse form of a block, with dL/ds written into ``grad``.

    A distance falls between two bin centres, so only two of the triangular pulses are non-zero
    at each cell: both histograms are two scatter-adds over the row (the positives' from their
    list) instead of one pass per bin. FastAP is differentiated by autograd on the [b, bins]
    histograms; the cells then read dL/du = G(upper bin) - G(lower bin), G = dL/dh (plus
    dL/dh+ at the positives), and dL/ds = dL/du / delta."""
    b, n = s.shape
    delta = histogram_max / num_bins
    width = num_bins + 3
    row_of = torch.arange(b, device=s.device)[:, None]
    u = torch.div(s, delta)
    index, w_lower, w_upper, sloped = _bin_cells(u, num_bins, row_of, width)
    del u
    w_lower.view(-1).index_fill_(0, pairs.void_flat, 0.0)
    w_upper.view(-1).index_fill_(0, pairs.void_flat, 0.0)
    flat_index = index.view(-1)
    lower = s.new_zeros(b * width).index_add_(0, flat_index, w_lower.view(-1))
    upper = s.new_zeros(b * width).index_add_(0, flat_index, w_upper.view(-1))
    del w_lower, w_upper
    up = s.view(-1)[pairs.pos_flat] / delta
    p_index, p_lower, p_upper, p_sloped = _bin_cells(up, num_bins, pairs.pos_rows, width)
    p_lower_h = s.new_zeros(b * width).index_add_(0, p_index, p_lower)
    p_upper_h = s.new_zeros(b * width).index_add_(0, p_index, p_upper)

    def bins(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        lo, hi = lo.view(b, width), hi.view(b, width)
        return lo[:, 1 : num_bins + 2] + hi[:, : num_bins + 1]

    n_pos = pairs.n_pos.to(s.dtype)
    h_pos = bins(p_lower_h, p_upper_h)
    h_all = bins(lower, upper)
    with torch.enable_grad():
        h_pos = h_pos.requires_grad_(grad is not None)
        h_all = h_all.requires_grad_(grad is not None)
        loss, has = fast_ap_from_histograms(h_pos, h_all, n_pos)
        if weights is not None:
            loss = loss * weights
        if grad is not None:
            c = torch.where(has, scale(0), 0.0)
            g_pos, g_all = torch.autograd.grad((loss * c).sum(), (h_pos, h_all))
    loss = loss.detach()
    if grad is not None:
        # G at the columns of the flat index: "lower" reads bin j - 1, "upper" bin j
        g_lower = torch.nn.functional.pad(g_all, (1, 1)).reshape(-1)
        g_upper = torch.nn.functional.pad(g_all, (0, 2)).reshape(-1)
        torch.sub(g_upper.take(index), g_lower.take(index), out=grad)
        grad.mul_(sloped)
        grad.view(-1).index_fill_(0, pairs.void_flat, 0.0)
        gp_lower = torch.nn.functional.pad(g_pos, (1, 1)).reshape(-1)
        gp_upper = torch.nn.functional.pad(g_pos, (0, 2)).reshape(-1)
        at_pos = (gp_upper.take(p_index) - gp_lower.take(p_index)) * p_sloped
        grad.view(-1).index_add_(0, pairs.pos_flat, at_pos)
        grad.mul_(1.0 / delta)
    return [RowTerms.per_anchor(loss, has)]
