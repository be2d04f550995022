"""Softmax (InfoNCE-family) row objectives: SupCon, NT-Xent and DCL.

All three read the scores as logits ``z = s / temperature`` in "higher is closer" form (``-d``
for a distance). Every log-sum-exp goes through :func:`masked_logsumexp`, so a small temperature
or large unnormalised scores cannot overflow.

The ``*_fused`` forms compute the same terms on the sparse form of a block
(:class:`~pairloss.relations.BlockPairs`) and write dL/ds into the engine's buffer: the row's
log-sum-exp is one dense exponential pass (:func:`_shifted_exp`), the positive terms are read
from the list of positive cells.
"""

from __future__ import annotations

import math

import torch

from ..relations import BlockPairs
from .terms import (
    SAFE_SHIFT,
    RowScale,
    RowTerms,
    masked_logsumexp,
    member_extreme_,
    segment_logsumexp,
    segment_sum,
    shifted_exp_,
)


def _logit_coef(temperature: float, is_distance: bool) -> float:
    return (-1.0 if is_distance else 1.0) / temperature


def _logits(s: torch.Tensor, temperature: float, is_distance: bool) -> torch.Tensor:
    return s * _logit_coef(temperature, is_distance)


def _masked_row_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, x, 0.0).sum(dim=1)


def supcon_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    temperature: float,
    is_distance: bool = False,
) -> list[RowTerms]:
    """Supervised contrastive loss per anchor i with positives P(i):

        -1/|P(i)| sum_{p in P(i)} log( e^{z_ip} / sum_{a in P(i) u N(i)} e^{z_ia} )
      = LSE_{a in P(i) u N(i)} z_ia - mean_{p in P(i)} z_ip

    One term per anchor; anchors without a positive contribute nothing.
    """
    z = _logits(s, temperature, is_distance)
    n_pos = pos.sum(dim=1, dtype=z.dtype)
    lse = masked_logsumexp(z, pos | neg)
    mean_pos = _masked_row_sum(z, pos) / n_pos.clamp_min(1)
    return [RowTerms.per_anchor(lse - mean_pos, n_pos > 0)]


def ntxent_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    temperature: float,
    is_distance: bool = False,
) -> list[RowTerms]:
    """NT-Xent / InfoNCE per positive pair (i, p):

        -log( e^{z_ip} / (e^{z_ip} + sum_{n in N(i)} e^{z_in}) ) = log(1 + e^{LSE_n z_in - z_ip})

    computed as ``logaddexp(z_ip, LSE_n) - z_ip`` (exact, no overflow); the negatives' LSE is
    taken once per row. A pair whose anchor has no negative gives 0 (and still counts as a
    term). One term per positive pair; the non-zero count is the number of pairs whose anchor
    has a negative (their loss is > 0 barring underflow).
    """
    z = _logits(s, temperature, is_distance)
    has_neg = neg.any(dim=1).to(z.dtype)
    lse_neg = masked_logsumexp(z, neg).unsqueeze(1)
    cells = torch.where(pos, torch.logaddexp(z, lse_neg) - z, 0.0) * has_neg[:, None]
    n_pos = pos.sum(dim=1, dtype=z.dtype)
    return [RowTerms(cells.sum(dim=1), n_pos, n_pos * has_neg, cells=(cells, pos))]


def ntxent_listed(
    s_pos: torch.Tensor,
    s_neg: torch.Tensor,
    pos_anchors: torch.Tensor,
    neg_anchors: torch.Tensor,
    n_anchors: int,
    temperature: float,
    is_distance: bool = False,
) -> torch.Tensor:
    """:func:`ntxent_rows`'s terms on listed pairs, one per listed positive pair (i, p):

        -log( e^{z_ip} / (e^{z_ip} + sum_k e^{z_k}) ),  k over the listed negative pairs of i

    with every listing of a negative pair in the sum (pytorch-metric-learning's pair-based
    NT-Xent). The listed negatives' log-sum-exp is one segment reduction per anchor (O(listed
    pairs), no positives x negatives matrix); a pair whose anchor lists no negative gives 0."""
    coef = _logit_coef(temperature, is_distance)
    z_pos, z_neg = s_pos * coef, s_neg * coef
    lse = segment_logsumexp(z_neg, neg_anchors, n_anchors)[pos_anchors]
    has = torch.isfinite(lse)
    return torch.where(has, torch.logaddexp(z_pos, torch.where(has, lse, 0.0)) - z_pos, 0.0)


def dcl_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    temperature: float,
    is_distance: bool = False,
    weight: torch.Tensor | None = None,
) -> list[RowTerms]:
    """Decoupled contrastive loss per positive pair (i, p):

        -w_ip z_ip + LSE_{n in N(i)} z_in

    (the positive is not in the denominator), summed per row as
    ``|P(i)| LSE_n z_in - sum_p w_ip z_ip``. ``weight`` is an optional [b, N] tensor of
    positive-term weights (1 when None). Pairs whose anchor has no negative are undefined
    (log 0) and are dropped: they give no term. One term per remaining positive pair; terms can
    be negative, so the non-zero count is simply the term count.
    """
    z = _logits(s, temperature, is_distance)
    has_neg = neg.any(dim=1).to(z.dtype)
    lse_neg = masked_logsumexp(z, neg)
    n_pos = pos.sum(dim=1, dtype=z.dtype)
    pos_sum = _masked_row_sum(z if weight is None else weight * z, pos)
    values = (n_pos * lse_neg - pos_sum) * has_neg
    n_terms = n_pos * has_neg
    return [RowTerms(values, n_terms, n_terms)]


def _exp_pass(
    s: torch.Tensor,
    pairs: BlockPairs,
    coef: float,
    shift: torch.Tensor,
    work: torch.Tensor,
    hide_pos: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``work = e^{coef * s - shift}`` with the void (and, if ``hide_pos``, the positive) cells
    zeroed, and its row sums."""
    e = shifted_exp_(s, coef, shift, work)
    flat = e.view(-1)
    flat.index_fill_(0, pairs.void_flat, 0.0)
    if hide_pos:
        flat.index_fill_(0, pairs.pos_flat, 0.0)
    return e, e.sum(dim=1)


def _shifted_exp(
    s: torch.Tensor, pairs: BlockPairs, coef: float, work: torch.Tensor, hide_pos: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The members of a row's log-sum-exp of ``z = coef * s`` (the negatives, and the positives
    unless ``hide_pos``) exponentiated in ``work``: returns ``(e, total, shift)`` with
    ``e = e^{z - shift}`` on the members (0 elsewhere), ``total`` its row sums, so that the LSE is
    ``log(total) + shift`` on rows with a member.

    The shift is the row's extreme over all cells, an upper bound of the members' maximum (no
    overflow). Where it lies so far above the members' maximum that their sum falls below
    e^-SAFE_SHIFT (a self cell far above every other score), the exact maximum over the members
    is taken and the pass repeated."""
    extreme = s.amax(dim=1) if coef > 0 else s.amin(dim=1)
    shift = coef * extreme
    e, total = _exp_pass(s, pairs, coef, shift, work, hide_pos)
    members = pairs.n_neg > 0 if hide_pos else pairs.n_neg + pairs.n_pos > 0
    floor = math.exp(-SAFE_SHIFT.get(s.dtype, 60.0))
    if bool(((total < floor) & members).any()):
        exact = member_extreme_(work.copy_(s), pairs, coef, with_positives=not hide_pos)
        shift = torch.where(torch.isfinite(exact), exact, 0.0)
        e, total = _exp_pass(s, pairs, coef, shift, work, hide_pos)
    return e, total, shift


def _positive_logits(s: torch.Tensor, pairs: BlockPairs, coef: float) -> torch.Tensor:
    """[P] logits ``coef * s`` of the positive cells."""
    return s.view(-1)[pairs.pos_flat] * coef


def supcon_fused(
    s: torch.Tensor,
    pairs: BlockPairs,
    grad: torch.Tensor | None,
    scale: RowScale | None,
    temperature: float,
    is_distance: bool = False,
) -> list[RowTerms]:
    """:func:`supcon_rows` on the sparse form of a block, with dL/ds written into ``grad``.

    Per anchor ``LSE_{a in P u N} z_ia - mean_p z_ip``: the LSE is one dense exponential pass
    over the row with the self cell zeroed, the mean is read from the positive list. Its
    gradient is ``k (softmax_ia - [a in P] / |P|)`` (``k = +-1/temperature``): the softmax is the
    scaled pass, the positive part a sparse ``index_add_``. A row whose only member is one
    positive has loss 0 exactly (as the mask objective gives) and no gradient.
    """
    coef = _logit_coef(temperature, is_distance)
    b = s.shape[0]
    work = grad if grad is not None else torch.empty_like(s)
    e, total, shift = _shifted_exp(s, pairs, coef, work, hide_pos=False)
    rows = pairs.pos_rows
    n_pos = pairs.n_pos.to(s.dtype)
    valid = pairs.n_pos > 0
    live = valid & (pairs.n_pos + pairs.n_neg > 1)
    mean_pos = segment_sum(_positive_logits(s, pairs, coef), rows, b) / n_pos.clamp_min(1)
    values = torch.where(live, total.log() + shift - mean_pos, 0.0)
    if grad is not None:
        c = torch.where(live, scale(0) * coef, 0.0)
        e.mul_(torch.where(live, c / total, 0.0)[:, None])
        e.view(-1).index_add_(0, pairs.pos_flat, (c / n_pos.clamp_min(1)).neg_()[rows])
    return [RowTerms(values, lambda: valid.to(s.dtype), lambda: (values > 0).to(s.dtype))]


def _negative_lse(
    s: torch.Tensor, pairs: BlockPairs, coef: float, work: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(e, total, lse, has_neg)``: the negatives' exponentials (see :func:`_shifted_exp`) and
    log-sum-exp per row (0 on rows without a negative, as :func:`masked_logsumexp`)."""
    e, total, shift = _shifted_exp(s, pairs, coef, work, hide_pos=True)
    has_neg = pairs.n_neg > 0
    return e, total, torch.where(has_neg, total.log() + shift, 0.0), has_neg


def ntxent_fused(
    s: torch.Tensor,
    pairs: BlockPairs,
    grad: torch.Tensor | None,
    scale: RowScale | None,
    temperature: float,
    is_distance: bool = False,
) -> list[RowTerms]:
    """:func:`ntxent_rows` on the sparse form of a block, with dL/ds written into ``grad``.

    Per positive pair ``l_ip = log(e^{z_ip} + e^{L_i}) - z_ip`` with ``L_i = LSE_n z_in``: ``L``
    is one dense exponential pass over the row with the positive and self cells zeroed, the
    pair terms are sparse. With ``q_ip = sigmoid(L_i - z_ip)`` the gradient is ``-k q_ip`` on the
    positive cells and ``k softmax_n(z_in) sum_p q_ip`` on the negatives (the scaled pass).
    """
    coef = _logit_coef(temperature, is_distance)
    b = s.shape[0]
    work = grad if grad is not None else torch.empty_like(s)
    e, total, lse, has_neg = _negative_lse(s, pairs, coef, work)
    rows = pairs.pos_rows
    zp = _positive_logits(s, pairs, coef)
    lse_p = lse[rows]
    hn = has_neg.to(s.dtype)
    values = segment_sum(torch.logaddexp(zp, lse_p) - zp, rows, b) * hn
    n_pos = pairs.n_pos.to(s.dtype)
    if grad is not None:
        c = scale(0) * coef * hn
        q = torch.sigmoid(lse_p - zp)
        e.mul_(torch.where(has_neg, c * segment_sum(q, rows, b) / total, 0.0)[:, None])
        e.view(-1).index_copy_(0, pairs.pos_flat, c[rows].neg() * q)
    return [RowTerms(values, n_pos, n_pos * hn)]


def dcl_fused(
    s: torch.Tensor,
    pairs: BlockPairs,
    grad: torch.Tensor | None,
    scale: RowScale | None,
    temperature: float,
    is_distance: bool = False,
) -> list[RowTerms]:
    """:func:`dcl_rows` (unit weights) on the sparse form of a block, with dL/ds written into
    ``grad``.

    Per row ``(|P(i)| L_i - sum_p z_ip)`` on rows with a negative, ``L_i = LSE_n z_in`` from one
    dense exponential pass with the positive and self cells zeroed; the positive sum is sparse.
    The gradient is ``k |P(i)| softmax_n(z_in)`` on the negatives and ``-k`` on the positives.
    """
    coef = _logit_coef(temperature, is_distance)
    b = s.shape[0]
    work = grad if grad is not None else torch.empty_like(s)
    e, total, lse, has_neg = _negative_lse(s, pairs, coef, work)
    rows = pairs.pos_rows
    hn = has_neg.to(s.dtype)
    n_pos = pairs.n_pos.to(s.dtype)
    pos_sum = segment_sum(_positive_logits(s, pairs, coef), rows, b)
    values = (n_pos * lse - pos_sum) * hn
    n_terms = n_pos * hn
    if grad is not None:
        c = scale(0) * coef * hn
        e.mul_(torch.where(has_neg, c * n_pos / total, 0.0)[:, None])
        e.view(-1).index_copy_(0, pairs.pos_flat, c.neg()[rows])
    return [RowTerms(values, n_terms, n_terms)]
