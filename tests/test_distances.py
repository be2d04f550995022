"""Distances with pytorch-metric-learning's interface and values; its distance objects (its
classes and a user's subclass) inside pairloss losses and miners."""

from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning import distances as pml
from pytorch_metric_learning import losses as pml_losses

import pairloss
from pairloss import distances
from pairloss.errors import PairLossError

from .layouts import assert_close, make_batch, value_and_grads

CASES = [
    ("LpDistance", {}),
    ("LpDistance", {"power": 2}),
    ("LpDistance", {"p": 1, "power": 3}),
    ("LpDistance", {"normalize_embeddings": False}),
    ("CosineSimilarity", {}),
    ("DotProductSimilarity", {"normalize_embeddings": False}),
    ("SNRDistance", {}),
    ("SNRDistance", {"normalize_embeddings": False}),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_distances_match_pml(case):
    name, kw = CASES[case]
    g = torch.Generator().manual_seed(case)
    x = torch.randn(30, 6, generator=g, dtype=torch.float64, requires_grad=True)
    r = torch.randn(9, 6, generator=g, dtype=torch.float64, requires_grad=True)
    ours, theirs = getattr(distances, name)(**kw), getattr(pml, name)(**kw)
    assert_close(
        value_and_grads(lambda: ours(x, r).sum() + ours(x).pow(2).sum(), [x, r]),
        value_and_grads(lambda: theirs(x, r).sum() + theirs(x).pow(2).sum(), [x, r]),
    )
    torch.testing.assert_close(ours.pairwise_distance(x[:9], r), theirs.pairwise_distance(x[:9], r))
    for attr in ("is_inverted", "normalize_embeddings", "p", "power"):
        assert getattr(ours, attr) == getattr(theirs, attr)
    torch.testing.assert_close(ours.margin(x[:3], r[:3]), theirs.margin(x[:3], r[:3]))
    torch.testing.assert_close(ours.get_norm(x), theirs.get_norm(x))


def test_float32_lp_distance_is_cdist_as_pml():
    """Close pairs keep PML's float32 values (torch.cdist), on the dense and the fused blocked
    path alike."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 16, generator=g)
    x[1] = x[0] + 1e-4 * torch.randn(16, generator=g)
    torch.testing.assert_close(distances.LpDistance()(x), pml.LpDistance()(x), rtol=0, atol=0)
    y = torch.arange(64) // 4
    values = [pairloss.ContrastiveLoss(engine=e, block_size=16)(x, y) for e in ("dense", "blocked")]
    want = pml_losses.ContrastiveLoss()(x, y)
    for v in values:
        torch.testing.assert_close(v, want, rtol=1e-5, atol=1e-7)


def test_batched_distance_walks_blocks():
    x, _ = make_batch(0, "balanced", n=20)
    seen = []
    distances.BatchedDistance(
        distances.CosineSimilarity(), lambda m, s, e: seen.append((m, s, e)), 6
    )(x)
    full = torch.cat([m for m, _, _ in seen])
    torch.testing.assert_close(full, pml.CosineSimilarity()(x))
    assert [(s, e) for _, s, e in seen] == [(0, 6), (6, 12), (12, 18), (18, 20)]
    loss = pairloss.MultiSimilarityLoss(
        distance=pml.BatchedDistance(pml.CosineSimilarity(), batch_size=7)
    )
    assert loss.engine == "blocked" and loss.block_size == 7


def test_pml_distance_objects_inside_pairloss():
    """PML's classes are translated; a user's subclass is called as it is."""
    x, y = make_batch(1, "unbalanced", n=18)

    class Halved(pml.LpDistance):
        def compute_mat(self, query_emb, ref_emb):
            return super().compute_mat(query_emb, ref_emb) / 2

    for d in (pml.LpDistance(power=2), pml.CosineSimilarity(), Halved()):
        assert_close(
            value_and_grads(lambda d=d: pairloss.ContrastiveLoss(distance=d)(x, y), [x]),
            value_and_grads(lambda d=d: pml_losses.ContrastiveLoss(distance=d)(x, y), [x]),
        )
    with pytest.raises(PairLossError, match="distance"):
        pairloss.ContrastiveLoss(distance=object())
    with pytest.raises(PairLossError, match="is_inverted"):
        distances.LpDistance(is_inverted=True)
