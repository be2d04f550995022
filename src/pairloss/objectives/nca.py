"""Neighbourhood component analysis row objective (Goldberger et al., "Neighbourhood Components
Analysis", NeurIPS 2004), as pytorch-metric-learning's ``NCALoss``."""

from __future__ import annotations

import torch

from .terms import RowTerms, masked_logsumexp


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
