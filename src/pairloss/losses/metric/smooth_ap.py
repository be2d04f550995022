"""Smooth-AP loss (Brown et al., "Smooth-AP: Smoothing the Path Towards Large-Scale Image
Retrieval", ECCV 2020), with pytorch-metric-learning's ``SmoothAPLoss`` names, defaults and
results."""

from __future__ import annotations

import torch

from ...engine import compute_dtype
from ...errors import PairLossError
from ...objectives.soft_rank import smooth_ap_rows
from ...reducers import MeanReducer
from ...similarity import CosineSimilarity
from ...validation import check_embeddings, check_positive
from ..base import Component, PairLossModule, build_relation
from ..proxy.proxy_base import miner_weights


class SmoothAPLoss(PairLossModule):
    r"""Smooth-AP: 1 - a sigmoid-smoothed average precision of each anchor's ranking.

    .. math::
        \mathrm{AP}_i = \frac{1}{|G_i|} \sum_{j \in G_i}
            \frac{1 + \sum_{k \in G_i, k \ne j} \sigma_{ijk}}{1 + \sum_{k \ne j} \sigma_{ijk}},
        \qquad \sigma_{ijk} = \mathrm{sigmoid}\Big(\frac{s_{ik} - s_{ij}}{\tau}\Big),
        \qquad \ell_i = 1 - \mathrm{AP}_i

    with G_i the anchor's class in the batch (the anchor included, and its own column among
    the candidates, as the official code), averaged over the anchors. Paper: Brown et al.,
    ECCV 2020, eq. 5-8. Defaults as pytorch-metric-learning's ``SmoothAPLoss``:
    ``temperature=0.01``, cosine similarity (required). ``indices_tuple`` weights each anchor by
    how often it appears; ``ref_emb`` is not supported. Labels are required.

    Difference from pytorch-metric-learning: it requires the same number of samples per class
    and takes the groups as consecutive runs of the batch, so it equals this loss on batches
    sorted by class with as many samples per class as classes; here the groups come from the
    labels, in any layout and class size.

    Each row is one pass of the pair engine; the soft ranks are summed a few group members at a
    time (never the B x B x B tensor of pytorch-metric-learning). Shapes: embeddings [B, D],
    labels [B]. Returns a scalar (or [B] with ``reduction="none"``).
    """

    default_reduction = "mean"
    components = (Component("ap_loss", every_row=True),)
    pml_default_reducer = MeanReducer

    def __init__(self, temperature: float = 0.01, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(self.distance, CosineSimilarity):
            raise PairLossError(
                f"distance: SmoothAPLoss needs CosineSimilarity, got {self.distance!r}"
            )
        self.temperature = check_positive(temperature, "temperature")

    def objective(self, s, pos, neg, start, end):
        return smooth_ap_rows(s, pos, start, self.temperature)

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of ``embeddings`` [B, D] with ``labels`` [B] (see the class docstring)."""
        if labels is None:
            raise PairLossError("labels: required by SmoothAPLoss; expected a [batch] tensor")
        if ref_emb is not None or ref_labels is not None:
            raise PairLossError("ref_emb: not supported by SmoothAPLoss; expected None")
        embeddings = check_embeddings(embeddings, "embeddings")
        relation, _, labels, _ = build_relation(embeddings, labels, None, None, None)
        weights = miner_weights(
            indices_tuple, embeddings.shape[0], False, embeddings.device, compute_dtype(embeddings)
        )
        t = self.temperature

        def objective(s, pos, neg, start, end):
            w = None if weights is None else weights[start:end]
            return smooth_ap_rows(s, pos, start, t, w)

        return self.run_problem(
            objective, embeddings, None, relation, embeddings=embeddings, labels=labels,
            row_labels=labels,
        )  # fmt: skip


def smooth_ap(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    temperature: float = 0.01,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`SmoothAPLoss` (same arguments and defaults)."""
    return SmoothAPLoss(temperature=temperature, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )
