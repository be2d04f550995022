"""Data readers on the real files (AT&T faces, Fashion-MNIST, scikit-learn digits) and on
corrupted copies, plus the class and identity splits.

The real files are read from ``$PAIRLOSS_DATA`` or ``../shared/data`` next to the repository;
Fashion-MNIST from the Debian package ``dataset-fashion-mnist``. A missing data set fails the
test with the install hint (it is never skipped).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pairloss.data import (
    FASHION_MNIST_DIR,
    class_split,
    enrol,
    identity_split,
    load_att_faces,
    load_digits,
    load_embedding_file,
    load_fashion_mnist,
    load_image_folder,
    parse_pgm,
    read_idx,
    read_pgm,
)
from pairloss.errors import PairLossError

SHARED_DATA = (
    Path(os.environ["PAIRLOSS_DATA"])
    if os.environ.get("PAIRLOSS_DATA")
    else Path(__file__).resolve().parents[2].parent / "shared" / "data"
)
ATT_DIR = SHARED_DATA / "att_faces"
FASHION_HINT = "apt-get install -y dataset-fashion-mnist"


def fashion_file(stem: str) -> Path:
    """The real Fashion-MNIST file, or a failure that says how to install it."""
    path = FASHION_MNIST_DIR / f"{stem}.gz"
    if not path.is_file() and os.environ.get("PAIRLOSS_DATA"):
        path = SHARED_DATA / "fashion-mnist" / f"{stem}.gz"
    if not path.is_file():
        pytest.fail(f"Fashion-MNIST missing ({path}); install it with `{FASHION_HINT}`")
    return path


def idx_bytes(values: np.ndarray, code: int) -> bytes:
    """An IDX file, written by hand: magic, big-endian dims, big-endian values."""
    header = bytes([0, 0, code, values.ndim]) + b"".join(struct.pack(">I", d) for d in values.shape)
    return header + values.astype(values.dtype.newbyteorder(">")).tobytes()


def pgm_bytes(pixels: np.ndarray, header: bytes | None = None) -> bytes:
    """A P5 file holding ``pixels`` (uint8 [H, W]), with a comment in the header."""
    h, w = pixels.shape
    header = header if header is not None else f"P5\n# made by a test\n{w} {h}\n255\n".encode()
    return header + pixels.tobytes()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- AT&T faces --------------------------------------------------------------------------------


def test_att_faces_real_files():
    assert ATT_DIR.is_dir(), f"AT&T faces missing: expected {ATT_DIR} (or set PAIRLOSS_DATA)"
    images, labels, paths = load_att_faces(ATT_DIR)
    assert images.shape == (400, 112, 92) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and labels.shape == (400,)
    assert torch.equal(labels.bincount(), torch.full((40,), 10))
    assert [int(p.parent.name[1:]) - 1 for p in paths] == labels.tolist()
    assert paths[10] == ATT_DIR / "s2" / "1.pgm"  # numeric order: s2 before s10
    # independent reference: the last 112 * 92 bytes of the raw file are the pixels
    raw = np.frombuffer(paths[123].read_bytes()[-112 * 92 :], dtype=np.uint8)
    assert torch.equal(images[123].flatten(), torch.from_numpy(raw.copy()))


def test_att_faces_numeric_order_and_errors(tmp_path):
    for identity in (10, 2):
        for m in (10, 1):
            write(tmp_path / f"s{identity}" / f"{m}.pgm", pgm_bytes(np.full((4, 3), m, np.uint8)))
    images, labels, paths = load_att_faces(tmp_path)
    assert labels.tolist() == [0, 0, 1, 1]  # identities numbered by their folder's position
    assert images[:, 0, 0].tolist() == [1, 10, 1, 10]
    assert [p.relative_to(tmp_path).as_posix() for p in paths][:2] == ["s2/1.pgm", "s2/10.pgm"]

    bad = write(tmp_path / "s10" / "10.pgm", pgm_bytes(np.zeros((4, 3), np.uint8))[:-2])
    with pytest.raises(PairLossError, match="short PGM payload") as info:
        load_att_faces(tmp_path)
    assert str(bad) in str(info.value) and "expected 12 bytes" in str(info.value)

    (tmp_path / "s7").mkdir()
    with pytest.raises(PairLossError, match="empty identity folder") as info:
        load_att_faces(tmp_path)
    assert str(tmp_path / "s7") in str(info.value)

    with pytest.raises(PairLossError, match="no identity folder") as info:
        load_att_faces(tmp_path / "s7")
    assert str(tmp_path / "s7") in str(info.value)


def test_att_identities_are_folders_s0_and_s01_included(tmp_path):
    for name, value in (("s1", 1), ("s01", 2), ("s0", 3), ("s10", 4)):
        write(tmp_path / name / "1.pgm", pgm_bytes(np.full((2, 2), value, np.uint8)))
    images, labels, paths = load_att_faces(tmp_path)
    assert [p.parent.name for p in paths] == ["s0", "s01", "s1", "s10"]
    assert labels.tolist() == [0, 1, 2, 3]  # never -1, and s01 is not s1
    assert images[:, 0, 0].tolist() == [3, 2, 1, 4]


# --- PGM ---------------------------------------------------------------------------------------


def test_pgm_header_with_comments_and_maxval():
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    data = b"P5 # comment\n#another\r\n 4\t3 # w h\n 100\n" + pixels.tobytes()
    assert np.array_equal(parse_pgm(data), pixels)


def test_sixteen_bit_pgm_is_scaled_not_clipped():
    values = np.array([[0, 257, 32768], [65535, 1000, 65535]], dtype=">u2")
    data = b"P5\n3 2\n65535\n" + values.tobytes()
    expected = np.rint(values.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert np.array_equal(parse_pgm(data), expected)
    assert parse_pgm(data).tolist() == [[0, 1, 128], [255, 4, 255]]
    half = b"P5\n1 1\n1023\n" + np.array([1023], ">u2").tobytes()
    assert parse_pgm(half).tolist() == [[255]]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"P2\n4 3\n255\n", "expected the magic 'P5'"),
        (b"P5\n4\n255\n", "expected the maxval"),
        (b"P5\n4 x3\n255\n", "expected the height"),
        (b"P5\n4 3\n65536\n", "maxval 65536 out of range"),
        (b"P5\n0 3\n255\n", "width and height >= 1"),
        (b"P5\n4 3\n255", "expected one whitespace"),
    ],
)
def test_pgm_bad_header_names_the_file(tmp_path, header, message):
    path = write(tmp_path / "bad.pgm", header + (bytes(12) if header.endswith(b"\n") else b""))
    with pytest.raises(PairLossError, match="bad PGM header") as info:
        read_pgm(path)
    assert str(path) in str(info.value) and message in str(info.value)


@pytest.mark.parametrize(("extra", "message"), [(-1, "short PGM payload"), (1, "too long")])
def test_pgm_payload_size_is_exact(tmp_path, extra, message):
    data = pgm_bytes(np.zeros((3, 4), np.uint8))
    path = write(tmp_path / "x.pgm", data[:extra] if extra < 0 else data + bytes(extra))
    with pytest.raises(PairLossError, match=message) as info:
        read_pgm(path)
    assert str(path) in str(info.value) and "expected 12 bytes" in str(info.value)


# --- IDX and Fashion-MNIST -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion_train():
    try:
        return load_fashion_mnist(split="train")
    except PairLossError as exc:
        pytest.fail(str(exc))


def test_fashion_mnist_train_against_raw_bytes(fashion_train):
    images, labels = fashion_train
    assert images.shape == (60_000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (60_000,) and labels.dtype == torch.int64
    assert torch.equal(labels.bincount(), torch.full((10,), 6_000))
    # independent reference: gzip + numpy on the raw bytes (16-byte / 8-byte headers)
    raw_images = gzip.decompress(fashion_file("train-images-idx3-ubyte").read_bytes())
    raw_labels = gzip.decompress(fashion_file("train-labels-idx1-ubyte").read_bytes())
    pixels = np.frombuffer(raw_images, dtype=np.uint8, offset=16)
    assert int(images.sum()) == int(pixels.sum(dtype=np.int64))
    digest = hashlib.sha256(images.numpy().tobytes()).hexdigest()
    assert digest == hashlib.sha256(raw_images[16:]).hexdigest()
    assert labels.tolist() == list(raw_labels[8:])


def test_fashion_mnist_test_split():
    try:
        images, labels = load_fashion_mnist(split="test")
    except PairLossError as exc:
        pytest.fail(str(exc))
    assert images.shape == (10_000, 28, 28) and labels.shape == (10_000,)
    assert labels.min() == 0 and labels.max() == 9
    raw_labels = gzip.decompress(fashion_file("t10k-labels-idx1-ubyte").read_bytes())
    assert labels.tolist() == list(raw_labels[8:])


def test_fashion_mnist_missing_says_how_to_install(tmp_path):
    with pytest.raises(PairLossError, match="dataset-fashion-mnist") as info:
        load_fashion_mnist(root=tmp_path)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(PairLossError, match="split: expected 'train' or 'test'"):
        load_fashion_mnist(split="validation")


def test_fashion_mnist_truncated_copy_names_the_file(tmp_path):
    raw_labels = gzip.decompress(fashion_file("t10k-labels-idx1-ubyte").read_bytes())
    write(tmp_path / "t10k-labels-idx1-ubyte.gz", gzip.compress(raw_labels))
    images = idx_bytes(np.zeros((10_000, 28, 28), np.uint8), 0x08)
    bad = write(tmp_path / "t10k-images-idx3-ubyte", images[:-100])  # plain, not gzip
    with pytest.raises(PairLossError, match="truncated IDX payload") as info:
        load_fashion_mnist(root=tmp_path, split="test")
    message = str(info.value)
    assert str(bad) in message and "expected 7840000 bytes" in message and "got 7839900" in message


@pytest.mark.parametrize(
    ("dtype", "code"),
    [("u1", 0x08), ("i1", 0x09), ("i2", 0x0B), ("i4", 0x0C), ("f4", 0x0D), ("f8", 0x0E)],
)
@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, dtype, code, compress):
    values = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype)
    data = idx_bytes(values, code)
    path = write(tmp_path / "x.idx", gzip.compress(data) if compress else data)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.shape == (2, 3, 4)
    assert np.array_equal(out, values)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x08\x03\x00\x00" + bytes(20), "bad IDX magic number 0x08030000"),
        (b"\x00\x00\x07\x01" + bytes(8), "unknown IDX dtype code 0x07"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
        (idx_bytes(np.zeros(5, np.int32), 0x0C)[:-3], "expected 20 bytes for shape (5,)"),
        (idx_bytes(np.zeros(5, np.uint8), 0x08) + b"\x00", "IDX payload too long"),
    ],
)
def test_idx_errors_name_the_file(tmp_path, data, message):
    path = write(tmp_path / "broken-idx3-ubyte", data)
    with pytest.raises(PairLossError, match="broken-idx3-ubyte") as info:
        read_idx(path)
    assert message in str(info.value)


def test_idx_truncated_gzip_stream(tmp_path):
    data = gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8).reshape(10, 100), 0x08))
    path = write(tmp_path / "cut.gz", data[: len(data) // 2])
    with pytest.raises(PairLossError, match="gzip stream is corrupt or truncated") as info:
        read_idx(path)
    assert str(path) in str(info.value)
    with pytest.raises(PairLossError, match="file not found"):
        read_idx(tmp_path / "absent.gz")


# --- image folders -----------------------------------------------------------------------------


def grey_folder(root: Path) -> Path:
    write(root / "b_second" / "x.pgm", pgm_bytes(np.full((6, 8), 200, np.uint8)))
    write(root / "a_first" / "2.pgm", pgm_bytes(np.full((6, 8), 20, np.uint8)))
    write(root / "a_first" / "1.pgm", pgm_bytes(np.full((6, 8), 10, np.uint8)))
    write(root / "a_first" / "notes.txt", b"ignored")
    return root


def test_image_folder_pgm(tmp_path):
    images, labels, classes, paths = load_image_folder(grey_folder(tmp_path))
    assert classes == ["a_first", "b_second"]
    assert labels.tolist() == [0, 0, 1] and images.shape == (3, 6, 8)
    assert images[:, 0, 0].tolist() == [10, 20, 200]
    assert [p.name for p in paths] == ["1.pgm", "2.pgm", "x.pgm"]
    resized, *_ = load_image_folder(tmp_path, size=(3, 4))
    assert resized.shape == (3, 3, 4) and resized[:, 1, 1].tolist() == [10, 20, 200]
    rgb, *_ = load_image_folder(tmp_path, size=5, mode="rgb")
    assert rgb.shape == (3, 3, 5, 5) and rgb[2, :, 0, 0].tolist() == [200, 200, 200]


def test_image_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(PairLossError, match="no class folder") as info:
        load_image_folder(tmp_path)
    assert str(tmp_path) in str(info.value)
    grey_folder(tmp_path)
    (tmp_path / "c_empty").mkdir()
    write(tmp_path / "c_empty" / "readme.txt", b"not an image")
    with pytest.raises(PairLossError, match="empty class folder") as info:
        load_image_folder(tmp_path)
    assert str(tmp_path / "c_empty") in str(info.value)
    (tmp_path / "c_empty" / "readme.txt").unlink()
    odd = write(tmp_path / "c_empty" / "odd.pgm", pgm_bytes(np.zeros((5, 5), np.uint8)))
    with pytest.raises(PairLossError, match="pass size=") as info:
        load_image_folder(tmp_path)
    assert str(odd) in str(info.value)
    with pytest.raises(PairLossError, match="mode: expected"):
        load_image_folder(tmp_path, mode="colour")
    with pytest.raises(PairLossError, match="size: expected"):
        load_image_folder(tmp_path, size=(0, 3))


def test_image_folder_png_jpeg_with_pillow(tmp_path):
    from PIL import Image  # CI installs Pillow; a missing Pillow fails here, on purpose

    grey_folder(tmp_path)
    colour = np.zeros((6, 8, 3), np.uint8)
    colour[..., 0], colour[..., 1], colour[..., 2] = 10, 200, 30
    (tmp_path / "c_colour").mkdir()
    Image.fromarray(colour).save(tmp_path / "c_colour" / "a.png")
    Image.fromarray(np.full((6, 8), 90, np.uint8)).save(tmp_path / "b_second" / "y.jpg")
    images, labels, classes, _ = load_image_folder(tmp_path)
    assert classes == ["a_first", "b_second", "c_colour"] and labels.tolist() == [0, 0, 1, 1, 2]
    assert images.shape == (5, 3, 6, 8)  # one colour image makes the whole set rgb
    assert images[4, :, 0, 0].tolist() == [10, 200, 30]
    assert abs(int(images[3, 0, 3, 3]) - 90) <= 2  # JPEG is lossy
    grey, *_ = load_image_folder(tmp_path, mode="grey")
    assert grey.shape == (5, 6, 8) and int(grey[4, 0, 0]) == round(
        0.299 * 10 + 0.587 * 200 + 0.114 * 30
    )


def png_bytes(width: int, height: int, bit_depth: int = 8, colour_type: int = 0) -> bytes:
    """A PNG whose header (IHDR) claims ``width x height``, with an empty compressed payload."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def test_png_claiming_a_huge_size_is_refused_before_decoding(tmp_path):
    from pairloss.data import MAX_IMAGE_PIXELS, decode_image

    path = write(tmp_path / "bomb.png", png_bytes(20000, 20000))
    with pytest.raises(PairLossError, match="400000000 pixels") as info:
        decode_image(path)
    assert str(path) in str(info.value) and "MAX_IMAGE_PIXELS" in str(info.value)
    assert MAX_IMAGE_PIXELS < 20000 * 20000
    just_over = write(tmp_path / "over.png", png_bytes(MAX_IMAGE_PIXELS // 1000 + 1, 1000))
    with pytest.raises(PairLossError, match="expected between 1 and"):
        decode_image(just_over)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    from PIL import Image

    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    from pairloss.data import decode_image

    assert decode_image(tmp_path / "deep.png").tolist() == [[0, 1, 128, 255]]


def test_image_folder_without_pillow_says_how_to_install(tmp_path, monkeypatch):
    write(tmp_path / "a" / "img.png", b"\x89PNG not really")
    monkeypatch.setitem(sys.modules, "PIL.Image", None)  # makes `import PIL.Image` fail
    with pytest.raises(PairLossError, match="pip install Pillow") as info:
        load_image_folder(tmp_path)
    assert str(tmp_path / "a" / "img.png") in str(info.value)


# --- embedding files ---------------------------------------------------------------------------


def test_embedding_files_all_formats(tmp_path):
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    y = np.array([3, 1, 3, 0, 1])
    np.save(tmp_path / "e.npy", x)
    np.save(tmp_path / "y.npy", y)
    (tmp_path / "y.txt").write_text("\n".join(map(str, y)) + "\n")
    (tmp_path / "y.csv").write_text("label\n" + "\n".join(map(str, y)))
    for labels_file in ("y.npy", "y.txt", "y.csv"):
        ex, ey = load_embedding_file(tmp_path / "e.npy", tmp_path / labels_file)
        assert torch.equal(ex, torch.from_numpy(x)) and ey.tolist() == y.tolist()
        assert ey.dtype == torch.int64
    tx, ty = torch.from_numpy(x).double(), torch.from_numpy(y)
    torch.save({"embeddings": tx, "labels": ty}, tmp_path / "d.pt")
    torch.save((tx, ty), tmp_path / "t.pt")
    torch.save(tx, tmp_path / "only.pt")
    for ex, ey in (
        load_embedding_file(tmp_path / "d.pt"),
        load_embedding_file(tmp_path / "t.pt"),
        load_embedding_file(tmp_path / "only.pt", tmp_path / "y.txt"),
    ):
        assert torch.equal(ex, tx) and torch.equal(ey, ty)


def test_embedding_label_file_of_wrong_length(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((5, 3), np.float32))
    labels = write(tmp_path / "labels.txt", b"0\n1\n2\n1\n")
    with pytest.raises(PairLossError, match="4 labels for 5 embeddings") as info:
        load_embedding_file(tmp_path / "e.npy", labels)
    assert str(labels) in str(info.value)
    torch.save(
        {"embeddings": torch.zeros(5, 2), "labels": torch.zeros(6, dtype=torch.long)},
        tmp_path / "d.pt",
    )
    with pytest.raises(PairLossError, match="6 labels for 5 embeddings") as info:
        load_embedding_file(tmp_path / "d.pt")
    assert str(tmp_path / "d.pt") in str(info.value)


@pytest.mark.parametrize(
    ("embeddings", "labels", "message"),
    [
        (np.zeros((4, 2), np.int64), np.zeros(4, np.int64), "floating-point embeddings"),
        (np.zeros(4, np.float32), np.zeros(4, np.int64), "expected 2-D embeddings"),
        (np.full((4, 2), np.nan, np.float32), np.zeros(4, np.int64), "NaN or infinite"),
        (np.zeros((4, 2), np.float32), np.zeros(4, np.float32), "expected integer labels"),
        (np.zeros((4, 2), np.float32), np.zeros((4, 1), np.int64), "expected 1-D labels"),
    ],
)
def test_embedding_file_errors_name_the_file(tmp_path, embeddings, labels, message):
    np.save(tmp_path / "e.npy", embeddings)
    np.save(tmp_path / "l.npy", labels)
    with pytest.raises(PairLossError, match=message) as info:
        load_embedding_file(tmp_path / "e.npy", tmp_path / "l.npy")
    assert str(tmp_path) in str(info.value)


def test_embedding_file_argument_errors(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((2, 2), np.float32))
    with pytest.raises(PairLossError, match="labels_path: required"):
        load_embedding_file(tmp_path / "e.npy")
    with pytest.raises(PairLossError, match="file not found"):
        load_embedding_file(tmp_path / "absent.npy", tmp_path / "e.npy")
    write(tmp_path / "bad.txt", b"0\nzero\n")
    with pytest.raises(PairLossError, match="label line 2") as info:
        load_embedding_file(tmp_path / "e.npy", tmp_path / "bad.txt")
    assert str(tmp_path / "bad.txt") in str(info.value)
    for name, content, message in (
        ("sup.txt", "0\n1\u00b2\n".encode(), "label line 2"),
        ("big.txt", f"0\n{2**70}\n".encode(), "outside the int64 range"),
        ("latin.txt", b"0\n1\n\xe9t\xe9\n", "line 3 is not valid UTF-8"),
        ("arabic.txt", "\u0661\n".encode(), "label line 1"),
    ):
        write(tmp_path / name, content)
        with pytest.raises(PairLossError, match=message) as info:
            load_embedding_file(tmp_path / "e.npy", tmp_path / name)
        assert str(tmp_path / name) in str(info.value)
    np.save(tmp_path / "huge.npy", np.array([0, 2**64 - 1], dtype=np.uint64))
    with pytest.raises(PairLossError, match="outside the int64 range"):
        load_embedding_file(tmp_path / "e.npy", tmp_path / "huge.npy")
    write(tmp_path / "bom.txt", "\ufeff1\n0\n".encode())
    assert load_embedding_file(tmp_path / "e.npy", tmp_path / "bom.txt")[1].tolist() == [1, 0]
    write(tmp_path / "e.h5", b"")
    with pytest.raises(PairLossError, match="unsupported suffix"):
        load_embedding_file(tmp_path / "e.h5")


# --- digits and splits -------------------------------------------------------------------------


def test_digits():
    images, labels = load_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and sorted(labels.unique().tolist()) == list(range(10))
    assert images.min() >= 0 and images.max() == 16


def test_class_split():
    labels = torch.tensor([5, 1, 3, 1, 9, 7, 3, 5])
    split = class_split(labels)
    assert split.train_classes.tolist() == [1, 3] and split.eval_classes.tolist() == [5, 7, 9]
    assert split.train.tolist() == [1, 2, 3, 6] and split.eval.tolist() == [0, 4, 5, 7]
    assert class_split(labels, 3).train_classes.tolist() == [1, 3, 5]
    assert class_split(labels.numpy(), [9, 1]).eval_classes.tolist() == [3, 5, 7]
    with pytest.raises(PairLossError, match="train_classes: 5 leaves no evaluation class"):
        class_split(labels, 5)
    with pytest.raises(PairLossError, match=r"train_classes: classes \[4\] do not occur"):
        class_split(labels, [1, 4])
    with pytest.raises(PairLossError, match="at least 2 classes"):
        class_split([2, 2, 2])
    with pytest.raises(PairLossError, match="expected integer labels"):
        class_split(torch.tensor([0.0, 1.0]))


def test_identity_split_open_set():
    labels = torch.arange(40).repeat_interleave(10)
    split = identity_split(labels, held_out=10, enrolled=6, gallery_per_identity=2, seed=3)
    parts = [split.train, split.gallery, split.probe, split.unknown]
    assert [p.numel() for p in parts] == [300, 12, 48, 40]
    assert torch.equal(torch.cat(parts).sort().values, torch.arange(400))  # a partition
    assert split.train_ids.numel() == 30 and split.unknown_ids.numel() == 4
    assert set(labels[split.gallery].tolist()) == set(split.enrolled_ids.tolist())
    assert set(labels[split.probe].tolist()) == set(split.enrolled_ids.tolist())
    assert set(labels[split.unknown].tolist()) == set(split.unknown_ids.tolist())
    assert torch.equal(
        labels[split.gallery].bincount(minlength=40)[split.enrolled_ids], torch.full((6,), 2)
    )
    again = identity_split(labels, held_out=10, enrolled=6, gallery_per_identity=2, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(split, again))
    other = identity_split(labels, held_out=10, enrolled=6, gallery_per_identity=2, seed=4)
    assert not all(torch.equal(a, b) for a, b in zip(split, other))


def test_identity_split_closed_set_and_errors():
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])
    split = identity_split(labels, held_out=[1, 2])
    assert split.unknown.numel() == 0 and split.enrolled_ids.tolist() == [1, 2]
    assert split.gallery.numel() == 2 and split.probe.numel() == 3
    with pytest.raises(PairLossError, match="identity 3 has 1 images"):
        identity_split(labels, held_out=[3])
    with pytest.raises(PairLossError, match="all 4 identities are held out"):
        identity_split(labels, held_out=4)
    with pytest.raises(PairLossError, match="held_out: 5 requested"):
        identity_split(labels, held_out=5)
    with pytest.raises(PairLossError, match="enrolled: classes"):
        identity_split(labels, held_out=[1, 2], enrolled=[0])


def test_enrol_gallery_and_probes_of_given_identities():
    labels = torch.tensor([5, 5, 5, 7, 7, 9, 9, 9, 9])
    gallery, probe = enrol(labels, [5, 9], per_identity=2, seed=1)
    assert labels[gallery].tolist() == [5, 5, 9, 9]
    assert sorted(labels[probe].tolist()) == [5, 9, 9]
    assert set(gallery.tolist()).isdisjoint(probe.tolist())
    again = enrol(labels, [5, 9], per_identity=2, seed=1)
    assert torch.equal(gallery, again[0]) and torch.equal(probe, again[1])
    with pytest.raises(PairLossError, match="identity 7 has 2 images"):
        enrol(labels, [7], per_identity=2)
    with pytest.raises(PairLossError, match="identities"):
        enrol(labels, [4])
