"""The catalogue of file readers, each with a small valid example input.

The test suite generates its corrupt-file tests from :data:`READERS`: for every entry it writes
the example, damages the entry's target file (emptied, truncated, wrong magic bytes, bytes that
are not UTF-8 inserted, junk appended, a header that claims an enormous size, replaced by a
folder or removed) and requires the reader either to raise :class:`pairloss.PairLossError`
naming that file, or to return exactly what it returns for the intact example. A reader added
here is covered without new test code.

To add a reader, append a :class:`ReaderEntry` to :data:`READERS` (or call :func:`register`
from the reader's module): its name, the call that reads (``read(example.arg)``), a function
that writes a small valid input into an empty folder and returns an :class:`Example`, and,
for formats whose header announces a size, ``huge_header`` (the valid bytes turned into a file
whose header claims an enormous size).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import PairLossError
from .benchmarks import cars196_files, cub200_files, sop_files
from .embeddings import load_embedding_file
from .folders import decode_image, load_image_folder
from .idx import load_fashion_mnist, read_idx
from .pgm import load_att_faces, read_pgm
from .preference import read_sts_scores
from .sentence_pairs import load_sts_benchmark, read_sentence_pairs


@dataclass(frozen=True)
class Example:
    """A valid input written by a :class:`ReaderEntry`.

    Attributes:
        arg: what the reader is called with (a file or a folder).
        target: the one file the generated tests damage (``arg`` itself for a single file).
    """

    arg: Path
    target: Path


@dataclass(frozen=True)
class ReaderEntry:
    """One reader of the catalogue.

    Attributes:
        name: a unique name (e.g. ``"idx"``, ``"labels-txt"``).
        read: the call, ``read(example.arg)``; it returns the decoded content.
        example: writes a small valid input into an (empty, existing) folder.
        huge_header: turns the target's valid bytes into bytes whose header claims an
            enormous size (``None`` for formats without a size in a header).
        tolerates: damage kinds (see the module docstring) that the format cannot detect, so
            that a different well-formed result is acceptable (e.g. bytes inserted into a JPEG
            stream, which has no checksum and no stored length).
    """

    name: str
    read: Callable[[Path], object]
    example: Callable[[Path], Example]
    huge_header: Callable[[bytes], bytes] | None = None
    tolerates: frozenset[str] = field(default_factory=frozenset)


READERS: list[ReaderEntry] = []
"""Every reader, in registration order."""


def register(entry: ReaderEntry) -> ReaderEntry:
    """Add ``entry`` to :data:`READERS` (names are unique) and return it."""
    if any(e.name == entry.name for e in READERS):
        raise PairLossError(f"name: a reader called {entry.name!r} is already registered")
    READERS.append(entry)
    return entry


# ------------------------------------------------------------------------------ byte builders


def idx_bytes(values: np.ndarray) -> bytes:
    """An IDX file holding a uint8 array."""
    header = bytes([0, 0, 0x08, values.ndim]) + b"".join(struct.pack(">I", d) for d in values.shape)
    return header + values.astype(np.uint8).tobytes()


def pgm_bytes(pixels: np.ndarray) -> bytes:
    """A binary PGM file: 8-bit for uint8 pixels, 16-bit big-endian for uint16 ones."""
    h, w = pixels.shape
    maxval = 255 if pixels.dtype == np.uint8 else 65535
    payload = pixels.astype(">u2").tobytes() if maxval > 255 else pixels.tobytes()
    return f"P5\n{w} {h}\n{maxval}\n".encode() + payload


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body and CRC."""
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _pattern(h: int, w: int, channels: int = 0) -> np.ndarray:
    """A deterministic test pattern of uint8 pixels."""
    grid = (np.arange(h)[:, None] * 37 + np.arange(w)[None, :] * 11) % 256
    if channels:
        grid = np.stack([(grid + 85 * c) % 256 for c in range(channels)], axis=-1)
    return grid.astype(np.uint8)


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _save_image(path: Path, pixels: np.ndarray) -> Path:
    from PIL import Image  # the image readers need Pillow anyway

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


# ------------------------------------------------------------------------------ huge headers


def _huge_idx(data: bytes) -> bytes:
    ndim = data[3]
    return data[:4] + b"\xff\xff\xff\xff" * ndim + data[4 + 4 * ndim :]


def _huge_pgm(data: bytes) -> bytes:
    payload = data[data.index(b"\n255\n") + 5 :] if b"\n255\n" in data else data[-64:]
    return b"P5\n1000000000 1000000000\n255\n" + payload


def _huge_png(data: bytes) -> bytes:
    ihdr = bytearray(data[16:29])
    ihdr[0:8] = struct.pack(">II", 20000, 20000)
    return data[:8] + png_chunk(b"IHDR", bytes(ihdr)) + data[33:]


def _huge_jpeg(data: bytes) -> bytes:
    out = bytearray(data)
    for marker in (0xC0, 0xC1, 0xC2):  # start of frame: precision, height, width
        at = data.find(bytes([0xFF, marker]))
        if at >= 0:
            out[at + 5 : at + 9] = struct.pack(">HH", 65000, 65000)
            return bytes(out)
    raise PairLossError("huge_header: no JPEG start-of-frame marker in the example")


def _huge_npy(data: bytes) -> bytes:
    header_len = struct.unpack("<H", data[8:10])[0]
    header = data[10 : 10 + header_len].decode("latin1")
    start, end = header.index("'shape': (") + len("'shape': ("), header.index(")")
    shape = header[start:end].split(",")
    shape[0] = str(2**40)
    new = (header[:start] + ",".join(shape) + header[end:]).rstrip("\n ")
    new = new.ljust(header_len - 1) + "\n"
    if len(new) != header_len:
        raise PairLossError("huge_header: the .npy header does not fit its length")
    return data[:10] + new.encode("latin1") + data[10 + header_len :]


# ------------------------------------------------------------------------------ examples


def _idx_example(folder: Path) -> Example:
    path = _write(folder / "values.idx", idx_bytes(_pattern(3, 4, 2)))
    return Example(path, path)


def _idx_gz_example(folder: Path) -> Example:
    path = _write(folder / "values.idx.gz", gzip.compress(idx_bytes(_pattern(5, 2))))
    return Example(path, path)


def _fashion_example(folder: Path) -> Example:
    images = _pattern(6 * 28, 28).reshape(6, 28, 28)
    labels = np.array([0, 1, 2, 0, 1, 9], np.uint8)
    target = _write(folder / "train-images-idx3-ubyte", idx_bytes(images))
    _write(folder / "train-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(labels)))
    return Example(folder, target)


def _pgm_example(folder: Path) -> Example:
    path = _write(folder / "face.pgm", pgm_bytes(_pattern(5, 4)))
    return Example(path, path)


def _pgm16_example(folder: Path) -> Example:
    pixels = (_pattern(3, 5).astype(np.uint16) * 257) + 3
    path = _write(folder / "deep.pgm", pgm_bytes(pixels))
    return Example(path, path)


def _att_example(folder: Path) -> Example:
    for identity in (1, 2):
        for image in (1, 2):
            _write(folder / f"s{identity}" / f"{image}.pgm", pgm_bytes(_pattern(4, 3) + image))
    return Example(folder, folder / "s2" / "1.pgm")


def _png_example(folder: Path) -> Example:
    path = _save_image(folder / "grey.png", _pattern(6, 5))
    return Example(path, path)


def _png16_example(folder: Path) -> Example:
    path = _save_image(folder / "deep.png", _pattern(4, 6).astype(np.uint16) * 250)
    return Example(path, path)


def _png_rgb_example(folder: Path) -> Example:
    path = _save_image(folder / "colour.png", _pattern(5, 4, 3))
    return Example(path, path)


def _jpeg_example(folder: Path) -> Example:
    path = _save_image(folder / "photo.jpg", _pattern(16, 16, 3))
    return Example(path, path)


def _image_folder_example(folder: Path) -> Example:
    for name in ("cat", "dog"):
        for i in range(2):
            _save_image(folder / name / f"{i}.png", _pattern(6, 6) // (i + 1))
    return Example(folder, folder / "dog" / "0.png")


def _labels_example(suffix: str) -> Callable[[Path], Example]:
    def write(folder: Path) -> Example:
        np.save(folder / "emb.npy", _pattern(4, 3).astype(np.float32))
        labels = [3, 1, 3, 0]
        if suffix == ".npy":
            np.save(folder / "labels.npy", np.array(labels, np.int64))
        else:
            head = "label\n" if suffix == ".csv" else ""
            _write(folder / f"labels{suffix}", (head + "\n".join(map(str, labels))).encode())
        return Example(folder / "emb.npy", folder / f"labels{suffix}")

    return write


def _read_with_labels(suffix: str) -> Callable[[Path], object]:
    return lambda emb: load_embedding_file(emb, emb.parent / f"labels{suffix}")


def _npy_embeddings_example(folder: Path) -> Example:
    np.save(folder / "emb.npy", _pattern(4, 3).astype(np.float32) / 7)
    np.save(folder / "labels.npy", np.array([0, 0, 1, 1]))
    return Example(folder / "emb.npy", folder / "emb.npy")


def _pt_embeddings_example(folder: Path) -> Example:
    content = {"embeddings": torch.arange(12.0).reshape(4, 3), "labels": torch.tensor([0, 1, 0, 1])}
    torch.save(content, folder / "emb.pt")
    return Example(folder / "emb.pt", folder / "emb.pt")


def _touch(folder: Path, relative: str) -> None:
    """An image file of a listing (the listing readers check it exists, never decode it)."""
    _write(folder / relative, b"")


def _cub_example(folder: Path) -> Example:
    base = folder / "CUB_200_2011"
    rows = [
        (1, "001.Albatross/a_1.jpg", 1),
        (2, "001.Albatross/a_2.jpg", 1),
        (3, "101.Wren/w_1.jpg", 101),
    ]
    for _, relative, _ in rows:
        _touch(base / "images", relative)
    _write(base / "images.txt", "".join(f"{i} {p}\n" for i, p, _ in rows).encode())
    target = _write(
        base / "image_class_labels.txt", "".join(f"{i} {c}\n" for i, _, c in rows).encode()
    )
    return Example(folder, target)


def _sop_example(folder: Path) -> Example:
    base = folder / "Stanford_Online_Products"
    names = [
        "bicycle_final/111085122871_0.JPG",
        "bicycle_final/111085122871_1.JPG",
        "bicycle_final/111265328556_0.JPG",
    ]
    for name in names:
        _touch(base, name)
    header = "image_id class_id super_class_id path\n"
    target = _write(
        base / "Ebay_train.txt", f"{header}1 1 1 {names[0]}\n2 1 1 {names[1]}\n".encode()
    )
    _write(base / "Ebay_test.txt", f"{header}3 2 1 {names[2]}\n".encode())
    return Example(folder, target)


def _cars_csv_example(folder: Path) -> Example:
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"]
    _write(folder / "names.csv", "".join(n + "\n" for n in names).encode())
    rows = {"train": [("00001.jpg", 1), ("00012.jpg", 2)], "test": [("00003.jpg", 2)]}
    for split, items in rows.items():
        for name, c in items:
            _touch(folder / "car_data" / "car_data" / split / names[c - 1], name)
        lines = "".join(f"{name},{10 ** (4 * c)},116,569,375,{c}\n" for name, c in items)
        _write(folder / f"anno_{split}.csv", lines.encode())
    return Example(folder, folder / "anno_train.csv")


def _cars_mat_example(folder: Path) -> Example:
    from scipy.io import savemat

    dtype = [("relative_im_path", "O"), ("class", "O")]
    rows = np.array([("car_ims/000001.jpg", 1), ("car_ims/000002.jpg", 99)], dtype=dtype)
    for relative, _ in rows:
        _touch(folder, relative)
    savemat(folder / "cars_annos.mat", {"annotations": rows})
    return Example(folder, folder / "cars_annos.mat")


_STS_ROWS = [
    (
        "main-captions",
        "MSRvid",
        "2012test",
        "0001",
        "5.000",
        "A plane is taking off.",
        "An air plane is taking off.",
    ),
    (
        "main-captions",
        "MSRvid",
        "2012test",
        "0004",
        "3.800",
        "A man is playing a flute.",
        "A man is playing a bamboo flute.",
    ),
    (
        "main-news",
        "headlines",
        "2013",
        "0050",
        "0.500",
        "Three men are playing chess.",
        "Two men are playing chess.",
    ),
]
"""Three STS Benchmark lines (tab-separated, as the published files)."""


def _sts_example(folder: Path) -> Example:
    lines = "".join("\t".join(row) + "\n" for row in _STS_ROWS)
    return Example(folder, _write(folder / "sts-train.csv", lines.encode()))


def _sts_file_example(folder: Path) -> Example:
    lines = "".join("\t".join(row) + "\n" for row in _STS_ROWS)
    target = _write(folder / "sts-dev.csv", lines.encode())
    return Example(target, target)


def _pairs_example(kind: str) -> Callable[[Path], Example]:
    def write(folder: Path) -> Example:
        rows = [(r[5], r[6], r[4]) for r in _STS_ROWS]
        if kind == "jsonl":
            import json

            text = "".join(
                json.dumps({"sentence1": a, "sentence2": b, "score": float(y)}) + "\n"
                for a, b, y in rows
            )
        else:
            sep = "\t" if kind == "tsv" else ","
            text = f"sentence1{sep}sentence2{sep}score\n"
            text += "".join(f"{a}{sep}{b}{sep}{y}\n" for a, b, y in rows)
        target = _write(folder / f"pairs.{kind}", text.encode())
        return Example(target, target)

    return write


_TEXT_CUTS = frozenset({"half", "last byte cut"})
"""Damages a plain-text format cannot always see: a cut inside a sentence or a score leaves a
well-formed, shorter line."""


for _entry in (
    ReaderEntry("idx", read_idx, _idx_example, _huge_idx),
    ReaderEntry("idx-gzip", read_idx, _idx_gz_example),
    ReaderEntry(
        "fashion-mnist", lambda root: load_fashion_mnist(root), _fashion_example, _huge_idx
    ),
    ReaderEntry("pgm", read_pgm, _pgm_example, _huge_pgm),
    ReaderEntry("pgm-16bit", read_pgm, _pgm16_example),
    ReaderEntry("att-faces", load_att_faces, _att_example, _huge_pgm),
    ReaderEntry("png", decode_image, _png_example, _huge_png),
    ReaderEntry("png-16bit", decode_image, _png16_example, _huge_png),
    ReaderEntry("png-rgb", decode_image, _png_rgb_example, _huge_png),
    ReaderEntry("jpeg", decode_image, _jpeg_example, _huge_jpeg, frozenset({"inserted"})),
    ReaderEntry("image-folder", load_image_folder, _image_folder_example, _huge_png),
    ReaderEntry("labels-txt", _read_with_labels(".txt"), _labels_example(".txt")),
    ReaderEntry("labels-csv", _read_with_labels(".csv"), _labels_example(".csv")),
    ReaderEntry("labels-npy", _read_with_labels(".npy"), _labels_example(".npy"), _huge_npy),
    ReaderEntry(
        "embeddings-npy",
        lambda emb: load_embedding_file(emb, emb.parent / "labels.npy"),
        _npy_embeddings_example,
        _huge_npy,
    ),
    ReaderEntry("embeddings-pt", load_embedding_file, _pt_embeddings_example),
    ReaderEntry("cub200", cub200_files, _cub_example),
    ReaderEntry("sop", sop_files, _sop_example),
    ReaderEntry("cars196-csv", cars196_files, _cars_csv_example),
    ReaderEntry("cars196-mat", cars196_files, _cars_mat_example),
    ReaderEntry(
        "sts-benchmark",
        lambda root: load_sts_benchmark("train", root),
        _sts_example,
        tolerates=_TEXT_CUTS,
    ),
    ReaderEntry("sts-scores", read_sts_scores, _sts_file_example, tolerates=_TEXT_CUTS),
    *(
        ReaderEntry(
            f"sentence-pairs-{kind}",
            read_sentence_pairs,
            _pairs_example(kind),
            tolerates=_TEXT_CUTS,
        )
        for kind in ("tsv", "csv", "jsonl")
    ),
):
    register(_entry)

__all__ = ["READERS", "Example", "ReaderEntry", "register"]
