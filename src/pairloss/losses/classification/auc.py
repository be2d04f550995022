"""Mann-Whitney (AUC) surrogate on binary scores (the MW loss of "Optimizing What Matters:
AUC-Driven Learning for Robust Neural Retrieval"): softplus of every negative-minus-positive
score gap, computed exactly with memory linear in the number of negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ...engine import compute_dtype
from ...errors import PairLossError
from ...reduction import ROW_REDUCTIONS, check_reduction
from ._checks import check_binary_scores, check_binary_targets


class _PairSoftplusRows(torch.autograd.Function):
    """out_i = sum_j softplus(neg_j - pos_i), evaluated chunk by chunk over positives in both
    passes so that no more than chunk x N gaps are ever materialised."""

    @staticmethod
    def forward(ctx, pos: torch.Tensor, neg: torch.Tensor, chunk: int) -> torch.Tensor:
        out = pos.new_empty(pos.shape)
        for start in range(0, pos.shape[0], chunk):
            gaps = neg[None, :] - pos[start : start + chunk, None]
            out[start : start + chunk] = F.softplus(gaps).sum(dim=1)
        ctx.save_for_backward(pos, neg)
        ctx.chunk = chunk
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        pos, neg = ctx.saved_tensors
        grad_pos = torch.empty_like(pos)
        grad_neg = torch.zeros_like(neg)
        for start in range(0, pos.shape[0], ctx.chunk):
            weight = torch.sigmoid(neg[None, :] - pos[start : start + ctx.chunk, None])
            g = grad_out[start : start + ctx.chunk]
            grad_pos[start : start + ctx.chunk] = -g * weight.sum(dim=1)
            grad_neg += (g[:, None] * weight).sum(dim=0)
        return grad_pos, grad_neg, None


def _check_chunk(chunk_size: object) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise PairLossError(f"chunk_size: expected an integer >= 1, got {chunk_size!r}")
    return chunk_size


def mann_whitney_loss(
    scores: torch.Tensor,
    targets: torch.Tensor,
    reduction: str = "mean",
    chunk_size: int = 1024,
) -> torch.Tensor:
    r"""Logistic surrogate of 1 - AUC over all (positive, negative) pairs.

    .. math::
        \ell = \frac{1}{P N} \sum_{i \in \mathcal{P}} \sum_{j \in \mathcal{N}}
               \mathrm{softplus}(s_j - s_i)

    i.e. binary cross-entropy on sigma(s_i - s_j) with label 1 for every positive-negative
    pair, an upper bound (up to the factor log 2) of the fraction of mis-ordered pairs,
    1 - AUC (Mann-Whitney U / (P N)). The paper's abstract describes the MW loss as
    "minimizing binary cross entropy over score differences" of positive-negative pairs.

    Cost: exact in O(P N) time. Softplus is not piecewise linear, so the sort-based
    O((P + N) log(P + N)) trick for hinge-type AUC surrogates does not apply. Memory is
    O(chunk_size x N): a custom autograd function evaluates the gaps chunk by chunk over
    positives in the forward pass and recomputes them chunk by chunk in the backward pass,
    saving only the scores (it supports one backward pass, not double backward).

    Args:
        scores: [B] or [B, 1] real scores s, finite.
        targets: [B] or [B, 1] labels 0/1 (bool, integer or float); 1 marks a positive.
        reduction: ``"mean"`` over the P N pairs (default), ``"sum"`` over pairs, or ``"none"``:
            a [P] tensor with, for each positive (in batch order), its sum over the N negatives.
            With no positive or no negative the loss is 0 with zero gradient (``"none"``: an
            empty or all-zero tensor).
        chunk_size: positives per chunk, >= 1; default 1024.

    Returns:
        The loss in the dtype of ``scores`` (half precision is computed in float32).
    """
    s = check_binary_scores(scores, "scores")
    positive = check_binary_targets(targets, s)
    reduction = check_reduction(reduction, ROW_REDUCTIONS)
    chunk = _check_chunk(chunk_size)
    x = s.to(compute_dtype(s))
    pos, neg = x[positive], x[~positive]
    per_pos = _PairSoftplusRows.apply(pos, neg, chunk) if neg.numel() else pos * 0.0
    if reduction == "none":
        return per_pos.to(s.dtype)
    total = per_pos.sum() if pos.numel() else x.sum() * 0.0
    n_pairs = pos.shape[0] * neg.shape[0]
    if reduction == "mean" and n_pairs:
        total = total / n_pairs
    return total.to(s.dtype)


class MannWhitneyLoss(nn.Module):
    """Module form of :func:`mann_whitney_loss` (same formula, defaults, shapes)."""

    def __init__(self, reduction: str = "mean", chunk_size: int = 1024) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction, ROW_REDUCTIONS)
        self.chunk_size = _check_chunk(chunk_size)

    def forward(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return mann_whitney_loss(scores, targets, self.reduction, self.chunk_size)
