"""FastAP loss (Cakir et al., "Deep Metric Learning to Rank", CVPR 2019), with
pytorch-metric-learning's ``FastAPLoss`` names, defaults and results."""

from __future__ import annotations

import torch

from ...engine import compute_dtype
from ...errors import PairLossError
from ...mining import require_distance
from ...objectives.fast_ap import fast_ap_fused, fast_ap_rows
from ...reducers import MeanReducer
from ...similarity import LpDistance, Similarity
from ...validation import check_embeddings, check_int
from ..base import PairLossModule, build_relation
from ..proxy.proxy_base import miner_weights


class FastAPLoss(PairLossModule):
    r"""FastAP: a differentiable approximation of each anchor's average precision from soft
    histograms of its positive and negative distances.

    .. math::
        \mathrm{FastAP}_i = \frac{1}{|P(i)|} \sum_{k=0}^{K} \frac{h^+_k H^+_k}{H_k},
        \qquad \ell_i = 1 - \mathrm{FastAP}_i

    with triangular soft bins :math:`[1 - |d - c_k| / \Delta]_+` at K + 1 evenly spaced
    centres over [0, 2^power] (the range of the distance), :math:`h^+` / :math:`h` the soft
    counts of positives / all candidates per bin, :math:`H` their cumulative sums; averaged over
    the anchors that have a positive. Paper: Cakir et al., CVPR 2019, eq. 7-10. Defaults as
    pytorch-metric-learning's ``FastAPLoss``: ``num_bins=10``, squared Euclidean distance of
    L2-normalised embeddings (``LpDistance(power=2)``; an ``LpDistance`` with p = 2 and
    normalised embeddings is required). ``indices_tuple`` weights each anchor by how often it
    appears (pytorch-metric-learning's rule); ``ref_emb`` is not supported, as there.

    Each row is one pass of the pair engine (memory O(block x N)); the blocked engine's fused
    form bins each distance once (two scatter-adds) and writes its gradient by hand. Shapes:
    embeddings [B, D], labels [B]. Returns a scalar (or [B] with ``reduction="none"``). No
    anchor with a positive gives 0.
    """

    default_reduction = "mean_valid"
    pml_default_reducer = MeanReducer

    def __init__(self, num_bins: int = 10, **kwargs) -> None:
        super().__init__(**kwargs)
        require_distance(self, "FastAPLoss", LpDistance, normalize_embeddings=True, p=2)
        self.num_bins = check_int(num_bins, "num_bins", minimum=1)
        self.num_edges = self.num_bins + 1

    @staticmethod
    def default_similarity() -> Similarity:
        return LpDistance(power=2)

    def objective(self, s, pos, neg, start, end):
        return fast_ap_rows(s, pos, neg, self.num_bins, 2.0**self.distance.power)

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
            raise PairLossError("labels: required by FastAPLoss; expected a [batch] tensor")
        if ref_emb is not None or ref_labels is not None:
            raise PairLossError("ref_emb: not supported by FastAPLoss; expected None")
        relation, _, labels, _ = build_relation(embeddings, labels, None, None, None)
        dtype = compute_dtype(embeddings)
        weights = miner_weights(indices_tuple, embeddings.shape[0], False, embeddings.device, dtype)
        bins, top = self.num_bins, 2.0**self.distance.power

        def objective(s, pos, neg, start, end):
            w = None if weights is None else weights[start:end]
            return fast_ap_rows(s, pos, neg, bins, top, w)

        def fused(s, pairs, grad, scale):
            w = None if weights is None else weights[pairs.start : pairs.start + s.shape[0]]
            return fast_ap_fused(s, pairs, grad, scale, bins, top, w)

        return self.run_problem(
            objective, embeddings, None, relation, embeddings=embeddings, labels=labels,
            fused=fused, row_labels=labels,
        )  # fmt: skip


def fast_ap(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    num_bins: int = 10,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`FastAPLoss` (same arguments and defaults)."""
    return FastAPLoss(num_bins=num_bins, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )
