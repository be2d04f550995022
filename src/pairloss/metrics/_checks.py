"""Argument checks shared by the metric functions."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import PairLossError
from ..validation import check_positive


def check_cutoffs(values: object, name: str) -> tuple[int, ...]:
    """A positive int or a non-empty sequence of them, returned sorted and deduplicated."""
    items = (values,) if isinstance(values, int) else values
    if (
        not isinstance(items, Sequence)
        or not items
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in items)
    ):
        raise PairLossError(
            f"{name}: got {values!r}; expected a positive int or a sequence of them"
        )
    return tuple(sorted(set(items)))


def check_open_unit(value: object, name: str) -> float:
    """A number in the open interval (0, 1)."""
    v = check_positive(value, name)
    if v >= 1:
        raise PairLossError(f"{name}: expected a number in (0, 1), got {value!r}")
    return v


def check_rates(values: object, name: str) -> tuple[float, ...]:
    """A rate in (0, 1) or a non-empty sequence of them, in the given order."""
    items = (values,) if isinstance(values, (int, float)) else values
    if not isinstance(items, Sequence) or isinstance(items, str) or not items:
        raise PairLossError(f"{name}: expected a number in (0, 1) or a sequence of them")
    return tuple(check_open_unit(v, name) for v in items)
