"""Row objectives of the margin-type pair losses: contrastive, generalized lifted structure,
margin (Wu et al.) and binomial deviance.

Every function takes a block of scores ``s`` [b, N] in the similarity's own units and the
boolean masks ``pos`` / ``neg`` [b, N], and returns a list of :class:`RowTerms`. When
``is_distance`` is False the scores are similarities and every margin flips direction (a
positive pair should have a *high* score), as pytorch-metric-learning's ``distance.margin`` does.
"""

from __future__ import annotations

import torch

from ..relations import BlockPairs
from .terms import (
    RowScale,
    RowTerms,
    hide_non_negatives_,
    masked_logsumexp,
    member_extreme_,
    segment_max,
    segment_sum,
    shifted_exp_,
)

# above this exponent log(1 + e^z) is z to working precision (e^-z below z's rounding), and
# e^z still far from overflow: the cut-off of the in-place softplus of a dense block
SOFTPLUS_LINEAR = {torch.float64: 40.0, torch.float32: 20.0}


def _gap(x: torch.Tensor, y: torch.Tensor | float, is_distance: bool) -> torch.Tensor:
    """How far ``x`` lies beyond ``y`` in the "farther apart" direction: x - y for distances,
    y - x for similarities."""
    return x - y if is_distance else y - x


def _softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + e^x) without overflow, exact (no linear cut-off)."""
    return x.clamp_min(0) + torch.log1p(torch.exp(-x.abs()))


def contrastive_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    pos_margin: float,
    neg_margin: float,
    is_distance: bool = True,
) -> list[RowTerms]:
    """Two components, one term per pair.

    positive pairs: [d - pos_margin]+        (similarity: [pos_margin - s]+)
    negative pairs: [neg_margin - d]+        (similarity: [s - neg_margin]+)
    """
    # one elementwise pass: a cell is either positive or negative
    loss = torch.relu(
        torch.where(pos, _gap(s, pos_margin, is_distance), _gap(neg_margin, s, is_distance))
    )
    return [RowTerms.per_pair(loss, pos), RowTerms.per_pair(loss, neg)]


def contrastive_listed(
    s_pos: torch.Tensor,
    s_neg: torch.Tensor,
    pos_margin: float,
    neg_margin: float,
    is_distance: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`contrastive_rows`'s terms on listed pairs: ``[d - pos_margin]+`` per listed
    positive pair, ``[neg_margin - d]+`` per listed negative pair (similarities: the margins
    flipped), one term per listing."""
    return (
        torch.relu(_gap(s_pos, pos_margin, is_distance)),
        torch.relu(_gap(neg_margin, s_neg, is_distance)),
    )


def negative_logsumexp_(
    work: torch.Tensor, pairs: BlockPairs, coef: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row, log sum_{n in N(i)} e^{coef w_in} of the values ``w`` held in ``work`` [b, N]
    (every cell; the positive and self cells are dropped here), in place: the exponents are
    shifted by their exact row maximum over the negatives and exponentiated in one pass, so
    afterwards ``work`` holds e^{coef w - max} on the negatives and 0 elsewhere. Returns
    ``(lse, total, has_neg)`` with ``total`` the row sums of ``work`` (1 on rows without
    negatives, whose ``lse`` is 0)."""
    has = pairs.n_neg > 0
    top = torch.where(has, member_extreme_(work, pairs, coef), 0.0)
    total = shifted_exp_(work, coef, top, work).sum(dim=1)
    total = torch.where(has, total, 1.0)
    return torch.where(has, total.log() + top, 0.0), total, has


def positive_logsumexp(
    x: torch.Tensor, rows: torch.Tensor, n_pos: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row, log sum_{p in P(i)} e^{x_ip} of the exponents ``x`` [P] of the positive cells
    (grouped by ``rows``), max-shifted. Returns ``(lse, e, total, has_pos)``: ``e`` [P] the
    shifted exponentials, ``total`` their row sums (1 on rows without positives, whose ``lse`` is
    0)."""
    has = n_pos > 0
    top = segment_max(x, rows, n_pos.shape[0], float("-inf"))
    top = torch.where(has, top, 0.0)
    e = torch.exp(x - top[rows])
    total = torch.where(has, segment_sum(e, rows, n_pos.shape[0]), 1.0)
    return torch.where(has, total.log() + top, 0.0), e, total, has


def contrastive_fused(
    s: torch.Tensor,
    pairs: BlockPairs,
    grad: torch.Tensor | None,
    scale: RowScale | None,
    pos_margin: float,
    neg_margin: float,
    is_distance: bool = True,
) -> list[RowTerms]:
    """:func:`contrastive_rows` on the sparse form of a block, with its gradient written into
    ``grad`` (see :class:`pairloss.engine.PairProblem`).

    Positive terms [d - pos_margin]+ are gathered from the list of positive cells. Negative
    terms [neg_margin - d]+ are one in-place pass over the row (positive and self cells zeroed);
    their non-zero count and gradient (-1 on every active cell; +1 for similarities) come from
    the sign of that buffer. The same with similarities, margins flipped.
    """
    sign = 1.0 if is_distance else -1.0  # slope of a positive term in s; negatives: -sign
    b, dtype = s.shape[0], s.dtype
    rows = pairs.pos_rows
    xp = (s.view(-1)[pairs.pos_flat] - pos_margin) * sign
    lp = torch.relu(xp)
    active_p = (xp > 0).to(dtype)
    pos_terms = RowTerms(
        segment_sum(lp, rows, b),
        pairs.n_pos.to(dtype),
        lambda: segment_sum(active_p, rows, b),
    )

    work = grad if grad is not None else torch.empty_like(s)
    torch.add(s.new_tensor(sign * neg_margin), s, alpha=-sign, out=work).clamp_min_(0)
    hide_non_negatives_(work, pairs, 0.0)
    neg_values = work.sum(dim=1)
    if grad is None:
        neg_terms = RowTerms(
            neg_values,
            pairs.n_neg.to(dtype),
            lambda: work.sign_().sum(dim=1),  # the terms are >= 0 (and work is scratch)
        )
        return [pos_terms, neg_terms]
    neg_nonzero = work.sign_().sum(dim=1)  # 1 on active cells, 0 elsewhere
    work.mul_((scale(1) * -sign)[:, None])
    grad_pos = active_p * (scale(0) * sign)[rows]
    if not scale.put_sparse(0, grad_pos):  # else the positive cells stay 0 (hidden above)
        grad.view(-1).index_copy_(0, pairs.pos_flat, grad_pos)
    return [pos_terms, RowTerms(neg_values, pairs.n_neg.to(dtype), neg_nonzero)]


def generalized_lifted_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    pos_margin: float,
    neg_margin: float,
    is_distance: bool = True,
) -> list[RowTerms]:
    """One term per anchor:

        [ log sum_{p in P(i)} e^{d_ip - pos_margin} + log sum_{n in N(i)} e^{neg_margin - d_in} ]+

    (similarities: e^{pos_margin - s_ip} and e^{s_in - neg_margin}). An empty set contributes 0.
    """
    pos_lse = masked_logsumexp(_gap(s, pos_margin, is_distance), pos)
    neg_lse = masked_logsumexp(_gap(neg_margin, s, is_distance), neg)
    valid = pos.any(dim=1) | neg.any(dim=1)
    return [RowTerms.per_anchor(torch.relu(pos_lse + neg_lse), valid)]


def generalized_lifted_fused(
    s: torch.Tensor,
    pairs: BlockPairs,
    grad: torch.Tensor | None,
    scale: RowScale | None,
    pos_margin: float,
    neg_margin: float,
    is_distance: bool = True,
) -> list[RowTerms]:
    """:func:`generalized_lifted_rows` on the sparse form of a block, with its gradient written
    into ``grad`` (see :class:`pairloss.engine.PairProblem`).

    The positive log-sum-exp is taken over the gathered positive cells; the negative one is a
    dense in-place pass (exponents -d, shifted by their exact maximum over the negatives, then
    + neg_margin). The gradient of [lse_p + lse_n]+ is the softmax weight of each cell times the
    slope of its exponent (d: +1 on positives, -1 on negatives; flipped for similarities), on
    the rows where the bracket is > 0.
    """
    sign = 1.0 if is_distance else -1.0  # slope of a positive exponent in s; negatives: -sign
    dtype = s.dtype
    rows = pairs.pos_rows
    xp = (s.view(-1)[pairs.pos_flat] - pos_margin) * sign
    lp, ep, sp, has_pos = positive_logsumexp(xp, rows, pairs.n_pos)

    work = grad if grad is not None else torch.empty_like(s)
    work.copy_(s)  # the negative exponent is -sign * s, plus the constant sign * neg_margin
    ln, sn, has_neg = negative_logsumexp_(work, pairs, -sign)
    ln = torch.where(has_neg, ln + sign * neg_margin, 0.0)

    total = lp + ln
    valid = has_pos | has_neg
    values = torch.where(valid, torch.relu(total), 0.0)
    if grad is not None:
        g = scale(0) * (valid & (total > 0)).to(dtype)
        work.mul_((g * -sign / sn)[:, None])
        grad.view(-1).index_copy_(0, pairs.pos_flat, ep * (g * sign / sp)[rows])
    return [RowTerms(values, lambda: valid.to(dtype), lambda: (values > 0).to(dtype))]


def margin_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    margin: float,
    beta: torch.Tensor,
    nu: float = 0.0,
    per_class_reg: bool = False,
    global_reg: bool = False,
    is_distance: bool = True,
) -> list[RowTerms]:
    """Margin loss (Wu et al. 2017) over all triplets (i, p, n) of each row, in O(b x N).

    With l+_ip = [d_ip - beta_i + margin]+ and l-_in = [beta_i - d_in + margin]+ (similarities:
    [beta_i - s_ip + margin]+ and [s_in - beta_i + margin]+), the triplets of row i sum to

        N_i sum_p l+_ip + P_i sum_n l-_in,

    where P_i, N_i are the row's numbers of positives and negatives: each pair term is repeated
    once per partner of the other kind. The non-zero count is N_i #{l+ > 0} + P_i #{l- > 0}
    (pytorch-metric-learning's divisor), and the number of triplets is P_i N_i.

    ``beta`` is a scalar or a [b] tensor (per-anchor values, e.g. beta of the anchor's class).
    ``per_class_reg`` adds nu * beta_i once per triplet to the same component (its divisor is
    the non-zero count). ``global_reg`` adds a second component nu * beta counted once per
    triplet with one "non-zero term" per triplet, which reduces to nu * beta when any triplet
    exists and to 0 otherwise.
    """
    beta = beta.to(s.dtype)
    b_col = beta.reshape(-1, 1) if beta.dim() > 0 else beta
    pos_loss = torch.relu(_gap(s, b_col, is_distance) + margin)
    neg_loss = torch.relu(_gap(b_col, s, is_distance) + margin)
    zero = torch.zeros((), dtype=s.dtype, device=s.device)
    pos_loss = torch.where(pos, pos_loss, zero)
    neg_loss = torch.where(neg, neg_loss, zero)
    n_pos = pos.sum(dim=1).to(s.dtype)
    n_neg = neg.sum(dim=1).to(s.dtype)
    n_triplets = n_pos * n_neg
    values = n_neg * pos_loss.sum(dim=1) + n_pos * neg_loss.sum(dim=1)
    nonzero = n_neg * (pos_loss > 0).sum(dim=1).to(s.dtype)
    nonzero = nonzero + n_pos * (neg_loss > 0).sum(dim=1).to(s.dtype)
    if per_class_reg:
        values = values + nu * beta.expand(s.shape[0]) * n_triplets
    out = [RowTerms(values, n_triplets, nonzero)]
    if global_reg:
        out.append(RowTerms(nu * beta * n_triplets, n_triplets, n_triplets))
    return out


def margin_triplets(
    d_ap: torch.Tensor,
    d_an: torch.Tensor,
    beta: torch.Tensor,
    margin: float,
    is_distance: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`margin_rows`'s pair terms on listed triplets (a, p, n) [T]: ``l+ = [d_ap - beta +
    margin]+`` and ``l- = [beta - d_an + margin]+`` (similarities: flipped), ``beta`` a scalar or
    one value per triplet."""
    return (
        torch.relu(_gap(d_ap, beta, is_distance) + margin),
        torch.relu(_gap(beta, d_an, is_distance) + margin),
    )


def margin_triplet_rows(
    pos_loss: torch.Tensor,
    neg_loss: torch.Tensor,
    anchors: torch.Tensor,
    n_rows: int,
    beta: torch.Tensor,
    nu: float = 0.0,
    per_class_reg: bool = False,
    global_reg: bool = False,
) -> list[RowTerms]:
    """:func:`margin_rows`'s components from listed triplets, per anchor row: the sum of each
    row's ``l+ + l-`` (plus ``nu * beta`` per triplet with ``per_class_reg``; ``beta`` is then
    one value per triplet), its number of triplets, and its non-zero count ``#{l+ > 0} +
    #{l- > 0}`` (pytorch-metric-learning's divisor); with ``global_reg`` the second component
    ``nu * beta`` counted once per triplet. A triplet listed twice counts twice."""
    values = pos_loss + neg_loss
    if per_class_reg:
        values = values + nu * beta
    active = (pos_loss.detach() > 0).to(values.dtype) + (neg_loss.detach() > 0).to(values.dtype)
    n_triplets = segment_sum(torch.ones_like(active), anchors, n_rows)
    out = [
        RowTerms(
            segment_sum(values, anchors, n_rows),
            n_triplets,
            segment_sum(active, anchors, n_rows),
        )
    ]
    if global_reg:
        out.append(RowTerms(nu * beta * n_triplets, n_triplets, n_triplets))
    return out


def binomial_deviance_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    alpha: float,
    beta: float,
    base: float,
    is_distance: bool = False,
) -> list[RowTerms]:
    """Two components, one term per pair:

        positive pairs: log(1 + e^{-alpha (s - base)})
        negative pairs: log(1 + e^{ beta (s - base)})

    For a distance d the signs flip (s - base is replaced by base - d). Computed in an overflow-
    free softplus form.
    """
    x = _gap(base, s, is_distance)  # s - base, or base - d
    loss = _softplus(torch.where(pos, -alpha * x, beta * x))  # one softplus per cell
    return [RowTerms.per_pair(loss, pos), RowTerms.per_pair(loss, neg)]


def _not_counted() -> torch.Tensor:
    raise RuntimeError("binomial_deviance_fused: need_nonzero=False, the count was not taken")


def binomial_deviance_fused(
    s: torch.Tensor,
    pairs: BlockPairs,
    grad: torch.Tensor | None,
    scale: RowScale | None,
    alpha: float,
    beta: float,
    base: float,
    is_distance: bool = False,
    need_nonzero: bool = True,
) -> list[RowTerms]:
    """:func:`binomial_deviance_rows` on the sparse form of a block, with its gradient written
    into ``grad`` (see :class:`pairloss.engine.PairProblem`).

    Positive terms are computed on the gathered positive cells. Negative terms are one in-place
    softplus pass over the row (positive and self cells zeroed); the gradient of softplus(z) is
    sigmoid(z) = 1 - e^{-softplus(z)}, taken from the same buffer. When a gradient is written,
    the per-row count of non-zero negative terms costs one more pass; ``need_nonzero=False`` (a
    reduction that does not read it) skips it.
    """
    sign = -1.0 if is_distance else 1.0  # slope of x = s - base (or base - d) in s
    b, dtype = s.shape[0], s.dtype
    rows = pairs.pos_rows
    zp = -alpha * _gap(base, s.view(-1)[pairs.pos_flat], is_distance)
    lp = _softplus(zp)
    pos_terms = RowTerms(
        segment_sum(lp, rows, b),
        pairs.n_pos.to(dtype),
        lambda: segment_sum((lp > 0).to(dtype), rows, b),
    )

    work = grad if grad is not None else torch.empty_like(s)
    torch.add(s.new_tensor(-beta * sign * base), s, alpha=beta * sign, out=work)
    torch.ops.aten.softplus.out(work, 1.0, SOFTPLUS_LINEAR.get(dtype, 20.0), out=work)
    hide_non_negatives_(work, pairs, 0.0)
    neg_values = work.sum(dim=1)

    n_neg = pairs.n_neg.to(dtype)
    if grad is None:  # the terms are >= 0 (and work is scratch)
        return [pos_terms, RowTerms(neg_values, n_neg, lambda: work.sign_().sum(dim=1))]
    nonzero = torch.sign(work).sum(dim=1) if need_nonzero else _not_counted
    # c sigmoid(z) = c - c e^{-softplus(z)}; 0 stays 0 on the positive and self cells
    c = (scale(1) * (beta * sign))[:, None]
    work.neg_().exp_().mul_(-c).add_(c)
    grad_pos = torch.sigmoid(zp) * (scale(0) * (-alpha * sign))[rows]
    if not scale.put_sparse(0, grad_pos):
        grad.view(-1).index_copy_(0, pairs.pos_flat, grad_pos)
    return [pos_terms, RowTerms(neg_values, n_neg, nonzero)]


class _TripletWeights:
    """The scale of :func:`margin_fused`'s two pair components: each positive term counts once
    per negative of its row and each negative term once per positive."""

    def __init__(self, scale: RowScale, n_pos: torch.Tensor, n_neg: torch.Tensor) -> None:
        self.scale, self.n_pos, self.n_neg = scale, n_pos, n_neg

    def __call__(self, k: int) -> torch.Tensor:
        return self.scale(0) * (self.n_neg if k == 0 else self.n_pos)

    def put_sparse(self, k: int, grad_at_positives: torch.Tensor) -> bool:
        return False


def margin_fused(
    s: torch.Tensor,
    pairs: BlockPairs,
    grad: torch.Tensor | None,
    scale: RowScale | None,
    margin: float,
    beta: float,
    is_distance: bool = True,
) -> list[RowTerms]:
    """:func:`margin_rows` with one scalar ``beta`` and no regulariser, on the sparse form of a
    block: the row's triplets sum to ``N_i sum_p l+_ip + P_i sum_n l-_in``, that is the two
    components of :func:`contrastive_fused` with margins ``beta -+ margin`` (distances; ``beta
    +- margin`` for similarities), weighted by the row's counts and added into one component."""
    lo, hi = beta - margin, beta + margin
    pos_margin, neg_margin = (lo, hi) if is_distance else (hi, lo)
    dtype = s.dtype
    n_pos, n_neg = pairs.n_pos.to(dtype), pairs.n_neg.to(dtype)
    weights = None if scale is None else _TripletWeights(scale, n_pos, n_neg)
    pos, neg = contrastive_fused(s, pairs, grad, weights, pos_margin, neg_margin, is_distance)
    values = n_neg * pos.values + n_pos * neg.values
    return [
        RowTerms(
            values,
            n_pos * n_neg,
            lambda: n_neg * pos.n_nonzero + n_pos * neg.n_nonzero,
        )
    ]


def negative_logsumexp_rows(
    s: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, neg_margin: float, is_distance: bool
) -> list[RowTerms]:
    """Per row, log sum_{n in N(i)} e^{m - d_in} (similarities: e^{s_in - m}); 0 for a row
    without negatives. The first stage of the lifted structure loss."""
    lse = masked_logsumexp(_gap(neg_margin, s, is_distance), neg)
    return [RowTerms.per_anchor(lse, neg.any(dim=1))]
