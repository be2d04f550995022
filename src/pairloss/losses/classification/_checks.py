"""Input checks and reductions shared by the classification losses.

Every check raises :class:`pairloss.PairLossError` naming the argument. Half-precision inputs
(float16, bfloat16) are computed in float32 and the result is cast back to the input dtype.
"""

from __future__ import annotations

import torch

from ...errors import PairLossError
from ...validation import check_finite, check_same_device, check_tensor


def check_logits(logits: object, name: str = "logits") -> torch.Tensor:
    """A finite floating-point [B, C] matrix with B >= 1 and C >= 2."""
    logits = check_tensor(logits, name)
    if logits.dim() != 2:
        raise PairLossError(
            f"{name}: expected a 2-D tensor of shape [batch, classes], got shape "
            f"{tuple(logits.shape)}"
        )
    if not logits.is_floating_point():
        raise PairLossError(f"{name}: expected a floating-point tensor, got dtype {logits.dtype}")
    if logits.shape[0] == 0:
        raise PairLossError(
            f"{name}: the batch is empty (shape {tuple(logits.shape)}); expected >= 1 row"
        )
    if logits.shape[1] < 2:
        raise PairLossError(
            f"{name}: expected at least 2 class columns, got shape {tuple(logits.shape)}"
        )
    check_finite(logits, name)
    return logits


def check_class_targets(
    targets: object, logits: torch.Tensor, name: str = "targets"
) -> torch.Tensor:
    """A [B] tensor of integer class indices in [0, C) for ``logits`` of shape [B, C]."""
    targets = check_tensor(targets, name)
    batch, n_classes = logits.shape
    if targets.dim() != 1 or targets.shape[0] != batch:
        raise PairLossError(
            f"{name}: expected a 1-D tensor of {batch} class indices (one per row of logits), "
            f"got shape {tuple(targets.shape)}"
        )
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise PairLossError(
            f"{name}: expected an integer tensor of class indices, got dtype {targets.dtype}"
        )
    check_same_device(logits, targets, "logits", name)
    bad = (targets < 0) | (targets >= n_classes)
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        raise PairLossError(
            f"{name}: entry {first} is {int(targets[first])}, out of range for {n_classes} "
            f"classes; expected class indices in [0, {n_classes})"
        )
    return targets.long()


def check_multihot(targets: object, logits: torch.Tensor, name: str = "targets") -> torch.Tensor:
    """A [B, C] multi-hot tensor (bool, integer or float with values 0/1), returned as bool."""
    targets = check_tensor(targets, name)
    if tuple(targets.shape) != tuple(logits.shape):
        raise PairLossError(
            f"{name}: expected multi-hot targets of shape {tuple(logits.shape)} (the shape of "
            f"logits), got shape {tuple(targets.shape)}"
        )
    check_same_device(logits, targets, "logits", name)
    if targets.is_complex():
        raise PairLossError(f"{name}: expected 0/1 values, got dtype {targets.dtype}")
    if targets.dtype == torch.bool:
        return targets
    if not bool(((targets == 0) | (targets == 1)).all()):
        raise PairLossError(
            f"{name}: contains values other than 0 and 1; expected multi-hot 0/1 targets"
        )
    return targets == 1


def check_binary_scores(scores: object, name: str) -> torch.Tensor:
    """A finite floating-point tensor of shape [N] or [N, 1] (returned as [N]), N >= 1."""
    scores = check_tensor(scores, name)
    if scores.dim() == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.dim() != 1:
        raise PairLossError(
            f"{name}: expected a tensor of shape [batch] or [batch, 1], got shape {tuple(scores.shape)}"
        )
    if not scores.is_floating_point():
        raise PairLossError(f"{name}: expected a floating-point tensor, got dtype {scores.dtype}")
    if scores.shape[0] == 0:
        raise PairLossError(f"{name}: the batch is empty; expected >= 1 entry")
    if not bool(torch.isfinite(scores).all()):
        first = int((~torch.isfinite(scores)).nonzero()[0, 0])
        raise PairLossError(
            f"{name}: contains NaN or Inf (first at entry {first}); expected finite values"
        )
    return scores


def check_binary_targets(
    targets: object, scores: torch.Tensor, name: str = "targets"
) -> torch.Tensor:
    """0/1 labels of shape [N] or [N, 1] matching ``scores`` of shape [N], returned as bool [N]."""
    targets = check_tensor(targets, name)
    if targets.dim() == 2 and targets.shape[1] == 1:
        targets = targets[:, 0]
    if targets.dim() != 1 or targets.shape[0] != scores.shape[0]:
        raise PairLossError(
            f"{name}: expected {scores.shape[0]} binary labels (one per score), got shape "
            f"{tuple(targets.shape)}"
        )
    check_same_device(scores, targets, "scores", name)
    if targets.is_complex():
        raise PairLossError(f"{name}: expected 0/1 values, got dtype {targets.dtype}")
    if targets.dtype == torch.bool:
        return targets
    if not bool(((targets == 0) | (targets == 1)).all()):
        raise PairLossError(
            f"{name}: contains values other than 0 and 1; expected binary 0/1 labels"
        )
    return targets == 1


def reduce_rows(per_row: torch.Tensor, reduction: str, dtype: torch.dtype) -> torch.Tensor:
    """Mean / sum over rows, or the rows themselves, cast to ``dtype`` (the input's dtype)."""
    if reduction == "mean":
        out = per_row.mean()
    elif reduction == "sum":
        out = per_row.sum()
    else:
        out = per_row
    return out.to(dtype)
