"""Circle loss (Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity
Optimization", CVPR 2020)."""

from __future__ import annotations

import torch

from ...errors import PairLossError
from ...objectives.circle import circle_fused, circle_rows
from ...reducers import AvgNonZeroReducer
from ...validation import check_positive, check_real
from ..base import Component, PairLossModule


class CircleLoss(PairLossModule):
    r"""Circle loss with pair labels.

    .. math::
        \ell_i = \mathrm{softplus}\Big( \log \sum_{n \in N(i)} e^{\gamma \alpha_n (s_n - \Delta_n)}
            + \log \sum_{p \in P(i)} e^{-\gamma \alpha_p (s_p - \Delta_p)} \Big)

    with :math:`\alpha_p = [1 + m - s_p]_+`, :math:`\alpha_n = [s_n + m]_+` (treated as
    constants, no gradient), :math:`\Delta_p = 1 - m`, :math:`\Delta_n = m`; averaged over the
    anchors whose loss is > 0 (reduction ``"mean_nonzero"``, as pytorch-metric-learning's
    AvgNonZeroReducer).

    Paper: Sun et al., CVPR 2020, eq. 6. Defaults as pytorch-metric-learning: ``m=0.4``,
    ``gamma=80`` (the paper's fine-grained retrieval setting; it uses ``m=0.25, gamma=256`` for
    face recognition and ``m=0.25, gamma=128`` for person re-identification), cosine similarity.
    The margins assume similarities in [-1, 1]: distances are refused.

    Shapes: embeddings [B, D], labels [B]; ref_emb [N, D] with ref_labels [N]. Returns a scalar
    (or [B] with ``reduction="none"``).

    Degenerate input: anchors without a positive or without a negative contribute nothing, so a
    single-class batch, all-distinct labels and a batch of one give 0 with zero gradient. Both
    log-sum-exps are max-shifted and computed in fp32 for half inputs, so ``gamma=256`` does
    not overflow.
    """

    default_reduction = "mean_nonzero"
    components = (Component(every_row=True),)
    pml_default_reducer = AvgNonZeroReducer

    def __init__(self, m: float = 0.4, gamma: float = 80, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.distance.is_distance:
            raise PairLossError(
                "distance: Circle loss needs a similarity in [-1, 1] (e.g. CosineSimilarity), "
                f"got the distance {type(self.distance).__name__}"
            )
        self.m = check_real(m, "m")
        self.gamma = check_positive(gamma, "gamma")

    def objective(self, s, pos, neg, start, end):
        return circle_rows(s, pos, neg, self.m, self.gamma)

    def fused(self, s, pairs, grad, scale):
        return circle_fused(s, pairs, grad, scale, self.m, self.gamma)


def circle(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    m: float = 0.4,
    gamma: float = 80,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`CircleLoss` (same arguments and defaults)."""
    return CircleLoss(m=m, gamma=gamma, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )
