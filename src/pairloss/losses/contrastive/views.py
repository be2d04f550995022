"""Input checks of the losses on views: two views [B, D] each, or V views of the same B samples."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...errors import PairLossError
from ...validation import check_embeddings, check_same_device_dtype
from .towers import check_towers


def check_two_views(
    z_a: object, z_b: object, min_batch: int = 1, names: tuple[str, str] = ("z_a", "z_b")
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two finite [B, D] views of the same samples (same shape, device and dtype), with at
    least ``min_batch`` rows."""
    a, b = check_towers(z_a, z_b, *names)
    if a.shape[0] < min_batch:
        raise PairLossError(
            f"{names[0]}: has {a.shape[0]} rows; expected at least {min_batch} samples (the "
            "loss uses batch statistics)"
        )
    return a, b


def check_views(views: object, min_views: int = 2, name: str = "views") -> torch.Tensor:
    """V >= ``min_views`` views of B samples as one [V, B, D] tensor, from a [V, B, D] tensor
    or a sequence of [B, D] tensors."""
    if isinstance(views, torch.Tensor):
        if views.dim() != 3:
            raise PairLossError(
                f"{name}: expected a [views, batch, dim] tensor or a list of [batch, dim] "
                f"tensors, got shape {tuple(views.shape)}"
            )
        stacked = views
        for v in range(views.shape[0]):
            check_embeddings(views[v], f"{name}[{v}]")
    elif isinstance(views, Sequence) and not isinstance(views, str) and views:
        items = [check_embeddings(v, f"{name}[{k}]") for k, v in enumerate(views)]
        for k, v in enumerate(items[1:], start=1):
            check_same_device_dtype(items[0], v, f"{name}[0]", f"{name}[{k}]")
            if v.shape != items[0].shape:
                raise PairLossError(
                    f"{name}[{k}]: has shape {tuple(v.shape)} but {name}[0] has "
                    f"{tuple(items[0].shape)}; expected every view of the same samples"
                )
        stacked = torch.stack(items)
    else:
        raise PairLossError(
            f"{name}: expected a [views, batch, dim] tensor or a list of [batch, dim] tensors, "
            f"got {type(views).__name__}"
        )
    if stacked.shape[0] < min_views:
        raise PairLossError(f"{name}: has {stacked.shape[0]} views; expected at least {min_views}")
    return stacked
