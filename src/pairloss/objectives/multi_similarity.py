"""Multi-Similarity row objective (Wang et al., CVPR 2019)."""

from __future__ import annotations

import torch

from ..relations import BlockPairs
from .terms import RowScale, RowTerms, dual_masked_logsumexp, segment_max, segment_sum

# an exponent shift at most this far above the true row maximum keeps every term that matters
# out of underflow (e^-60 > float32's smallest normal e^-87 by e^27, far beyond its precision)
SAFE_SHIFT = {torch.float32: 60.0, torch.float64: 600.0}


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


def _negative_shift(
    s: torch.Tensor, pairs: BlockPairs, coef: float, bias: float, work: torch.Tensor
):
    """Per row, a shift m >= max(0, max over negatives of coef * s + bias) for a stable
    log(1 + sum e^x). The row's extreme over all cells bounds it from above; where that bound
    could push the terms that matter into underflow, the exact extreme over the negatives is
    taken instead (``work`` is a scratch buffer)."""
    extreme = s.amax(dim=1) if coef > 0 else s.amin(dim=1)
    shift = (coef * extreme + bias).clamp_min(0)
    if bool((shift > SAFE_SHIFT.get(s.dtype, 60.0)).any()):
        hidden = float("-inf") if coef > 0 else float("inf")
        work.copy_(s)
        flat = work.view(-1)
        flat.index_fill_(0, pairs.pos_flat, hidden).index_fill_(0, pairs.void_flat, hidden)
        exact = work.amax(dim=1) if coef > 0 else work.amin(dim=1)
        exact = torch.where(torch.isfinite(exact), coef * exact + bias, 0.0)
        shift = exact.clamp_min(0)
    return shift


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
    into ``grad`` (see :class:`pairloss.engine.PairProblem`). Positives are read from their list;
    the negative sum is one exponential pass over the row with the positive and self cells
    zeroed."""
    sign = -1.0 if is_distance else 1.0
    kp, bp = -alpha * sign, alpha * sign * base
    kn, bn = beta * sign, -beta * sign * base
    b = s.shape[0]
    work = grad if grad is not None else torch.empty_like(s)
    mn = _negative_shift(s, pairs, kn, bn, work)
    e = torch.add((bn - mn)[:, None], s, alpha=kn, out=work).exp_()
    flat = e.view(-1)
    flat.index_fill_(0, pairs.pos_flat, 0.0).index_fill_(0, pairs.void_flat, 0.0)
    sn = e.sum(dim=1) + torch.exp(-mn)
    has_neg = pairs.n_neg > 0
    ln = torch.where(has_neg, sn.log() + mn, 0.0)

    rows = pairs.pos_rows
    xp = s.view(-1)[pairs.pos_flat] * kp + bp
    mp = segment_max(xp, rows, b, 0.0)
    ep = torch.exp(xp - mp[rows])
    sp = segment_sum(ep, rows, b) + torch.exp(-mp)
    has_pos = pairs.n_pos > 0
    lp = torch.where(has_pos, sp.log() + mp, 0.0)

    valid = has_pos | has_neg
    values = torch.where(valid, lp / alpha + ln / beta, 0.0)
    if grad is not None:
        c = scale(0)
        e.mul_((c * (kn / beta) / sn)[:, None])
        flat.index_copy_(0, pairs.pos_flat, ep * (c * (kp / alpha) / sp)[rows])
    return [RowTerms(values, lambda: valid.to(s.dtype), lambda: (values > 0).to(s.dtype))]
