"""Semantic textual similarity: Spearman correlation of predicted and gold pair scores."""

from __future__ import annotations

import torch

from ..errors import PairLossError
from ..validation import check_tensor


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of the values of ``x`` [n], ties sharing their average rank."""
    order = torch.argsort(x, stable=True)
    sorted_x = x[order]
    n = x.shape[0]
    positions = torch.arange(1, n + 1, dtype=torch.float64, device=x.device)
    # runs of equal values: each gets the mean of its positions
    new_run = torch.ones(n, dtype=torch.bool, device=x.device)
    new_run[1:] = sorted_x[1:] != sorted_x[:-1]
    run = torch.cumsum(new_run, 0) - 1
    run_sum = torch.zeros(int(run[-1]) + 1, dtype=torch.float64, device=x.device).index_add_(
        0, run, positions
    )
    run_len = torch.bincount(run).to(torch.float64)
    ranks = torch.empty(n, dtype=torch.float64, device=x.device)
    ranks[order] = (run_sum / run_len)[run]
    return ranks


def spearman(predicted: torch.Tensor, gold: torch.Tensor) -> float:
    """Spearman's rank correlation of two score vectors [n] (Pearson's correlation of their
    average ranks; as ``scipy.stats.spearmanr``). NaN-free: raises when either side is constant
    or the lengths differ."""
    predicted, gold = check_tensor(predicted, "predicted"), check_tensor(gold, "gold")
    if predicted.dim() != 1 or gold.shape != predicted.shape or predicted.shape[0] < 2:
        raise PairLossError(
            f"predicted, gold: expected two 1-D tensors of the same length >= 2, got shapes "
            f"{tuple(predicted.shape)} and {tuple(gold.shape)}"
        )
    for name, v in (("predicted", predicted), ("gold", gold)):
        if not bool(torch.isfinite(v.double()).all()):
            raise PairLossError(f"{name}: contains NaN or Inf; expected finite scores")
    a = average_ranks(predicted.detach().double())
    b = average_ranks(gold.detach().double().to(a.device))
    a, b = a - a.mean(), b - b.mean()
    denominator = torch.sqrt((a * a).sum() * (b * b).sum())
    if float(denominator) == 0:
        raise PairLossError(
            "predicted, gold: one side is constant, so the rank correlation is undefined"
        )
    return float((a * b).sum() / denominator)


def sts_spearman(first: torch.Tensor, second: torch.Tensor, gold: torch.Tensor) -> float:
    """Spearman x 100 of the cosine similarity of paired embeddings [P, D] against the gold
    scores [P] (the STS Benchmark's figure)."""
    first, second = check_tensor(first, "first"), check_tensor(second, "second")
    if first.dim() != 2 or first.shape != second.shape:
        raise PairLossError(
            f"first, second: expected two [P, D] tensors of one shape, got {tuple(first.shape)} "
            f"and {tuple(second.shape)}"
        )
    cosine = torch.nn.functional.cosine_similarity(first.double(), second.double(), dim=1)
    return 100.0 * spearman(cosine, gold)
