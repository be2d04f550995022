"""Label and integer-argument checks shared by the splits and the sampler."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import PairLossError


def _array_labels(labels: object, name: str) -> torch.Tensor:
    """An int64 tensor from a numpy array or a sequence of ints; raise for other contents."""
    try:
        values = np.asarray(labels)
    except ValueError as exc:  # ragged nested sequences
        raise PairLossError(f"{name}: expected a flat sequence of ints ({exc})") from None
    if values.size == 0:
        values = values.astype(np.int64)
    if values.dtype.kind not in "iu":
        raise PairLossError(f"{name}: expected integer labels, got dtype {values.dtype}")
    return torch.from_numpy(values.astype(np.int64))


def as_labels(labels: object, name: str = "labels") -> torch.Tensor:
    """A 1-D int64 CPU tensor from a tensor, numpy array or sequence of ints; raise otherwise."""
    if isinstance(labels, np.ndarray) or (
        isinstance(labels, Sequence) and not isinstance(labels, (str, bytes))
    ):
        labels = _array_labels(labels, name)
    if not isinstance(labels, torch.Tensor):
        raise PairLossError(
            f"{name}: expected a 1-D tensor, array or sequence of ints, got {type(labels).__name__}"
        )
    if labels.dim() != 1:
        raise PairLossError(
            f"{name}: expected a 1-D tensor of shape [N], got {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise PairLossError(f"{name}: expected integer labels, got dtype {labels.dtype}")
    return labels.detach().to("cpu", torch.int64)


def is_int(value: object) -> bool:
    """True for a Python or numpy integer that is not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_int(value: object, name: str, minimum: int) -> int:
    """``value`` if it is an int (not a bool) >= ``minimum``; raise naming ``name`` otherwise."""
    if not is_int(value):
        raise PairLossError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise PairLossError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)


def check_classes(chosen: object, present: torch.Tensor, name: str) -> torch.Tensor:
    """``chosen`` as a sorted unique int64 tensor, each a member of ``present``."""
    if not isinstance(chosen, (torch.Tensor, np.ndarray)):
        try:
            chosen = list(chosen)  # type: ignore[call-overload]
        except TypeError:
            raise PairLossError(
                f"{name}: expected an int or a collection of classes, got {type(chosen).__name__}"
            ) from None
    chosen = as_labels(chosen, name)
    chosen = chosen.unique()
    missing = chosen[~torch.isin(chosen, present)]
    if missing.numel():
        raise PairLossError(
            f"{name}: classes {missing.tolist()[:10]} do not occur in labels; expected classes "
            "taken from the labels"
        )
    return chosen
