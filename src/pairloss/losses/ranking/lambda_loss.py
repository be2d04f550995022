"""LambdaLoss (Wang et al., CIKM 2018) with all its weighting schemes, and RankNet (Burges et al.,
ICML 2005) as its unweighted member."""

from __future__ import annotations

import torch

from ...engine import run_slate
from ...errors import PairLossError
from ...objectives.ranking import (
    LAMBDA_SCHEMES,
    LN2,
    count_lambda_pairs,
    exp2_gain,
    ideal_dcg,
    lambda_pairs_fused,
    lambda_pairs_objective,
    order_by_scores,
)
from ...validation import check_bool, check_choice, check_positive, check_real
from ._slate import SlateLoss, check_k

_SCHEME_KEYS = {
    "ndcgloss1": "ndcg_loss1",
    "ndcgloss2": "ndcg_loss2",
    "ndcgloss2pp": "ndcg_loss2pp",
    "lambdarank": "lambdarank",
    "ranknet": "ranknet",
    "noweighting": "ranknet",
    "none": "ranknet",
    "ranknetgtdiff": "ranknet_gt_diff",
    "ranknetweightedbygtdiff": "ranknet_gt_diff",
    "ranknetgtdiffpowed": "ranknet_gt_diff_powed",
    "ranknetweightedbygtdiffpowed": "ranknet_gt_diff_powed",
}


def check_scheme(scheme: object) -> str:
    """A LambdaLoss weighting scheme by any of its names: ours (:data:`LAMBDA_SCHEMES`),
    allRank's function names (``"ndcgLoss2PP_scheme"``, ``None`` for no weights) or
    sentence-transformers' class names (``"NDCGLoss2PPScheme"``, ``"NoWeightingScheme"``)."""
    if scheme is None:
        return "ranknet"
    if isinstance(scheme, str):
        key = "".join(ch for ch in scheme.lower().replace("+", "p") if ch.isalnum())
        key = key[: -len("scheme")] if key.endswith("scheme") else key
        if key in _SCHEME_KEYS:
            return _SCHEME_KEYS[key]
    raise PairLossError(
        f"weighting_scheme: expected one of {LAMBDA_SCHEMES} (or allRank's / "
        f"sentence-transformers' name of one), got {scheme!r}"
    )


def check_log(reduction_log: object) -> float:
    """``"binary"`` (log2) or ``"natural"`` (ln): returns ``ln`` of the base."""
    return (
        LN2
        if check_choice(reduction_log, "reduction_log", ("binary", "natural")) == "binary"
        else 1.0
    )


class LambdaLoss(SlateLoss):
    r"""LambdaLoss: a weighted pairwise logistic loss that bounds a ranking metric.

    .. math::
        \ell = -\sum_{q} \sum_{(i, j):\, y_i > y_j} w_{ij}\,
               \log_b \sigma\big(\sigma_s (s_i - s_j)\big)

    where positions ``i, j`` are those of the items sorted by the predicted scores, and
    ``w_ij`` is the weighting scheme (:func:`pairloss.objectives.ranking.lambda_weights`):
    ``"ndcg_loss2pp"`` (default; ``mu * NDCG-Loss2 + LambdaRank``, the paper's best),
    ``"ndcg_loss2"``, ``"ndcg_loss1"``, ``"lambdarank"``, ``"ranknet"`` (no weights),
    ``"ranknet_gt_diff"`` / ``"ranknet_gt_diff_powed"`` (allRank's relevance-gap weights). The
    NDCG schemes use the gains ``G_i = (2^{y_i} - 1) / maxDCG@k`` and discounts ``D_i =
    log2(1 + i)`` (1-based).

    Paper: Wang, Li, Golbandi, Bendersky & Najork, "The LambdaLoss Framework for Ranking Metric
    Optimization", CIKM 2018. Checked term by term against allRank 1.4.3's ``lambdaLoss`` and
    sentence-transformers 6.3's ``LambdaLoss`` (values and gradients in float64, tests).

    Args:
        weighting_scheme: the scheme (any of our, allRank's or sentence-transformers' names).
        k: truncation (NDCG@k): maxDCG over the top ``k``, and only pairs touching the top
            ``k`` predicted positions count. None: all.
        k_pairs: ``"either"`` (default): a pair counts if one of its items is in the top ``k``
            (the paper, Eq. 18, and sentence-transformers); ``"both"``: only pairs inside the
            top ``k`` (allRank 1.4.3).
        sigma: the score scale inside the sigmoid (1).
        mu: the NDCG-Loss2 weight of ``ndcg_loss2pp`` (10).
        reduction_log: ``"binary"`` (log2, both peers' default) or ``"natural"``.
        eps: floor of maxDCG (1e-10): a query with no relevant item has all gains 0.
        reduction: ``"mean"`` (default): the sum over the mean number of counted pairs of the
            batch (sentence-transformers); ``"sum"``: the sum (allRank's default); ``"none"``:
            the per-query sums [Q].

    Differences from the peers, on purpose: the log-sigmoid is exact at any score gap
    (allRank clamps sigmoid(x) at 1e-10 and the weighted probability at 1e-10, which caps a
    pair's loss at about 33 bits and zeroes its gradient for gaps beyond about 23 / sigma;
    sentence-transformers is exact). Ties in the predicted scores keep the input order
    (a stable sort; the peers' sort leaves their order unspecified).

    Degenerate input: a query with no pair of different relevance (or no relevant item, for
    the NDCG schemes) contributes 0; nothing counted anywhere gives 0 with zero gradient.

    Engines: the pairs of a query are walked in row blocks by :func:`pairloss.engine.run_slate`
    (``engine="blocked"``, memory O(Q x L x block)) or all at once (``"dense"``); ``"auto"``
    picks dense up to ``DENSE_MAX_CELLS`` pair cells.
    """

    nonnegative_relevance = True

    def __init__(
        self,
        weighting_scheme: str | None = "ndcg_loss2pp",
        k: int | None = None,
        sigma: float = 1.0,
        mu: float = 10.0,
        reduction_log: str = "binary",
        eps: float = 1e-10,
        k_pairs: str = "either",
        reduction: str = "mean",
        padded_value_indicator: float | None = -1,
        engine: str = "auto",
        block_size: int | None = None,
    ) -> None:
        super().__init__(reduction, padded_value_indicator, engine, block_size)
        self.weighting_scheme = check_scheme(weighting_scheme)
        self.exp2_gains = not self.weighting_scheme.startswith("ranknet")
        self.k = check_k(k)
        self.k_pairs = check_choice(k_pairs, "k_pairs", ("either", "both"))
        self.sigma = check_positive(sigma, "sigma")
        self.mu = check_real(mu, "mu", low=0.0)
        self.log_base = check_log(reduction_log)
        self.eps = check_positive(eps, "eps")

    def per_query(self, scores, relevance, valid):
        order = order_by_scores(scores, valid)
        s = torch.gather(scores, 1, order)
        rel = torch.gather(relevance, 1, order)
        ok = torch.gather(valid, 1, order)
        max_dcg = ideal_dcg(relevance, valid, self.k).clamp(min=self.eps)
        gain = exp2_gain(rel) / max_dcg[:, None]
        return self._walk(s, rel, ok, gain, self.k)

    def _walk(self, s, rel, ok, gain, k):
        args = (rel, ok, gain, self.weighting_scheme, self.sigma, self.mu, k, self.k_pairs)
        objective = lambda_pairs_objective(*args, self.log_base)
        fused = lambda_pairs_fused(*args, self.log_base)
        values, _ = run_slate(objective, s, self.engine, self.block_size, fused)
        return values, count_lambda_pairs(rel, ok, self.weighting_scheme, k, self.k_pairs)


class RankNetLoss(LambdaLoss):
    r"""RankNet: logistic loss on every pair of items of different relevance.

    .. math::
        \ell = \frac{1}{|P|} \sum_{(i, j) \in P} w_{ij}\,
               \log\big(1 + e^{-\sigma (s_i - s_j)}\big),
        \quad P = \{(i, j): y_i > y_j\}

    with ``w_ij = 1``, ``|y_i - y_j|`` (``weight_by_diff``) or ``|y_i^2 - y_j^2|``
    (``weight_by_diff_powed``). The mean is over the counted pairs of the whole batch.

    Paper: Burges et al., "Learning to Rank using Gradient Descent", ICML 2005. As allRank's
    ``rankNet`` (``BCEWithLogitsLoss`` over the pairs; ``reduction_log="natural"``, the
    default) and sentence-transformers' ``RankNetLoss`` (``reduction_log="binary"``, and ``k``:
    pairs with an item in the predicted top ``k``); it is :class:`LambdaLoss` without weights.
    Relevance may be any real number here (only its order and gaps are used).
    """

    nonnegative_relevance = False

    def __init__(
        self,
        sigma: float = 1.0,
        weight_by_diff: bool = False,
        weight_by_diff_powed: bool = False,
        k: int | None = None,
        reduction_log: str = "natural",
        k_pairs: str = "either",
        reduction: str = "mean",
        padded_value_indicator: float | None = -1,
        engine: str = "auto",
        block_size: int | None = None,
    ) -> None:
        by_diff = check_bool(weight_by_diff, "weight_by_diff")
        powed = check_bool(weight_by_diff_powed, "weight_by_diff_powed")
        if by_diff and powed:
            raise PairLossError(
                "weight_by_diff, weight_by_diff_powed: both True; expected at most one weighting"
            )
        scheme = "ranknet_gt_diff" if by_diff else "ranknet_gt_diff_powed" if powed else "ranknet"
        super().__init__(
            scheme,
            k,
            sigma,
            0.0,
            reduction_log,
            1e-10,
            k_pairs,
            reduction,
            padded_value_indicator,
            engine,
            block_size,
        )

    def per_query(self, scores, relevance, valid):
        if self.k is None:  # no positions needed: walk the pairs in input order
            return self._walk(scores, relevance, valid, relevance, None)
        return super().per_query(scores, relevance, valid)


def lambda_loss(
    scores: torch.Tensor,
    relevance: torch.Tensor,
    mask: torch.Tensor | None = None,
    weighting_scheme: str | None = "ndcg_loss2pp",
    k: int | None = None,
    sigma: float = 1.0,
    mu: float = 10.0,
    reduction_log: str = "binary",
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`LambdaLoss` (same arguments and defaults)."""
    return LambdaLoss(weighting_scheme, k, sigma, mu, reduction_log, **kwargs)(
        scores, relevance, mask
    )


def ranknet(
    scores: torch.Tensor,
    relevance: torch.Tensor,
    mask: torch.Tensor | None = None,
    sigma: float = 1.0,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`RankNetLoss` (same arguments and defaults)."""
    return RankNetLoss(sigma, **kwargs)(scores, relevance, mask)
