"""Ranked list row objective (Wang et al., "Ranked List Loss for Deep Metric Learning", CVPR
2019), as pytorch-metric-learning's ``RankedListLoss``."""

from __future__ import annotations

import torch

from ..relations import BlockPairs
from .terms import RowScale, RowTerms, hide_non_negatives_, segment_sum

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


def ranked_list_fused(
    s: torch.Tensor,
    pairs: BlockPairs,
    grad: torch.Tensor | None,
    scale: RowScale | None,
    margin: float,
    alpha: float,
    t_pos: float,
    t_neg: float,
    imbalance: float,
) -> list[RowTerms]:
    """:func:`ranked_list_rows` on the sparse form of a block, with dL/ds written into ``grad``.

    The positives' weighted mean comes from their list; the negatives' from the row with the
    positive and self cells hidden. For a weighted mean L = sum w t / (sum w + floor) with
    w = e^{T t} and dt/dd = -1 (negatives) or +1 (positives), dL/dd = +-(w / W) (T t + 1 - T L)."""
    b, n = s.shape
    floor = n * WEIGHT_FLOOR
    low = alpha - margin
    rows = pairs.pos_rows
    # positives: t = d - low on P* = {d > low, d > 0}
    dp = s.view(-1)[pairs.pos_flat]
    tp = dp - low
    in_p = (tp > 0) & (dp > 0)
    tp = torch.where(in_p, tp, 0.0)
    wp = torch.where(in_p, torch.exp(t_pos * tp), 0.0)
    w_sum_p = segment_sum(wp, rows, b) + floor
    loss_p = segment_sum(wp * tp, rows, b) / w_sum_p
    # negatives: t = alpha - d on N* = {d < alpha, d > 0}; d > 0 is read from d itself (for a
    # d below alpha's rounding step, alpha - d rounds to alpha)
    work = grad if grad is not None else torch.empty_like(s)
    torch.sub(alpha, s, out=work)
    hide_non_negatives_(work, pairs, 0.0)
    in_n = (work > 0) & (s > 0)
    work.mul_(in_n)
    wn = torch.exp(work * t_neg).mul_(in_n)
    del in_n
    w_sum_n = wn.sum(dim=1) + floor
    loss_n = torch.linalg.vecdot(wn, work, dim=1) / w_sum_n
    loss = (1 - imbalance) * loss_p + imbalance * loss_n
    if grad is not None:
        c = scale(0)
        # dL/dd = -(w / W) (Tn t + 1 - Tn L_N) on the negatives
        work.mul_(t_neg).add_((1 - t_neg * loss_n)[:, None]).mul_(wn)
        work.mul_((-imbalance * c / w_sum_n)[:, None])
        g_pos = (wp / w_sum_p[rows]) * (t_pos * tp + 1 - t_pos * loss_p[rows])
        work.view(-1).index_add_(0, pairs.pos_flat, (1 - imbalance) * c[rows] * g_pos)
    return [RowTerms.per_anchor(loss, torch.ones_like(loss, dtype=torch.bool))]
