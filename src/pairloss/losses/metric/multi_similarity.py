"""Multi-Similarity loss (Wang et al., "Multi-Similarity Loss with General Pair Weighting for
Deep Metric Learning", CVPR 2019)."""

from __future__ import annotations

import torch

from ...mining import MultiSimilarityMiner
from ...objectives.multi_similarity import multi_similarity_fused, multi_similarity_rows
from ...reducers import MeanReducer
from ...validation import check_positive, check_real
from ..base import Component, PairLossModule


class MultiSimilarityLoss(PairLossModule):
    r"""Multi-Similarity loss.

    .. math::
        L = \frac{1}{B} \sum_i \Big[ \frac{1}{\alpha}\log\big(1 + \sum_{p \in P(i)}
            e^{-\alpha (s_{ip} - \lambda)}\big) + \frac{1}{\beta}\log\big(1 + \sum_{n \in N(i)}
            e^{\beta (s_{in} - \lambda)}\big) \Big]

    Paper: Wang et al., CVPR 2019, eq. 6. Defaults as pytorch-metric-learning (and the paper's
    retrieval setting): ``alpha=2``, ``beta=50``, ``base`` (lambda) ``=0.5``, cosine similarity,
    mean over all anchors. The paper pairs the loss with MS mining
    (:class:`pairloss.miners.MultiSimilarityMiner`, epsilon=0.1): pass ``miner=`` here or the
    miner's output as ``indices_tuple``.

    Shapes: embeddings [B, D], labels [B]; ref_emb [N, D] with ref_labels [N]. Returns a scalar.
    Degenerate input (no pair at all) gives 0 with zero gradient.
    """

    default_reduction = "mean"
    components = (Component(every_row=True),)
    pml_default_reducer = MeanReducer

    def __init__(self, alpha: float = 2, beta: float = 50, base: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.alpha = check_positive(alpha, "alpha")
        self.beta = check_positive(beta, "beta")
        self.base = check_real(base, "base")

    def objective(self, s, pos, neg, start, end):
        return multi_similarity_rows(
            s, pos, neg, self.alpha, self.beta, self.base, self.distance.is_distance
        )

    def fused(self, s, pairs, grad, scale):
        return multi_similarity_fused(
            s, pairs, grad, scale, self.alpha, self.beta, self.base, self.distance.is_distance
        )

    def fused_form(self, miner):
        if miner is None:
            return self.fused
        # MS mining in the loss's own scores is part of the fused form
        if type(miner) is not MultiSimilarityMiner or not miner.similarity.same_scores(
            self.distance
        ):
            return None
        eps = miner.epsilon

        def fused(s, pairs, grad, scale):
            return multi_similarity_fused(
                s,
                pairs,
                grad,
                scale,
                self.alpha,
                self.beta,
                self.base,
                self.distance.is_distance,
                mining=eps,
            )

        return fused


def multi_similarity(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    alpha: float = 2,
    beta: float = 50,
    base: float = 0.5,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`MultiSimilarityLoss` (same arguments and defaults)."""
    return MultiSimilarityLoss(alpha=alpha, beta=beta, base=base, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )
