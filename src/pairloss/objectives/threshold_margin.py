"""Threshold-consistent margin row objective (Zhang et al., "Threshold-Consistent Margin Loss
for Open-World Deep Metric Learning", ICLR 2024), as pytorch-metric-learning's
``ThresholdConsistentMarginLoss``."""

from __future__ import annotations

import torch

from .terms import RowTerms


def tcm_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    lambda_plus: float,
    lambda_minus: float,
    margin_plus: float,
    margin_minus: float,
) -> list[RowTerms]:
    """Two components over the cosines ``s`` of a block, each counting only its violating
    pairs:

        positives with s <= m+:  lambda+ (m+ - s)
        negatives with s >= m-:  lambda- (s - m-)

    so that the reduction 'mean_terms' gives lambda+ times the mean positive violation plus
    lambda- times the mean negative one (each 0 without violators)."""
    hit_p = pos & (s <= margin_plus)
    hit_n = neg & (s >= margin_minus)
    dtype = s.dtype
    vp = torch.where(hit_p, lambda_plus * (margin_plus - s), 0.0).sum(dim=1)
    vn = torch.where(hit_n, lambda_minus * (s - margin_minus), 0.0).sum(dim=1)
    cp = hit_p.sum(dim=1).to(dtype)
    cn = hit_n.sum(dim=1).to(dtype)
    return [RowTerms(vp, cp, cp), RowTerms(vn, cn, cn)]
