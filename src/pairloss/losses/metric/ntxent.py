"""NT-Xent / InfoNCE loss (Chen et al., "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020; van den Oord et al., 2018)."""

from __future__ import annotations

import torch

from ...objectives.softmax import ntxent_fused, ntxent_listed, ntxent_rows
from ...reducers import MeanReducer
from ...validation import check_positive
from ..base import Component, ListedPairs, PairLossModule, listed_scores


class NTXentLoss(PairLossModule):
    r"""Normalised temperature-scaled cross-entropy (NT-Xent, InfoNCE).

    For every positive pair (i, p):

    .. math::
        \ell_{ip} = -\log \frac{e^{s_{ip}/\tau}}
            {e^{s_{ip}/\tau} + \sum_{n \in N(i)} e^{s_{in}/\tau}}

    averaged over all positive pairs (reduction ``"mean_terms"``, as pytorch-metric-learning's
    MeanReducer on positive pairs). ``s`` is cosine similarity by default; a distance ``d``
    enters as ``-d``. Each row's negatives are summed once (one log-sum-exp per row).

    Paper: Chen et al., ICML 2020 (SimCLR), eq. 1. Defaults as pytorch-metric-learning:
    ``temperature=0.07``, cosine similarity. For two-view batches pass the sample ids as labels,
    ``torch.arange(B // 2).repeat(2)``: each view is then the other's only positive and every
    other view is a negative, which is exactly SimCLR's loss over all 2N anchors.

    Shapes: embeddings [B, D], labels [B]; ref_emb [N, D] with ref_labels [N]. Returns a scalar
    (or [B] with ``reduction="none"``).

    Degenerate input: no positive pair gives 0 with zero gradient; a positive pair whose anchor
    has no negative gives 0 (so a single-class batch gives 0, as in pytorch-metric-learning); a
    batch of one gives 0.

    An ``indices_tuple`` counts as in pytorch-metric-learning: one term per listing of a
    positive pair, and every listing of the anchor's negative pairs in its denominator (a
    triplet miner's output lists each negative once per positive); a pair listed both as
    positive and as negative is both. A tuple that lists no pair twice (pytorch-metric-learning's
    pair miners) runs on the pair engine; one that does is evaluated on the listed pairs
    (scored by :func:`~pairloss.losses.base.listed_scores`), the negatives' log-sum-exp one segment reduction per
    anchor (no positives x negatives matrix), the terms listed with their indices for a
    ``reducer``.
    """

    default_reduction = "mean_terms"
    components = (Component("loss", "pos_pair", "cells"),)
    pml_default_reducer = MeanReducer

    def __init__(self, temperature: float = 0.07, **kwargs) -> None:
        super().__init__(**kwargs)
        self.temperature = check_positive(temperature, "temperature")

    def objective(self, s, pos, neg, start, end):
        return ntxent_rows(s, pos, neg, self.temperature, self.distance.is_distance)

    def fused(self, s, pairs, grad, scale):
        return ntxent_fused(s, pairs, grad, scale, self.temperature, self.distance.is_distance)

    def listed_loss(self, embeddings, labels, listed: ListedPairs, ref_emb) -> torch.Tensor:
        """pytorch-metric-learning's reading of listed pairs: one term per listed positive
        pair, every listed negative of its anchor in the denominator."""
        a1, p, a2, n = listed.a1, listed.p, listed.a2, listed.n
        if a1.numel() == 0 or a2.numel() == 0:  # pytorch-metric-learning's zero loss
            return self.reduce_pair_list(
                [(embeddings.new_zeros(0), (a1[:0], p[:0]))], embeddings, labels
            )
        k = a1.numel()
        s = listed_scores(
            self.distance, embeddings, ref_emb, torch.cat([a1, a2]), torch.cat([p, n])
        )
        terms = ntxent_listed(
            s[:k], s[k:], a1, a2, embeddings.shape[0], self.temperature, self.distance.is_distance
        )
        return self.reduce_pair_list([(terms, (a1, p))], embeddings, labels)


class InfoNCELoss(NTXentLoss):
    """InfoNCE: another name for :class:`NTXentLoss` (same arguments and defaults)."""


def ntxent(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    temperature: float = 0.07,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`NTXentLoss` (same arguments and defaults)."""
    return NTXentLoss(temperature=temperature, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )
