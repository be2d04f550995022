"""Ranked list loss (Wang et al., "Ranked List Loss for Deep Metric Learning", CVPR 2019), with
pytorch-metric-learning's ``RankedListLoss`` names, defaults and results."""

from __future__ import annotations

import warnings

import torch

from ...errors import PairLossError
from ...objectives.ranked_list import ranked_list_fused, ranked_list_rows
from ...reducers import MeanReducer
from ...similarity import LpDistance, Similarity
from ...validation import check_real
from ..base import Component, PairLossModule


class RankedListLoss(PairLossModule):
    r"""Ranked list loss: per anchor, a weighted hinge on the positives farther than
    alpha - margin and on the negatives closer than alpha.

    .. math::
        L_P = \frac{\sum_{p \in P^*} w_p (d_{ip} - (\alpha - m))}{\sum_{p \in P^*} w_p + N
            \epsilon},\quad
        L_N = \frac{\sum_{n \in N^*} w_n (\alpha - d_{in})}{\sum_{n \in N^*} w_n + N\epsilon},
        \quad \ell_i = (1 - \lambda) L_P + \lambda L_N

    :math:`w_p = e^{T_p (d_{ip} - (\alpha - m))}`, :math:`w_n = e^{T_n (\alpha - d_{in})}` (with
    their gradient), eps = 1e-5 per column, N the batch size; averaged over the anchors. Paper:
    Wang et al., CVPR 2019, eq. 3-8 (RLL-Simpler with Tp = 0). Arguments as
    pytorch-metric-learning's ``RankedListLoss``: ``margin`` and ``Tn`` required,
    ``imbalance`` (lambda) ``=0.5``, ``alpha`` ``=1 + margin / 2`` unless given, ``Tp=0``;
    ``LpDistance()``. A warning for temperatures above 5 (overflow risk), as there. Labels are
    required; ``indices_tuple`` and ``ref_emb`` are not supported.

    Shapes: embeddings [B, D], labels [B]. Returns a scalar (or [B] with
    ``reduction="none"``). Pairs at distance exactly 0 are left out, as there.
    """

    default_reduction = "mean"
    components = (Component(every_row=True),)
    pml_default_reducer = MeanReducer

    def __init__(
        self,
        margin: float,
        Tn: float,
        imbalance: float = 0.5,
        alpha: float | None = None,
        Tp: float = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.margin = check_real(margin, "margin")
        self.imbalance = check_real(imbalance, "imbalance", 0.0, 1.0)
        self.alpha = 1 + self.margin / 2 if alpha is None else check_real(alpha, "alpha")
        self.Tp = check_real(Tp, "Tp")
        self.Tn = check_real(Tn, "Tn")
        if self.Tp > 5 or self.Tn > 5:
            warnings.warn("Tp, Tn: temperatures above 5 may overflow the weights", stacklevel=2)

    @staticmethod
    def default_similarity() -> Similarity:
        return LpDistance()

    def objective(self, s, pos, neg, start, end):
        return ranked_list_rows(
            s, pos, neg, self.margin, self.alpha, self.Tp, self.Tn, self.imbalance
        )

    def fused(self, s, pairs, grad, scale):
        return ranked_list_fused(
            s, pairs, grad, scale, self.margin, self.alpha, self.Tp, self.Tn, self.imbalance
        )

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of ``embeddings`` [B, D] with ``labels`` [B]."""
        if labels is None:
            raise PairLossError("labels: required by RankedListLoss; expected a [batch] tensor")
        if indices_tuple is not None:
            raise PairLossError("indices_tuple: not supported by RankedListLoss; expected None")
        if ref_emb is not None or ref_labels is not None:
            raise PairLossError("ref_emb: not supported by RankedListLoss; expected None")
        return super().forward(embeddings, labels)


def ranked_list(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    margin: float,
    Tn: float,
    imbalance: float = 0.5,
    alpha: float | None = None,
    Tp: float = 0,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`RankedListLoss` (same arguments and defaults)."""
    return RankedListLoss(margin, Tn, imbalance=imbalance, alpha=alpha, Tp=Tp, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )
