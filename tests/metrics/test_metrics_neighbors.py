"""Exact neighbour search: brute force, ties, the certified fallback, backend agreement."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pairloss.metrics.neighbors as neighbors
from pairloss.errors import PairLossError
from pairloss.metrics import knn

from ._reference import exact_scores, ranking

METRICS = ("cosine", "euclidean", "dot")


def brute_force(q, g, k, metric, loo):
    scores = exact_scores(q, g, metric).tolist()
    order = [ranking(row, i if loo else None)[:k] for i, row in enumerate(scores)]
    values = [[row[j] for j in idx] for row, idx in zip(scores, order, strict=True)]
    return torch.tensor(order), torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_brute_force(metric, backend):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(70, 6, generator=g)
    q = torch.randn(30, 6, generator=g)
    for query, gallery, loo in ((x, None, True), (q, x, False)):
        got = knn(query, gallery, k=9, metric=metric, backend=backend, chunk_size=7)
        idx, values = brute_force(query, x, 9, metric, loo)
        assert torch.equal(got.indices, idx)
        assert torch.allclose(got.scores, values, rtol=0, atol=1e-12)


def test_ties_go_to_the_lower_gallery_index():
    # query [1, 0]; gallery rows 0, 2, 3, 5 equal [1, 0] (score 1), row 4 scores 1/sqrt(2)
    gallery = torch.tensor([[1.0, 0], [0, 1], [1, 0], [1, 0], [0.5, 0.5], [1, 0]])
    for backend in ("torch", "faiss"):
        got = knn(torch.tensor([[1.0, 0.0]]), gallery, k=5, backend=backend)
        assert got.indices.tolist() == [[0, 2, 3, 5, 4]]
        assert got.scores[0, :4].tolist() == [1.0] * 4
        assert got.scores[0, 4].item() == pytest.approx(1 / math.sqrt(2), abs=1e-7)


def test_leave_one_out_with_duplicates_excludes_only_self():
    # rows 0..3 identical: row 2's neighbours are 0, 1, 3 (index order), never itself
    x = torch.tensor([[1.0, 2.0]] * 4 + [[-1.0, 0.5]])
    for backend in ("torch", "faiss"):
        got = knn(x, k=3, backend=backend)
        assert got.indices[2].tolist() == [0, 1, 3]
        assert got.indices[0].tolist() == [1, 2, 3]


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_boundary_near_ties_use_the_exact_fallback(backend, monkeypatch):
    # 30 gallery rows tie exactly with each other beyond the candidate list, so the list cannot
    # be certified and the full float64 row decides: the lowest indices must win.
    calls = []
    original = neighbors.ordered_topk
    monkeypatch.setattr(
        neighbors, "ordered_topk", lambda s, k: calls.append(len(s)) or original(s, k)
    )
    gallery = torch.cat([torch.tensor([[1.0, 0.0]]), torch.tensor([[0.6, 0.8]]).repeat(30, 1)])
    gallery = gallery[torch.randperm(31, generator=torch.Generator().manual_seed(1))]
    got = knn(torch.tensor([[1.0, 0.0]]), gallery, k=4, backend=backend)
    tied = sorted(i for i in range(31) if gallery[i, 1] > 0)
    best = int((gallery[:, 1] == 0).nonzero())
    assert got.indices.tolist() == [[best, *tied[:3]]]
    assert calls == [1]


@pytest.mark.parametrize("metric", METRICS)
def test_backends_identical_on_larger_data(metric):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(600, 24, generator=g) * torch.rand(600, 1, generator=g)
    a = knn(x, k=40, metric=metric, backend="torch")
    b = knn(x, k=40, metric=metric, backend="faiss", chunk_size=128)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.scores, b.scores)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(2, 30),
    k=st.integers(1, 29),
    seed=st.integers(0, 10_000),
    metric=st.sampled_from(METRICS),
)
def test_property_small_integer_grids(n, k, seed, metric):
    """Values in {-1, 0, 1}: exact ties everywhere; both backends follow the tie rule."""
    k = min(k, n - 1)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-1, 2, (n, 3), generator=g).float()
    x[x.abs().sum(1) == 0] = 1.0
    idx, values = brute_force(x, x, k, metric, loo=True)
    for backend in ("torch", "faiss"):
        got = knn(x, k=k, metric=metric, backend=backend, chunk_size=5)
        assert torch.equal(got.indices, idx)
        assert torch.allclose(got.scores, values, rtol=0, atol=1e-12)


def test_auto_backend_choice():
    x = torch.randn(20, 4)
    assert neighbors.resolve_backend("auto", 20 * 20) == "torch"
    expected = "faiss" if neighbors.faiss_available() else "torch"
    assert neighbors.resolve_backend("auto", 2**26) == expected
    assert knn(x, k=2).indices.shape == (20, 2)


def test_bad_input_messages():
    x = torch.randn(6, 3)
    with pytest.raises(PairLossError, match="k: got 6"):
        knn(x, k=6)
    with pytest.raises(PairLossError, match="k: expected an int"):
        knn(x, k=2.0)
    with pytest.raises(PairLossError, match="gallery: has 2 features"):
        knn(x, x[:, :2], k=1)
    with pytest.raises(PairLossError, match=r"query: contains NaN or Inf in row\(s\) 4"):
        knn(torch.cat([x[:4], torch.full((1, 3), math.nan)]), k=1)
    with pytest.raises(PairLossError, match="query: the batch is empty"):
        knn(x[:0], x, k=1)
    with pytest.raises(PairLossError, match="gallery: row"):
        knn(x, torch.zeros(3, 3), k=1)
    with pytest.raises(PairLossError, match="metric"):
        knn(x, k=1, metric="l1")
    with pytest.raises(PairLossError, match="backend"):
        knn(x, k=1, backend="gpu")
