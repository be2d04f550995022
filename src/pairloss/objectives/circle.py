"""Circle loss row objective (Sun et al., CVPR 2020), pair-label form."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..relations import BlockPairs
from .pair_margins import negative_logsumexp_, positive_logsumexp
from .terms import RowScale, RowTerms, masked_logsumexp


def circle_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    m: float,
    gamma: float,
) -> list[RowTerms]:
    """Per anchor i (similarities s, higher is closer):

        softplus( LSE_{n in N(i)} gamma a_n (s_n - m) + LSE_{p in P(i)} -gamma a_p (s_p - 1 + m) )

    with the self-paced weights a_p = [1 + m - s_p]_+ and a_n = [s_n + m]_+ held constant
    (detached, as the paper's gradient and pytorch-metric-learning define them: a
    stop-gradient, so higher derivatives hold them constant too). Rows missing positives or negatives give 0 and no term. One term per anchor.
    Both log-sum-exps subtract their row maximum, so gamma = 256 cannot overflow.
    """
    sd = s.detach()
    logit_p = -gamma * torch.relu(1 + m - sd) * (s - (1 - m))
    logit_n = gamma * torch.relu(sd + m) * (s - m)
    lse_p = masked_logsumexp(logit_p, pos)
    lse_n = masked_logsumexp(logit_n, neg)
    valid = pos.any(dim=1) & neg.any(dim=1)
    return [RowTerms.per_anchor(F.softplus(lse_p + lse_n), valid)]


def circle_fused(
    s: torch.Tensor,
    pairs: BlockPairs,
    grad: torch.Tensor | None,
    scale: RowScale | None,
    m: float,
    gamma: float,
) -> list[RowTerms]:
    """:func:`circle_rows` on the sparse form of a block, with its gradient written into
    ``grad`` (see :class:`pairloss.engine.PairProblem`).

    The positive log-sum-exp is taken over the gathered positive cells. The negative logit
    gamma [s + m]+ (s - m) equals gamma (max(s, -m)^2 - m^2), increasing in w = max(s, -m)^2, so
    the dense part is: w in place, its exact row maximum over the negatives, one exponential
    pass. Its gradient (the weight [s + m]+ held constant) is the softmax weight times
    gamma [s + m]+, built from the exponentials and s in three in-place passes.
    """
    dtype = s.dtype
    rows = pairs.pos_rows
    sp = s.view(-1)[pairs.pos_flat]
    slope_p = -gamma * torch.relu(1 + m - sp)
    lse_p, ep, sum_p, has_pos = positive_logsumexp(slope_p * (sp - (1 - m)), rows, pairs.n_pos)

    work = grad if grad is not None else torch.empty_like(s)
    torch.clamp_min(s, -m, out=work).square_()  # w; the exponent is gamma w - gamma m^2
    lse_n, sum_n, has_neg = negative_logsumexp_(work, pairs, gamma)
    lse_n = torch.where(has_neg, lse_n - gamma * m * m, 0.0)

    x = lse_p + lse_n
    valid = has_pos & has_neg
    values = torch.where(valid, F.softplus(x), 0.0)
    if grad is not None:
        # softplus' as torch computes it: 1 above its linear threshold (20), sigmoid below
        g = scale(0) * valid.to(dtype) * torch.where(x > 20, 1.0, torch.sigmoid(x))
        _times_hinge_(work, s, m)
        work.mul_((g * gamma * (m if m != 0 else 1.0) / sum_n)[:, None])
        grad.view(-1).index_copy_(0, pairs.pos_flat, ep * slope_p * (g / sum_p)[rows])
    return [RowTerms(values, lambda: valid.to(dtype), lambda: (values > 0).to(dtype))]


def _times_hinge_(e: torch.Tensor, s: torch.Tensor, m: float) -> torch.Tensor:
    """e * [s + m]+ / m in place (e * [s]+ when m = 0), for e >= 0."""
    if m == 0:
        return e.mul_(s).clamp_min_(0)
    e.addcmul_(e, s, value=1.0 / m)  # e (s + m) / m
    return e.clamp_min_(0) if m > 0 else e.clamp_max_(0)
