"""Ranked list row objective (Wang et al., "Ranked List Loss for Deep Metric Learning", CVPR
2019), as pytorch-metric-learning's ``RankedListLoss``."""

from __future__ import annotations

import torch

from .terms import RowTerms

# pytorch-metric-learning adds this to every column of a weight sum (the row's length times it)
WEIGHT_FLOOR = 1e-5


def ranked_list_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    margin: float,
    alpha: float,
    t_pos: float,
    t_neg: float,
    imbalance: float,
) -> list[RowTerms]:
    """Per anchor i (distances ``s``):

        P* = {p: d_ip > alpha - margin, d_ip > 0},  N* = {n: d_in < alpha, d_in > 0}
        w_p = e^{Tp (d_ip - (alpha - margin))},      w_n = e^{Tn (alpha - d_in)}
        L_P = sum_{P*} w_p (d_ip - (alpha - margin)) / (sum_{P*} w_p + N eps)
        L_N = sum_{N*} w_n (alpha - d_in) / (sum_{N*} w_n + N eps)
        l_i = (1 - imbalance) L_P + imbalance L_N

    with N the number of candidates and eps = 1e-5 (pytorch-metric-learning's floor, added
    once per column). The weights keep their gradient, as there. One term per anchor."""
    floor = s.shape[1] * WEIGHT_FLOOR
    low = alpha - margin
    p_mask = pos & (s > low) & (s > 0)
    n_mask = neg & (s < alpha) & (s > 0)
    w_p = torch.where(p_mask, torch.exp(t_pos * torch.where(p_mask, s - low, 0.0)), 0.0)
    w_n = torch.where(n_mask, torch.exp(t_neg * torch.where(n_mask, alpha - s, 0.0)), 0.0)
    loss_p = (w_p * torch.where(p_mask, s - low, 0.0)).sum(dim=1) / (w_p.sum(dim=1) + floor)
    loss_n = (w_n * torch.where(n_mask, alpha - s, 0.0)).sum(dim=1) / (w_n.sum(dim=1) + floor)
    loss = (1 - imbalance) * loss_p + imbalance * loss_n
    return [RowTerms.per_anchor(loss, torch.ones_like(loss, dtype=torch.bool))]
