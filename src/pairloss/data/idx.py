"""IDX files (the MNIST / Fashion-MNIST container format) and the Fashion-MNIST reader.

An IDX file is a 4-byte magic number ``0x00 0x00 <dtype code> <number of dimensions>``, one
big-endian uint32 per dimension, then the values in C order (big-endian). The file may be gzip
compressed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..errors import PairLossError
from ._files import DATA_ENV, as_path, env_data_dir, read_bytes

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""IDX dtype codes and the (big-endian) numpy dtype of the values they announce."""

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` installs the files."""

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""Fashion-MNIST class names, indexed by label."""

_FASHION_PREFIX = {"train": "train", "test": "t10k"}
_INSTALL_HINT = (
    "install it with `apt-get update && apt-get install -y dataset-fashion-mnist` "
    f"(files go to {FASHION_MNIST_DIR}), or pass root= a folder holding the IDX files"
)


def _idx_header(data: bytes, source: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """Parse the magic number and dimensions; return (dtype, shape, header size in bytes)."""
    if len(data) < 4:
        raise PairLossError(
            f"{source}: truncated IDX header: expected at least 4 bytes, got {len(data)}"
        )
    if data[0] != 0 or data[1] != 0:
        magic = int.from_bytes(data[:4], "big")
        raise PairLossError(
            f"{source}: bad IDX magic number 0x{magic:08x}; expected 0x0000TTNN "
            "(two zero bytes, a dtype code TT, the number of dimensions NN)"
        )
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise PairLossError(
            f"{source}: unknown IDX dtype code 0x{code:02x}; expected one of {known}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise PairLossError(
            f"{source}: truncated IDX header: expected {header} bytes for {ndim} dimensions, "
            f"got {len(data)}"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return IDX_DTYPES[code], shape, header


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of an (uncompressed) IDX file.

    Args:
        data: the whole file content.
        source: the name used in error messages (normally the file path).

    Returns:
        A writable numpy array of the announced shape, in native byte order.

    Raises:
        PairLossError: bad magic number, unknown dtype code, truncated header, or a payload whose
            size differs from the size the header announces (expected vs actual byte count).
    """
    dtype, shape, header = _idx_header(data, source)
    expected = math.prod(shape) * dtype.itemsize
    actual = len(data) - header
    if actual != expected:
        what = "truncated IDX payload" if actual < expected else "IDX payload too long"
        raise PairLossError(
            f"{source}: {what}: expected {expected} bytes for shape {shape} of {dtype.name}, "
            f"got {actual}"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header, count=math.prod(shape))
    return values.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzip compressed or plain (detected from its first bytes).

    Args:
        path: the file.

    Returns:
        A numpy array of the shape and dtype announced by the header (native byte order).

    Raises:
        PairLossError: naming the file, if it is missing, the gzip stream is corrupt, or the
            content is not a valid IDX file (see :func:`parse_idx`).
    """
    path = as_path(path, "path")
    return parse_idx(read_bytes(path), str(path))


def _find_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem.gz`` or ``folder/stem``, whichever exists first."""
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _fashion_folders(root: str | Path | None) -> list[Path]:
    """The folders to look in: ``root`` alone if given, else the system and $PAIRLOSS_DATA ones."""
    if root is not None:
        return [as_path(root, "root")]
    env = env_data_dir("fashion-mnist")
    return [FASHION_MNIST_DIR] + ([env] if env is not None else [])


def _fashion_files(root: str | Path | None, split: str) -> tuple[Path, Path]:
    """The (images, labels) files of ``split``, or a PairLossError with the install hint."""
    prefix = _FASHION_PREFIX[split]
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    folders = _fashion_folders(root)
    for folder in folders:
        images, labels = (_find_file(folder, stem) for stem in stems)
        if images is not None and labels is not None:
            return images, labels
    looked = ", ".join(str(f) for f in folders)
    env_note = "" if root is not None else f" (and ${DATA_ENV}/fashion-mnist when set)"
    raise PairLossError(
        f"root: Fashion-MNIST {split} files {stems[0]}[.gz] and {stems[1]}[.gz] not found in "
        f"{looked}{env_note}; {_INSTALL_HINT}"
    )


def _check_fashion(images: np.ndarray, labels: np.ndarray, files: tuple[Path, Path]) -> None:
    """Shapes, dtypes and label range of a Fashion-MNIST split."""
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise PairLossError(
            f"{files[0]}: expected uint8 images of shape [N, 28, 28], "
            f"got {images.dtype.name} of shape {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1 or len(labels) != len(images):
        raise PairLossError(
            f"{files[1]}: expected {len(images)} uint8 labels (one per image in {files[0]}), "
            f"got {labels.dtype.name} of shape {labels.shape}"
        )
    if labels.size and labels.max() > 9:
        raise PairLossError(f"{files[1]}: expected labels 0-9, found {int(labels.max())}")


def load_fashion_mnist(
    root: str | Path | None = None, split: str = "train"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load Fashion-MNIST (Zalando; 60,000 training and 10,000 test images, 10 classes).

    Files: ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``. Where they are looked for:
    ``root`` if given; otherwise ``/usr/share/datasets/fashion-mnist`` (Debian package
    ``dataset-fashion-mnist``), then ``$PAIRLOSS_DATA/fashion-mnist``.

    Args:
        root: a folder holding the files, or ``None`` for the default places.
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).

    Returns:
        ``(images, labels)``: uint8 tensor ``[N, 28, 28]`` (0 = background) and int64 tensor
        ``[N]`` with values 0-9 (names in :data:`FASHION_MNIST_CLASSES`).

    Raises:
        PairLossError: bad ``split``; files missing (with the install hint); a corrupt file
            (naming it).
    """
    if split not in _FASHION_PREFIX:
        raise PairLossError(f"split: expected 'train' or 'test', got {split!r}")
    files = _fashion_files(root, split)
    images, labels = read_idx(files[0]), read_idx(files[1])
    _check_fashion(images, labels, files)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
