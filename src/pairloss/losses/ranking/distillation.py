"""Ranking distillation from a teacher's scores or ranks: Margin-MSE, ADR-MSE and Plackett-Luce
distillation."""

from __future__ import annotations

import torch

from ...engine import compute_dtype, run_slate
from ...errors import PairLossError
from ...objectives.ranking import (
    adr_mse_objective,
    average_ranks,
    order_by_scores,
    plackett_luce_terms,
)
from ...validation import check_positive, check_slate, check_tensor
from ._slate import SlateLoss, reduce_slate


class MarginMSELoss(SlateLoss):
    r"""Margin-MSE: the student's score margins between the positive and each negative match the
    teacher's.

    .. math::
        \ell = \frac{1}{|N|} \sum_{q} \sum_{j \ge 1}
               \big( (s_{q0} - s_{qj}) - (t_{q0} - t_{qj}) \big)^2

    Item 0 of every query is its positive, items 1.. its negatives; ``relevance`` holds the
    teacher's scores ``t`` (same layout). Mean over the real (query, negative) pairs of the
    batch. Paper: Hofstätter et al., "Improving Efficient Neural Ranking Models with
    Cross-Architecture Knowledge Distillation", 2020. As sentence-transformers' cross-encoder
    ``MarginMSELoss`` given labels as ``[positive score, negative scores...]`` (shape
    ``(batch, 1 + negatives)``); its other label layout, the margins themselves, is
    ``t_q0 - t_qj``. A query whose item 0 is padding has no term.

    Reductions: ``"mean"``, ``"sum"``, ``"none"`` (per-query sums [Q]). Teacher scores are real
    numbers, so no relevance value marks padding by default (``padded_value_indicator=None``;
    pass ``mask``).
    """

    def __init__(self, reduction: str = "mean", padded_value_indicator: float | None = None):
        super().__init__(reduction, padded_value_indicator)

    def per_query(self, scores, relevance, valid):
        anchor = valid[:, :1]
        pairs = valid & anchor
        pairs[:, 0] = False
        gap = (scores[:, :1] - scores) - (relevance[:, :1] - relevance)
        sq = torch.where(pairs, gap * gap, torch.zeros_like(gap))
        return sq.sum(dim=1), pairs.sum(dim=1).to(scores.dtype)


class ADRMSELoss(SlateLoss):
    r"""ADR-MSE: squared error between the true rank of every item and its smooth (approximate)
    rank under the scores, discounted like DCG.

    .. math::
        \ell = \frac{1}{n} \sum_{q, i} \frac{(\pi_i - \hat\pi_i)^2}{\log_2(1 + \pi_i)}, \quad
        \hat\pi_i = 1 + \sum_{j \ne i} \sigma\big(\alpha (s_j - s_i)\big)

    ``pi_i``: the rank of item ``i`` by decreasing relevance (1-based; tied labels share their
    average rank, so that equal scores can reach the target); mean over the ``n`` real items of
    the batch. Paper: Schlatt et al., "Rank-DistiLLM: Closing the Effectiveness Gap Between
    Cross-Encoders and LLMs for Passage Re-Ranking", 2024; as sentence-transformers'
    ``ADRMSELoss`` (``alpha=1``). Relevance may be any real number (a teacher's scores or
    labels: only their order is used).

    Engines: pairs walked by :func:`pairloss.engine.run_slate` (blocked: O(Q x L x block)).
    Reductions: ``"mean"``, ``"sum"``, ``"none"`` (per-query sums [Q]).
    """

    def __init__(
        self,
        alpha: float = 1.0,
        reduction: str = "mean",
        padded_value_indicator: float | None = -1,
        engine: str = "auto",
        block_size: int | None = None,
    ) -> None:
        super().__init__(reduction, padded_value_indicator, engine, block_size)
        self.alpha = check_positive(alpha, "alpha")

    def per_query(self, scores, relevance, valid):
        objective = adr_mse_objective(average_ranks(relevance, valid), valid, self.alpha)
        values, counts = run_slate(objective, scores, self.engine, self.block_size)
        return values, valid.sum(dim=1).to(scores.dtype) if counts is None else counts


class PlackettLuceDistillationLoss(SlateLoss):
    r"""Plackett-Luce distillation (PLD): the teacher's ranking as a Plackett-Luce target, each
    choice weighted by the teacher's confidence.

    .. math::
        \ell_q = \sum_{k=1}^{n} \alpha_k \Big( \log \sum_{m \ge k} e^{s_{\pi^*(m)}}
                 - s_{\pi^*(k)} \Big), \quad
        \alpha_k = \mathrm{softmax}(t / T)_{\pi^*(k)}

    ``t`` (``relevance``) are the teacher's scores; ``pi*`` orders the real items by decreasing
    teacher score (ties in input order), with the item ``targets[q]`` first when ``targets`` is
    given (the true class in classification distillation: the paper's "teacher-optimal"
    ranking). Mean over queries with a real item. Paper: Bassam, Zhu & Bian, "PLD: A
    Choice-Theoretic List-Wise Knowledge Distillation", 2025 (the weights from the teacher's
    softmax; convex and translation invariant in the student scores; with all the weight on the
    first choice it is cross-entropy).

    Call: ``loss(scores, teacher_scores, mask=None, targets=None)``; ``temperature`` ``T``
    (default 1). Reductions: ``"mean"``, ``"sum"``, ``"none"``.
    """

    def __init__(
        self,
        temperature: float = 1.0,
        reduction: str = "mean",
        padded_value_indicator: float | None = None,
    ) -> None:
        super().__init__(reduction, padded_value_indicator)
        self.temperature = check_positive(temperature, "temperature")

    def forward(
        self,
        scores: torch.Tensor,
        relevance: torch.Tensor,
        mask: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of student ``scores`` [Q, L] against teacher scores ``relevance`` [Q, L]
        (``mask`` [Q, L] and ``targets`` [Q] optional): a scalar, or [Q] with
        ``reduction="none"``."""
        s, t, valid = check_slate(scores, relevance, mask, self.padded_value_indicator)
        dtype = compute_dtype(s)
        s = torch.where(valid, s.to(dtype), torch.zeros((), dtype=dtype, device=s.device))
        t = t.to(dtype)
        key = t
        if targets is not None:
            targets = check_tensor(targets, "targets")
            if targets.dim() != 1 or targets.shape[0] != s.shape[0] or targets.is_floating_point():
                raise PairLossError(
                    f"targets: expected an integer tensor of shape [{s.shape[0]}] (one item index "
                    f"per query), got dtype {targets.dtype} and shape {tuple(targets.shape)}"
                )
            targets = targets.to(s.device).long()
            if bool(((targets < 0) | (targets >= s.shape[1])).any()):
                raise PairLossError(f"targets: expected indices in [0, {s.shape[1] - 1}]")
            if not bool(valid.gather(1, targets[:, None]).all()):
                raise PairLossError("targets: points at a padded item; expected a real item")
            first = torch.zeros_like(valid)
            first.scatter_(1, targets[:, None], True)
            key = torch.where(first, torch.full_like(t, torch.inf), t)
        order = order_by_scores(key, valid)
        ok = torch.gather(valid, 1, order)
        terms = plackett_luce_terms(torch.gather(s, 1, order), ok)
        teacher = torch.where(valid, t / self.temperature, torch.full_like(t, -torch.inf))
        alpha = torch.softmax(teacher, dim=1).nan_to_num(0.0)
        weighted = (torch.gather(alpha, 1, order) * terms).sum(dim=1)
        has = valid.any(dim=1).to(dtype)
        return reduce_slate(weighted, has, self.reduction).to(scores.dtype)


def margin_mse(scores, relevance, mask=None, **kwargs) -> torch.Tensor:
    """Functional form of :class:`MarginMSELoss` (same arguments and defaults)."""
    return MarginMSELoss(**kwargs)(scores, relevance, mask)


def adr_mse(scores, relevance, mask=None, alpha: float = 1.0, **kwargs) -> torch.Tensor:
    """Functional form of :class:`ADRMSELoss` (same arguments and defaults)."""
    return ADRMSELoss(alpha, **kwargs)(scores, relevance, mask)


def plackett_luce_distillation(
    scores, relevance, mask=None, targets=None, temperature: float = 1.0, **kwargs
) -> torch.Tensor:
    """Functional form of :class:`PlackettLuceDistillationLoss` (same arguments and defaults)."""
    return PlackettLuceDistillationLoss(temperature, **kwargs)(scores, relevance, mask, targets)
