"""Tuplet margin loss (Yu & Tao, "Deep Metric Learning with Tuplet Margin Loss", ICCV 2019),
with pytorch-metric-learning's ``TupletMarginLoss`` names, defaults and results."""

from __future__ import annotations

import math

import torch

from ...errors import PairLossError
from ...objectives.terms import segment_logsumexp
from ...objectives.tuplet_margin import (
    shifted_positive,
    softplus,
    tuplet_margin_fused,
    tuplet_margin_rows,
)
from ...reducers import MeanReducer
from ...similarity import CosineSimilarity
from ...validation import check_embeddings, check_positive, check_real
from ..base import Component, PairLossModule, listed_pairs, miner_in, paired_scores


class TupletMarginLoss(PairLossModule):
    r"""Tuplet margin loss: each positive pair against all of its anchor's negatives, with an
    angular margin on the positive.

    .. math::
        \ell_{ap} = \log\Big(1 + \sum_{n \in N(a)} e^{s\,(\cos\theta_{an} -
            \cos(\theta_{ap} - \beta))}\Big)

    averaged over the positive pairs (pytorch-metric-learning's MeanReducer on pair terms).
    Paper: Yu & Tao, ICCV 2019, eq. 4 (with its slack margin beta). Defaults as
    pytorch-metric-learning's ``TupletMarginLoss``: ``margin`` (beta) ``=5.73`` degrees (stored
    in radians, as there), ``scale=64``; cosine similarity (required).

    With labels, each row is one pass of the pair engine: its negatives' log-sum-exp once, then
    a term per positive cell. An explicit ``indices_tuple`` is read as pytorch-metric-learning
    reads it: each listed positive pair against the listed negative pairs of its anchor, every
    listing counted (a miner's output computed on the same inputs runs inside the engine).

    Shapes: embeddings [B, D], labels [B]; ref_emb [N, D] with ref_labels [N]. Returns a scalar.
    No positive or no negative pair gives 0. The angle's gradient is finite at cos = +-1.
    """

    default_reduction = "mean_terms"
    components = (Component("loss", "pos_pair", "cells"),)
    pml_default_reducer = MeanReducer

    def __init__(self, margin: float = 5.73, scale: float = 64, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(self.distance, CosineSimilarity):
            raise PairLossError(
                f"distance: TupletMarginLoss needs CosineSimilarity, got {self.distance!r}"
            )
        self.margin = math.radians(check_real(margin, "margin"))
        self.scale = check_positive(scale, "scale")

    def objective(self, s, pos, neg, start, end):
        return tuplet_margin_rows(s, pos, neg, self.margin, self.scale)

    def fused(self, s, pairs, grad, scale):
        return tuplet_margin_fused(s, pairs, grad, scale, self.margin, self.scale)

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
        if a1.numel() == 0 or a2.numel() == 0:
            return self.reduce_pair_list(
                [(embeddings.new_zeros(0), (a1[:0], p[:0]))], embeddings, labels
            )
        sim = self.distance
        s_pos = paired_scores(sim, embeddings, ref_emb, a1, p)
        s_neg = paired_scores(sim, embeddings, ref_emb, a2, n)
        lse = segment_logsumexp(self.scale * s_neg, a2, embeddings.shape[0])[a1]
        has = torch.isfinite(lse)
        x = torch.where(has, lse, 0.0) - self.scale * shifted_positive(s_pos, self.margin)
        terms = torch.where(has, softplus(x), 0.0)
        return self.reduce_pair_list([(terms, (a1, p))], embeddings, labels)


def tuplet_margin(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    margin: float = 5.73,
    scale: float = 64,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`TupletMarginLoss` (same arguments and defaults)."""
    return TupletMarginLoss(margin=margin, scale=scale, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )
