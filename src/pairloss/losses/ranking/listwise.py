"""Listwise ranking losses: ListNet, ListMLE, position-aware ListMLE, and the listwise softmax
cross-entropy of RankT5."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...errors import PairLossError
from ...objectives.ranking import (
    listnet_rows,
    order_by_relevance,
    plackett_luce_terms,
    softmax_ce_rows,
)
from ...validation import check_callable, check_positive
from ._slate import SlateLoss


def _has_items(valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return valid.any(dim=1).to(dtype)


class ListNetLoss(SlateLoss):
    r"""ListNet: cross-entropy between the top-one probabilities of the labels and of the scores.

    .. math::
        \ell_q = -\sum_i \mathrm{softmax}(y)_i \log \mathrm{softmax}(s)_i

    over the real items of query ``q``; mean over the queries that have a real item. Paper: Cao
    et al., "Learning to Rank: From Pairwise Approach to Listwise Approach", ICML 2007. As
    allRank's ``listNet`` (which adds 1e-10 to the predicted probabilities before the log: equal
    to about 1e-10 relative unless a predicted probability is tiny) and sentence-transformers'
    ``ListNetLoss`` (exact ``log_softmax``, as here). Relevance may be any real number.

    A query with no relevant item still has a uniform target distribution (softmax of equal
    labels). Reductions: ``"mean"``, ``"sum"``, ``"none"`` (per query [Q]).
    """

    def per_query(self, scores, relevance, valid):
        return listnet_rows(scores, relevance, valid), _has_items(valid, scores.dtype)


class ListMLELoss(SlateLoss):
    r"""ListMLE: the negative log-likelihood of the relevance order under the Plackett-Luce
    model of the scores.

    .. math::
        \ell_q = \sum_{k=1}^{n} \Big( \log \sum_{m=k}^{n} e^{s_{\pi(m)}} - s_{\pi(k)} \Big)

    with ``pi`` the real items sorted by decreasing relevance (ties keep the input order: a
    stable sort); mean over the queries with a real item. Paper: Xia et al., "Listwise Approach
    to Learning to Rank - Theory and Algorithm", ICML 2008. As sentence-transformers'
    ``ListMLELoss`` (with ``respect_input_order=False``, or with the documents given in
    relevance order) and allRank's ``listMLE``. The tail sums are a reversed log-cumsum-exp,
    exact at any score scale; allRank adds 1e-10 inside the log (visible when a tail's scores
    are about 20 below the list's maximum) and breaks ties at random.

    Reductions: ``"mean"``, ``"sum"``, ``"none"`` (per query [Q]).
    """

    def per_query(self, scores, relevance, valid):
        order = order_by_relevance(relevance, valid)
        terms = plackett_luce_terms(torch.gather(scores, 1, order), torch.gather(valid, 1, order))
        return terms.sum(dim=1), _has_items(valid, scores.dtype)


def exp2_position_weights(mask_in_order: torch.Tensor) -> torch.Tensor:
    """p-ListMLE's default position weights ``2^(n - r) - 1`` (``r`` = 1..n the rank, ``n`` the
    number of real items), scaled by ``2^(1-n)`` so that they stay finite at any n:
    ``2^(1-r) - 2^(1-n)``. 0 at padding."""
    n = mask_in_order.sum(dim=1, keepdim=True).to(torch.float64)
    ranks = torch.arange(1, mask_in_order.shape[1] + 1, device=mask_in_order.device)
    w = torch.exp2(1.0 - ranks.to(torch.float64))[None, :] - torch.exp2(1.0 - n)
    return torch.where(mask_in_order, w, torch.zeros_like(w))


class PListMLELoss(SlateLoss):
    r"""Position-aware ListMLE (p-ListMLE): ListMLE with a weight per rank position.

    .. math::
        \ell_q = \sum_{k=1}^{n} \alpha_k \Big( \log \sum_{m=k}^{n} e^{s_{\pi(m)}}
                 - s_{\pi(k)} \Big), \quad \alpha_k = \frac{2^{n-k} - 1}{\sum_m (2^{n-m} - 1)}

    (``pi``: real items by decreasing relevance, ties in input order). Paper: Lan, Zhu, Guo, Niu
    & Cheng, "Position-Aware ListMLE: A Sequential Learning Process for Ranking", UAI 2014.
    As sentence-transformers' ``PListMLELoss`` with its default ``PListMLELambdaWeight`` (the
    weights normalised to sum 1 per list) and ``respect_input_order=False``.

    Args:
        rank_discount_fn: optional ``f(mask) -> [Q, L]`` unnormalised weights of the rank
            positions, given the boolean mask of real items in relevance order
            (sentence-transformers' ``rank_discount_fn``); default ``2^(n-r) - 1``.
        eps: added to the weights' sum before normalising (1e-10, as sentence-transformers).

    Reductions: ``"mean"`` over queries with a real item, ``"sum"``, ``"none"``.
    """

    def __init__(
        self,
        rank_discount_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        eps: float = 1e-10,
        reduction: str = "mean",
        padded_value_indicator: float | None = -1,
    ) -> None:
        super().__init__(reduction, padded_value_indicator)
        self.rank_discount_fn = (
            None
            if rank_discount_fn is None
            else check_callable(rank_discount_fn, "rank_discount_fn")
        )
        self.eps = check_positive(eps, "eps", strict=False)

    def per_query(self, scores, relevance, valid):
        order = order_by_relevance(relevance, valid)
        ok = torch.gather(valid, 1, order)
        terms = plackett_luce_terms(torch.gather(scores, 1, order), ok)
        if self.rank_discount_fn is None:
            w = exp2_position_weights(ok)
        else:
            w = self.rank_discount_fn(ok)
            if not isinstance(w, torch.Tensor) or tuple(w.shape) != tuple(ok.shape):
                raise PairLossError(
                    "rank_discount_fn: expected a tensor of the mask's shape "
                    f"{tuple(ok.shape)}, got {getattr(w, 'shape', type(w).__name__)}"
                )
            w = torch.where(ok, w.to(torch.float64), torch.zeros_like(w, dtype=torch.float64))
        w = (w / (w.sum(dim=1, keepdim=True) + self.eps)).to(scores.dtype)
        return (w * terms).sum(dim=1), _has_items(valid, scores.dtype)


class ListwiseSoftmaxLoss(SlateLoss):
    r"""Listwise softmax cross-entropy (RankT5's listwise loss; TF-Ranking's ``SoftmaxLoss``).

    .. math::
        \ell_q = -\sum_i \frac{y_i}{\sum_j y_j} \log \frac{e^{s_i}}{\sum_j e^{s_j}}

    over the real items. Paper: Zhuang et al., "RankT5: Fine-Tuning T5 for Text Ranking with
    Ranking Losses", SIGIR 2023 (there with one relevant item per list: then it is the
    cross-entropy of the relevant item's index, which the tests check). Labels are normalised to
    sum 1 as in TF-Ranking; a query whose labels sum to 0 (no relevant item) contributes 0 and is
    left out of the mean. Relevance must be >= 0.

    Reductions: ``"mean"`` over the queries with a relevant item, ``"sum"``, ``"none"``.
    """

    nonnegative_relevance = True

    def per_query(self, scores, relevance, valid):
        values, has = softmax_ce_rows(scores, relevance, valid)
        return values, has.to(scores.dtype)


def listnet(scores, relevance, mask=None, **kwargs) -> torch.Tensor:
    """Functional form of :class:`ListNetLoss` (same arguments and defaults)."""
    return ListNetLoss(**kwargs)(scores, relevance, mask)


def listmle(scores, relevance, mask=None, **kwargs) -> torch.Tensor:
    """Functional form of :class:`ListMLELoss` (same arguments and defaults)."""
    return ListMLELoss(**kwargs)(scores, relevance, mask)


def plistmle(scores, relevance, mask=None, **kwargs) -> torch.Tensor:
    """Functional form of :class:`PListMLELoss` (same arguments and defaults)."""
    return PListMLELoss(**kwargs)(scores, relevance, mask)


def listwise_softmax(scores, relevance, mask=None, **kwargs) -> torch.Tensor:
    """Functional form of :class:`ListwiseSoftmaxLoss` (same arguments and defaults)."""
    return ListwiseSoftmaxLoss(**kwargs)(scores, relevance, mask)
