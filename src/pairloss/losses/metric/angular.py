"""Angular loss (Wang et al., "Deep Metric Learning with Angular Loss", ICCV 2017), with
pytorch-metric-learning's ``AngularLoss`` names, defaults and results."""

from __future__ import annotations

import math

import torch

from ...engine import compute_dtype
from ...errors import PairLossError
from ...mining import require_distance
from ...objectives.angular import angular_fused, angular_rows
from ...reducers import MeanReducer
from ...relations import LabelRelation
from ...similarity import DotProductSimilarity, LpDistance, Similarity
from ...validation import check_embeddings, check_labels, check_real
from ..base import Component, PairLossModule, build_relation, listed_pairs, miner_in


class AngularLoss(PairLossModule):
    r"""Angular loss: per positive pair (a, p), the negatives should lie outside the cone of
    half-angle alpha at their centre.

    .. math::
        \ell_{ap} = \log\Big(1 + \sum_{n \in N(a)} e^{4 \tan^2\alpha\, (x_a + x_p)^\top x_n
            - 2 (1 + \tan^2\alpha)\, x_a^\top x_p}\Big)

    averaged over the positive pairs. Paper: Wang et al., ICCV 2017, eq. 8 (the smooth form);
    defaults as pytorch-metric-learning's ``AngularLoss``: ``alpha=40`` degrees (stored in
    radians, as there), ``LpDistance(p=2, power=1, normalize_embeddings=True)`` (required). As
    there, x_a and x_p are L2-normalised and the negatives x_n are the embeddings as given;
    the negatives are every sample of another label (an ``indices_tuple`` selects the positive
    pairs only, and no negative pair listed there means a loss of 0).

    On the pair engine the rows are the positive pairs: each pair's vector
    [4 tan^2(alpha) (x_a + x_p), -2 (1 + tan^2(alpha)) x_a . x_p] is scored against
    [x_n, 1], which gives the exponents in one matrix product per block of pairs, and the
    blocked engine runs its fused path; no [pairs x candidates] matrix is held there
    (pytorch-metric-learning builds it).

    Shapes: embeddings [B, D], labels [B]; ref_emb [N, D] with ref_labels [N]. Returns a scalar.
    No positive pair gives 0.
    """

    default_reduction = "mean"
    components = (Component("loss", "pos_pair", every_row=True),)
    pml_default_reducer = MeanReducer

    def __init__(self, alpha: float = 40, **kwargs) -> None:
        super().__init__(**kwargs)
        require_distance(self, "AngularLoss", LpDistance, p=2, power=1, normalize_embeddings=True)
        self.alpha = math.radians(check_real(alpha, "alpha", 0.0, 90.0, high_open=True))

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of ``embeddings`` [B, D] with ``labels`` [B] (see the class docstring)."""
        raw = (embeddings, labels, ref_emb, ref_labels)
        embeddings = check_embeddings(embeddings, "embeddings")
        if labels is None:
            raise PairLossError("labels: required by AngularLoss; expected a [batch] tensor")
        b = embeddings.shape[0]
        relation, _, labels, ref_labels = build_relation(
            embeddings, labels, None, ref_emb, ref_labels
        )
        ref = embeddings if ref_emb is None else ref_emb
        ref_y = labels if ref_labels is None else ref_labels
        miner = miner_in(indices_tuple, *raw) or self.miner
        if miner is not None and not miner.has_transform and indices_tuple is None:
            indices_tuple = miner(embeddings.detach(), labels, ref_emb, ref_labels)
        elif miner is not None:
            indices_tuple = None
        if indices_tuple is not None:
            a1, p, a2, _ = listed_pairs(indices_tuple, b, ref.shape[0], embeddings.device)
            has_neg_pairs = a2.numel() > 0
        else:
            with torch.no_grad():
                pos, neg = relation.block(0, b)
                if miner is not None:
                    ms = miner.similarity
                    ma = ms.prepare(embeddings.detach())
                    mc = ma if ref_emb is None else ms.prepare(ref_emb.detach())
                    pos, neg = miner.transform(ms.matrix(ma, mc), pos, neg)
            a1, p = torch.where(pos)
            has_neg_pairs = bool(neg.any())
        if a1.numel() == 0 or not has_neg_pairs:
            return self.reduce_pair_list(
                [(embeddings.new_zeros(0), (a1[:0], p[:0]))], embeddings, labels
            )
        dtype = compute_dtype(embeddings)
        xa = self.distance.normalize(embeddings[a1].to(dtype))
        xp = self.distance.normalize(ref[p].to(dtype))
        t = math.tan(self.alpha) ** 2
        # each pair's exponents as one dot product: [4t (x_a + x_p), -2 (1 + t) x_a.x_p] with
        # [x_n, 1], so that the engine's fused path runs (no parameter of its own)
        bias = -2 * (1 + t) * (xa * xp).sum(dim=1, keepdim=True)
        rows = torch.cat([4 * t * (xa + xp), bias], dim=1)
        cols = torch.cat([ref.to(dtype), ref.new_ones((ref.shape[0], 1), dtype=dtype)], dim=1)
        relation = LabelRelation(labels[a1], check_labels(ref_y, ref.shape[0]), exclude_self=False)
        return self.run_problem(
            angular_rows, rows, cols, relation, embeddings=embeddings, labels=labels,
            similarity=DotProductSimilarity(normalize_embeddings=False), fused=angular_fused,
            row_labels=labels[a1], row_index=(a1, p),
        )  # fmt: skip

    @staticmethod
    def default_similarity() -> Similarity:
        return LpDistance(p=2, power=1, normalize_embeddings=True)


def angular(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    alpha: float = 40,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`AngularLoss` (same arguments and defaults)."""
    return AngularLoss(alpha=alpha, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )
