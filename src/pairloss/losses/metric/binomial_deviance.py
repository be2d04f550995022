"""Binomial deviance loss (Yi, Lei, Liao & Li, "Deep Metric Learning for Person
Re-Identification", ICPR 2014)."""

from __future__ import annotations

import torch

from ...objectives.pair_margins import binomial_deviance_fused, binomial_deviance_rows
from ...validation import check_positive, check_real
from ..base import PairLossModule


class BinomialDevianceLoss(PairLossModule):
    r"""Binomial deviance loss with class-balanced pair weights.

    .. math::
        L = \frac{1}{|P|} \sum_{(i,p) \in P} \log\big(1 + e^{-\alpha (s_{ip} - \lambda)}\big)
          + \frac{1}{|N|} \sum_{(i,n) \in N} \log\big(1 + e^{\beta (s_{in} - \lambda)}\big)

    over all positive pairs P and negative pairs N of the batch (both orders of a pair count),
    with :math:`\lambda` = ``base``; cosine similarity by default. For a distance d the
    signs flip (:math:`s - \lambda` becomes :math:`\lambda - d`).

    Source and parametrisation. Yi et al. (ICPR 2014) write the cost as
    :math:`J = \sum_{i,j} W_{ij} \log(1 + e^{-\alpha (S_{ij} - \beta) M_{ij}})` with
    :math:`M_{ij} = 1` for a positive pair and :math:`-c` for a negative one, and
    :math:`W_{ij} = 1/n_1` on the :math:`n_1` positive pairs and :math:`1/n_2` on the
    :math:`n_2` negative pairs. This class is that formula with the paper's offset
    :math:`\beta` renamed ``base`` and the negative scale :math:`\alpha c` named ``beta`` (the
    naming of :class:`~pairloss.losses.multi_similarity.MultiSimilarityLoss`). Defaults:
    ``alpha=2``, ``base=0.5`` (the paper's alpha and beta) and ``beta=50`` (c = 25, the value
    used by Ustinova & Lempitsky 2016 for this loss and later deep metric learning
    benchmarks). The weighted form and these values were checked against those published
    descriptions, not against the authors' code (none is public).

    Reduction ``"mean_terms"`` over each part (the two class-balanced means, added).

    Shapes: embeddings [B, D], labels [B]; ref_emb [N, D] with ref_labels [N]. Returns a scalar.
    A part without pairs is 0 (one class: positive part only; all-distinct labels: negative
    part only; a batch of one: 0), with zero gradient. Computed in an overflow-free softplus
    form, so large ``beta`` is safe in half precision.
    """

    default_reduction = "mean_terms"

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.alpha = check_positive(alpha, "alpha")
        self.beta = check_positive(beta, "beta")
        self.base = check_real(base, "base")

    def objective(self, s, pos, neg, start, end):
        return binomial_deviance_rows(
            s, pos, neg, self.alpha, self.beta, self.base, self.distance.is_distance
        )

    def fused(self, s, pairs, grad, scale):
        return binomial_deviance_fused(
            s,
            pairs,
            grad,
            scale,
            self.alpha,
            self.beta,
            self.base,
            self.distance.is_distance,
            need_nonzero=self.reduction == "mean_nonzero",
        )


def binomial_deviance(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    alpha: float = 2.0,
    beta: float = 50.0,
    base: float = 0.5,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`BinomialDevianceLoss` (same arguments and defaults)."""
    return BinomialDevianceLoss(alpha=alpha, beta=beta, base=base, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )
