"""Input checks shared by every public entry point.

Each check raises :class:`pairloss.PairLossError` naming the argument, what was wrong and what
was expected, so that bad input never reaches torch as a cryptic error or a silent NaN.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable

import torch

from .errors import PairLossError


def check_tensor(x: object, name: str) -> torch.Tensor:
    """Return ``x`` if it is a tensor with values (not on the ``meta`` device), else raise
    naming ``name``."""
    if not isinstance(x, torch.Tensor):
        raise PairLossError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.is_meta:
        raise PairLossError(
            f"{name}: is on the meta device, which holds no values; expected a tensor with data"
        )
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


def check_result(
    value: torch.Tensor, inputs: torch.Tensor, name: str = "embeddings"
) -> torch.Tensor:
    """``value`` if it is finite; else a :class:`PairLossError` naming ``name``.

    The last line of defence of every loss: its inputs and hyper-parameters were checked, so a
    non-finite result means that the computation left the range of the dtype (raw dot products
    or squared distances of very large vectors in float32, a float16 result above 65504, ...);
    the error says so instead of returning inf or NaN."""
    if value.numel() and not bool(torch.isfinite(value).all()):
        top = float(inputs.detach().abs().amax()) if inputs.numel() else 0.0
        raise PairLossError(
            f"{name}: the loss is not finite in {value.dtype} although every input is (largest "
            f"|entry| {top:.3g}): its scores or their exponentials leave the range of the dtype; "
            "expected inputs of moderate magnitude (scale them down), float64, or a normalised "
            "similarity such as cosine"
        )
    return value


def check_labels(labels: object, n: int, name: str = "labels") -> torch.Tensor:
    """A 1-D tensor of ``n`` integer class labels, returned as int64 (other integer dtypes,
    bools and integral floats are accepted and cast)."""
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
    return labels.long()


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


def check_real(
    value: object,
    name: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number in [low, high] (an end is open when ``*_open``).

    Python and numpy reals are accepted; bools, strings, None, NaN and +-Inf are refused with a
    :class:`PairLossError` naming ``name``, the value and the expected range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise PairLossError(f"{name}: expected a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise PairLossError(f"{name}: expected a finite number, got {value!r}")
    below = low is not None and (v <= low if low_open else v < low)
    above = high is not None and (v >= high if high_open else v > high)
    if below or above:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        lo_text = "-inf" if low is None else f"{low:g}"
        hi_text = "inf" if high is None else f"{high:g}"
        raise PairLossError(
            f"{name}: expected a number in {lo}{lo_text}, {hi_text}{hi}, got {value!r}"
        )
    return v


def check_ordered(
    low: float, high: float, low_name: str, high_name: str, strict: bool = False
) -> None:
    """Two checked bounds in order: ``low <= high`` (``low < high`` when ``strict``); the
    error names both, since either may be the one set wrongly."""
    if low > high or (strict and low == high):
        relation = "above" if strict else "at least"
        raise PairLossError(
            f"{high_name}: expected {relation} {low_name}, got {high_name}={high!r} and "
            f"{low_name}={low!r}"
        )


def check_positive(value: object, name: str, strict: bool = True) -> float:
    """A finite real number > 0 (or >= 0 when ``strict`` is False)."""
    return check_real(value, name, low=0.0, low_open=strict)


def check_whole(value: object, name: str, low: float | None = None) -> float:
    """A finite real number with a whole value (``2`` and ``2.0`` alike), at least ``low``;
    e.g. an exponent applied to values that may be negative, where a fractional power is
    undefined."""
    v = check_real(value, name, low=low)
    if not v.is_integer():
        raise PairLossError(f"{name}: expected a whole number, got {value!r}")
    return v


def check_int(
    value: object, name: str, minimum: int | None = None, maximum: int | None = None
) -> int:
    """A Python or numpy integer (bools refused) in [minimum, maximum]."""
    import numpy as np

    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise PairLossError(f"{name}: expected an int, got {value!r}")
    v = int(value)
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        lo = "-inf" if minimum is None else str(minimum)
        hi = "inf" if maximum is None else str(maximum)
        raise PairLossError(f"{name}: expected an int in [{lo}, {hi}], got {value!r}")
    return v


def check_bool(value: object, name: str) -> bool:
    """``value`` if it is a bool (numpy bools too); else a :class:`PairLossError`."""
    import numpy as np

    if isinstance(value, np.bool_):
        return bool(value)
    if not isinstance(value, bool):
        raise PairLossError(f"{name}: expected a bool (True or False), got {value!r}")
    return value


def check_choice(value: object, name: str, choices: Iterable[str]) -> str:
    """``value`` if it is one of the strings ``choices``; else an error listing them."""
    options = tuple(choices)
    if not isinstance(value, str) or value not in options:
        listed = ", ".join(repr(c) for c in options)
        raise PairLossError(f"{name}: expected one of {listed}, got {value!r}")
    return value


def check_choices(value: object, name: str, choices: Iterable[str]) -> tuple[str, ...]:
    """``value`` as a tuple if it is a non-empty list, tuple or set of strings from
    ``choices``; else an error listing them (a single string is refused: it would be read as
    its characters)."""
    options = tuple(choices)
    listed = ", ".join(repr(c) for c in options)
    if not isinstance(value, (list, tuple, set, frozenset)) or not value:
        raise PairLossError(
            f"{name}: expected a non-empty list of names from {listed}, got {value!r}"
        )
    unknown = [v for v in value if not isinstance(v, str) or v not in options]
    if unknown:
        raise PairLossError(f"{name}: unknown {unknown!r}; expected names from {listed}")
    return tuple(value)


def check_callable(value: object, name: str) -> Callable:
    """``value`` if it is callable; else a :class:`PairLossError` naming ``name``."""
    if not callable(value):
        raise PairLossError(f"{name}: expected a callable, got {type(value).__name__}")
    return value


# Scores that a model already produced: ranking slates and preference log-probabilities


def check_scores_matrix(x: object, name: str) -> torch.Tensor:
    """A floating-point [Q, L] tensor with Q >= 1 and L >= 1 (values are checked by the caller,
    where they are not padding)."""
    x = check_tensor(x, name)
    if x.dim() != 2:
        raise PairLossError(
            f"{name}: expected a 2-D tensor of shape [queries, items], got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise PairLossError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise PairLossError(
            f"{name}: is empty (shape {tuple(x.shape)}); expected at least one query and one item"
        )
    return x


def _check_finite_where(x: torch.Tensor, valid: torch.Tensor, name: str, what: str) -> None:
    bad = valid & ~torch.isfinite(x)
    if bool(bad.any()):
        rows = bad.any(dim=1).nonzero().flatten()
        shown = ", ".join(str(int(i)) for i in rows[:5])
        more = "" if rows.numel() <= 5 else f" (and {rows.numel() - 5} more)"
        raise PairLossError(
            f"{name}: contains NaN or Inf at non-padded items of {what}(s) {shown}{more}; "
            "expected finite values"
        )


def check_slate(
    scores: object,
    relevance: object,
    mask: object = None,
    padded_value_indicator: float | None = -1,
    nonnegative: bool = False,
    scores_name: str = "scores",
    relevance_name: str = "relevance",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A ranking slate: ``scores`` [Q, L] (floating point), ``relevance`` [Q, L] (real: bool,
    integer or floating point) and an optional boolean ``mask`` [Q, L] (True = a real item).

    An item is padding where ``mask`` is False or where its relevance equals
    ``padded_value_indicator`` (allRank's convention, -1; None turns it off). Padded items may
    hold anything (NaN included); every other score and relevance must be finite, and with
    ``nonnegative`` every real item's relevance must be >= 0 (NDCG gains).

    Returns ``(scores, relevance, valid)``: relevance in the scores' dtype with 0 at padded
    items, and the boolean [Q, L] ``valid`` (the scores are returned unchanged; losses read
    them only where ``valid``).
    """
    scores = check_scores_matrix(scores, scores_name)
    relevance = check_tensor(relevance, relevance_name)
    if tuple(relevance.shape) != tuple(scores.shape):
        raise PairLossError(
            f"{relevance_name}: has shape {tuple(relevance.shape)} but {scores_name} has "
            f"{tuple(scores.shape)}; expected one relevance label per score"
        )
    if relevance.is_complex():
        raise PairLossError(f"{relevance_name}: expected real labels, got dtype {relevance.dtype}")
    check_same_device(scores, relevance, scores_name, relevance_name)
    valid = torch.ones_like(scores, dtype=torch.bool)
    if mask is not None:
        mask = check_tensor(mask, "mask")
        if tuple(mask.shape) != tuple(scores.shape):
            raise PairLossError(
                f"mask: has shape {tuple(mask.shape)} but {scores_name} has "
                f"{tuple(scores.shape)}; expected one flag per score"
            )
        if mask.dtype != torch.bool:
            raise PairLossError(
                f"mask: expected a boolean tensor (True = a real item), got dtype {mask.dtype}"
            )
        check_same_device(scores, mask, scores_name, "mask")
        valid = mask.clone()
    if padded_value_indicator is not None:
        indicator = check_real(padded_value_indicator, "padded_value_indicator")
        valid &= relevance != indicator
    rel = relevance.to(scores.dtype)
    _check_finite_where(rel, valid, relevance_name, "query")
    _check_finite_where(scores, valid, scores_name, "query")
    if nonnegative and bool((valid & (rel < 0)).any()):
        raise PairLossError(
            f"{relevance_name}: has negative labels at non-padded items; expected graded "
            "relevance >= 0 (the gains 2^rel - 1 or rel of NDCG)"
        )
    return scores, torch.where(valid, rel, torch.zeros_like(rel)), valid


def check_exp2_gains(
    relevance: torch.Tensor, valid: torch.Tensor, dtype: torch.dtype, name: str = "relevance"
) -> None:
    """Graded relevance [Q, L] whose exponential gains ``2^rel - 1`` (NDCG's default gain),
    summed over a list of L items, stay finite in ``dtype``: every real label below
    ``maxexp(dtype) - log2(L)`` (about 125 in float32 and 1021 in float64 for L = 6). Larger
    labels would turn every gain and every NDCG into inf / inf; the error names ``name``."""
    if not relevance.numel() or not bool(valid.any()):
        return
    top = float(torch.where(valid, relevance.detach(), 0.0).amax())
    limit = math.log2(torch.finfo(dtype).max) - math.log2(relevance.shape[-1])
    if top >= limit:
        raise PairLossError(
            f"{name}: the largest label, {top:.4g}, makes the exponential gain 2^rel - 1 of "
            f"NDCG overflow {dtype} when summed over a list of {relevance.shape[-1]} items; "
            f"expected graded relevance below {limit:.4g} (labels are usually 0-4), or a "
            "linear gain"
        )


def check_logps(
    x: object, name: str, like: torch.Tensor | None = None, like_name: str = ""
) -> torch.Tensor:
    """Finite floating-point log-probabilities of 1-D shape [B] (or of ``like``'s shape, on its
    device and dtype)."""
    x = check_tensor(x, name)
    if not x.is_floating_point():
        raise PairLossError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if like is None:
        if x.dim() != 1:
            raise PairLossError(
                f"{name}: expected a 1-D tensor of shape [batch], got shape {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            raise PairLossError(f"{name}: the batch is empty; expected >= 1 entry")
    else:
        if tuple(x.shape) != tuple(like.shape):
            raise PairLossError(
                f"{name}: has shape {tuple(x.shape)} but {like_name} has {tuple(like.shape)}; "
                "expected the same shape"
            )
        check_same_device_dtype(like, x, like_name, name)
    if not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).reshape(x.shape[0], -1).any(dim=1).nonzero().flatten()
        shown = ", ".join(str(int(i)) for i in bad[:5])
        raise PairLossError(
            f"{name}: contains NaN or Inf in row(s) {shown}; expected finite values"
        )
    return x


def check_token_counts(x: object, name: str, like: torch.Tensor, like_name: str) -> torch.Tensor:
    """Token counts of ``like``'s shape: numbers > 0 (integer or floating point), returned in
    ``like``'s dtype."""
    x = check_tensor(x, name)
    if tuple(x.shape) != tuple(like.shape):
        raise PairLossError(
            f"{name}: has shape {tuple(x.shape)} but {like_name} has {tuple(like.shape)}; "
            "expected one token count per sequence"
        )
    check_same_device(like, x, like_name, name)
    if x.dtype == torch.bool or x.is_complex():
        raise PairLossError(f"{name}: expected token counts (numbers > 0), got dtype {x.dtype}")
    v = x.to(like.dtype)
    if not bool((torch.isfinite(v) & (v > 0)).all()):
        raise PairLossError(f"{name}: expected token counts > 0, got {x.min().item()!r} at least")
    return v


def check_block_size(value: object, name: str = "block_size") -> int | None:
    """None (the engine's default) or an int >= 1 (bools refused)."""
    return None if value is None else check_int(value, name, minimum=1)
