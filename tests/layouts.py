"""Shared test inputs: embeddings in float64 and several label layouts."""

from __future__ import annotations

import torch

SEEDS = (0, 1, 2)
LAYOUTS = ("balanced", "unbalanced", "singletons", "two_classes")


def make_labels(layout: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """Labels for ``n`` samples: balanced (4 per class), unbalanced (random over 5 classes),
    singletons (half the classes have one sample), two_classes."""
    if layout == "balanced":
        return torch.arange(n) // 4
    if layout == "unbalanced":
        return torch.randint(0, 5, (n,), generator=generator)
    if layout == "singletons":
        half = n // 2
        return torch.cat([torch.arange(half) // 3, 100 + torch.arange(n - half)])
    if layout == "two_classes":
        return torch.randint(0, 2, (n,), generator=generator)
    raise ValueError(layout)


def make_batch(seed: int, layout: str, n: int = 24, dim: int = 6, dtype=torch.float64):
    """(embeddings requiring grad, labels) for one seed and layout."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=dtype).requires_grad_(True)
    return x, make_labels(layout, n, g)


def make_ref(seed: int, n: int = 10, dim: int = 6, dtype=torch.float64):
    """(reference embeddings requiring grad, reference labels in 0..4)."""
    g = torch.Generator().manual_seed(1000 + seed)
    r = torch.randn(n, dim, generator=g, dtype=dtype).requires_grad_(True)
    return r, torch.randint(0, 5, (n,), generator=g)


def value_and_grads(loss_fn, inputs):
    """Loss value and gradients with respect to ``inputs`` (zeros where unused)."""
    loss = loss_fn()
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]
    return loss.detach(), grads


def assert_close(ours, theirs, rtol=1e-9, atol=1e-12):
    """Compare (value, grads) pairs from :func:`value_and_grads`."""
    torch.testing.assert_close(ours[0], theirs[0].to(ours[0].dtype), rtol=rtol, atol=atol)
    for a, b in zip(ours[1], theirs[1]):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
