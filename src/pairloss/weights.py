"""Pair weighting made visible (the General Pair Weighting view of Wang et al., CVPR 2019).

For a pair-based loss L(S), the gradient with respect to the embeddings is
dL/dx_i = sum_j (dL/dS_ij) dS_ij/dx_i: the loss acts on each pair (i, j) only through the
scalar w_ij = dL/dS_ij. :func:`pair_weights` returns that weight for every positive and negative
pair, next to the pair's score, so a user can plot weight against similarity and see what a loss
does (e.g. contrastive loss weights every active negative the same; Multi-Similarity weights a
negative more the more similar it is, and the more it stands out among the anchor's negatives).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .engine import compute_dtype
from .errors import PairLossError
from .losses.base import PairLossModule, build_relation
from .reduction import reduce_terms


@dataclass
class PairWeights:
    """One entry per positive or negative pair (after mining).

    Attributes:
        anchor: [P] anchor row index.
        candidate: [P] candidate (column) index.
        is_positive: [P] True for positive pairs, False for negative pairs.
        score: [P] the pair's similarity, or distance for distance-based losses.
        weight: [P] dL/d(score), the weight the loss puts on the pair. Its sign says the
            direction (for a similarity, positives get weights <= 0: raising s lowers L).
        is_distance: whether ``score`` is a distance.
    """

    anchor: torch.Tensor
    candidate: torch.Tensor
    is_positive: torch.Tensor
    score: torch.Tensor
    weight: torch.Tensor
    is_distance: bool

    def positives(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, weights) of the positive pairs."""
        return self.score[self.is_positive], self.weight[self.is_positive]

    def negatives(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, weights) of the negative pairs."""
        return self.score[~self.is_positive], self.weight[~self.is_positive]


def pair_weights(
    loss: PairLossModule,
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
) -> PairWeights:
    """Score and weight dL/dS_ij of every positive and negative pair of ``loss``.

    ``loss`` is a pairloss embedding loss module (e.g. ``pairloss.MultiSimilarityLoss()``); the
    other arguments are those of its forward call. The weights are those of the loss as reduced
    (a mean over anchors divides every weight by the number of anchors). Builds the dense
    [B, N] score matrix: meant for inspection, on batches of up to a few thousand.
    """
    if not isinstance(loss, PairLossModule):
        raise PairLossError(
            f"loss: expected a pairloss embedding loss module, got {type(loss).__name__}"
        )
    if loss.reduction == "none":
        raise PairLossError("loss: reduction 'none' has no single gradient; use a scalar one")
    relation, mined, _, _ = build_relation(embeddings, labels, indices_tuple, ref_emb, ref_labels)
    sim = loss.distance
    miner = loss.miner if loss.miner is not None else mined
    with torch.no_grad():
        x = embeddings.to(compute_dtype(embeddings))
        r = x if ref_emb is None else ref_emb.to(x.dtype)
        a, c = sim.prepare(x), sim.prepare(r)
        s = sim.matrix(a, c)
        pos, neg = relation.block(0, a.shape[0])
        if miner is not None:
            ms = miner.similarity
            s_m = s if ms.same_scores(sim) else ms.matrix(ms.prepare(x), ms.prepare(r))
            pos, neg = miner.transform(s_m, pos, neg)
    s = s.detach().requires_grad_(True)
    with torch.enable_grad():
        value = reduce_terms(loss.objective(s, pos, neg, 0, a.shape[0]), loss.reduction, a.shape[0])
        (grad,) = torch.autograd.grad(value, s, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(s)
    cells = pos | neg
    anchor, candidate = torch.where(cells)
    return PairWeights(
        anchor=anchor,
        candidate=candidate,
        is_positive=pos[anchor, candidate],
        score=s.detach()[anchor, candidate],
        weight=grad[anchor, candidate],
        is_distance=sim.is_distance,
    )
