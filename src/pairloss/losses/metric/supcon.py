"""Supervised contrastive loss (Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020)."""

from __future__ import annotations

import torch

from ...objectives.softmax import supcon_fused, supcon_rows
from ...reducers import AvgNonZeroReducer
from ...validation import check_bool, check_embeddings, check_positive
from ..base import Component, PairLossModule, has_negative_pair


class SupConLoss(PairLossModule):
    r"""Supervised contrastive loss (SupCon, the "L_out" form).

    .. math::
        \ell_i = -\frac{1}{|P(i)|} \sum_{p \in P(i)} \log
            \frac{e^{s_{ip}/\tau}}{\sum_{a \in P(i) \cup N(i)} e^{s_{ia}/\tau}}

    averaged over the anchors whose loss is > 0 (reduction ``"mean_nonzero"``, as
    pytorch-metric-learning's AvgNonZeroReducer). ``s`` is cosine similarity by default; a
    distance ``d`` enters as ``-d``.

    Paper: Khosla et al., NeurIPS 2020, eq. 2. Defaults as pytorch-metric-learning:
    ``temperature=0.1``, cosine similarity. For multi-view batches (SimCLR style) pass the sample
    ids of the views as labels, e.g. ``torch.arange(B // 2).repeat(2)``.

    Shapes: embeddings [B, D], labels [B]; ref_emb [N, D] with ref_labels [N]. Returns a scalar
    (or [B] with ``reduction="none"``).

    Degenerate input: anchors without a positive contribute nothing; no positive pair at all
    gives 0 with zero gradient; a batch of one gives 0. A batch without any negative pair (one
    class) gives 0, as pytorch-metric-learning (``zero_without_negatives=True``, the default).
    With ``zero_without_negatives=False`` each anchor keeps its row's loss instead,
    ``LSE_p s_ip/t - mean_p s_ip/t`` (0 for a single positive): a row-wise rule that does not
    depend on the rest of the batch (so a sharded or blocked batch gives the same terms), which
    pulls a one-class batch together rather than ignoring it. With a miner applied inside the
    engine the check reads the pairs before mining.
    """

    default_reduction = "mean_nonzero"
    components = (Component(every_row=True),)
    pml_default_reducer = AvgNonZeroReducer

    def __init__(
        self, temperature: float = 0.1, zero_without_negatives: bool = True, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.temperature = check_positive(temperature, "temperature")
        self.zero_without_negatives = check_bool(zero_without_negatives, "zero_without_negatives")

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of ``embeddings`` [B, D] (see the class docstring)."""
        if self.zero_without_negatives and not has_negative_pair(
            embeddings, labels, indices_tuple, ref_emb, ref_labels
        ):
            return self.add_regularizers((check_embeddings(embeddings) * 0).sum(), embeddings)
        return super().forward(embeddings, labels, indices_tuple, ref_emb, ref_labels)

    def objective(self, s, pos, neg, start, end):
        return supcon_rows(s, pos, neg, self.temperature, self.distance.is_distance)

    def fused(self, s, pairs, grad, scale):
        return supcon_fused(s, pairs, grad, scale, self.temperature, self.distance.is_distance)


def supcon(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    temperature: float = 0.1,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`SupConLoss` (same arguments and defaults)."""
    return SupConLoss(temperature=temperature, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )
