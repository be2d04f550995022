"""Row objectives of the learning-to-rank losses: pure functions of a slate of scores [Q, L].

Pairwise objectives are written for the slate engine (:func:`pairloss.engine.run_slate`): a
factory takes the per-item data of the slate (relevance, validity, gains, positions) and returns
``f(s_rows, s, start, end) -> (values, counts)`` for the item rows ``start:end`` of every query,
so that no [Q, L, L] tensor is needed. Listwise objectives (ListNet, ListMLE, softmax
cross-entropy, Plackett-Luce distillation) are per-query functions of [Q, L] and need no pairs.

Conventions: ``valid`` [Q, L] marks real items (padding is False); relevance is 0 at padded
items; items are compared only within their query. ``D(p) = log2(2 + p)`` is the DCG discount of
the 0-based position ``p``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..engine import SlateObjective
from .tail_logsumexp import tail_logsumexp

LN2 = math.log(2.0)

LAMBDA_SCHEMES = (
    "ndcg_loss1",
    "ndcg_loss2",
    "ndcg_loss2pp",
    "lambdarank",
    "ranknet",
    "ranknet_gt_diff",
    "ranknet_gt_diff_powed",
)
"""LambdaLoss weighting schemes (Wang et al., CIKM 2018; allRank's ``*_scheme`` functions and
sentence-transformers' ``*Scheme`` classes)."""

PSL_ACTIVATIONS = ("tanh", "atan", "relu")


def discounts(n: int, like: torch.Tensor) -> torch.Tensor:
    """``D(p) = log2(2 + p)`` for the 0-based positions ``p = 0 .. n-1``, in ``like``'s dtype."""
    return torch.log2(torch.arange(n, device=like.device, dtype=like.dtype) + 2.0)


def exp2_gain(relevance: torch.Tensor) -> torch.Tensor:
    """The exponential gain ``2^rel - 1`` of NDCG (Burges et al. 2005)."""
    return torch.expm1(relevance * LN2)


def order_by_scores(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Indices [Q, L] that sort every query's real items by descending score (ties: by input
    position), padded items last."""
    key = torch.where(valid, scores.detach(), torch.full_like(scores, -math.inf))
    return torch.sort(key, dim=1, descending=True, stable=True).indices


def order_by_relevance(relevance: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Indices [Q, L] that sort every query's real items by descending relevance (ties: by input
    position), padded items last."""
    return order_by_scores(relevance, valid)


def ideal_dcg(
    relevance: torch.Tensor, valid: torch.Tensor, k: int | None, gain: str = "exp2"
) -> torch.Tensor:
    """The DCG@k of the ideal ordering of every query, [Q] (k None: the whole list)."""
    rel = torch.gather(relevance, 1, order_by_relevance(relevance, valid))
    g = exp2_gain(rel) if gain == "exp2" else rel
    d = discounts(rel.shape[1], rel)
    cut = rel.shape[1] if k is None else min(k, rel.shape[1])
    return (g / d)[:, :cut].sum(dim=1)


def lambda_weights(
    scheme: str,
    gain_rows: torch.Tensor,
    gain: torch.Tensor,
    rel_rows: torch.Tensor,
    rel: torch.Tensor,
    start: int,
    end: int,
    mu: float,
) -> torch.Tensor | float:
    """The LambdaLoss pair weights of rows ``start:end`` (positions in the predicted order)
    against all positions: [Q, b, L] (or [Q, b, 1], or 1.0).

    ``gain`` [Q, L] are the normalised gains ``G = (2^rel - 1) / maxDCG`` in predicted order,
    ``rel`` the relevance in predicted order. Schemes (Wang et al. 2018, Section 4; formulas as
    allRank 1.4.3 and sentence-transformers 6 compute them):

    - ``ndcg_loss1``: ``G_i / D_i`` (row weight);
    - ``ndcg_loss2``: ``delta_ij |G_i - G_j|``, ``delta_ij = |1/log2(1 + |i-j|) -
      1/log2(2 + |i-j|)|`` (0 on the diagonal);
    - ``lambdarank``: ``|1/D_i - 1/D_j| |G_i - G_j|``;
    - ``ndcg_loss2pp``: ``mu * ndcg_loss2 + lambdarank``;
    - ``ranknet``: 1; ``ranknet_gt_diff``: ``|rel_i - rel_j|``; ``ranknet_gt_diff_powed``:
      ``|rel_i^2 - rel_j^2|``.

    The position parts are :func:`lambda_position_factor`'s.
    """
    if scheme == "ranknet":
        return 1.0
    if scheme == "ranknet_gt_diff":
        return (rel_rows[:, :, None] - rel[:, None, :]).abs()
    if scheme == "ranknet_gt_diff_powed":
        return (rel_rows[:, :, None] ** 2 - rel[:, None, :] ** 2).abs()
    factor = lambda_position_factor(scheme, gain.shape[1], start, end, mu, None, "either", gain)
    if scheme == "ndcg_loss1":
        return gain_rows[:, :, None] * factor[None]
    return (gain_rows[:, :, None] - gain[:, None, :]).abs() * factor[None]


def lambda_pairs_objective(
    relevance: torch.Tensor,
    valid: torch.Tensor,
    gain: torch.Tensor,
    scheme: str,
    sigma: float,
    mu: float,
    k: int | None,
    k_pairs: str,
    log_base: float,
) -> SlateObjective:
    """LambdaLoss on a slate sorted by the predicted scores (positions = columns).

    Row ``i``'s terms: ``-w_ij log_b sigmoid(sigma (s_i - s_j))`` over the pairs ``j`` with
    both items real and ``rel_i > rel_j`` (scheme ``ndcg_loss1``: every pair of real items,
    the diagonal included, as allRank and sentence-transformers), and, when ``k`` is given,
    ``i < k or j < k`` (``k_pairs="either"``, the LambdaLoss paper and sentence-transformers) or
    ``i < k and j < k`` (``"both"``, allRank 1.4.3). ``relevance``, ``valid`` and ``gain``
    [Q, L] are in predicted order; ``log_base`` is ``ln b`` (``ln 2`` for log2).
    """
    n = relevance.shape[1]
    pos = torch.arange(n, device=relevance.device)

    def objective(s_rows, s, start, end):
        rel_rows, valid_rows = relevance[:, start:end], valid[:, start:end]
        pairs = valid_rows[:, :, None] & valid[:, None, :]
        if scheme != "ndcg_loss1":
            pairs = pairs & (rel_rows[:, :, None] > relevance[:, None, :])
        if k is not None:
            top_i, top_j = pos[start:end, None] < k, pos[None, :] < k
            pairs = pairs & ((top_i | top_j) if k_pairs == "either" else (top_i & top_j))[None]
        w = lambda_weights(scheme, gain[:, start:end], gain, rel_rows, relevance, start, end, mu)
        diff = s_rows[:, :, None] - s[:, None, :]
        terms = -F.logsigmoid(sigma * diff)
        if not isinstance(w, float):
            terms = terms * w
        if log_base != 1.0:
            terms = terms / log_base
        terms = torch.where(pairs, terms, torch.zeros_like(terms))
        return terms.sum(dim=2), pairs.sum(dim=2)

    return objective


def binary_pairs_objective(valid: torch.Tensor, positive: torch.Tensor) -> SlateObjective:
    """``-log sigmoid(s_i - s_j)`` over the pairs (positive ``i``, non-positive ``j``) of real
    items of the same query (BPR, and the MW/AUC surrogate)."""

    def objective(s_rows, s, start, end):
        pairs = (valid[:, start:end] & positive[:, start:end])[:, :, None] & (valid & ~positive)[
            :, None, :
        ]
        terms = F.softplus(s[:, None, :] - s_rows[:, :, None])
        terms = torch.where(pairs, terms, torch.zeros_like(terms))
        return terms.sum(dim=2), pairs.sum(dim=2)

    return objective


def psl_log_activation(d: torch.Tensor, activation: str, eps: float) -> torch.Tensor:
    """``log a(d)`` of the PSL activations: ``tanh``: ``log(tanh d + 1) = log 2 + log
    sigmoid(2d)`` (exact at any d); ``atan``: ``log(atan d + 1)``; ``relu``: ``log relu(d + 1)``;
    the last two are floored at ``log eps`` where ``a(d) <= eps`` (``a`` reaches 0 at
    ``d = -tan 1`` and ``d = -1``)."""
    if activation == "tanh":
        return LN2 + F.logsigmoid(2.0 * d)
    a = torch.atan(d) + 1.0 if activation == "atan" else d + 1.0
    return torch.log(torch.clamp(a, min=eps))


def psl_objective(
    relevance: torch.Tensor, valid: torch.Tensor, activation: str, temperature: float, eps: float
) -> SlateObjective:
    """PSL row ``i`` (a relevant item): ``LSE_j log a(s_j - s_i) / tau`` over the real items
    ``j`` of lower relevance; rows without such ``j`` have no term."""

    def objective(s_rows, s, start, end):
        rel_rows = relevance[:, start:end]
        rows = valid[:, start:end] & (rel_rows > 0)
        pairs = (
            rows[:, :, None] & valid[:, None, :] & (relevance[:, None, :] < rel_rows[:, :, None])
        )
        x = psl_log_activation(s[:, None, :] - s_rows[:, :, None], activation, eps) / temperature
        x = torch.where(pairs, x, torch.full_like(x, -math.inf))
        has = pairs.any(dim=2)
        lse = torch.logsumexp(x, dim=2)
        values = torch.where(has, lse, torch.zeros_like(lse))
        return values, has

    return objective


def approx_ndcg_objective(gain: torch.Tensor, valid: torch.Tensor, alpha: float) -> SlateObjective:
    """ApproxNDCG row ``i``: ``G_i / log2(1 + pi_i)`` with the smooth position ``pi_i = 1 +
    sum_{j != i} sigmoid(-alpha (s_i - s_j))`` over real ``j`` (Qin et al. 2010, eqs. 19-21;
    allRank's ``approxNDCGLoss``); ``gain`` [Q, L] is ``(2^rel - 1) / maxDCG``. The values are
    NDCG contributions (to be maximised)."""

    def objective(s_rows, s, start, end):
        valid_rows = valid[:, start:end]
        pairs = valid_rows[:, :, None] & valid[:, None, :]
        idx = torch.arange(start, end, device=s.device)
        pairs[:, torch.arange(end - start, device=s.device), idx] = False
        p = torch.sigmoid(-alpha * (s_rows[:, :, None] - s[:, None, :]))
        position = 1.0 + torch.where(pairs, p, torch.zeros_like(p)).sum(dim=2)
        values = gain[:, start:end] / torch.log2(1.0 + position)
        values = torch.where(valid_rows, values, torch.zeros_like(values))
        return values, valid_rows

    return objective


def average_ranks(relevance: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """1-based rank of every real item by descending relevance, ties sharing their average rank
    (``#greater + (#equal + 1) / 2``, the item itself among the equal); 0 at padding."""
    key = torch.where(valid, relevance, torch.full_like(relevance, -math.inf))
    ascending = torch.sort(key, dim=1).values
    right = torch.searchsorted(ascending, key.contiguous(), right=True)
    left = torch.searchsorted(ascending, key.contiguous(), right=False)
    greater = relevance.shape[1] - right
    ranks = greater.to(relevance.dtype) + ((right - left).to(relevance.dtype) + 1.0) / 2.0
    return torch.where(valid, ranks, torch.zeros_like(ranks))


def adr_mse_objective(
    true_ranks: torch.Tensor, valid: torch.Tensor, alpha: float
) -> SlateObjective:
    """ADR-MSE row ``i``: ``(true_rank_i - approx_rank_i)^2 / log2(1 + true_rank_i)`` with
    ``approx_rank_i = 1 + sum_{j != i} sigmoid(alpha (s_j - s_i))`` over real ``j``
    (Rank-DistiLLM; sentence-transformers' ``ADRMSELoss``)."""

    def objective(s_rows, s, start, end):
        valid_rows = valid[:, start:end]
        pairs = valid_rows[:, :, None] & valid[:, None, :]
        idx = torch.arange(start, end, device=s.device)
        pairs[:, torch.arange(end - start, device=s.device), idx] = False
        p = torch.sigmoid(alpha * (s[:, None, :] - s_rows[:, :, None]))
        approx = 1.0 + torch.where(pairs, p, torch.zeros_like(p)).sum(dim=2)
        true = true_ranks[:, start:end]
        safe = torch.where(valid_rows, true, torch.ones_like(true))
        values = (safe - approx) ** 2 / torch.log2(safe + 1.0)
        values = torch.where(valid_rows, values, torch.zeros_like(values))
        return values, valid_rows

    return objective


def masked_scores(scores: torch.Tensor, valid: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """``scores`` with ``fill`` at padded items (differentiable; no gradient reaches padding)."""
    return torch.where(valid, scores, torch.full_like(scores, fill))


def listnet_rows(
    scores: torch.Tensor, relevance: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """ListNet top-one cross-entropy per query, [Q]: ``-sum_i softmax(rel)_i log softmax(s)_i``
    over the real items (Cao et al., ICML 2007)."""
    neg = torch.full_like(scores, -math.inf)
    log_p = torch.log_softmax(torch.where(valid, scores, neg), dim=1)
    target = torch.softmax(torch.where(valid, relevance, neg), dim=1)
    terms = torch.where(valid, target * log_p, torch.zeros_like(log_p))
    rows = -terms.sum(dim=1)
    return torch.where(valid.any(dim=1), rows, torch.zeros_like(rows))


def plackett_luce_terms(
    scores_in_order: torch.Tensor, valid_in_order: torch.Tensor
) -> torch.Tensor:
    """Per position ``k`` of a given order: ``log sum_{j >= k} e^{s_j} - s_k`` over the real
    items (the negative log-likelihood of the Plackett-Luce model, term by term), 0 at padding;
    [Q, L]. Computed with a reversed log-cumsum-exp (finite at any scale) whose derivatives of
    every order are exact (:func:`~pairloss.objectives.tail_logsumexp.tail_logsumexp`)."""
    x = torch.where(valid_in_order, scores_in_order, torch.full_like(scores_in_order, -math.inf))
    tail = tail_logsumexp(x)
    terms = tail - x
    return torch.where(valid_in_order, terms, torch.zeros_like(terms))


def softmax_ce_rows(
    scores: torch.Tensor, relevance: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Listwise softmax cross-entropy per query (RankT5; TF-Ranking's SoftmaxLoss):
    ``-sum_i (y_i / sum_j y_j) log softmax(s)_i`` over real items; returns (values [Q],
    has_relevant [Q]) (queries whose labels sum to 0 give 0)."""
    neg = torch.full_like(scores, -math.inf)
    log_p = torch.log_softmax(torch.where(valid, scores, neg), dim=1)
    total = relevance.sum(dim=1)
    has = valid.any(dim=1) & (total > 0)
    weight = relevance / torch.where(has, total, torch.ones_like(total))[:, None]
    terms = torch.where(valid, weight * log_p, torch.zeros_like(log_p))
    rows = -terms.sum(dim=1)
    return torch.where(has, rows, torch.zeros_like(rows)), has


def lambda_position_factor(
    scheme: str, n: int, start: int, end: int, mu: float, k: int | None, k_pairs: str, like
) -> torch.Tensor | None:
    """The part of a LambdaLoss weight that depends on positions only, [b, L] for rows
    ``start:end`` (the ``k`` cut included): ``delta_ij`` (NDCG-Loss2), ``|1/D_i - 1/D_j|``
    (LambdaRank), ``mu delta_ij + |1/D_i - 1/D_j|`` (NDCG-Loss2++), ``1/D_i`` (NDCG-Loss1);
    None when it is 1 everywhere."""
    pos_i = torch.arange(start, end, device=like.device)
    pos_j = torch.arange(n, device=like.device)
    out = None
    if scheme in ("ndcg_loss2", "ndcg_loss2pp"):
        lag = (pos_i[:, None] - pos_j[None, :]).abs().to(like.dtype)
        delta = (1.0 / torch.log2(1.0 + lag) - 1.0 / torch.log2(2.0 + lag)).abs()
        out = torch.where(lag == 0, torch.zeros_like(delta), delta)
        if scheme == "ndcg_loss2pp":
            out = mu * out
    if scheme in ("lambdarank", "ndcg_loss2pp"):
        inv = 1.0 / discounts(n, like)
        lam = (inv[start:end][:, None] - inv[None, :]).abs()
        out = lam if out is None else out + lam
    if scheme == "ndcg_loss1":
        out = (1.0 / discounts(n, like)[start:end])[:, None].expand(end - start, n)
    if k is not None:
        top_i, top_j = pos_i[:, None] < k, pos_j[None, :] < k
        keep = (top_i | top_j) if k_pairs == "either" else (top_i & top_j)
        keep = keep.to(like.dtype)
        out = keep if out is None else out * keep
    return out


def lambda_pairs_fused(
    relevance: torch.Tensor,
    valid: torch.Tensor,
    gain: torch.Tensor,
    scheme: str,
    sigma: float,
    mu: float,
    k: int | None,
    k_pairs: str,
    log_base: float,
):
    """The hand-differentiated form of :func:`lambda_pairs_objective` for the blocked slate
    engine (:data:`pairloss.engine.SlateFused`).

    Per block, with ``x_ij = sigma (s_i - s_j)`` and the pair weight ``W_ij`` (zero off the
    counted pairs): value ``sum_j W_ij softplus(-x_ij) / ln b``; ``d/dx_ij = -W_ij
    sigmoid(-x_ij) / ln b``, so the row gradient is ``sigma sum_j`` and the column gradient
    ``-sigma sum_i`` of it. ``W`` is built without masks: padded items get gain (or relevance)
    -inf as rows and +inf as columns, so ``relu(G_i - G_j)`` is 0 on every pair that is not
    counted (``G`` is increasing in the relevance within a query, so ``G_i > G_j`` exactly when
    ``rel_i > rel_j``), and ``|G_i - G_j|`` where it is. ``sigmoid(-x)`` is taken as
    ``-expm1(-softplus(-x))``, accurate at any gap."""
    n = relevance.shape[1]
    inf = torch.full_like(relevance, math.inf)
    by_gain = scheme in ("ndcg_loss2", "ndcg_loss2pp", "lambdarank")
    key = gain if by_gain else relevance
    key_rows = torch.where(valid, key, -inf)
    key_cols = torch.where(valid, key, inf)
    squares = torch.where(valid, relevance * relevance, torch.zeros_like(relevance))
    valid_f = valid.to(relevance.dtype)
    scale = sigma / log_base

    def weights(start: int, end: int) -> torch.Tensor:
        if scheme == "ndcg_loss1":
            w = (gain * valid_f)[:, start:end, None] * valid_f[:, None, :]
        else:
            w = key_rows[:, start:end, None] - key_cols[:, None, :]
            if scheme == "ranknet":
                w = (w > 0).to(relevance.dtype)
            elif scheme == "ranknet_gt_diff_powed":
                gap = (squares[:, start:end, None] - squares[:, None, :]).abs_()
                w = gap.mul_(w > 0)
            else:
                w = w.clamp_(min=0.0)
        factor = lambda_position_factor(scheme, n, start, end, mu, k, k_pairs, relevance)
        return w if factor is None else w.mul_(factor)

    def fused(s_rows, s, start, end, grad):
        w = weights(start, end)
        x = torch.sub(s_rows[:, :, None], s[:, None, :]).mul_(-sigma)
        soft = F.softplus(x)
        values = torch.einsum("qbl,qbl->qb", w, soft) / log_base
        if not grad:
            return values, None, None
        g = soft.neg_().expm1_().mul_(w)  # -W sigmoid(-x)
        return values, g.sum(dim=2).mul_(scale), g.sum(dim=1).mul_(-scale)

    return fused


def count_ordered_pairs(relevance: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per query, the number of pairs (i, j) of real items with ``rel_i > rel_j``, [Q], in
    O(L log L) per query."""
    key = torch.where(valid, relevance, torch.full_like(relevance, -math.inf))
    ascending = torch.sort(key, dim=1).values.contiguous()
    below = torch.searchsorted(ascending, key.contiguous(), right=False)
    padded = (~valid).sum(dim=1, keepdim=True)
    per_item = torch.where(valid, below - padded, torch.zeros_like(below))
    return per_item.sum(dim=1).to(relevance.dtype)


def count_lambda_pairs(
    relevance: torch.Tensor, valid: torch.Tensor, scheme: str, k: int | None, k_pairs: str
) -> torch.Tensor:
    """The number of pairs :func:`lambda_pairs_objective` counts per query, [Q], without the
    scores (``relevance``, ``valid`` in predicted order: real items first)."""
    n = valid.sum(dim=1).to(relevance.dtype)
    if scheme == "ndcg_loss1":
        if k is None:
            return n * n
        head = n.clamp(max=k)
        return n * n - (n - k).clamp(min=0) ** 2 if k_pairs == "either" else head * head
    total = count_ordered_pairs(relevance, valid)
    if k is None:
        return total
    top = torch.arange(relevance.shape[1], device=relevance.device)[None, :] < k
    if k_pairs == "either":
        return total - count_ordered_pairs(relevance, valid & ~top)
    return count_ordered_pairs(relevance, valid & top)
