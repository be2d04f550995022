"""Binary PGM (``P5``) images and the AT&T (ORL / Olivetti) face data set.

A binary PGM file is the magic ``P5``, then width, height and maxval as decimal integers
separated by whitespace (``#`` starts a comment that runs to the end of the line), one single
whitespace character, then ``width * height`` samples (row-major): one byte each when
maxval <= 255, two bytes (big-endian) each when 256 <= maxval <= 65535.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ..errors import PairLossError
from ._files import as_path, env_data_dir, read_bytes

_WHITESPACE = b" \t\r\n\v\f"
_HEADER_FIELDS = ("width", "height", "maxval")
_IDENTITY_DIR = re.compile(r"s(\d+)")
_IMAGE_FILE = re.compile(r"(\d+)\.pgm")


def _skip_blanks(data: bytes, pos: int) -> int:
    """The position of the next byte after whitespace and ``#`` comments."""
    while pos < len(data):
        byte = data[pos : pos + 1]
        if byte in _WHITESPACE:
            pos += 1
        elif byte == b"#":
            ends = [i for i in (data.find(b"\n", pos), data.find(b"\r", pos)) if i >= 0]
            pos = min(ends) + 1 if ends else len(data)
        else:
            break
    return pos


def _header_number(data: bytes, pos: int, field: str, source: str) -> tuple[int, int]:
    """Read the decimal integer ``field`` at ``pos``; return (value, position after it)."""
    end = pos
    while end < len(data) and data[end : end + 1].isdigit():
        end += 1
    if end == pos:
        found = data[pos : pos + 8] if pos < len(data) else b"end of file"
        raise PairLossError(
            f"{source}: bad PGM header: expected the {field} (a decimal integer) at byte {pos}, "
            f"found {found!r}"
        )
    return int(data[pos:end]), end


def _pgm_header(data: bytes, source: str) -> tuple[int, int, int, int]:
    """Parse a P5 header; return (width, height, maxval, offset of the pixel data)."""
    if data[:2] != b"P5":
        raise PairLossError(
            f"{source}: bad PGM header: expected the magic 'P5' (binary greymap), "
            f"found {data[:2]!r}"
        )
    if len(data) < 3 or data[2:3] not in _WHITESPACE + b"#":
        raise PairLossError(f"{source}: bad PGM header: expected whitespace after 'P5'")
    values, pos = [], 2
    for field in _HEADER_FIELDS:
        value, pos = _header_number(data, _skip_blanks(data, pos), field, source)
        values.append(value)
    if pos >= len(data) or data[pos : pos + 1] not in _WHITESPACE:
        raise PairLossError(
            f"{source}: bad PGM header: expected one whitespace character after the maxval"
        )
    width, height, maxval = values
    if width < 1 or height < 1:
        raise PairLossError(
            f"{source}: bad PGM header: expected width and height >= 1, got {width} x {height}"
        )
    if not 1 <= maxval <= 65535:
        raise PairLossError(
            f"{source}: bad PGM header: maxval {maxval} out of range; expected 1-65535"
        )
    return width, height, maxval, pos + 1


def parse_pgm(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of a binary PGM (``P5``) file.

    Args:
        data: the whole file content.
        source: the name used in error messages (normally the file path).

    Returns:
        A writable uint8 array ``[height, width]``. 8-bit files (maxval <= 255) keep their
        values as stored (not rescaled when maxval < 255); 16-bit files (maxval > 255) are
        scaled to 8 bits with ``round(v * 255 / maxval)`` (values above maxval are clipped).

    Raises:
        PairLossError: a bad header (magic, missing or malformed fields, maxval outside
            1-65535) or a pixel payload that is not exactly ``width * height`` samples.
    """
    width, height, maxval, offset = _pgm_header(data, source)
    depth = 1 if maxval <= 255 else 2
    expected, actual = width * height * depth, len(data) - offset
    if actual != expected:
        what = "short PGM payload" if actual < expected else "PGM payload too long"
        raise PairLossError(
            f"{source}: {what}: expected {expected} bytes for {width} x {height} pixels of "
            f"{8 * depth} bits, got {actual}"
        )
    if depth == 1:
        return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(height, width).copy()
    values = np.frombuffer(data, dtype=">u2", offset=offset).astype(np.float64)
    scaled = np.rint(np.minimum(values, maxval) * (255.0 / maxval)).astype(np.uint8)
    return scaled.reshape(height, width)


def read_pgm(path: str | Path) -> np.ndarray:
    """Read a binary PGM (``P5``) file, plain or gzip compressed.

    Returns:
        A uint8 array ``[height, width]``.

    Raises:
        PairLossError: naming the file, if it is missing or not a valid 8-bit P5 file.
    """
    path = as_path(path, "path")
    return parse_pgm(read_bytes(path), str(path))


def _numbered(folder: Path, pattern: re.Pattern[str], want_dir: bool) -> list[Path]:
    """Entries of ``folder`` whose name matches ``pattern``, sorted by their number, then by
    name (so ``s2`` comes before ``s10``, and ``s1`` and ``s01`` stay two distinct entries)."""
    found = [
        (int(m.group(1)), entry.name, entry)
        for entry in folder.iterdir()
        if (m := pattern.fullmatch(entry.name)) and entry.is_dir() == want_dir
    ]
    return [entry for _, _, entry in sorted(found)]


def _att_root(root: str | Path | None) -> Path:
    """``root``, or ``$PAIRLOSS_DATA/att_faces``; raise if neither names a folder."""
    if root is None:
        root = env_data_dir("att_faces")
        if root is None:
            raise PairLossError(
                "root: expected the AT&T faces folder (holding s1/ ... s40/), got None and "
                "PAIRLOSS_DATA is not set"
            )
    root = as_path(root, "root")
    if not root.is_dir():
        raise PairLossError(f"root: {root} is not a folder; expected the AT&T faces folder")
    return root


def load_att_faces(
    root: str | Path | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[Path]]:
    """Load the AT&T (ORL / Olivetti) faces: 40 identities x 10 grey images of 112 x 92.

    Layout: ``root/sNN/M.pgm`` (identity ``NN`` from 1, image ``M`` from 1). Identities and
    images are ordered numerically (s2 before s10; equal numbers by name). An identity is its
    folder: its label is the folder's position in that order, so the standard ``s1 ... s40``
    get labels 0-39, a folder ``s0`` gets 0 like any first folder, and ``s1`` and ``s01`` are
    two identities.

    Args:
        root: the folder holding the ``sNN`` folders; ``None`` means
            ``$PAIRLOSS_DATA/att_faces``.

    Returns:
        ``(images, labels, paths)``: uint8 tensor ``[N, 112, 92]``, int64 tensor ``[N]`` (the
        identity folder's position, ``NN - 1`` for the standard layout), and the ``N`` file
        paths in the same order.

    Raises:
        PairLossError: no ``sNN`` folder in ``root``; an identity folder without ``M.pgm``
            files; a corrupt PGM file or images of different sizes (naming the file).
    """
    root = _att_root(root)
    identities = _numbered(root, _IDENTITY_DIR, want_dir=True)
    if not identities:
        raise PairLossError(f"root: no identity folder (s1, s2, ...) found in {root}")
    images, labels, paths = [], [], []
    for identity, folder in enumerate(identities):
        files = _numbered(folder, _IMAGE_FILE, want_dir=False)
        if not files:
            raise PairLossError(f"{folder}: empty identity folder; expected 1.pgm, 2.pgm, ...")
        for path in files:
            image = read_pgm(path)
            if images and image.shape != images[0].shape:
                raise PairLossError(
                    f"{path}: image of shape {image.shape}; expected {images[0].shape} "
                    f"like {paths[0]}"
                )
            images.append(image)
            labels.append(identity)
            paths.append(path)
    return torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64), paths
