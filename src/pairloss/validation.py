"""Input checks shared by every public entry point.

Each check raises :class:`pairloss.PairLossError` naming the argument, what was wrong and what
was expected, so that bad input never reaches torch as a cryptic error or a silent NaN.
"""

from __future__ import annotations

import torch

from .errors import PairLossError


def check_tensor(x: object, name: str) -> torch.Tensor:
    """Return ``x`` if it is a tensor, else raise naming ``name``."""
    if not isinstance(x, torch.Tensor):
        raise PairLossError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    return x


def check_embeddings(
    x: object, name: str = "embeddings", allow_empty: bool = False
) -> torch.Tensor:
    """A floating-point [B, D] matrix with finite entries and (unless allowed) B >= 1, D >= 1."""
    x = check_tensor(x, name)
    if x.dim() != 2:
        raise PairLossError(
            f"{name}: expected a 2-D tensor of shape [batch, dim], got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise PairLossError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if x.shape[1] == 0:
        raise PairLossError(
            f"{name}: expected at least one feature column, got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0 and not allow_empty:
        raise PairLossError(
            f"{name}: the batch is empty (shape {tuple(x.shape)}); expected >= 1 row"
        )
    check_finite(x, name)
    return x


def check_finite(x: torch.Tensor, name: str) -> None:
    """Raise naming the first non-finite rows of ``x``."""
    if x.numel() and not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).reshape(x.shape[0], -1).any(dim=1).nonzero().flatten()
        shown = ", ".join(str(int(i)) for i in bad[:5])
        more = "" if bad.numel() <= 5 else f" (and {bad.numel() - 5} more)"
        raise PairLossError(
            f"{name}: contains NaN or Inf in row(s) {shown}{more}; expected finite values"
        )


def check_labels(labels: object, n: int, name: str = "labels") -> torch.Tensor:
    """A 1-D tensor of ``n`` integer class labels (integral floats are accepted and cast)."""
    labels = check_tensor(labels, name)
    if labels.dim() != 1:
        raise PairLossError(
            f"{name}: expected a 1-D tensor of shape [{n}], got shape {tuple(labels.shape)}"
        )
    if labels.shape[0] != n:
        raise PairLossError(
            f"{name}: has {labels.shape[0]} entries but the embeddings have {n} rows; "
            "expected one label per row"
        )
    if labels.dtype == torch.bool:
        return labels.long()
    if labels.is_floating_point():
        if not bool(torch.isfinite(labels).all()) or not bool((labels == labels.round()).all()):
            raise PairLossError(
                f"{name}: contains fractional or non-finite values; expected integer class labels"
            )
        return labels.long()
    if labels.is_complex():
        raise PairLossError(f"{name}: expected integer class labels, got dtype {labels.dtype}")
    return labels


def check_same_device(ref: torch.Tensor, other: torch.Tensor, ref_name: str, name: str) -> None:
    """``other`` must live on ``ref``'s device."""
    if other.device != ref.device:
        raise PairLossError(
            f"{name}: is on device {other.device} but {ref_name} is on {ref.device}; "
            "expected both on the same device"
        )


def check_same_device_dtype(
    ref: torch.Tensor, other: torch.Tensor, ref_name: str, name: str
) -> None:
    """``other`` must live on ``ref``'s device and share its floating dtype."""
    check_same_device(ref, other, ref_name, name)
    if other.dtype != ref.dtype:
        raise PairLossError(
            f"{name}: has dtype {other.dtype} but {ref_name} has {ref.dtype}; "
            "expected the same dtype"
        )


def check_positive(value: float, name: str, strict: bool = True) -> float:
    """A real number > 0 (or >= 0 when ``strict`` is False)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise PairLossError(f"{name}: expected a number, got {value!r}") from None
    if v != v or (v <= 0 if strict else v < 0):
        raise PairLossError(f"{name}: expected a number {'>' if strict else '>='} 0, got {value!r}")
    return v


def check_bool(value: object, name: str) -> bool:
    """``value`` if it is a bool; else a :class:`PairLossError` naming ``name``."""
    if not isinstance(value, bool):
        raise PairLossError(f"{name}: expected a bool, got {value!r}")
    return value
