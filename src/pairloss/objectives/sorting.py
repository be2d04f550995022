"""Differentiable sorting networks (Petersen, Borgelt, Kuehne & Deussen, "Differentiable Sorting
Networks for Scalable Sorting and Ranking Supervision", ICML 2021; "Monotonic Differentiable
Sorting Networks", ICLR 2022).

A sorting network is a fixed sequence of comparators. Relaxed, each comparator of the values
``a`` (lower wire) and ``b`` (upper wire) mixes them with ``alpha = f(steepness (b - a))``:
``min = alpha a + (1 - alpha) b`` and ``max = (1 - alpha) a + alpha b``, and mixes the rows of a
running soft permutation matrix the same way. With the Cauchy relaxation ``f(v) = atan(v) / pi
+ 1/2`` the network is monotonic. The result sorts ascending: ``P[r, k, p]`` is the probability
that input ``k`` of row ``r`` lands at position ``p``.
"""

from __future__ import annotations

import math

import torch


def odd_even_comparators(n: int) -> list[list[tuple[int, int]]]:
    """The layers of the odd-even transposition network on ``n`` wires: ``n`` layers, comparing
    (0, 1), (2, 3), ... then (1, 2), (3, 4), ..."""
    return [[(i, i + 1) for i in range(layer % 2, n - 1, 2)] for layer in range(n)]


def cauchy_sort(x: torch.Tensor, steepness: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Relaxed ascending sort of the rows of ``x`` [R, n] with the odd-even network and the
    Cauchy relaxation: returns the softly sorted values [R, n] and the soft permutation
    [R, n, n] (input, position)."""
    r, n = x.shape
    values = list(x.unbind(1))
    perm = torch.eye(n, dtype=x.dtype, device=x.device).expand(r, n, n)
    columns = list(perm.unbind(2))
    for layer in odd_even_comparators(n):
        for lo, hi in layer:
            a, b = values[lo], values[hi]
            alpha = torch.atan(steepness * (b - a)) / math.pi + 0.5
            values[lo], values[hi] = alpha * a + (1 - alpha) * b, (1 - alpha) * a + alpha * b
            ca, cb = columns[lo], columns[hi]
            w = alpha[:, None]
            columns[lo], columns[hi] = w * ca + (1 - w) * cb, (1 - w) * ca + w * cb
    return torch.stack(values, dim=1), torch.stack(columns, dim=2)
