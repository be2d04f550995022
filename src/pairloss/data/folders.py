"""Image folders: one subfolder per class, images read with Pillow (PNG/JPEG) or our PGM reader."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import PairLossError
from ._files import as_path
from .pgm import read_pgm

PILLOW_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
"""File suffixes (lower case) decoded with Pillow."""

IMAGE_SUFFIXES = PILLOW_SUFFIXES | {".pgm"}
"""All the file suffixes :func:`load_image_folder` reads; other files are ignored."""

_MODES = ("auto", "grey", "rgb")
_PILLOW_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, as Pillow's convert("L")


def _pillow(path: Path) -> ModuleType:
    """Pillow's ``PIL.Image`` module, or a PairLossError with an install hint."""
    try:
        return importlib.import_module("PIL.Image")
    except ImportError as exc:
        raise PairLossError(
            f"{path}: reading {path.suffix} images needs Pillow, which is not installed; "
            "install it with `pip install Pillow` (or use PGM files)"
        ) from exc


MAX_IMAGE_PIXELS = 2**26
"""The largest image (width x height, about 67 megapixels: 8192 x 8192) :func:`decode_image`
decodes. The size is read from the file's header and checked before any pixel is decoded, so a
file that claims an enormous size (a decompression bomb) is refused without allocating it."""

_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


def _decode_with_pillow(path: Path) -> np.ndarray:
    """Decode a PNG/JPEG file to uint8 ``[H, W]`` (grey modes) or ``[H, W, 3]`` (others).

    16-bit grey images (Pillow modes ``I;16*``, and ``I`` for 16-bit PNG files) are scaled to
    8 bits with ``round(v * 255 / 65535)``, never clipped.
    """
    image_module = _pillow(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", image_module.DecompressionBombWarning)
            with image_module.open(path) as image:
                width, height = image.size
                _check_pixels(width, height, path)
                return _pixels(image)
    except PairLossError:
        raise
    except image_module.DecompressionBombError as exc:
        raise PairLossError(
            f"{path}: the image header claims too many pixels ({exc}); expected at most "
            f"{MAX_IMAGE_PIXELS:,} pixels (pairloss.data.MAX_IMAGE_PIXELS)"
        ) from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, struct.error, ... for bad files
        raise PairLossError(
            f"{path}: cannot decode the image ({type(exc).__name__}: {exc})"
        ) from None


def _check_pixels(width: int, height: int, path: Path) -> None:
    """Refuse an image larger than :data:`MAX_IMAGE_PIXELS` (or empty) before decoding it."""
    if width < 1 or height < 1 or width * height > MAX_IMAGE_PIXELS:
        raise PairLossError(
            f"{path}: the image header claims {width} x {height} pixels; expected between 1 and "
            f"{MAX_IMAGE_PIXELS:,} pixels (pairloss.data.MAX_IMAGE_PIXELS)"
        )


def _pixels(image) -> np.ndarray:
    """The decoded pixels of an open Pillow image as uint8 ``[H, W]`` or ``[H, W, 3]``."""
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        return np.rint(np.clip(values, 0, 65535) * (255.0 / 65535.0)).astype(np.uint8)
    grey = image.mode in _PILLOW_GREY_MODES
    return np.asarray(image.convert("L" if grey else "RGB"), dtype=np.uint8).copy()


def decode_image(path: str | Path) -> np.ndarray:
    """Read one image file: uint8 ``[H, W]`` for grey images, ``[H, W, 3]`` for colour ones.

    PGM files are read with :func:`read_pgm`; PNG and JPEG need Pillow (imported on first use).

    Raises:
        PairLossError: naming the file: unsupported suffix, Pillow missing, a corrupt file.
    """
    path = as_path(path, "path")
    suffix = path.suffix.lower()
    if suffix == ".pgm":
        return read_pgm(path)
    if suffix in PILLOW_SUFFIXES:
        return _decode_with_pillow(path)
    raise PairLossError(
        f"{path}: unsupported image suffix {suffix!r}; expected one of {sorted(IMAGE_SUFFIXES)}"
    )


def _is_colour(image: np.ndarray) -> bool:
    """True for an ``[H, W, 3]`` image whose channels differ somewhere."""
    return image.ndim == 3 and not (
        np.array_equal(image[..., 0], image[..., 1])
        and np.array_equal(image[..., 0], image[..., 2])
    )


def to_grey(image: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W]``: ``image`` as is if grey, else the BT.601 luma of ``[H, W, 3]``."""
    if image.ndim == 2:
        return image
    return np.clip(np.rint(image.astype(np.float64) @ _LUMA), 0, 255).astype(np.uint8)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 ``[3, H, W]`` (channels first): grey images repeated on the three channels."""
    if image.ndim == 2:
        return np.repeat(image[None], 3, axis=0)
    return np.ascontiguousarray(image.transpose(2, 0, 1))


def _check_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """``size`` as (height, width), or ``None``."""
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in pair):
        raise PairLossError(f"size: expected an int or (height, width), got {size!r}")
    if min(pair) < 1:
        raise PairLossError(f"size: expected positive sizes, got {size!r}")
    return pair[0], pair[1]


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a uint8 ``[H, W]`` or ``[C, H, W]`` image to ``size`` = (height, width).

    Bilinear with antialiasing (torch), rounded back to uint8. Returns the input if it already
    has that size.
    """
    if tuple(image.shape[-2:]) == size:
        return image
    batch = image.float().reshape(1, -1, *image.shape[-2:])
    out = F.interpolate(batch, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).reshape(*image.shape[:-2], *size)


def _class_folders(root: Path) -> list[Path]:
    """The visible subfolders of ``root``, sorted by name; raise if there is none."""
    if not root.is_dir():
        raise PairLossError(f"root: {root} is not a folder; expected one subfolder per class")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise PairLossError(f"root: no class folder in {root}; expected one subfolder per class")
    return folders


def _image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name; raise if there is none."""
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise PairLossError(
            f"{folder}: empty class folder; expected at least one image "
            f"({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return files


def _stack(images: list[torch.Tensor], paths: list[Path]) -> torch.Tensor:
    """Stack equally sized images; raise naming the first file whose size differs."""
    for image, path in zip(images, paths):
        if image.shape != images[0].shape:
            raise PairLossError(
                f"{path}: image of size {tuple(image.shape[-2:])} differs from "
                f"{tuple(images[0].shape[-2:])} ({paths[0]}); pass size= (--image-size on the "
                "command line) to resize all images"
            )
    return torch.stack(images)


def load_image_folder(
    root: str | Path, size: int | tuple[int, int] | None = None, mode: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor, list[str], list[Path]]:
    """Load a labelled image folder: ``root/<class name>/<image>``.

    Class folders are sorted by name and numbered 0, 1, ... (hidden folders are skipped).
    Images are the files directly inside a class folder with suffix ``.png``, ``.jpg``,
    ``.jpeg`` (read with Pillow, imported on first use) or ``.pgm`` (read with
    :func:`read_pgm`); other files are ignored.

    Args:
        root: the folder holding the class folders.
        size: ``None`` (all images must have the same size), an int (square) or
            ``(height, width)``; images are resized with antialiased bilinear interpolation.
        mode: ``"grey"``, ``"rgb"`` or ``"auto"`` (rgb if any image has colour, else grey).
            Colour is converted to grey with the BT.601 luma weights.

    Returns:
        ``(images, labels, classes, paths)``: uint8 tensor ``[N, H, W]`` (grey) or
        ``[N, 3, H, W]`` (rgb), int64 labels ``[N]``, the class names (index = label) and the
        ``N`` file paths, ordered by class, then by file name.

    Raises:
        PairLossError: ``root`` is not a folder or has no class folder; an empty class folder
            (naming it); Pillow missing for a PNG/JPEG file; a corrupt file or images of
            different sizes without ``size`` (naming the file); bad ``size`` or ``mode``.
    """
    root = as_path(root, "root")
    target = _check_size(size)
    if mode not in _MODES:
        raise PairLossError(f"mode: expected one of {_MODES}, got {mode!r}")
    folders = _class_folders(root)
    files = [(label, path) for label, f in enumerate(folders) for path in _image_files(f)]
    decoded = [decode_image(path) for _, path in files]
    rgb = mode == "rgb" or (mode == "auto" and any(_is_colour(im) for im in decoded))
    convert = to_rgb if rgb else to_grey
    images = [torch.from_numpy(convert(im)) for im in decoded]
    if target is not None:
        images = [resize(im, target) for im in images]
    paths = [path for _, path in files]
    labels = torch.tensor([label for label, _ in files], dtype=torch.int64)
    return _stack(images, paths), labels, [f.name for f in folders], paths
