"""Threshold-consistent margin loss (Zhang et al., "Threshold-Consistent Margin Loss for
Open-World Deep Metric Learning", ICLR 2024), with pytorch-metric-learning's
``ThresholdConsistentMarginLoss`` names, defaults and results."""

from __future__ import annotations

import torch

from ...errors import PairLossError
from ...objectives.threshold_margin import tcm_rows
from ...similarity import CosineSimilarity
from ...validation import check_embeddings, check_real
from ..base import Component, PairLossModule, listed_pairs, miner_in, paired_scores


class ThresholdConsistentMarginLoss(PairLossModule):
    r"""Threshold-consistent margin (TCM) loss: penalises positive pairs less similar than
    ``margin_plus`` and negative pairs more similar than ``margin_minus``, each averaged over its
    violating pairs only.

    .. math::
        L = \lambda^+ \frac{\sum_{(i,p):\, s_{ip} \le m^+} (m^+ - s_{ip})}{|\{s_{ip} \le m^+\}|}
          + \lambda^- \frac{\sum_{(i,n):\, s_{in} \ge m^-} (s_{in} - m^-)}{|\{s_{in} \ge m^-\}|}

    (a part without violators is 0). Paper: Zhang et al., ICLR 2024, eq. 3 (a regulariser added
    to a base loss). Defaults as pytorch-metric-learning: ``lambda_plus=1``,
    ``lambda_minus=1``, ``margin_plus=0.9``, ``margin_minus=0.5``, cosine similarity (required).
    The loss is already reduced, as there: a reducer does not change it.

    With labels the pairs are every ordered positive and negative pair (a pass of the pair
    engine, two components with their own counts); an explicit ``indices_tuple`` lists them
    (each listing counts). With ``ref_emb`` the partners are the reference rows
    (pytorch-metric-learning reads them from the embeddings by mistake).

    Shapes: embeddings [B, D], labels [B]; ref_emb [N, D] with ref_labels [N]. Returns a scalar.
    """

    default_reduction = "mean_terms"
    components = (Component("loss", "already_reduced"),)

    def __init__(
        self,
        lambda_plus: float = 1.0,
        lambda_minus: float = 1.0,
        margin_plus: float = 0.9,
        margin_minus: float = 0.5,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(self.distance, CosineSimilarity):
            raise PairLossError(
                f"distance: ThresholdConsistentMarginLoss needs CosineSimilarity, got "
                f"{self.distance!r}"
            )
        self.lambda_plus = check_real(lambda_plus, "lambda_plus")
        self.lambda_minus = check_real(lambda_minus, "lambda_minus")
        self.margin_plus = check_real(margin_plus, "margin_plus")
        self.margin_minus = check_real(margin_minus, "margin_minus")

    def active_components(self):
        return self.components * 2  # the positive and the negative part, added

    def objective(self, s, pos, neg, start, end):
        return tcm_rows(
            s, pos, neg, self.lambda_plus, self.lambda_minus, self.margin_plus, self.margin_minus
        )

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of ``embeddings`` [B, D] (see the class docstring for the accepted inputs)."""
        if indices_tuple is None or miner_in(
            indices_tuple, embeddings, labels, ref_emb, ref_labels
        ):
            return super().forward(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        embeddings = check_embeddings(embeddings, "embeddings")
        n_cand = embeddings.shape[0] if ref_emb is None else ref_emb.shape[0]
        a1, p, a2, n = listed_pairs(indices_tuple, embeddings.shape[0], n_cand, embeddings.device)
        sim = self.distance
        s_pos = paired_scores(sim, embeddings, ref_emb, a1, p)
        s_neg = paired_scores(sim, embeddings, ref_emb, a2, n)
        hit_p, hit_n = s_pos <= self.margin_plus, s_neg >= self.margin_minus
        total = (embeddings * 0).sum()
        if bool(hit_p.any()):
            total = total + self.lambda_plus * (self.margin_plus - s_pos[hit_p]).mean()
        if bool(hit_n.any()):
            total = total + self.lambda_minus * (s_neg[hit_n] - self.margin_minus).mean()
        if self.uses_reducer():
            entry = {"losses": total, "indices": None, "reduction_type": "already_reduced"}
            return self.finish_listed({"loss": entry}, embeddings, labels)
        return self.add_regularizers(total.to(embeddings.dtype), embeddings)


def threshold_consistent_margin(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    lambda_plus: float = 1.0,
    lambda_minus: float = 1.0,
    margin_plus: float = 0.9,
    margin_minus: float = 0.5,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`ThresholdConsistentMarginLoss` (same arguments and
    defaults)."""
    return ThresholdConsistentMarginLoss(
        lambda_plus=lambda_plus,
        lambda_minus=lambda_minus,
        margin_plus=margin_plus,
        margin_minus=margin_minus,
        **kwargs,
    )(embeddings, labels, indices_tuple, ref_emb, ref_labels)
