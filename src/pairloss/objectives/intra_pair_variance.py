"""Intra-pair variance row objectives (Yu & Tao, "Deep Metric Learning with Tuplet Margin
Loss", ICCV 2019, eq. 8), as pytorch-metric-learning's ``IntraPairVarianceLoss``."""

from __future__ import annotations

import torch

from .terms import RowTerms


def score_sum_rows(s: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, which: str):
    """One component: each row's sum of scores over its positive (``which="pos"``) or negative
    cells, one term per cell (so 'mean_terms' gives the mean score of those pairs)."""
    mask = pos if which == "pos" else neg
    return [RowTerms.per_pair(s, mask)]


def spread(s, mean: torch.Tensor, eps: float, increase: bool) -> torch.Tensor:
    """How far a pair lies on the wrong side of its kind's mean, with slack eps:
    (1 - eps) mean - s when higher scores are wanted (``increase``), else s - (1 + eps) mean."""
    return (1 - eps) * mean - s if increase else s - (1 + eps) * mean


def intra_pair_variance_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    mean_pos: torch.Tensor,
    mean_neg: torch.Tensor,
    pos_eps: float,
    neg_eps: float,
    is_distance: bool,
) -> list[RowTerms]:
    """Two components, one term per pair: [spread]+^2 of each positive pair around the positive
    mean (pulled up for similarities, down for distances) and of each negative pair around the
    negative mean (the other way)."""
    pos_t = torch.relu(spread(s, mean_pos.to(s.dtype), pos_eps, not is_distance)) ** 2
    neg_t = torch.relu(spread(s, mean_neg.to(s.dtype), neg_eps, is_distance)) ** 2
    return [RowTerms.per_pair(pos_t, pos), RowTerms.per_pair(neg_t, neg)]
