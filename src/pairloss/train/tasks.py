"""A task: a data set loaded and split by its evaluation protocol.

Protocols:

- ``zero-shot`` (metric learning, as on CUB-200 / Cars196 / SOP): train on the first classes,
  evaluate retrieval on the unseen rest. Fashion-MNIST trains on classes 0-4 of its training
  split and evaluates on classes 5-9 of its test split; other data sets split one pool of images
  by class (:func:`pairloss.data.class_split`).
- ``face`` (held-out identities): train on some identities; the others are the test set, on
  which the evaluation runs retrieval, closed-set identification (CMC), verification over all
  test pairs and open-set identification (half the held-out identities enrolled, the other half
  unknown). See :mod:`pairloss.train.evaluate`.

Training labels are renumbered ``0 .. C-1`` so that proxy losses get ``num_classes = C``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import data
from ..data import DATA_ENV
from ..errors import PairLossError
from .config import TrainConfig
from .evaluate import subset

DATASETS = ("fashion-mnist", "att-faces", "digits", "folder", "embeddings")


@dataclass
class Task:
    """Tensors of one protocol.

    Attributes:
        name: the data set name.
        protocol: ``"zero-shot"`` or ``"face"``.
        train_x, train_y: training inputs and labels renumbered ``0 .. num_classes - 1``.
        test_x, test_y: evaluation inputs and their original labels.
        model: the default model name for these inputs (``cnn28``, ``face``, ``mlp``).
        model_options: extra model arguments (e.g. ``in_features``).
        class_names: names of the original labels when known.
    """

    name: str
    protocol: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    model: str
    model_options: dict
    class_names: list[str] | None = None

    @property
    def num_classes(self) -> int:
        """The number of training classes."""
        return int(self.train_y.max()) + 1 if self.train_y.numel() else 0

    def limited(self, limit: int, seed: int) -> Task:
        """This task with a seeded subset of at most ``limit`` test samples (0 = all)."""
        rows = subset(len(self.test_y), limit, seed)
        if rows is None:
            return self
        return dataclasses.replace(self, test_x=self.test_x[rows], test_y=self.test_y[rows])

    def describe(self) -> str:
        """One line: sizes and classes of both sides."""
        return (
            f"{self.name} ({self.protocol}): train {len(self.train_y)} samples of "
            f"{self.num_classes} classes, test {len(self.test_y)} samples of "
            f"{int(self.test_y.unique().numel())} unseen classes"
        )


def _renumber(labels: torch.Tensor) -> torch.Tensor:
    return torch.unique(labels, return_inverse=True)[1]


def _root(config: TrainConfig, folder: str) -> Path | None:
    """``data_dir`` (or ``data_dir/folder`` when that exists), else None (reader's default)."""
    if config.data_dir is None:
        return None
    base = Path(config.data_dir)
    return base / folder if (base / folder).is_dir() else base


def _split_pool(
    config: TrainConfig, x: torch.Tensor, y: torch.Tensor, name: str, model: str, options: dict
) -> Task:
    split = data.class_split(y, config.train_classes)
    return Task(
        name,
        "zero-shot",
        x[split.train],
        _renumber(y[split.train]),
        x[split.eval],
        y[split.eval],
        model,
        options,
    )


def _fashion(config: TrainConfig) -> Task:
    root = _root(config, "fashion-mnist")
    if root is not None and not any(root.glob("train-images-idx3-ubyte*")):
        root = None  # a data root without Fashion-MNIST: use the system package's files
    train_x, train_y = data.load_fashion_mnist(root, "train")
    test_x, test_y = data.load_fashion_mnist(root, "test")
    first = config.train_classes or 5
    if not 1 <= first < 10:
        raise PairLossError(f"train_classes: expected 1 to 9 for Fashion-MNIST, got {first}")
    keep_train, keep_test = train_y < first, test_y >= first
    return Task(
        "fashion-mnist",
        "zero-shot",
        train_x[keep_train],
        train_y[keep_train],
        test_x[keep_test],
        test_y[keep_test],
        "cnn28",
        {},
        list(data.FASHION_MNIST_CLASSES),
    )


def _att(config: TrainConfig) -> Task:
    root = _root(config, "att_faces")
    if root is None and DATA_ENV not in os.environ:
        raise PairLossError(
            "data_dir: the AT&T faces are not found; pass --data-dir pointing at the folder "
            f"that holds att_faces/ (s1/ ... s40/), or set {DATA_ENV}"
        )
    images, labels, _ = data.load_att_faces(root)
    ids = labels.unique()
    held_out = config.held_out or ids.numel() // 2
    split = data.class_split(labels, ids.numel() - held_out)
    return Task(
        "att-faces",
        "face",
        images[split.train],
        _renumber(labels[split.train]),
        images[split.eval],
        labels[split.eval],
        "face",
        {},
    )


def _digits(config: TrainConfig) -> Task:
    images, labels = data.load_digits()
    x = images.reshape(len(images), -1) / 16.0
    return _split_pool(config, x, labels, "digits", "mlp", {"in_features": x.shape[1]})


def _folder(config: TrainConfig) -> Task:
    if config.data_dir is None:
        raise PairLossError("data_dir: dataset 'folder' needs --data-dir (one subfolder per class)")
    images, labels, names, _ = data.load_image_folder(config.data_dir, mode="grey")
    small = images.shape[-2:] == (28, 28)
    task = _split_pool(config, images, labels, "folder", "cnn28" if small else "face", {})
    task.class_names = names
    return task


def _embeddings(config: TrainConfig) -> Task:
    if config.data_dir is None:
        raise PairLossError("data_dir: dataset 'embeddings' needs --data-dir naming the file")
    x, y = data.load_embedding_file(config.data_dir, config.labels)
    x = x.float()
    return _split_pool(config, x, y, "embeddings", "mlp", {"in_features": x.shape[1]})


_LOADERS = {
    "fashion-mnist": _fashion,
    "att-faces": _att,
    "digits": _digits,
    "folder": _folder,
    "embeddings": _embeddings,
}


_USES = {
    "fashion-mnist": {"data_dir"},
    "att-faces": {"data_dir"},
    "digits": set(),
    "folder": {"data_dir"},
    "embeddings": {"data_dir", "labels"},
}


def check_applies(config: TrainConfig) -> None:
    """Refuse settings that the data set would ignore (e.g. ``labels`` for images)."""
    uses = _USES[check_dataset(config.dataset)]
    for name in ("data_dir", "labels"):
        if getattr(config, name) is not None and name not in uses:
            raise PairLossError(
                f"{name}: data set {config.dataset!r} does not use it; drop --{name.replace('_', '-')}"
            )


def check_dataset(name: object) -> str:
    """``name`` if it is a known data set; else :class:`PairLossError` with close names."""
    if not isinstance(name, str) or name not in _LOADERS:
        close = difflib.get_close_matches(str(name), DATASETS, n=2)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise PairLossError(
            f"dataset: unknown data set {name!r}{hint}; expected one of {', '.join(DATASETS)}"
        )
    return name


def load_task(config: TrainConfig) -> Task:
    """Load ``config.dataset`` and split it by its protocol."""
    return _LOADERS[check_dataset(config.dataset)](config)
