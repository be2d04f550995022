"""Reductions: how per-anchor rows of a loss become one number.

Every component of a loss (see :class:`pairloss.objectives.RowTerms`) is reduced on its own and
the components are added:

- ``"mean"``: sum over rows / number of anchor rows (pytorch-metric-learning's MeanReducer on
  per-anchor losses);
- ``"mean_valid"``: sum / number of anchors with at least one valid term;
- ``"mean_terms"``: sum / number of terms (pairs or triplets; MeanReducer on pair losses);
- ``"mean_nonzero"``: sum / number of terms > 0 (pytorch-metric-learning's AvgNonZeroReducer);
- ``"sum"``: the plain sum;
- ``"none"``: one value per anchor row (components added), shape [B].

A normaliser of zero (no valid term anywhere) gives a loss of exactly 0 with zero gradient.
"""

from __future__ import annotations

import torch

from .errors import PairLossError
from .objectives.terms import RowTerms

REDUCTIONS = ("mean", "mean_valid", "mean_terms", "mean_nonzero", "sum", "none")
ROW_REDUCTIONS = ("mean", "sum", "none")  # losses with one value per row and no term counts
DATA_DEPENDENT = ("mean_valid", "mean_terms", "mean_nonzero")


def check_reduction(reduction: str, allowed: tuple[str, ...] = REDUCTIONS) -> str:
    """Return ``reduction`` if it is one of ``allowed`` (default :data:`REDUCTIONS`), else raise."""
    if reduction not in allowed:
        raise PairLossError(f"reduction: expected one of {allowed}, got {reduction!r}")
    return reduction


def row_counts(terms: RowTerms, reduction: str) -> torch.Tensor:
    """The per-row contribution to the normaliser of ``reduction`` (summed over rows)."""
    if reduction == "mean_valid":
        return (terms.n_terms > 0).to(terms.values.dtype).sum()
    if reduction == "mean_terms":
        return terms.n_terms.sum()
    if reduction == "mean_nonzero":
        return terms.n_nonzero.sum()
    raise PairLossError(f"reduction: {reduction!r} has no data-dependent normaliser")


def normalizer(count: torch.Tensor | float, reduction: str, n_rows: int) -> float:
    """The divisor of a component's summed value (0 means the component is 0)."""
    if reduction == "sum":
        return 1.0
    if reduction == "mean":
        return float(n_rows)
    return float(count)


def safe_divide(total: torch.Tensor, divisor: float) -> torch.Tensor:
    """total / divisor, or 0 (keeping the graph, zero gradient) when divisor is 0."""
    return total / divisor if divisor > 0 else total * 0.0


def reduce_terms(components: list[RowTerms], reduction: str, n_rows: int) -> torch.Tensor:
    """Reduce the components of a whole matrix (the dense engine) to the loss."""
    if reduction == "none":
        return sum(c.values for c in components)
    total = None
    for c in components:
        count = row_counts(c, reduction) if reduction in DATA_DEPENDENT else 0.0
        part = safe_divide(c.values.sum(), normalizer(count, reduction, n_rows))
        total = part if total is None else total + part
    return total
