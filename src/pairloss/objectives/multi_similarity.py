"""Multi-Similarity row objective (Wang et al., CVPR 2019)."""

from __future__ import annotations

import torch

from ..relations import BlockPairs
from .terms import (
    FusedDualLSE,
    RowScale,
    RowTerms,
    dual_masked_logsumexp,
    hide_non_negatives_,
    segment_max,
)


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
    mining: float | None = None,
) -> list[RowTerms]:
    """:func:`multi_similarity_rows` on the sparse form of a block, with its gradient written
    into ``grad`` (see :class:`pairloss.engine.PairProblem`): positives read from their list,
    the negative sum one exponential pass over the row (:class:`FusedDualLSE`). ``mining``
    (epsilon) applies MS mining in the loss's own similarity first (:func:`ms_mining`)."""
    sign = -1.0 if is_distance else 1.0
    work = grad if grad is not None else torch.empty_like(s)
    keep = {} if mining is None else ms_mining(s, pairs, mining, is_distance, work)
    lse = FusedDualLSE(
        s,
        pairs,
        -alpha * sign,
        alpha * sign * base,
        beta * sign,
        -beta * sign * base,
        work,
        **keep,
    )
    valid = lse.has_pos | lse.has_neg
    values = torch.where(valid, lse.lp / alpha + lse.ln / beta, 0.0)
    if grad is not None:
        c = scale(0)
        lse.write_grad(c / alpha, c / beta)
    return [RowTerms(values, lambda: valid.to(s.dtype), lambda: (values > 0).to(s.dtype))]


def ms_mining(
    s: torch.Tensor, pairs: BlockPairs, epsilon: float, is_distance: bool, work: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Multi-Similarity mining (:class:`pairloss.miners.MultiSimilarityMiner`) on the sparse
    form of a block, with c the closeness (s, or -d): keep negative n if c_in + eps > min_p c_ip,
    keep positive p if c_ip - eps < max_n c_in. Returns the keyword arguments of
    :class:`FusedDualLSE` (``pos_keep`` [P], ``neg_keep`` [b, N], ``has_neg`` [b]); ``work`` is
    scratch."""
    b = s.shape[0]
    c_pos = s.view(-1)[pairs.pos_flat]
    c_pos = -c_pos if is_distance else c_pos
    hardest_pos = -segment_max(-c_pos, pairs.pos_rows, b, float("-inf"))
    hidden = float("inf") if is_distance else float("-inf")
    hide_non_negatives_(work.copy_(s), pairs, hidden)
    hardest_neg = -work.amin(dim=1) if is_distance else work.amax(dim=1)
    pos_keep = c_pos - epsilon < hardest_neg[pairs.pos_rows]
    closeness = torch.neg(s) if is_distance else s
    neg_keep = (closeness + epsilon) > hardest_pos[:, None]
    has_neg = (hardest_neg + epsilon > hardest_pos) & (pairs.n_neg > 0)
    return {"pos_keep": pos_keep, "neg_keep": neg_keep, "has_neg": has_neg}
