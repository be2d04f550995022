"""Precomputed embeddings with their labels: ``.npy`` (+ a label file) or ``.pt``."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch

from ..errors import PairLossError
from ._files import as_path

LABEL_SUFFIXES = (".npy", ".txt", ".csv")
"""Suffixes of the label files :func:`load_embedding_file` reads."""


_INT_TOKEN = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: no superscripts or other scripts
_INT64 = (-(2**63), 2**63 - 1)


def _decode_text(raw: bytes, path: Path) -> str:
    """``raw`` decoded as UTF-8 (a leading byte-order mark is dropped); raise naming the line."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise PairLossError(
            f"{path}: line {line} is not valid UTF-8 (byte {raw[exc.start]:#04x} at offset "
            f"{exc.start}); expected a text file with one integer label per line"
        ) from None


def _parse_label_text(raw: bytes, path: Path) -> np.ndarray:
    """One integer per line (blank lines skipped); a ``.csv`` may start with one header line."""
    numbered = [
        (number, line.strip())
        for number, line in enumerate(_decode_text(raw, path).splitlines(), start=1)
        if line.strip()
    ]
    if path.suffix.lower() == ".csv" and numbered and not _is_int(numbered[0][1]):
        numbered = numbered[1:]
    values = []
    for number, line in numbered:
        if not _is_int(line):
            raise PairLossError(
                f"{path}: label line {number} is {line[:40]!r}; expected one integer per line "
                "(ASCII digits with an optional sign)"
            )
        value = int(line)
        if not _INT64[0] <= value <= _INT64[1]:
            raise PairLossError(
                f"{path}: label line {number} is {line[:40]!r}, outside the int64 range; "
                "expected labels between -2**63 and 2**63 - 1"
            )
        values.append(value)
    return np.array(values, dtype=np.int64)


def _is_int(token: str) -> bool:
    """True if ``token`` is a decimal integer of ASCII digits with an optional sign."""
    return _INT_TOKEN.fullmatch(token) is not None


def read_labels(path: str | Path) -> torch.Tensor:
    """Read a label file: ``.npy`` (a 1-D integer array) or ``.txt`` / ``.csv`` (one integer per
    line; a ``.csv`` may have a single header line).

    Returns:
        An int64 tensor ``[N]``.

    Raises:
        PairLossError: naming the file: missing, unsupported suffix, not integers, not 1-D.
    """
    path = as_path(path, "labels_path")
    if not path.is_file():
        raise PairLossError(f"labels_path: {path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        values = _load_npy(path)
    elif suffix in (".txt", ".csv"):
        values = _parse_label_text(path.read_bytes(), path)
    else:
        raise PairLossError(
            f"labels_path: {path}: unsupported suffix {suffix!r}; expected one of {LABEL_SUFFIXES}"
        )
    return check_label_tensor(values, path)


def _load_npy(path: Path) -> np.ndarray:
    """``np.load`` without pickles, after checking that the file holds exactly the bytes its
    header announces (numpy itself ignores trailing bytes and reads a shifted payload when
    bytes are inserted); raise naming the file otherwise."""
    try:
        with path.open("rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            offset = fh.tell()
        if dtype.hasobject:
            raise PairLossError(
                f"{path}: holds Python objects (dtype {dtype}); expected a numeric .npy array"
            )
        expected = offset + math.prod(shape) * dtype.itemsize
        size = path.stat().st_size
        if size != expected:
            raise PairLossError(
                f"{path}: holds {size} bytes but its .npy header announces shape {shape} of "
                f"{dtype} ({expected} bytes); expected a complete .npy file"
            )
        return np.load(path, allow_pickle=False)
    except PairLossError:
        raise
    except (OSError, ValueError, EOFError, SyntaxError, TypeError) as exc:
        raise PairLossError(f"{path}: cannot read as a .npy array ({exc})") from None


def _load_pt(path: Path) -> object:
    """``torch.load`` restricted to tensors and plain containers (``weights_only=True``)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise PairLossError(f"{path}: cannot read as a torch file ({exc})") from exc


def check_embedding_tensor(x: object, source: Path) -> torch.Tensor:
    """A finite floating-point ``[N, D]`` tensor, D >= 1; raise naming ``source`` otherwise."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise PairLossError(f"{source}: expected an embedding tensor/array, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] == 0:
        raise PairLossError(
            f"{source}: expected 2-D embeddings of shape [N, dim] with dim >= 1, "
            f"got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise PairLossError(f"{source}: expected floating-point embeddings, got dtype {x.dtype}")
    if not torch.isfinite(x).all():
        raise PairLossError(f"{source}: the embeddings hold NaN or infinite values")
    return x


def check_label_tensor(y: object, source: Path) -> torch.Tensor:
    """A 1-D integer tensor, returned as int64; raise naming ``source`` otherwise (unsigned
    values beyond the int64 range are refused rather than wrapped)."""
    if isinstance(y, np.ndarray):
        if y.dtype.kind == "u" and y.size and int(y.max()) > _INT64[1]:
            raise PairLossError(
                f"{source}: label {int(y.max())} is outside the int64 range; expected labels "
                "below 2**63"
            )
        if y.dtype.kind == "u":
            y = y.astype(np.int64)
        if y.dtype.kind not in "iuf" and y.dtype != np.bool_:
            raise PairLossError(f"{source}: expected integer labels, got dtype {y.dtype}")
        y = torch.from_numpy(y)
    if not isinstance(y, torch.Tensor):
        raise PairLossError(f"{source}: expected a label tensor/array, got {type(y).__name__}")
    if y.dim() != 1:
        raise PairLossError(f"{source}: expected 1-D labels of shape [N], got {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise PairLossError(f"{source}: expected integer labels, got dtype {y.dtype}")
    if y.dtype == torch.uint64 and y.numel() and int(y.max()) > _INT64[1]:
        raise PairLossError(
            f"{source}: label {int(y.max())} is outside the int64 range; expected labels below 2**63"
        )
    return y.to(torch.int64)


def _split_pt(content: object, path: Path) -> tuple[object, object | None]:
    """(embeddings, labels or None) from a loaded .pt object."""
    if isinstance(content, dict):
        if "embeddings" not in content:
            raise PairLossError(
                f"{path}: the dict has keys {sorted(map(str, content))}; expected 'embeddings' "
                "(and 'labels')"
            )
        return content["embeddings"], content.get("labels")
    if isinstance(content, (tuple, list)):
        if len(content) != 2:
            raise PairLossError(
                f"{path}: expected a pair (embeddings, labels), got a sequence of {len(content)}"
            )
        return content[0], content[1]
    return content, None


def _raw_embeddings(path: Path, labels_path: Path | None) -> tuple[object, object, Path]:
    """(embeddings, labels, the file the labels came from) before validation."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if labels_path is None:
            raise PairLossError(
                f"labels_path: required for the .npy embedding file {path}; expected a label "
                f"file ({', '.join(LABEL_SUFFIXES)})"
            )
        return _load_npy(path), read_labels(labels_path), labels_path
    if suffix == ".pt":
        embeddings, labels = _split_pt(_load_pt(path), path)
        if labels is not None and labels_path is not None:
            raise PairLossError(
                f"labels_path: {path} already holds labels; pass labels_path=None or save only "
                "the embeddings in the .pt file"
            )
        if labels is None:
            if labels_path is None:
                raise PairLossError(
                    f"{path}: no labels in the file; expected a dict with 'embeddings' and "
                    "'labels', a pair (embeddings, labels), or pass labels_path"
                )
            return embeddings, read_labels(labels_path), labels_path
        return embeddings, labels, path
    raise PairLossError(f"path: {path}: unsupported suffix {suffix!r}; expected .npy or .pt")


def load_embedding_file(
    path: str | Path, labels_path: str | Path | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load precomputed embeddings and their labels.

    Formats:
        - ``.npy``: a float array ``[N, D]``; the labels come from ``labels_path`` (required):
          ``.npy`` (1-D integer array) or ``.txt`` / ``.csv`` (one integer per line; a ``.csv``
          may have one header line).
        - ``.pt``: a dict ``{"embeddings": [N, D], "labels": [N]}``, a pair
          ``(embeddings, labels)``, or a bare embedding tensor with ``labels_path``. Loaded with
          ``torch.load(weights_only=True)``, so no arbitrary code runs.

    Args:
        path: the embedding file.
        labels_path: the label file, for ``.npy`` files or a ``.pt`` holding only embeddings.

    Returns:
        ``(embeddings, labels)``: float tensor ``[N, D]`` (dtype kept: float16/32/64) and int64
        tensor ``[N]``.

    Raises:
        PairLossError: missing or unreadable file, unsupported suffix, embeddings not a finite
            2-D float array, labels not 1-D integers (naming the file), and different lengths
            (naming the label file and both lengths).
    """
    path = as_path(path, "path")
    if not path.is_file():
        raise PairLossError(f"path: {path}: file not found")
    if labels_path is not None:
        labels_path = as_path(labels_path, "labels_path")
    raw_x, raw_y, label_source = _raw_embeddings(path, labels_path)
    embeddings = check_embedding_tensor(raw_x, path)
    labels = check_label_tensor(raw_y, label_source)
    if len(labels) != len(embeddings):
        raise PairLossError(
            f"{label_source}: {len(labels)} labels for {len(embeddings)} embeddings in {path}; "
            "expected one label per embedding"
        )
    return embeddings, labels
