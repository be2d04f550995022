"""Intra-pair variance loss (Yu & Tao, "Deep Metric Learning with Tuplet Margin Loss", ICCV
2019), with pytorch-metric-learning's ``IntraPairVarianceLoss`` names, defaults and results."""

from __future__ import annotations

import torch

from ...objectives.intra_pair_variance import intra_pair_variance_rows, score_sum_rows, spread
from ...reducers import MeanReducer
from ...validation import check_embeddings, check_real
from ..base import Component, PairLossModule, listed_pairs, miner_in, pair_loss, paired_scores


class IntraPairVarianceLoss(PairLossModule):
    r"""Intra-pair variance loss: keeps the scores of each kind of pair close to their mean.

    .. math::
        L = \frac{1}{|P|}\sum_{(i,p)} \big[(1 - \epsilon_+)\mu_+ - s_{ip}\big]_+^2
          + \frac{1}{|N|}\sum_{(i,n)} \big[s_{in} - (1 + \epsilon_-)\mu_-\big]_+^2

    with :math:`\mu_\pm` the mean score of the positive / negative pairs (with gradient). For a
    distance the directions flip. Paper: Yu & Tao, ICCV 2019, eq. 8 (the regulariser of the
    tuplet margin loss). Defaults as pytorch-metric-learning: ``pos_eps=0.01``,
    ``neg_eps=0.01``, cosine similarity; two sub-losses (``pos_loss``, ``neg_loss``), each the
    mean over its pairs.

    With labels: one walk of the pair engine per mean, then one for the terms, with the means as
    parameters of the last walk (their gradient flows back through the first two); nothing of
    size B x N is held on the blocked engine. An explicit ``indices_tuple`` is read as
    pytorch-metric-learning reads it (each listed pair counts, repeats included).

    Shapes: embeddings [B, D], labels [B]; ref_emb [N, D] with ref_labels [N]. Returns a scalar.
    A kind without pairs contributes 0.
    """

    default_reduction = "mean_terms"
    components = (
        Component("pos_loss", "pos_pair", "cells"),
        Component("neg_loss", "neg_pair", "cells"),
    )
    pml_default_reducer = MeanReducer

    def __init__(self, pos_eps: float = 0.01, neg_eps: float = 0.01, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pos_eps = check_real(pos_eps, "pos_eps")
        self.neg_eps = check_real(neg_eps, "neg_eps")

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of ``embeddings`` [B, D] (see the class docstring for the accepted inputs)."""
        raw = (embeddings, labels, ref_emb, ref_labels)
        embeddings = check_embeddings(embeddings, "embeddings")
        miner = miner_in(indices_tuple, *raw) or self.miner
        if miner is not None and not miner.has_transform and indices_tuple is None:
            indices_tuple = miner(embeddings.detach(), labels, ref_emb, ref_labels)
        elif miner is not None:
            indices_tuple = None
        if indices_tuple is not None:
            return self._listed(embeddings, labels, indices_tuple, ref_emb)
        means = []
        for which in ("pos", "neg"):

            def total(s, pos, neg, start, end, which=which):
                return score_sum_rows(s, pos, neg, which)

            means.append(
                pair_loss(
                    total,
                    embeddings,
                    labels,
                    None,
                    ref_emb,
                    ref_labels,
                    similarity=self.distance,
                    reduction="mean_terms",
                    miner=miner,
                    engine=self.engine,
                    block_size=self.block_size,
                )  # fmt: skip
            )
        mean_pos, mean_neg = means
        eps, is_distance = (self.pos_eps, self.neg_eps), self.distance.is_distance

        def objective(s, pos, neg, start, end):
            return intra_pair_variance_rows(s, pos, neg, mean_pos, mean_neg, *eps, is_distance)

        return self.run_objective(
            objective, embeddings, labels, None, ref_emb, ref_labels, miner=miner,
            extra_params=means,
        )  # fmt: skip

    def _listed(self, embeddings, labels, indices_tuple, ref_emb):
        """pytorch-metric-learning's reading of explicit pairs: means and terms over the lists."""
        b = embeddings.shape[0]
        n_cand = b if ref_emb is None else ref_emb.shape[0]
        a1, p, a2, n = listed_pairs(indices_tuple, b, n_cand, embeddings.device)
        is_distance = self.distance.is_distance
        parts = []
        for rows, cols, eps, increase in (
            (a1, p, self.pos_eps, not is_distance),
            (a2, n, self.neg_eps, is_distance),
        ):
            s = paired_scores(self.distance, embeddings, ref_emb, rows, cols)
            terms = torch.relu(spread(s, s.mean(), eps, increase)) ** 2 if s.numel() else s
            parts.append((terms, (rows, cols)))
        return self.reduce_pair_list(parts, embeddings, labels)


def intra_pair_variance(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    pos_eps: float = 0.01,
    neg_eps: float = 0.01,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`IntraPairVarianceLoss` (same arguments and defaults)."""
    return IntraPairVarianceLoss(pos_eps=pos_eps, neg_eps=neg_eps, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )
