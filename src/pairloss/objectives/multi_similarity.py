"""Multi-Similarity row objective (Wang et al., CVPR 2019)."""

from __future__ import annotations

import torch

from ..relations import BlockPairs
from .terms import FusedDualLSE, RowScale, RowTerms, dual_masked_logsumexp


def multi_similarity_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    alpha: float,
    beta: float,
    base: float,
    is_distance: bool = False,
) -> list[RowTerms]:
    """Per anchor i:

        1/alpha log(1 + sum_{p in P(i)} e^{-alpha (s_ip - base)})
      + 1/beta  log(1 + sum_{n in N(i)} e^{ beta (s_in - base)})

    For a distance d the signs flip: e^{alpha (d - base)} and e^{-beta (d - base)}.
    Rows with no pairs give 0. One term per anchor.
    """
    sign = -1.0 if is_distance else 1.0
    lp, ln, has_pos, has_neg = dual_masked_logsumexp(
        s, pos, neg, -alpha * sign, alpha * sign * base, beta * sign, -beta * sign * base
    )
    return [RowTerms.per_anchor(lp / alpha + ln / beta, has_pos | has_neg)]


def multi_similarity_fused(
    s: torch.Tensor,
    pairs: BlockPairs,
    grad: torch.Tensor | None,
    scale: RowScale | None,
    alpha: float,
    beta: float,
    base: float,
    is_distance: bool = False,
) -> list[RowTerms]:
    """:func:`multi_similarity_rows` on the sparse form of a block, with its gradient written
    into ``grad`` (see :class:`pairloss.engine.PairProblem`): positives read from their list,
    the negative sum one exponential pass over the row (:class:`FusedDualLSE`)."""
    sign = -1.0 if is_distance else 1.0
    work = grad if grad is not None else torch.empty_like(s)
    lse = FusedDualLSE(
        s, pairs, -alpha * sign, alpha * sign * base, beta * sign, -beta * sign * base, work
    )
    valid = lse.has_pos | lse.has_neg
    values = torch.where(valid, lse.lp / alpha + lse.ln / beta, 0.0)
    if grad is not None:
        c = scale(0)
        lse.write_grad(c / alpha, c / beta)
    return [RowTerms(values, lambda: valid.to(s.dtype), lambda: (values > 0).to(s.dtype))]
