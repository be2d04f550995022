"""Smooth NDCG surrogates: ApproxNDCG (smooth positions) and NeuralNDCG (a relaxed sort)."""

from __future__ import annotations

import torch

from ...engine import run_slate
from ...objectives.ranking import (
    approx_ndcg_objective,
    discounts,
    exp2_gain,
    ideal_dcg,
)
from ...validation import check_bool, check_int, check_positive
from ._slate import SlateLoss, check_k


class ApproxNDCGLoss(SlateLoss):
    r"""ApproxNDCG: minus NDCG with every position replaced by a smooth count of the items
    scored above.

    .. math::
        \ell_q = -\sum_i \frac{2^{y_i} - 1}{\mathrm{maxDCG}_q}
                 \frac{1}{\log_2(1 + \hat\pi_i)}, \quad
        \hat\pi_i = 1 + \sum_{j \ne i} \sigma\big(-\alpha (s_i - s_j)\big)

    over the real items; mean over the queries that have a real item (a query with no relevant
    item has NDCG 0 and counts in the mean, as in allRank). No truncation (as allRank notes).
    Paper: Qin, Liu & Li, "A General Approximation Framework for Direct Optimization of
    Information Retrieval Measures", Information Retrieval 2010 (eqs. 19-21); as allRank's
    ``approxNDCGLoss`` (``alpha=1``, its default), which clamps each sigmoid at 1e-10 from below
    (a difference of at most 1e-10 per pair in the position; none here).

    Engines: the pairs are walked by :func:`pairloss.engine.run_slate` (blocked: O(Q x L x
    block) memory). Reductions: ``"mean"``, ``"sum"``, ``"none"`` (per query [Q]).
    """

    nonnegative_relevance = True
    exp2_gains = True

    def __init__(
        self,
        alpha: float = 1.0,
        eps: float = 1e-10,
        reduction: str = "mean",
        padded_value_indicator: float | None = -1,
        engine: str = "auto",
        block_size: int | None = None,
    ) -> None:
        super().__init__(reduction, padded_value_indicator, engine, block_size)
        self.alpha = check_positive(alpha, "alpha")
        self.eps = check_positive(eps, "eps")

    def per_query(self, scores, relevance, valid):
        max_dcg = ideal_dcg(relevance, valid, None).clamp(min=self.eps)
        gain = exp2_gain(relevance) / max_dcg[:, None]
        values, _ = run_slate(
            approx_ndcg_objective(gain, valid, self.alpha), scores, self.engine, self.block_size
        )
        return -values, valid.any(dim=1).to(scores.dtype)


def neural_sort(
    scores: torch.Tensor, valid: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The relaxed permutation matrix of deterministic NeuralSort (Grover et al., ICLR 2019):
    ``P[q, r, i] = softmax_i(((n + 1 - 2r) s_i - sum_k |s_i - s_k|) / tau)`` for the ranks
    ``r = 1..n`` of a query's ``n`` real items, over its real items; the block of padded ranks
    x padded items is 1 and the rest 0 (allRank's filling, which keeps every row and column sum
    of the Sinkhorn scaling away from 0). Returns ``(P [Q, L, L], rank_real [Q, L])``
    (``rank_real``: r <= n)."""
    n_real = valid.sum(dim=1)
    s = torch.where(valid, scores, torch.zeros_like(scores))
    pair = valid[:, :, None] & valid[:, None, :]
    gaps = (s[:, :, None] - s[:, None, :]).abs()
    spread = torch.where(pair, gaps, torch.zeros_like(gaps)).sum(dim=2)
    ranks = torch.arange(1, scores.shape[1] + 1, device=scores.device, dtype=scores.dtype)
    rank_real = ranks[None, :] <= n_real[:, None]
    scaling = n_real[:, None].to(scores.dtype) + 1.0 - 2.0 * ranks[None, :]
    logits = (scaling[:, :, None] * s[:, None, :] - spread[:, None, :]) / temperature
    logits = torch.where(valid[:, None, :], logits, torch.full_like(logits, -torch.inf))
    logits = torch.where(rank_real[:, :, None], logits, torch.zeros_like(logits))
    p = torch.softmax(logits, dim=-1)
    keep = rank_real[:, :, None] & valid[:, None, :]
    pad = ~rank_real[:, :, None] & ~valid[:, None, :]
    return torch.where(keep, p, pad.to(p.dtype)), rank_real


def sinkhorn(
    p: torch.Tensor,
    rank_real: torch.Tensor,
    valid: torch.Tensor,
    tol: float = 1e-6,
    max_iter: int = 50,
    eps: float = 1e-10,
) -> torch.Tensor:
    """Sinkhorn scaling of ``p`` [Q, L, L] towards a doubly stochastic matrix: columns then rows
    are normalised (sums floored at ``eps``) until every row and column sums to 1 within
    ``tol`` (all queries together), at most ``max_iter`` times; then everything outside the
    real block (real ranks x real items) is set to 0. allRank's ``sinkhorn_scaling``: the same
    order, floor, tolerance and stopping rule."""
    for _ in range(max_iter):
        p = p / p.sum(dim=1, keepdim=True).clamp(min=eps)
        p = p / p.sum(dim=2, keepdim=True).clamp(min=eps)
        with torch.no_grad():
            rows = float((p.sum(dim=2) - 1.0).abs().max())
            cols = float((p.sum(dim=1) - 1.0).abs().max())
        if rows < tol and cols < tol:
            break
    keep = rank_real[:, :, None] & valid[:, None, :]
    return torch.where(keep, p, torch.zeros_like(p))


class NeuralNDCGLoss(SlateLoss):
    r"""NeuralNDCG: minus NDCG@k computed with a relaxed sort.

    .. math::
        \ell_q = -\frac{1}{\mathrm{IDCG@k}_q} \sum_{r=1}^{k}
                 \frac{\big(\hat P_q\, g(y_q)\big)_r}{\log_2(1 + r)}

    where ``P_hat`` is the deterministic NeuralSort permutation matrix of the scores
    (:func:`neural_sort`, temperature ``tau``) made doubly stochastic by Sinkhorn scaling
    (:func:`sinkhorn`), and ``g`` the gain ``2^y - 1`` (``powered_relevancies=True``) or ``y``.
    Mean over the queries with IDCG > 0 (a query with no relevant item is left out; none at all
    gives 0). Paper: Pobrotyn & Bialobrzeski, "NeuralNDCG: Direct Optimisation of a Ranking
    Metric via Differentiable Relaxation of Sorting", 2021; as allRank's ``neuralNDCG``
    (deterministic variant), which computes its discounts and sort scaling in float32 (so it
    runs on float32 scores only; here any float dtype). The stochastic (Gumbel) variant and
    the transposed variant are not provided.

    Dense only: ``P_hat`` is a [Q, L, L] matrix by nature (Sinkhorn needs whole rows and
    columns at every iteration), so memory is O(Q x L x L).

    Args: ``temperature`` (1), ``powered_relevancies`` (True), ``k`` (None: whole list),
    ``max_iter`` (50) and ``tol`` (1e-6) of the Sinkhorn scaling.
    """

    nonnegative_relevance = True

    def __init__(
        self,
        temperature: float = 1.0,
        powered_relevancies: bool = True,
        k: int | None = None,
        max_iter: int = 50,
        tol: float = 1e-6,
        reduction: str = "mean",
        padded_value_indicator: float | None = -1,
    ) -> None:
        super().__init__(reduction, padded_value_indicator)
        self.temperature = check_positive(temperature, "temperature")
        self.powered_relevancies = check_bool(powered_relevancies, "powered_relevancies")
        self.exp2_gains = self.powered_relevancies
        self.k = check_k(k)
        self.max_iter = check_int(max_iter, "max_iter", minimum=1)
        self.tol = check_positive(tol, "tol")

    def per_query(self, scores, relevance, valid):
        p, rank_real = neural_sort(scores, valid, self.temperature)
        p = sinkhorn(p, rank_real, valid, self.tol, self.max_iter)
        gain_name = "exp2" if self.powered_relevancies else "linear"
        gains = exp2_gain(relevance) if self.powered_relevancies else relevance
        approx = torch.einsum("qri,qi->qr", p, gains) / discounts(scores.shape[1], scores)
        k = scores.shape[1] if self.k is None else min(self.k, scores.shape[1])
        idcg = ideal_dcg(relevance, valid, k, gain_name)
        has = idcg > 0
        ndcg = approx[:, :k].sum(dim=1) / (idcg + 1e-10)
        return torch.where(has, -ndcg, torch.zeros_like(ndcg)), has.to(scores.dtype)


def approx_ndcg(scores, relevance, mask=None, alpha: float = 1.0, **kwargs) -> torch.Tensor:
    """Functional form of :class:`ApproxNDCGLoss` (same arguments and defaults)."""
    return ApproxNDCGLoss(alpha, **kwargs)(scores, relevance, mask)


def neural_ndcg(scores, relevance, mask=None, temperature: float = 1.0, **kwargs) -> torch.Tensor:
    """Functional form of :class:`NeuralNDCGLoss` (same arguments and defaults)."""
    return NeuralNDCGLoss(temperature, **kwargs)(scores, relevance, mask)
