"""FastAP row objective (Cakir et al., "Deep Metric Learning to Rank", CVPR 2019), as
pytorch-metric-learning's ``FastAPLoss`` (adapted there from the official code)."""

from __future__ import annotations

import torch

from .terms import RowTerms


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
    h_pos = torch.stack(h_pos, dim=1)
    cum_pos = torch.cumsum(h_pos, dim=1)
    cum_all = torch.cumsum(torch.stack(h_all, dim=1), dim=1)
    product = h_pos * cum_pos
    safe = (product > 0) & (cum_all > 0)
    ratio = torch.where(safe, product / torch.where(safe, cum_all, 1.0), 0.0)
    has = n_pos > 0
    ap = ratio.sum(dim=1) / torch.where(has, n_pos, 1.0)
    loss = 1 - ap
    if weights is not None:
        loss = loss * weights
    return [RowTerms.per_anchor(loss, has)]
