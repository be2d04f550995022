"""Contrastive loss (Hadsell, Chopra & LeCun, "Dimensionality Reduction by Learning an Invariant
Mapping", CVPR 2006)."""

from __future__ import annotations

import torch

from ...objectives.pair_margins import contrastive_fused, contrastive_listed, contrastive_rows
from ...reducers import AvgNonZeroReducer
from ...similarity import LpDistance, Similarity
from ...validation import check_real
from ..base import Component, ListedPairs, PairLossModule, listed_scores


class ContrastiveLoss(PairLossModule):
    r"""Contrastive loss, with a margin for each kind of pair.

    .. math::
        L = \frac{\sum_{(i,p)} [d_{ip} - m_{pos}]_+}{\#\{(i,p): [d_{ip} - m_{pos}]_+ > 0\}}
          + \frac{\sum_{(i,n)} [m_{neg} - d_{in}]_+}{\#\{(i,n): [m_{neg} - d_{in}]_+ > 0\}}

    over all positive pairs (i, p) and negative pairs (i, n) of the batch (both orders of a
    pair count). Each part is averaged over its non-zero terms and the two are added (as
    pytorch-metric-learning's ``ContrastiveLoss`` with its default ``AvgNonZeroReducer``, one
    per part). With a similarity instead of a distance the margins flip:
    :math:`[m_{pos} - s_{ip}]_+` and :math:`[s_{in} - m_{neg}]_+`.

    Paper: Hadsell et al., CVPR 2006 (there with squared terms and one margin). Defaults as
    pytorch-metric-learning: ``pos_margin=0``, ``neg_margin=1``, ``LpDistance()`` (Euclidean
    distance of L2-normalised embeddings), reduction ``"mean_nonzero"``.

    Shapes: embeddings [B, D], labels [B]; ref_emb [N, D] with ref_labels [N]. Returns a scalar.
    A part with no non-zero term is 0 (zero gradient); e.g. one class gives only the positive
    part, all-distinct labels only the negative part, a batch of one gives 0.

    An ``indices_tuple`` counts as in pytorch-metric-learning: a pair once per listing (a
    triplet miner's output lists each positive pair once per negative, each negative pair once
    per positive), and a pair listed both as positive and as negative in both parts. A tuple
    that lists no pair twice (pytorch-metric-learning's pair miners) runs on the pair engine;
    one that does is evaluated on the listed pairs (scored by :func:`~pairloss.losses.base.listed_scores`, in
    O(min(L x D, B x N) + L) memory for L listed pairs), its terms listed per listing with their
    indices for a ``reducer``.

    Difference from pytorch-metric-learning: pytorch-metric-learning returns 0 whenever every
    index list has at most one entry (e.g. exactly one positive and one negative pair); such
    inputs give the formula's value here.
    """

    default_reduction = "mean_nonzero"
    components = (
        Component("pos_loss", "pos_pair", "cells"),
        Component("neg_loss", "neg_pair", "cells"),
    )
    pml_default_reducer = AvgNonZeroReducer

    def __init__(self, pos_margin: float = 0, neg_margin: float = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pos_margin = check_real(pos_margin, "pos_margin")
        self.neg_margin = check_real(neg_margin, "neg_margin")

    @staticmethod
    def default_similarity() -> Similarity:
        return LpDistance()

    def objective(self, s, pos, neg, start, end):
        return contrastive_rows(
            s, pos, neg, self.pos_margin, self.neg_margin, self.distance.is_distance
        )

    def fused(self, s, pairs, grad, scale):
        return contrastive_fused(
            s, pairs, grad, scale, self.pos_margin, self.neg_margin, self.distance.is_distance
        )

    def listed_loss(self, embeddings, labels, listed: ListedPairs, ref_emb) -> torch.Tensor:
        """pytorch-metric-learning's reading of listed pairs: one term per listing."""
        a1, p, a2, n = listed.a1, listed.p, listed.a2, listed.n
        k = a1.numel()
        rows, cols = torch.cat([a1, a2]), torch.cat([p, n])
        s = listed_scores(self.distance, embeddings, ref_emb, rows, cols)
        pos, neg = contrastive_listed(
            s[:k], s[k:], self.pos_margin, self.neg_margin, self.distance.is_distance
        )
        return self.reduce_pair_list([(pos, (a1, p)), (neg, (a2, n))], embeddings, labels)


def contrastive(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    pos_margin: float = 0,
    neg_margin: float = 1,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`ContrastiveLoss` (same arguments and defaults)."""
    return ContrastiveLoss(pos_margin=pos_margin, neg_margin=neg_margin, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )
