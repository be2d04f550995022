"""The three image benchmarks of deep metric learning, read from their published layouts.

Each reader returns the image files with their class labels and the standard zero-shot split
(the training classes; the other classes are for testing), without decoding any image:

- :func:`cub200_files`: CUB-200-2011 (Wah et al. 2011; 11,788 images of 200 bird species):
  ``CUB_200_2011/images.txt`` (``<image id> <relative path>``),
  ``CUB_200_2011/image_class_labels.txt`` (``<image id> <class id>``), images under
  ``CUB_200_2011/images/``. Training classes 1-100, test classes 101-200.
- :func:`cars196_files`: Cars196 (Krause et al. 2013; 16,185 images of 196 car models), either
  the original layout ``cars_annos.mat`` + ``car_ims/`` (needs scipy) or the folder layout of
  pytorch-metric-learning (``names.csv``, ``anno_train.csv``, ``anno_test.csv``,
  ``car_data/car_data/{train,test}/<class name>/<file>``). Training classes 1-98, test
  classes 99-196 (the split of the metric-learning papers, ignoring the original train/test
  flag).
- :func:`sop_files`: Stanford Online Products (Oh Song et al. 2016; 120,053 images of 22,634
  products): ``Stanford_Online_Products/Ebay_{train,test}.txt`` (a header line, then
  ``<image id> <class id> <super class id> <relative path>``). Training classes are those of
  ``Ebay_train.txt`` (11,318), test classes those of ``Ebay_test.txt`` (11,316).

``root`` may be the data set's own folder (e.g. ``CUB_200_2011``) or the folder holding it.
Labels are the published class ids (from 1). Every listed image must exist (no image is
decoded here); errors name the file and the line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import PairLossError
from ._files import as_path


@dataclass(frozen=True)
class BenchmarkFiles:
    """Image files of a benchmark with their labels and its standard split.

    Attributes:
        paths: the ``N`` image files.
        labels: int64 ``[N]``, the published class ids.
        train_classes: the class ids of the standard training split (sorted); the others are
            the test classes.
        class_names: ``{class id: name}`` where the layout names the classes.
    """

    paths: list[Path]
    labels: torch.Tensor
    train_classes: list[int]
    class_names: dict[int, str]


def _find(root: str | Path, folder: str, marker: str) -> Path:
    """``root`` or ``root/folder``, whichever holds ``marker``."""
    root = as_path(root, "root")
    for candidate in (root, root / folder):
        if (candidate / marker).exists():
            return candidate
    raise PairLossError(
        f"root: {root} holds neither {marker} nor {folder}/{marker}; expected the {folder} "
        "folder of the published data set (or the folder that holds it)"
    )


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, stripped line) of the non-blank lines of a UTF-8 text file."""
    if not path.is_file():
        raise PairLossError(f"{path}: file not found (expected a regular file)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise PairLossError(f"{path}: line {line} is not valid UTF-8") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line.strip()


def _int(token: str, path: Path, number: int, what: str) -> int:
    if not token.isascii() or not token.isdigit() or len(token) > 12:
        raise PairLossError(
            f"{path}: line {number}: {what} {token[:20]!r} is not a positive integer"
        )
    return int(token)


def _fields(line: str, count: int, path: Path, number: int, layout: str) -> list[str]:
    parts = line.split()
    if len(parts) != count:
        raise PairLossError(
            f"{path}: line {number} has {len(parts)} fields; expected {count} ({layout})"
        )
    return parts


def _inside(base: Path, relative: str, path: Path, number: int) -> Path:
    """``base / relative``, an existing file inside ``base``; refuses absolute paths, ``..``
    that would leave ``base`` and missing files (a listing cut short names a file that is not
    there), naming the listing and its line."""
    candidate = Path(relative)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise PairLossError(f"{path}: line {number}: {relative!r} leaves the data set's folder")
    image = base / candidate
    if not image.is_file():
        raise PairLossError(f"{path}: line {number}: the image {image} does not exist")
    return image


def cub200_files(root: str | Path) -> BenchmarkFiles:
    """CUB-200-2011's images, labels (1-200) and standard split (classes 1-100 train); see the
    module docstring. Raises :class:`PairLossError` naming the file and line of a bad entry or
    an image id listed in one file and not in the other."""
    base = _find(root, "CUB_200_2011", "images.txt")
    images, labels_file = base / "images.txt", base / "image_class_labels.txt"
    paths: dict[int, Path] = {}
    for number, line in _text_lines(images):
        image_id, relative = _fields(line, 2, images, number, "<image id> <path>")
        key = _int(image_id, images, number, "image id")
        if key in paths:
            raise PairLossError(f"{images}: line {number}: image id {key} appears twice")
        paths[key] = _inside(base / "images", relative, images, number)
    labels: dict[int, int] = {}
    for number, line in _text_lines(labels_file):
        image_id, class_id = _fields(line, 2, labels_file, number, "<image id> <class id>")
        key = _int(image_id, labels_file, number, "image id")
        if key not in paths:
            raise PairLossError(f"{labels_file}: line {number}: image id {key} is not in {images}")
        labels[key] = _int(class_id, labels_file, number, "class id")
    missing = sorted(set(paths) - set(labels))
    if missing:
        raise PairLossError(
            f"{labels_file}: no class for image id {missing[0]} of {images} "
            f"({len(missing)} ids without a class)"
        )
    if not paths:
        raise PairLossError(f"{images}: no image listed")
    order = sorted(paths)
    names: dict[int, str] = {}
    for k in order:  # CUB's image folders are named after their class: 001.Black_footed_Albatross
        names.setdefault(labels[k], paths[k].parent.name)
    label_tensor = torch.tensor([labels[k] for k in order], dtype=torch.int64)
    return BenchmarkFiles([paths[k] for k in order], label_tensor, list(range(1, 101)), names)


def _cars_from_mat(base: Path) -> tuple[list[Path], list[int]]:
    annotations = base / "cars_annos.mat"
    try:
        from scipy.io import loadmat
    except ImportError as exc:
        raise PairLossError(
            f"{annotations}: reading it needs scipy, which is not installed; `pip install scipy`"
        ) from exc
    try:
        content = loadmat(annotations, squeeze_me=True, struct_as_record=False)
        records = content["annotations"]
        if not hasattr(records, "__len__"):
            records = [records]
        rows = [(str(r.relative_im_path), int(r.__dict__["class"])) for r in records]
    except Exception as exc:  # scipy raises many types for a damaged file
        raise PairLossError(
            f"{annotations}: cannot read the annotations ({type(exc).__name__}: {exc}); expected "
            "the cars_annos.mat of the Stanford Cars data set"
        ) from None
    paths, labels = [], []
    for number, (relative, class_id) in enumerate(rows, start=1):
        if not 1 <= class_id <= 196:
            raise PairLossError(
                f"{annotations}: annotation {number}: class {class_id} not in 1-196"
            )
        paths.append(_inside(base, relative, annotations, number))
        labels.append(class_id)
    return paths, labels


def _cars_from_csv(base: Path) -> tuple[list[Path], list[int], dict[int, str]]:
    names_file = base / "names.csv"
    names = [line for _, line in _text_lines(names_file)]
    paths, labels = [], []
    for split in ("train", "test"):
        annotations = base / f"anno_{split}.csv"
        text = "\n".join(line for _, line in _text_lines(annotations))
        if not text:
            raise PairLossError(f"{annotations}: lists no image; expected one line per image")
        for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
            if len(row) != 6:
                raise PairLossError(
                    f"{annotations}: line {number} has {len(row)} fields; expected 6 "
                    "(file, x1, y1, x2, y2, class)"
                )
            class_id = _int(row[-1].strip(), annotations, number, "class id")
            if not 1 <= class_id <= len(names):
                raise PairLossError(
                    f"{annotations}: line {number}: class {class_id} is not in 1-{len(names)} "
                    f"({names_file} names {len(names)} classes)"
                )
            folder = base / "car_data" / "car_data" / split / names[class_id - 1].replace("/", "-")
            paths.append(_inside(folder, row[0].strip(), annotations, number))
            labels.append(class_id)
    return paths, labels, dict(enumerate(names, start=1))


def cars196_files(root: str | Path) -> BenchmarkFiles:
    """Cars196's images, labels (1-196) and standard split (classes 1-98 train), from either
    published layout; see the module docstring."""
    root = as_path(root, "root")
    for candidate in (root, root / "cars196", root / "stanford_cars"):
        if (candidate / "cars_annos.mat").is_file():
            paths, labels = _cars_from_mat(candidate)
            names: dict[int, str] = {}
            break
        if (candidate / "names.csv").is_file():
            paths, labels, names = _cars_from_csv(candidate)
            break
    else:
        raise PairLossError(
            f"root: {root} holds neither cars_annos.mat (with car_ims/) nor names.csv (with "
            "anno_train.csv, anno_test.csv and car_data/); expected a Cars196 layout"
        )
    if not paths:
        raise PairLossError(f"root: {root}: the Cars196 annotations list no image")
    return BenchmarkFiles(paths, torch.tensor(labels, dtype=torch.int64), list(range(1, 99)), names)


def sop_files(root: str | Path) -> BenchmarkFiles:
    """Stanford Online Products' images, labels and standard split (the classes of
    ``Ebay_train.txt`` train); see the module docstring."""
    base = _find(root, "Stanford_Online_Products", "Ebay_train.txt")
    paths, labels, train_classes = [], [], set()
    header = "image_id class_id super_class_id path"
    for split in ("train", "test"):
        listing = base / f"Ebay_{split}.txt"
        lines = list(_text_lines(listing))
        if not lines or lines[0][1].split() != header.split():
            raise PairLossError(f"{listing}: expected the header line {header!r}")
        for number, line in lines[1:]:
            _, class_id, _, relative = _fields(line, 4, listing, number, header)
            label = _int(class_id, listing, number, "class id")
            paths.append(_inside(base, relative, listing, number))
            labels.append(label)
            if split == "train":
                train_classes.add(label)
    if not paths:
        raise PairLossError(f"root: {base}: Ebay_train.txt and Ebay_test.txt list no image")
    if not set(labels) - train_classes:
        raise PairLossError(f"{base / 'Ebay_test.txt'}: no class that is not in Ebay_train.txt")
    return BenchmarkFiles(paths, torch.tensor(labels, dtype=torch.int64), sorted(train_classes), {})


__all__ = ["BenchmarkFiles", "cars196_files", "cub200_files", "sop_files"]
