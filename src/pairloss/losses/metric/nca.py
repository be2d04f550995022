"""NCA loss (Goldberger et al., "Neighbourhood Components Analysis", NeurIPS 2004), with
pytorch-metric-learning's ``NCALoss`` names, defaults and results."""

from __future__ import annotations

import torch

from ...engine import compute_dtype
from ...errors import PairLossError
from ...mining import MinedRelation
from ...objectives.nca import nca_fused, nca_rows
from ...reducers import MeanReducer
from ...similarity import LpDistance, Similarity
from ...validation import check_embeddings, check_positive
from ..base import PairLossModule, build_relation
from ..proxy.proxy_base import miner_weights


class NCALoss(PairLossModule):
    r"""Neighbourhood component analysis: each anchor's stochastic nearest neighbour should share
    its label.

    .. math::
        \ell_i = -\log \frac{\sum_{p \in P(i)} e^{-t\, d_{ip}}}{\sum_{c \ne i} e^{-t\, d_{ic}}}

    averaged over the anchors that have a positive. Paper: Goldberger et al., NeurIPS 2004 (the
    softmax over the other points, summed over the same class). Defaults as
    pytorch-metric-learning's ``NCALoss``: ``softmax_scale`` (t) ``=1``, squared Euclidean
    distance of L2-normalised embeddings (``LpDistance(power=2)``); a similarity enters with the
    opposite sign. ``indices_tuple`` weights each anchor by how often it appears (only the
    anchors count with ``ref_emb``), pytorch-metric-learning's rule; the pairs are then all
    label pairs.

    Shapes: embeddings [B, D], labels [B]; ref_emb [N, D] with ref_labels [N]. Returns a scalar
    (or [B] with ``reduction="none"``). A batch of one, or no anchor with a positive, gives 0.
    Difference: pytorch-metric-learning drops an anchor whose positives' probability underflows
    to exactly 0 (extreme ``softmax_scale``); here its large, finite loss is kept.
    """

    default_reduction = "mean_valid"
    pml_default_reducer = MeanReducer

    def __init__(self, softmax_scale: float = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.softmax_scale = check_positive(softmax_scale, "softmax_scale")

    @staticmethod
    def default_similarity() -> Similarity:
        return LpDistance(power=2)

    def objective(self, s, pos, neg, start, end):
        return nca_rows(s, pos, neg, self.softmax_scale, self.distance.is_distance)

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of ``embeddings`` [B, D] with ``labels`` [B] (see the class docstring)."""
        embeddings = check_embeddings(embeddings, "embeddings")
        if labels is None:
            raise PairLossError("labels: required by NCALoss; expected a [batch] tensor")
        given = indices_tuple if isinstance(indices_tuple, MinedRelation) else None  # a memory's
        relation, _, labels, _ = build_relation(embeddings, labels, given, ref_emb, ref_labels)
        weights = miner_weights(
            None if given is not None else indices_tuple,
            embeddings.shape[0],
            ref_emb is not None,
            embeddings.device,
            compute_dtype(embeddings),
        )
        t, is_distance = self.softmax_scale, self.distance.is_distance

        def objective(s, pos, neg, start, end):
            w = None if weights is None else weights[start:end].to(s.dtype)
            return nca_rows(s, pos, neg, t, is_distance, w)

        def fused(s, pairs, grad, scale):
            w = None if weights is None else weights[pairs.start : pairs.start + s.shape[0]]
            return nca_fused(s, pairs, grad, scale, -t if is_distance else t, w)

        if embeddings.shape[0] <= 1:
            return (embeddings * 0).sum()
        return self.run_problem(
            objective,
            embeddings,
            ref_emb,
            relation,
            embeddings=embeddings,
            labels=labels,
            fused=fused,
            row_labels=labels,
        )


def nca(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    softmax_scale: float = 1,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`NCALoss` (same arguments and defaults)."""
    return NCALoss(softmax_scale=softmax_scale, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )
