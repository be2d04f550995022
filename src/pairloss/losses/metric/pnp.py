"""PNP loss (Li et al., "Rethinking the Optimization of Average Precision: Only Penalizing
Negative Instances before Positive Ones is Enough", AAAI 2022), with pytorch-metric-learning's
``PNPLoss`` names, defaults and results."""

from __future__ import annotations

import torch

from ...errors import PairLossError
from ...objectives.soft_rank import PNP_VARIANTS, pnp_rows
from ...similarity import CosineSimilarity
from ...validation import check_choice, check_embeddings, check_positive, check_real
from ..base import Component, PairLossModule, build_relation


class PNPLoss(PairLossModule):
    r"""PNP loss: for each anchor, penalise only the negatives ranked above each of its
    positives.

    .. math::
        R_{ij} = \sum_{n \in N(i)} \sigma\Big(\frac{s_{in} - s_{ij}}{\tau}\Big),\qquad
        \ell_i = \frac{1}{|G_i|} \sum_{j \in G_i} f(R_{ij}),\qquad L = \mathrm{mean}_i\,\ell_i

    over the anchors with a positive, G_i = P(i) plus i itself (as the official code), with f
    by ``variant``: ``"O"`` R (PNP-O), ``"Ds"`` log(1 + R), ``"Dq"`` 1 / (1 + R)^alpha (then
    L = 1 - mean), ``"Iu"`` (1 + R) log(1 + R), ``"Ib"`` (b R - log(1 + b R)) / b^2; sigma's
    exponent clamped to +-50. Paper: Li et al., AAAI 2022, eq. 5-9. Defaults as
    pytorch-metric-learning's ``PNPLoss``: ``b=2``, ``alpha=1``, ``anneal`` (tau) ``=0.01``,
    ``variant="O"``; cosine similarity (required). Labels are required; ``indices_tuple`` and
    ``ref_emb`` are not supported. The loss is already reduced, as there.

    Each row is one pass of the pair engine; the soft ranks are summed a few positives at a
    time (:func:`~pairloss.objectives.soft_rank.soft_ranks`), never as the B x B x B tensor
    pytorch-metric-learning builds. Shapes: embeddings [B, D], labels [B]. Returns a scalar; no
    anchor with a positive gives 0.
    """

    VARIANTS = list(PNP_VARIANTS)
    default_reduction = "mean_valid"
    components = (Component("loss", "already_reduced"),)

    def __init__(
        self, b: float = 2, alpha: float = 1, anneal: float = 0.01, variant: str = "O", **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(self.distance, CosineSimilarity):
            raise PairLossError(f"distance: PNPLoss needs CosineSimilarity, got {self.distance!r}")
        self.b = check_positive(b, "b")
        self.alpha = check_real(alpha, "alpha")
        self.anneal = check_positive(anneal, "anneal")
        self.variant = check_choice(variant, "variant", PNP_VARIANTS)

    def objective(self, s, pos, neg, start, end):
        return pnp_rows(s, pos, neg, start, self.b, self.alpha, self.anneal, self.variant)

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of ``embeddings`` [B, D] with ``labels`` [B]."""
        if indices_tuple is not None:
            raise PairLossError("indices_tuple: not supported by PNPLoss; expected None")
        if labels is None:
            raise PairLossError("labels: required by PNPLoss; expected a [batch] tensor")
        if ref_emb is not None or ref_labels is not None:
            raise PairLossError("ref_emb: not supported by PNPLoss; expected None")
        embeddings = check_embeddings(embeddings, "embeddings")
        relation, _, labels, _ = build_relation(embeddings, labels, None, None, None)
        loss = self.run_problem(
            self.objective, embeddings, None, relation, embeddings=embeddings, labels=labels
        )
        if self.variant == "Dq" and loss.dim() == 0:
            counts = torch.bincount(torch.unique(labels, return_inverse=True)[1])
            if bool((counts > 1).any()):  # a mean was taken: 1 - mean
                loss = 1 - loss
        return loss


def pnp(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    b: float = 2,
    alpha: float = 1,
    anneal: float = 0.01,
    variant: str = "O",
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`PNPLoss` (same arguments and defaults)."""
    return PNPLoss(b=b, alpha=alpha, anneal=anneal, variant=variant, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )
