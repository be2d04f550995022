"""Pairwise ranking losses on binary relevance: BPR, the Mann-Whitney (AUC) surrogate, and the
Pairwise Softmax Loss (PSL)."""

from __future__ import annotations

import torch

from ...engine import run_slate
from ...objectives.ranking import (
    PSL_ACTIVATIONS,
    lambda_pairs_fused,
    lambda_pairs_objective,
    psl_objective,
)
from ...validation import check_choice, check_positive
from ._slate import SlateLoss


def _positive_negative_sums(loss: SlateLoss, scores, relevance, valid):
    """Per query: the sum of ``softplus(s_j - s_i)`` over (positive i, negative j) pairs, and the
    number of such pairs (positive: relevance > 0)."""
    positive = (relevance > 0) & valid
    binary = positive.to(scores.dtype)
    args = (binary, valid, binary, "ranknet", 1.0, 0.0, None, "either", 1.0)
    values, _ = run_slate(
        lambda_pairs_objective(*args),
        scores,
        loss.engine,
        loss.block_size,
        lambda_pairs_fused(*args),
    )
    n_pos = positive.sum(dim=1).to(scores.dtype)
    n_neg = (valid & ~positive).sum(dim=1).to(scores.dtype)
    return values, n_pos * n_neg


class BPRLoss(SlateLoss):
    r"""Bayesian Personalised Ranking on slates: every relevant item against every irrelevant
    item of its query.

    .. math::
        \ell = \frac{1}{|P|} \sum_{(i, j) \in P} -\log \sigma(s_i - s_j),
        \quad P = \{(i, j): y_i > 0,\ y_j \le 0\}

    (mean over all such pairs of the batch). Paper: Rendle et al., "BPR: Bayesian Personalized
    Ranking from Implicit Feedback", UAI 2009 (there with one sampled negative per positive;
    here with all negatives of the slate). Relevance is binarised at 0.

    Reductions: ``"mean"`` over the pairs of the batch, ``"sum"``, ``"none"`` (per-query sums
    [Q]). A batch without any (positive, negative) pair gives 0 with zero gradient.
    """

    def per_query(self, scores, relevance, valid):
        return _positive_negative_sums(self, scores, relevance, valid)


class MannWhitneyRankingLoss(SlateLoss):
    r"""The Mann-Whitney (AUC) surrogate per query: the logistic loss averaged over the query's
    (relevant, irrelevant) pairs, then over queries.

    .. math::
        \ell_q = \frac{1}{|P_q| |N_q|} \sum_{i \in P_q} \sum_{j \in N_q}
                 \log\big(1 + e^{-(s_i - s_j)}\big)

    an upper bound (up to log 2) of ``1 - AUC_q``, the fraction of mis-ordered pairs of query
    ``q`` (Mann-Whitney U / (P N)). The MW loss of "Optimizing What Matters: AUC-Driven Learning
    for Robust Neural Retrieval" (binary cross-entropy over positive-negative score gaps), per
    query. Relevance is binarised at 0 (relevant: > 0).

    Reductions: ``"mean"`` over the queries that have at least one pair, ``"sum"`` over those
    queries, ``"none"``: the per-query ``ell_q`` [Q] (0 for a query without a pair).
    """

    def per_query(self, scores, relevance, valid):
        values, pairs = _positive_negative_sums(self, scores, relevance, valid)
        has = pairs > 0
        per_query = values / torch.where(has, pairs, torch.ones_like(pairs))
        return torch.where(has, per_query, torch.zeros_like(per_query)), has.to(scores.dtype)


class PairwiseSoftmaxLoss(SlateLoss):
    r"""PSL, the Pairwise Softmax Loss: softmax loss with the exponential of the score gap
    replaced by a bounded activation.

    .. math::
        \ell_i = \log \sum_{j:\, y_j < y_i} \exp\big(\log a(s_j - s_i) / \tau\big)
               = \log \sum_{j:\, y_j < y_i} a(s_j - s_i)^{1/\tau}

    for every relevant item ``i`` (``y_i > 0``) with at least one real item ``j`` of lower
    relevance, averaged over those items. Activations ``a``: ``"tanh"``: ``tanh(d) + 1``
    (computed as ``2 sigmoid(2d)``, exact at any gap); ``"atan"``: ``atan(d) + 1``; ``"relu"``:
    ``relu(d + 1)``; the softmax loss is ``a = exp`` (then ``ell_i`` is the usual
    ``LSE_j (s_j - s_i)/tau`` over the negatives). With binary relevance the negatives of ``i``
    are the irrelevant items.

    Paper: Yang et al., "PSL: Rethinking and Improving Softmax Loss from Pairwise Perspective for
    Recommendation", NeurIPS 2024; checked against the authors' ItemRec code (their
    ``PSLOptimizer`` method 1: ``logsumexp(sigma(d) / tau_star)`` over the negatives with
    ``sigma(d) = log(tanh(d) + 1)`` etc. and ``d = s_neg - s_pos``), where the scores are cosine
    similarities over a temperature >= 2, so that ``d`` stays in [-1, 1].

    Arbitrary scores can leave that range: ``atan(d) + 1`` and ``relu(d + 1)`` reach 0 (at
    ``d = -tan 1`` and ``d = -1``) and their log is floored at ``log eps`` there (a finite value
    with zero gradient). Defaults: ``activation="tanh"``, ``temperature=1`` (the paper's
    ``tau*``, the DRO temperature), ``eps=1e-10``.

    Reductions: ``"mean"`` over the counted relevant items, ``"sum"``, ``"none"`` (per-query
    sums [Q]). No relevant item with a lower-relevance partner anywhere: 0, zero gradient.
    """

    def __init__(
        self,
        activation: str = "tanh",
        temperature: float = 1.0,
        eps: float = 1e-10,
        reduction: str = "mean",
        padded_value_indicator: float | None = -1,
        engine: str = "auto",
        block_size: int | None = None,
    ) -> None:
        super().__init__(reduction, padded_value_indicator, engine, block_size)
        self.activation = check_choice(activation, "activation", PSL_ACTIVATIONS)
        self.temperature = check_positive(temperature, "temperature")
        self.eps = check_positive(eps, "eps")

    def per_query(self, scores, relevance, valid):
        objective = psl_objective(relevance, valid, self.activation, self.temperature, self.eps)
        return run_slate(objective, scores, self.engine, self.block_size)


def bpr(scores, relevance, mask=None, **kwargs) -> torch.Tensor:
    """Functional form of :class:`BPRLoss` (same arguments and defaults)."""
    return BPRLoss(**kwargs)(scores, relevance, mask)


def mann_whitney_ranking(scores, relevance, mask=None, **kwargs) -> torch.Tensor:
    """Functional form of :class:`MannWhitneyRankingLoss` (same arguments and defaults)."""
    return MannWhitneyRankingLoss(**kwargs)(scores, relevance, mask)


def pairwise_softmax(
    scores, relevance, mask=None, activation: str = "tanh", temperature: float = 1.0, **kwargs
) -> torch.Tensor:
    """Functional form of :class:`PairwiseSoftmaxLoss` (same arguments and defaults)."""
    return PairwiseSoftmaxLoss(activation, temperature, **kwargs)(scores, relevance, mask)
