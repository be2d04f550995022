"""Property tests: finite loss and gradients on random valid input, in both engines."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pairloss


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 14),
    dim=st.integers(1, 5),
    classes=st.integers(1, 5),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    seed=st.integers(0, 10_000),
    engine=st.sampled_from(["dense", "blocked"]),
    distance=st.sampled_from(["cosine", "euclidean", "dot"]),
)
def test_multi_similarity_is_finite(n, dim, classes, scale, seed, engine, distance):
    g = torch.Generator().manual_seed(seed)
    x = (scale * torch.randn(n, dim, generator=g, dtype=torch.float64)).requires_grad_(True)
    y = torch.randint(0, classes, (n,), generator=g)
    loss = pairloss.MultiSimilarityLoss(distance=distance, engine=engine, block_size=3)
    out = loss(x, y)
    (grad,) = torch.autograd.grad(out, x)
    assert torch.isfinite(out) and torch.isfinite(grad).all()
