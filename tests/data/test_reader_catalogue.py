"""Corrupt files for every reader of :data:`pairloss.data.readers.READERS`, generated.

Each reader's example is written, its target file damaged in one way, and the reader must then
raise :class:`PairLossError` naming that file, or return exactly what it returns for the intact
example (a damage the format cannot see, such as junk after a PNG's last chunk, changes
nothing). Damages an entry declares in ``tolerates`` may give another well-formed result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from pairloss.data.readers import READERS, ReaderEntry
from pairloss.errors import PairLossError


def _keep(data: bytes) -> bytes:
    return data


DAMAGES: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda d: b"",
    "one byte": lambda d: d[:1],
    "half": lambda d: d[: len(d) // 2],
    "last byte cut": lambda d: d[:-1],
    "wrong magic": lambda d: bytes(b ^ 0xFF for b in d[:4]) + d[4:],
    "inserted": lambda d: d[: len(d) // 2] + b"\xff\xfe\xfd" + d[len(d) // 2 :],
    "appended": lambda d: d + b"\x00junk\n",
    "garbage": lambda d: bytes(np.random.default_rng(len(d)).integers(0, 256, 96, np.uint8)),
}
"""Byte-level damages, applied to the target file's content."""

CASES = [(entry, damage) for entry in READERS for damage in (*DAMAGES, "huge header")]
CASES = [(e, d) for e, d in CASES if d != "huge header" or e.huge_header is not None]


def _same(a: object, b: object) -> bool:
    """Exactly equal results (tensors, arrays, paths, dicts, dataclasses, lists and tuples)."""
    if dataclasses.is_dataclass(a):
        return type(a) is type(b) and _same(dataclasses.astuple(a), dataclasses.astuple(b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return a == b


def _well_formed_like(a: object, b: object) -> bool:
    """The same structure, shapes and dtypes (values may differ)."""
    if dataclasses.is_dataclass(a):
        return type(a) is type(b)
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_well_formed_like, a, b))
    if isinstance(a, (torch.Tensor, np.ndarray)):
        return type(a) is type(b) and a.shape == b.shape and a.dtype == b.dtype
    return True


def _check(entry: ReaderEntry, damage: str, arg: Path, target: Path, intact: object) -> None:
    try:
        result = entry.read(arg)
    except PairLossError as exc:
        assert str(target) in str(exc), (
            f"{entry.name}, {damage}: the error does not name {target}: {exc}"
        )
        return
    if damage in entry.tolerates:
        assert _well_formed_like(intact, result), f"{entry.name}, {damage}: malformed result"
    else:
        assert _same(intact, result), f"{entry.name}, {damage}: a different result, no error"


@pytest.mark.parametrize(("entry", "damage"), CASES, ids=[f"{e.name}-{d}" for e, d in CASES])
def test_damaged_file_is_refused_naming_it_or_changes_nothing(tmp_path, entry, damage):
    example = entry.example(tmp_path)
    intact = entry.read(example.arg)
    data = example.target.read_bytes()
    change = entry.huge_header if damage == "huge header" else DAMAGES[damage]
    example.target.write_bytes(change(data))
    _check(entry, damage, example.arg, example.target, intact)


@pytest.mark.parametrize("entry", READERS, ids=[e.name for e in READERS])
@pytest.mark.parametrize("replacement", ["missing", "a folder"])
def test_missing_file_or_a_folder_in_its_place(tmp_path, entry, replacement):
    """A single-file reader refuses, naming the file; a folder reader refuses naming the file or
    its folder, or reads the rest (one image less is still a data set)."""
    example = entry.example(tmp_path)
    example.target.unlink()
    if replacement == "a folder":
        example.target.mkdir()
    try:
        entry.read(example.arg)
    except PairLossError as exc:
        named = str(example.target) in str(exc) or str(example.arg) in str(exc)
        assert named, (
            f"{entry.name}: the error names neither {example.target} nor its folder: {exc}"
        )
    else:
        assert example.arg.is_dir(), f"{entry.name}: a {replacement} file was read"


def test_the_catalogue_covers_every_reader_module():
    names = {e.name for e in READERS}
    assert len(names) == len(READERS)
    assert {"idx", "pgm", "png", "jpeg", "image-folder", "labels-txt", "embeddings-pt"} <= names
    for entry in READERS:
        assert (
            entry.read.__module__.startswith("pairloss.data") or entry.read.__name__ == "<lambda>"
        )
