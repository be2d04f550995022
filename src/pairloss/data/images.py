"""Images decoded from their files when a batch needs them, for data sets too large to hold
decoded in memory (CUB-200-2011, Cars196, Stanford Online Products, any image folder)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..errors import PairLossError
from ..validation import check_int
from .folders import (
    IMAGE_SUFFIXES,
    _class_folders,
    _image_files,
    decode_image,
    resize,
    to_grey,
    to_rgb,
)

_MODES = ("grey", "rgb")


class ImageFiles:
    """A list of image files that indexes like a uint8 tensor ``[N, C, H, W]``.

    ``images[i]`` is one image ``[C, H, W]``; ``images[rows]`` (a list, a 1-D integer tensor or
    a slice) is a batch ``[B, C, H, W]``. Each file is decoded (:func:`decode_image`: PGM, PNG,
    JPEG), converted to ``mode`` and resized to ``size`` (antialiased bilinear, the aspect
    ratio is not kept) when it is read. Decoded images are kept in memory up to
    ``cache_bytes``, so that after the first epoch a data set that fits is never decoded again.
    Files are decoded by ``workers`` threads (Pillow releases the GIL while decoding).

    Args:
        paths: the image files.
        size: ``(height, width)`` every image is resized to.
        mode: ``"rgb"`` (3 channels, grey images repeated) or ``"grey"`` (BT.601 luma).
        cache_bytes: memory for decoded images (default 4 GiB; 0 disables the cache).
        workers: decoding threads (default 4).

    Raises:
        PairLossError: bad arguments; reading a file that is missing or corrupt (naming it).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        size: tuple[int, int],
        mode: str = "rgb",
        cache_bytes: int = 4 << 30,
        workers: int = 4,
    ) -> None:
        if mode not in _MODES:
            raise PairLossError(f"mode: expected one of {_MODES}, got {mode!r}")
        if len(size) != 2:
            raise PairLossError(f"size: expected (height, width), got {size!r}")
        self.size = (check_int(size[0], "size", 1, 2**15), check_int(size[1], "size", 1, 2**15))
        self.paths = [Path(p) for p in paths]
        self.mode = mode
        self.channels = 3 if mode == "rgb" else 1
        per_image = self.channels * self.size[0] * self.size[1]
        self.cache_images = check_int(cache_bytes, "cache_bytes", 0) // per_image
        self.workers = check_int(workers, "workers", 1, 256)
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(N, C, H, W)``."""
        return (len(self.paths), self.channels, *self.size)

    @property
    def dtype(self) -> torch.dtype:
        """Always ``torch.uint8``."""
        return torch.uint8

    def load(self, index: int) -> torch.Tensor:
        """Image ``index`` as uint8 ``[C, H, W]`` (from the cache when it is there)."""
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        image = decode_image(self.paths[index])
        pixels = to_rgb(image) if self.mode == "rgb" else to_grey(image)[None]
        out = resize(torch.from_numpy(np.ascontiguousarray(pixels)), self.size)
        if len(self._cache) < self.cache_images:
            self._cache[index] = out
        return out

    def _rows(self, key: object) -> list[int]:
        if isinstance(key, slice):
            return list(range(len(self.paths)))[key]
        if isinstance(key, torch.Tensor):
            key = key.tolist()
        if isinstance(key, np.ndarray):
            key = key.tolist()
        if not isinstance(key, (list, tuple)):
            raise PairLossError(f"index: expected a slice, a list or a tensor, got {key!r}")
        n = len(self.paths)
        for i in key:
            if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n:
                raise PairLossError(f"index: {i!r} is not an image index of 0..{n - 1}")
        return [i % n for i in key]

    def __getitem__(self, key: object) -> torch.Tensor:
        if isinstance(key, int) and not isinstance(key, bool):
            return self.load(self._rows([key])[0])
        rows = self._rows(key)
        if not rows:
            return torch.empty(0, *self.shape[1:], dtype=torch.uint8)
        if self.workers == 1 or len(rows) == 1:
            return torch.stack([self.load(i) for i in rows])
        with ThreadPoolExecutor(self.workers) as pool:
            return torch.stack(list(pool.map(self.load, rows)))

    def subset(self, rows: Sequence[int] | torch.Tensor) -> ImageFiles:
        """The images at ``rows``, as a new :class:`ImageFiles` sharing nothing."""
        picked = [self.paths[i] for i in self._rows(rows)]
        per_image = self.channels * self.size[0] * self.size[1]
        return ImageFiles(picked, self.size, self.mode, self.cache_images * per_image, self.workers)


def image_folder_files(root: str | Path) -> tuple[list[Path], torch.Tensor, list[str]]:
    """The files of a labelled image folder ``root/<class>/<image>`` without decoding them:
    ``(paths, labels, class names)``, classes sorted by name and numbered from 0, images sorted
    by name (see :func:`pairloss.data.load_image_folder` for the rules)."""
    root = Path(root)
    folders = _class_folders(root)
    paths, labels = [], []
    for label, folder in enumerate(folders):
        for path in _image_files(folder):
            paths.append(path)
            labels.append(label)
    return paths, torch.tensor(labels, dtype=torch.int64), [f.name for f in folders]


__all__ = ["IMAGE_SUFFIXES", "ImageFiles", "image_folder_files"]
