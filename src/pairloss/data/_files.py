"""File helpers shared by the readers: reading bytes (plain or gzip) and locating data folders."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

from ..errors import PairLossError

DATA_ENV = "PAIRLOSS_DATA"
"""Environment variable naming a folder that holds the data sets (``fashion-mnist/`` ...)."""

_GZIP_MAGIC = b"\x1f\x8b"


def as_path(path: object, name: str) -> Path:
    """``path`` as a :class:`~pathlib.Path`; raise naming ``name`` if it is not path-like."""
    if not isinstance(path, (str, os.PathLike)):
        raise PairLossError(
            f"{name}: expected a path (str or os.PathLike), got {type(path).__name__}"
        )
    return Path(path)


def read_bytes(path: Path) -> bytes:
    """The content of ``path``, decompressed if it starts with the gzip magic bytes.

    Raises :class:`PairLossError` naming the file if it is missing or the gzip stream is corrupt.
    """
    if not path.is_file():
        raise PairLossError(f"{path}: file not found (expected a regular file)")
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise PairLossError(
            f"{path}: the gzip stream is corrupt or truncated ({exc}); expected a complete .gz file"
        ) from exc


def env_data_dir(name: str) -> Path | None:
    """``$PAIRLOSS_DATA/name`` if the environment variable is set, else ``None``."""
    base = os.environ.get(DATA_ENV)
    return Path(base) / name if base else None
