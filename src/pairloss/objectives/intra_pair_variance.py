"""Intra-pair variance row objectives (Yu & Tao, "Deep Metric Learning with Tuplet Margin
Loss", ICCV 2019, eq. 8), as pytorch-metric-learning's ``IntraPairVarianceLoss``."""

from __future__ import annotations

import torch

from ..relations import BlockPairs
from .terms import RowScale, RowTerms, hide_non_negatives_, segment_sum


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


def spread_slopes(eps: float, increase: bool) -> tuple[float, float]:
    """d spread / d s and d spread / d mean of :func:`spread`."""
    return (-1.0, 1 - eps) if increase else (1.0, -(1 + eps))


def kind_sums_rows(s, pos, neg, f_pos, f_neg) -> torch.Tensor:
    """[6]: sums of ``f_pos`` over the positive cells and of ``f_neg`` over the negative cells
    of a block, how many of each are > 0, and how many cells of each kind (dense masks)."""
    vp = torch.where(pos, f_pos(s), 0.0)
    vn = torch.where(neg, f_neg(s), 0.0)
    nz = [torch.count_nonzero(v > 0) for v in (vp, vn)]
    n = [torch.count_nonzero(pos), torch.count_nonzero(neg)]
    return torch.stack([vp.sum(), vn.sum(), *(c.to(s.dtype) for c in nz + n)])


def kind_sums_fused(s, pairs: BlockPairs, f_pos, f_neg) -> torch.Tensor:
    """:func:`kind_sums_rows` on the sparse form of a block (the positives from their list, the
    negatives as the row with the positive and self cells hidden)."""
    vp = f_pos(s.view(-1)[pairs.pos_flat])
    vn = hide_non_negatives_(f_neg(s), pairs, 0.0)
    nz = [torch.count_nonzero(v > 0) for v in (vp, vn)]
    n = [pairs.n_pos.sum(), pairs.n_neg.sum()]
    return torch.stack([vp.sum(), vn.sum(), *(c.to(s.dtype) for c in nz + n)])


def intra_pair_variance_fused(
    s: torch.Tensor,
    pairs: BlockPairs,
    grad: torch.Tensor | None,
    scale: RowScale | None,
    means: tuple[float, float],
    eps: tuple[float, float],
    is_distance: bool,
    mean_slopes: tuple[float, float] = (0.0, 0.0),
    nonzero: bool = True,
    stats: torch.Tensor | None = None,
) -> list[RowTerms]:
    """:func:`intra_pair_variance_rows` with the means held constant, on the sparse form of a
    block, with dL/ds written into ``grad``; ``mean_slopes`` [2] are the extra slopes each
    positive / negative cell gets through its kind's mean (d loss_k / d mean_k over the kind's
    count, computed beforehand), which a row scale constant over the rows carries exactly.
    ``nonzero``: count the terms > 0 (only a 'mean over non-zero terms' asks). ``stats`` [4]:
    adds the block's sums of [spread]+ over the positive and the negative cells and, with
    ``nonzero``, their counts of terms > 0."""
    b, rows = s.shape[0], pairs.pos_rows
    dtype = s.dtype
    inc_pos, inc_neg = not is_distance, is_distance
    r_pos = torch.relu(spread(s.view(-1)[pairs.pos_flat], means[0], eps[0], inc_pos))
    t_pos = r_pos * r_pos
    pos_terms = RowTerms(
        segment_sum(t_pos, rows, b),
        pairs.n_pos.to(dtype),
        lambda: segment_sum((t_pos > 0).to(dtype), rows, b),
    )
    work = grad if grad is not None else torch.empty_like(s)
    if inc_neg:
        torch.mul(s, -1.0, out=work).add_((1 - eps[1]) * means[1])
    else:
        torch.sub(s, (1 + eps[1]) * means[1], out=work)
    hide_non_negatives_(work.relu_(), pairs, 0.0)
    nz_neg = torch.count_nonzero(work, dim=1).to(dtype) if nonzero else _not_counted
    neg_terms = RowTerms(torch.linalg.vecdot(work, work, dim=1), pairs.n_neg.to(dtype), nz_neg)
    if stats is not None:
        stats[:2] += torch.stack([r_pos.sum(), work.sum()]).to(stats.dtype)
        if nonzero:
            stats[2:] += torch.stack([pos_terms.n_nonzero.sum(), nz_neg.sum()]).to(stats.dtype)
    if grad is not None:
        ds_pos, ds_neg = spread_slopes(eps[0], inc_pos)[0], spread_slopes(eps[1], inc_neg)[0]
        if mean_slopes[1]:
            work.mul_(2 * ds_neg).add_(mean_slopes[1])
            hide_non_negatives_(work, pairs, 0.0).mul_(scale(1)[:, None])
        else:
            work.mul_((2 * ds_neg) * scale(1)[:, None])
        at_pos = scale(0)[rows] * (2 * ds_pos * r_pos + mean_slopes[0])
        work.view(-1).index_add_(0, pairs.pos_flat, at_pos)
    return [pos_terms, neg_terms]


def _not_counted():
    raise RuntimeError("the terms > 0 were not counted (nonzero=False)")
