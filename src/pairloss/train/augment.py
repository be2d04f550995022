"""Image augmentation on batches, on the batch's device, reproducible from a seed and a step.

Kinds (combine with commas, e.g. ``"flip,crop"``; ``"none"`` for none):

- ``flip``: horizontal flip with probability 1/2;
- ``crop``: a random resized crop: a window of ``U(CROP_SCALE[0], 1)`` of the image's area and
  aspect ratio ``exp(U(log 3/4, log 4/3))``, at a uniform position inside the image, resized
  back to the image's size (bilinear);
- ``jitter``: brightness and contrast each scaled by ``U(0.8, 1.2)``.

Flip and crop are one affine resampling (:func:`torch.nn.functional.affine_grid` and
``grid_sample``), so a batch is resampled once. The draws of step ``t`` come from a generator
seeded with ``(seed, t)``, so a resumed run augments exactly like an uninterrupted one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import PairLossError

AUGMENTATIONS = ("flip", "crop", "jitter")
"""The augmentation kinds."""

CROP_SCALE = (0.35, 1.0)
"""The range of the crop window's share of the image area."""


def parse_augment(spec: object) -> tuple[str, ...]:
    """``"none"`` or a comma list of :data:`AUGMENTATIONS` as a tuple (``()`` for none)."""
    if not isinstance(spec, str):
        raise PairLossError(
            f"augment: expected 'none' or a comma list of {AUGMENTATIONS}, got {spec!r}"
        )
    kinds = tuple(k.strip() for k in spec.split(",") if k.strip())
    if kinds == ("none",):
        return ()
    for kind in kinds:
        if kind not in AUGMENTATIONS:
            raise PairLossError(
                f"augment: unknown kind {kind!r}; expected 'none' or a comma list of "
                f"{', '.join(AUGMENTATIONS)}"
            )
    if not kinds or len(set(kinds)) != len(kinds):
        raise PairLossError(f"augment: expected distinct kinds, got {spec!r}")
    return kinds


def as_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images scaled to [0, 1] as float32; floating images unchanged."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


class ImageAugment:
    """Augments ``[B, C, H, W]`` (or ``[B, H, W]``) image batches; see the module docstring.

    Args:
        kinds: the augmentations (a spec string or a tuple of :data:`AUGMENTATIONS`).
        seed: the base seed.
    """

    def __init__(self, kinds: str | tuple[str, ...], seed: int = 0) -> None:
        self.kinds = parse_augment(kinds) if isinstance(kinds, str) else tuple(kinds)
        self.seed = seed

    def __bool__(self) -> bool:
        return bool(self.kinds)

    def __call__(self, images: torch.Tensor, step: int) -> torch.Tensor:
        """The augmented batch of training step ``step``: float in [0, 1] for uint8 input."""
        x = as_unit_float(images)
        if not self.kinds:
            return x
        squeeze = x.dim() == 3
        if squeeze:
            x = x.unsqueeze(1)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        b = x.shape[0]
        if "flip" in self.kinds or "crop" in self.kinds:
            x = self._resample(x, gen)
        if "jitter" in self.kinds:
            bright = torch.empty(b, 1, 1, 1).uniform_(0.8, 1.2, generator=gen).to(x.device)
            contrast = torch.empty(b, 1, 1, 1).uniform_(0.8, 1.2, generator=gen).to(x.device)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (((x - mean) * contrast + mean) * bright).clamp_(0.0, 1.0)
        return x.squeeze(1) if squeeze else x

    def _resample(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b = x.shape[0]
        sx, sy = torch.ones(b), torch.ones(b)
        tx, ty = torch.zeros(b), torch.zeros(b)
        if "crop" in self.kinds:
            area = torch.empty(b).uniform_(*CROP_SCALE, generator=gen)
            log_ratio = torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen)
            ratio = log_ratio.exp()
            sx = (area * ratio).sqrt().clamp(max=1.0)
            sy = (area / ratio).sqrt().clamp(max=1.0)
            tx = (torch.rand(b, generator=gen) * 2 - 1) * (1 - sx)
            ty = (torch.rand(b, generator=gen) * 2 - 1) * (1 - sy)
        if "flip" in self.kinds:
            sx = sx * torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, tx, sy, ty
        theta = theta.to(device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
