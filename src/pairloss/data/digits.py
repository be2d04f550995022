"""scikit-learn's bundled handwritten digits (1,797 images of 8 x 8, 10 classes)."""

from __future__ import annotations

import importlib

import torch

from ..errors import PairLossError


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """Load the UCI handwritten digits bundled with scikit-learn (no download needed).

    Returns:
        ``(images, labels)``: float32 tensor ``[1797, 8, 8]`` with values 0-16 (ink counts in
        4 x 4 blocks) and int64 tensor ``[1797]`` with values 0-9.

    Raises:
        PairLossError: scikit-learn is not installed (with the install hint).
    """
    try:
        datasets = importlib.import_module("sklearn.datasets")
    except ImportError as exc:
        raise PairLossError(
            "load_digits needs scikit-learn, which is not installed; install it with "
            "`pip install scikit-learn`"
        ) from exc
    bunch = datasets.load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32)
    return images, torch.as_tensor(bunch.target, dtype=torch.int64)
