"""Instance loss (Zheng et al., "Dual-Path Convolutional Image-Text Embeddings with Instance
Loss", ACM TOMM 2020), as pytorch-metric-learning's ``InstanceLoss``."""

from __future__ import annotations

import torch

from ...errors import PairLossError
from ...objectives.margin_softmax import softmax_ce_fused, softmax_ce_rows
from ...reducers import MeanReducer
from ...relations import TargetColumnRelation
from ...similarity import CosineSimilarity
from ...validation import check_embeddings, check_labels, check_positive
from ..base import Component, PairLossModule


class InstanceLoss(PairLossModule):
    r"""Instance loss: a softmax over the batch's cosines, scaled by ``gamma``, with each row's
    class index as its target column.

    .. math::
        \ell_i = -\log \frac{e^{\gamma \cos(x_i, x_{t_i})}}{\sum_{j=1}^{B} e^{\gamma \cos(x_i, x_j)}},
        \qquad t_i = \text{the rank of } y_i \text{ among the batch's distinct labels}

    averaged over the batch. With one label per sample (``labels = arange(B)``, the paper's
    instance setting) the target is the sample itself; with class labels the target column is
    the class's index, as in pytorch-metric-learning's ``InstanceLoss`` (whose results this
    reproduces; the paper's classifier is a learned layer). Defaults: ``gamma=64``, cosine
    similarity (required). ``indices_tuple`` and ``ref_emb`` are not supported, as there.

    Runs on the pair engine as a softmax cross-entropy per row (the fused blocked path of the
    margin-softmax losses), so the B x B matrix is never held. Shapes: embeddings [B, D],
    labels [B]. Returns a scalar (or [B] with ``reduction="none"``).
    """

    default_reduction = "mean"
    components = (Component(every_row=True),)
    pml_default_reducer = MeanReducer

    def __init__(self, gamma: float = 64, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(self.distance, CosineSimilarity):
            raise PairLossError(
                f"distance: InstanceLoss needs CosineSimilarity, got {self.distance!r}"
            )
        self.gamma = check_positive(gamma, "gamma")

    def objective(self, s, pos, neg, start, end):
        return softmax_ce_rows(self.gamma * s, pos)

    def fused(self, s, pairs, grad, scale):
        g = self.gamma
        return softmax_ce_fused(s, pairs, grad, scale, g, lambda c: g * c)

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
            raise PairLossError("labels: required by InstanceLoss; expected a [batch] tensor")
        if indices_tuple is not None:
            raise PairLossError("indices_tuple: not supported by InstanceLoss; expected None")
        if ref_emb is not None or ref_labels is not None:
            raise PairLossError("ref_emb: not supported by InstanceLoss; expected None")
        labels = check_labels(labels, embeddings.shape[0]).to(embeddings.device)
        _, targets = torch.unique(labels, return_inverse=True)
        relation = TargetColumnRelation(targets, embeddings.shape[0])
        return self.run_problem(
            self.objective,
            embeddings,
            None,
            relation,
            embeddings=embeddings,
            labels=labels,
            fused=self.fused,
            row_labels=labels,
        )


def instance(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    gamma: float = 64,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`InstanceLoss` (same arguments and defaults)."""
    return InstanceLoss(gamma=gamma, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )
