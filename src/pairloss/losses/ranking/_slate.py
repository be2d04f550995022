"""The shared front end of the ranking losses: slate checks, engine choice, reductions."""

from __future__ import annotations

import torch
from torch import nn

from ...engine import compute_dtype
from ...reduction import check_reduction
from ...validation import (
    check_choice,
    check_exp2_gains,
    check_int,
    check_real,
    check_result,
    check_slate,
)

SLATE_REDUCTIONS = ("mean", "sum", "none")
ENGINES = ("auto", "dense", "blocked")


def reduce_slate(values: torch.Tensor, counts: torch.Tensor, reduction: str) -> torch.Tensor:
    """``"none"``: the per-query values [Q]; ``"sum"``: their sum; ``"mean"``: their sum over the
    sum of ``counts`` (each loss says what it counts: pairs, items or queries); 0 with zero
    gradient when nothing is counted."""
    if reduction == "none":
        return values
    total = values.sum()
    if reduction == "sum":
        return total
    n = float(counts.sum())
    return total / n if n > 0 else total * 0.0


def check_padded_value(value: object) -> float | None:
    """``padded_value_indicator``: a real number, or None (no relevance value marks padding)."""
    return None if value is None else check_real(value, "padded_value_indicator")


def check_k(k: object, name: str = "k") -> int | None:
    """A cut-off rank: None or an int >= 1."""
    return None if k is None else check_int(k, name, minimum=1)


class SlateLoss(nn.Module):
    """Base class of the ranking losses on slates.

    Call: ``loss(scores, relevance, mask=None)`` with ``scores`` [Q, L] (Q queries of L items,
    floating point), ``relevance`` [Q, L] (graded labels, or a teacher's scores for the
    distillation losses) and an optional boolean ``mask`` [Q, L] (True = a real item). An item
    is padding where ``mask`` is False or where its relevance equals ``padded_value_indicator``
    (allRank's convention, default -1; None turns it off). Padded items never reach the loss
    (any value, NaN included, is ignored and gets zero gradient), so the result does not depend
    on how much padding a slate has. fp16/bf16 scores are computed in fp32 and the loss is
    returned in the scores' dtype. Labels whose exponential gains ``2^rel - 1`` overflow (a loss
    with ``exp2_gains``) and a loss that leaves the range of its dtype (scores or teacher
    scores of huge magnitude) raise :class:`~pairloss.errors.PairLossError`.

    ``engine`` (``"auto"``, ``"dense"``, ``"blocked"``) and ``block_size`` choose how the losses
    that compare items in pairs walk them (:func:`pairloss.engine.run_slate`); the listwise
    losses have no pairs and ignore them.

    Subclasses implement :meth:`per_query`, returning per-query values [Q] and the counts that
    ``reduction="mean"`` divides their sum by.
    """

    nonnegative_relevance = False
    exp2_gains = False  # whether the loss computes NDCG's gains 2^rel - 1 from the relevance

    def __init__(
        self,
        reduction: str = "mean",
        padded_value_indicator: float | None = -1,
        engine: str = "auto",
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction, SLATE_REDUCTIONS)
        self.padded_value_indicator = check_padded_value(padded_value_indicator)
        self.engine = check_choice(engine, "engine", ENGINES)
        self.block_size = None if block_size is None else check_int(block_size, "block_size", 1)

    def per_query(
        self, scores: torch.Tensor, relevance: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(
        self, scores: torch.Tensor, relevance: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The loss of ``scores`` [Q, L] against ``relevance`` [Q, L] (``mask`` [Q, L] optional):
        a scalar, or [Q] with ``reduction="none"``."""
        s, rel, valid = check_slate(
            scores,
            relevance,
            mask,
            self.padded_value_indicator,
            nonnegative=self.nonnegative_relevance,
        )
        dtype = compute_dtype(s)
        if self.exp2_gains:
            check_exp2_gains(rel, valid, dtype)
        s = torch.where(valid, s.to(dtype), torch.zeros((), dtype=dtype, device=s.device))
        values, counts = self.per_query(s, rel.to(dtype), valid)
        out = reduce_slate(values, counts, self.reduction).to(scores.dtype)
        return check_result(out, torch.where(valid, scores.detach(), 0), "scores")
