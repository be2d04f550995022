"""Generalized lifted structure loss (Oh Song et al., "Deep Metric Learning via Lifted
Structured Feature Embedding", CVPR 2016; generalised form of Hermans et al., "In Defense of the
Triplet Loss for Person Re-Identification", 2017, p. 4)."""

from __future__ import annotations

import torch

from ...objectives.pair_margins import generalized_lifted_fused, generalized_lifted_rows
from ...reducers import MeanReducer
from ...similarity import LpDistance, Similarity
from ..base import Component, PairLossModule
from .contrastive import check_real


class GeneralizedLiftedStructureLoss(PairLossModule):
    r"""Generalized lifted structure loss.

    .. math::
        L = \frac{1}{B} \sum_i \Big[ \log \sum_{p \in P(i)} e^{d_{ip} - m_{pos}}
            + \log \sum_{n \in N(i)} e^{m_{neg} - d_{in}} \Big]_+

    A soft maximum of the positive distances against a soft minimum of the negative ones, per
    anchor (Hermans et al. 2017's generalisation of Oh Song et al. 2016 to all anchors). With a
    similarity the margins flip: :math:`e^{m_{pos} - s_{ip}}` and :math:`e^{s_{in} - m_{neg}}`.

    Defaults as pytorch-metric-learning's ``GeneralizedLiftedStructureLoss``:
    ``neg_margin=1``, ``pos_margin=0``, ``LpDistance()``, mean over all B anchors (reduction
    ``"mean"``).

    Shapes: embeddings [B, D], labels [B]; ref_emb [N, D] with ref_labels [N]. Returns a scalar.
    An empty positive or negative set contributes 0 to its row (so one class gives the
    positive half only, all-distinct labels the negative half only); a batch of one gives 0.

    Difference from pytorch-metric-learning: it returns 0 whenever every index list has at most
    one entry; here such inputs give the formula's value.
    """

    default_reduction = "mean"
    components = (Component(every_row=True),)
    pml_default_reducer = MeanReducer

    def __init__(self, neg_margin: float = 1, pos_margin: float = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.neg_margin = check_real(neg_margin, "neg_margin")
        self.pos_margin = check_real(pos_margin, "pos_margin")

    @staticmethod
    def default_similarity() -> Similarity:
        return LpDistance()

    def objective(self, s, pos, neg, start, end):
        return generalized_lifted_rows(
            s, pos, neg, self.pos_margin, self.neg_margin, self.distance.is_distance
        )

    def fused(self, s, pairs, grad, scale):
        return generalized_lifted_fused(
            s, pairs, grad, scale, self.pos_margin, self.neg_margin, self.distance.is_distance
        )


def generalized_lifted_structure(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    neg_margin: float = 1,
    pos_margin: float = 0,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`GeneralizedLiftedStructureLoss` (same arguments and
    defaults)."""
    return GeneralizedLiftedStructureLoss(neg_margin=neg_margin, pos_margin=pos_margin, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )
