"""N-pair loss (Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective",
NeurIPS 2016)."""

from __future__ import annotations

import torch

from ...errors import PairLossError
from ...objectives.npairs import npairs_pair_rows
from ...reducers import MeanReducer
from ...similarity import DotProductSimilarity, Similarity
from ...validation import check_choice, check_embeddings, check_labels
from ..base import PairLossModule, miner_in

PAIRS = ("unique_labels", "all")


def _group_starts(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stable sort of ``keys``: (order, start position of each group, size of each group)."""
    sorted_keys, order = torch.sort(keys, stable=True)
    new = torch.ones_like(sorted_keys, dtype=torch.bool)
    new[1:] = sorted_keys[1:] != sorted_keys[:-1]
    starts = new.nonzero().flatten()
    sizes = torch.diff(starts, append=torch.tensor([keys.numel()], device=keys.device))
    return order, starts, sizes


def unique_label_pairs(
    labels: torch.Tensor, indices_tuple=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One positive pair (a, p) per anchor label, chosen as pytorch-metric-learning does.

    Without ``indices_tuple``: for every label with at least two samples, a is its first sample
    and p its second (the first pair of that label in row-major order). With an
    ``indices_tuple`` (pairs ``(a1, p, a2, n)`` or triplets ``(a, p, n)``): for every anchor
    label, the first listed positive pair whose anchor has that label.
    """
    if indices_tuple is None:
        order, starts, sizes = _group_starts(labels)
        keep = starts[sizes >= 2]
        return order[keep], order[keep + 1]
    a, p = indices_tuple[0].long(), indices_tuple[1].long()
    if a.numel() == 0:
        return a, p
    order, starts, _ = _group_starts(labels[a])
    first = order[starts]
    return a[first], p[first]


class NPairsLoss(PairLossModule):
    r"""N-pair loss: softmax cross-entropy of each positive pair against the negatives.

    For a positive pair (i, p) with negatives N(i):

    .. math::
        \ell_{ip} = -\log \frac{e^{s_{ip}}}{e^{s_{ip}} + \sum_{n \in N(i)} e^{s_{in}}}
                  = \log\Big(1 + \sum_{n \in N(i)} e^{s_{in} - s_{ip}}\Big)

    and the loss is the mean of :math:`\ell_{ip}` over the positive pairs used (reduction
    ``"mean_terms"``). Distances enter as :math:`s = -d`. Paper: Sohn, NeurIPS 2016 (eq. 3, the
    multi-class N-pair loss; the embedding-norm regulariser of the paper is left to the user).

    Which pairs, ``pairs=``:

    - ``"unique_labels"`` (default; pytorch-metric-learning's ``NPairsLoss``): one positive pair
      per label. Without ``indices_tuple`` the anchor of label c is its first sample and the
      positive its second sample; with an ``indices_tuple`` (pairs or triplets, or a pairloss
      miner's output, whose pairs are listed row by row) the first listed positive pair of each
      anchor label. The negatives of anchor a_k are the positives p_j of the other selected
      pairs, exactly the N-pair tuple of the paper. The selection is turned into explicit
      (anchor, candidate) pairs and then evaluated by the pair engine. ``ref_emb`` is not
      supported (as in pytorch-metric-learning), and labels are required.
    - ``"all"``: every positive pair of the batch (or of ``indices_tuple``), with all the
      anchor's negatives (the multi-class N-pair / InfoNCE-with-labels form). Supports
      ``ref_emb``/``ref_labels`` and miners.

    Defaults as pytorch-metric-learning: the dot product of L2-normalised embeddings
    (``DotProductSimilarity(normalize_embeddings=True)``, pytorch-metric-learning's default
    ``DotProductSimilarity()``), i.e. cosine similarity without a temperature.

    Shapes: embeddings [B, D], labels [B]. Returns a scalar. Degenerate input: no positive pair
    (all-distinct labels, batch of one) gives 0; a single selected pair, or a row without
    negatives (one class), gives 0 for its terms (cross-entropy over one logit).
    """

    default_reduction = "mean_terms"
    pml_default_reducer = MeanReducer

    def __init__(self, pairs: str = "unique_labels", **kwargs) -> None:
        super().__init__(**kwargs)
        self.pairs = check_choice(pairs, "pairs", PAIRS)

    @staticmethod
    def default_similarity() -> Similarity:
        return DotProductSimilarity(normalize_embeddings=True)

    def objective(self, s, pos, neg, start, end):
        return npairs_pair_rows(s, pos, neg, self.distance.is_distance)

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of ``embeddings`` [B, D] with ``labels`` [B]; see the class docstring."""
        if self.pairs == "all":
            return super().forward(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        embeddings = check_embeddings(embeddings, "embeddings")
        if labels is None:
            raise PairLossError(
                "labels: required by NPairsLoss(pairs='unique_labels'); expected a [batch] tensor"
            )
        labels = check_labels(labels, embeddings.shape[0]).to(embeddings.device)
        if ref_emb is not None or ref_labels is not None:
            raise PairLossError(
                "ref_emb: not supported by NPairsLoss(pairs='unique_labels'); "
                "use pairs='all' for reference sets"
            )
        miner = self.miner
        given = miner_in(indices_tuple, embeddings, labels, None, None)
        if given is not None:
            miner, indices_tuple = given, None
        if indices_tuple is None and miner is not None:
            indices_tuple = miner.indices(embeddings.detach(), labels)
        if indices_tuple is not None and (
            not isinstance(indices_tuple, (tuple, list)) or len(indices_tuple) not in (3, 4)
        ):
            raise PairLossError(
                "indices_tuple: expected (anchors, positives, negatives) or "
                "(anchors1, positives, anchors2, negatives) index tensors"
            )
        a, p = unique_label_pairs(labels, indices_tuple)
        a, p = a.to(embeddings.device), p.to(embeddings.device)
        k = a.numel()
        if k > 1 and torch.unique(p).numel() != k:
            raise PairLossError(
                "indices_tuple: two selected anchors share a positive; expected positives "
                "with their anchor's label"
            )
        other = ~torch.eye(k, dtype=torch.bool, device=a.device)
        rows, cols = other.nonzero(as_tuple=True)
        pairs = (a, p, a[rows], p[cols])
        return self.run_objective(self.objective, embeddings, labels, pairs, miner=None)


def npairs(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    pairs: str = "unique_labels",
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`NPairsLoss` (same arguments and defaults)."""
    return NPairsLoss(pairs=pairs, **kwargs)(embeddings, labels, indices_tuple, ref_emb, ref_labels)
