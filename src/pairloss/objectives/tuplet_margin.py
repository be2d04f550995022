"""Tuplet margin row objective (Yu & Tao, "Deep Metric Learning with Tuplet Margin Loss", ICCV
2019), as pytorch-metric-learning's ``TupletMarginLoss``."""

from __future__ import annotations

import torch

from .margin_softmax import _safe_acos
from .terms import RowTerms, masked_logsumexp


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
