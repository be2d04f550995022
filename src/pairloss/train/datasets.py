"""The data sets the trainer knows by name, loaded as labelled samples before any split.

=================  ==============================================================  ==========
name               what and where                                                   protocol
=================  ==============================================================  ==========
``fashion-mnist``  Fashion-MNIST (Debian package ``dataset-fashion-mnist``, or       retrieval
                   ``--data-dir`` holding the IDX files); official test split
``att-faces``      AT&T faces (``--data-dir`` or ``$PAIRLOSS_DATA``: ``att_faces/``)  face
``digits``         scikit-learn's 8 x 8 digits (flattened, 64 values in [0, 1])      retrieval
``folder``         any image folder ``<data-dir>/<class>/<image>`` (PNG, JPEG, PGM)  retrieval
``embeddings``     precomputed vectors (``--data-dir`` a ``.npy``/``.pt`` file)      retrieval
``cub200``         CUB-200-2011 (``--data-dir``), standard split 100/100 classes     retrieval
``cars196``        Cars196 (``--data-dir``), standard split 98/98 classes            retrieval
``sop``            Stanford Online Products (``--data-dir``), 11,318/11,316 classes  retrieval
=================  ==============================================================  ==========

A ``--data-dir`` is used as given: when it does not hold the data set, the run stops with an
error that says what was looked for (never a silent fallback to another place).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import data
from ..data import DATA_ENV
from ..data.benchmarks import BenchmarkFiles, cars196_files, cub200_files, sop_files
from ..data.folders import resize
from ..data.images import ImageFiles, image_folder_files
from ..errors import PairLossError


@dataclass
class LabelledData:
    """Labelled samples of one data set, before the protocol splits them.

    Attributes:
        name: the data set's name.
        x: the samples: a tensor (images ``[N, H, W]`` / ``[N, C, H, W]`` or vectors
            ``[N, F]``) or an :class:`~pairloss.data.images.ImageFiles`.
        y: int64 labels ``[N]``.
        images: whether the samples are images (augmentation, image models).
        test: an official test split ``(x, y)`` with the same classes, or ``None`` (a pool
            that the protocol splits).
        train_classes: a standard split's training classes, or ``None`` (the first classes).
        class_names: ``{label: name}`` where known.
        protocol: the default protocol (``"retrieval"`` or ``"face"``).
        model: the default model name; ``model_options`` its extra arguments.
        pretrained: the default ``--pretrained`` for the default model.
        test_fraction: the default share of each training class's images held out for
            testing, for a pool without an official test split.
    """

    name: str
    x: Any
    y: torch.Tensor
    images: bool
    test: tuple[Any, torch.Tensor] | None = None
    train_classes: list[int] | None = None
    class_names: dict[int, str] = field(default_factory=dict)
    protocol: str = "retrieval"
    model: str = "mlp"
    model_options: dict[str, Any] = field(default_factory=dict)
    pretrained: str | None = None
    test_fraction: float = 0.2


def _root(config: Any, folder: str) -> Path | None:
    """``data_dir``, or its subfolder ``folder`` when there is one; None without data_dir."""
    if config.data_dir is None:
        return None
    base = Path(config.data_dir)
    return base / folder if (base / folder).is_dir() else base


def _image_size(config: Any, default: tuple[int, int] | None) -> tuple[int, int] | None:
    return tuple(config.image_size) if config.image_size is not None else default


def _resized(images: torch.Tensor, config: Any) -> torch.Tensor:
    """In-memory images resized to ``--image-size`` when it is given."""
    size = _image_size(config, None)
    if size is None or tuple(images.shape[-2:]) == size:
        return images
    return torch.stack([resize(im, size) for im in images])


def _fashion(config: Any) -> LabelledData:
    root = _root(config, "fashion-mnist")
    train_x, train_y = data.load_fashion_mnist(root, "train")
    test_x, test_y = data.load_fashion_mnist(root, "test")
    names = dict(enumerate(data.FASHION_MNIST_CLASSES))
    small = config.image_size is None or tuple(config.image_size) == (28, 28)
    return LabelledData(
        "fashion-mnist",
        _resized(train_x, config),
        train_y,
        images=True,
        test=(_resized(test_x, config), test_y),
        class_names=names,
        model="cnn28" if small else "face",
        model_options={} if small else {"in_channels": 1},
    )


def _att(config: Any) -> LabelledData:
    root = _root(config, "att_faces")
    if root is None and DATA_ENV not in os.environ:
        raise PairLossError(
            "data_dir: the AT&T faces are not found; pass --data-dir pointing at the folder "
            f"that holds att_faces/ (s1/ ... s40/), or set {DATA_ENV}"
        )
    images, labels, paths = data.load_att_faces(root)
    names = {int(label): path.parent.name for label, path in zip(labels.tolist(), paths)}
    return LabelledData(
        "att-faces",
        _resized(images, config),
        labels,
        True,
        class_names=names,
        protocol="face",
        model="face",
    )


def _digits(config: Any) -> LabelledData:
    images, labels = data.load_digits()
    x = images.reshape(len(images), -1) / 16.0
    return LabelledData("digits", x, labels, False, model_options={"in_features": x.shape[1]})


def _folder(config: Any) -> LabelledData:
    if config.data_dir is None:
        raise PairLossError(
            "data_dir: data set 'folder' needs --data-dir (one subfolder per class)"
        )
    paths, labels, names = image_folder_files(config.data_dir)
    first = data.decode_image(paths[0])
    mode = "rgb" if first.ndim == 3 else "grey"
    size = _image_size(config, tuple(first.shape[:2]))
    files = ImageFiles(paths, size, mode, workers=config.workers)
    small = size == (28, 28) and mode == "grey"
    return LabelledData(
        "folder",
        files,
        labels,
        True,
        class_names=dict(enumerate(names)),
        model="cnn28" if small else "face",
        model_options={} if small else {"in_channels": files.channels},
    )


def _embeddings(config: Any) -> LabelledData:
    if config.data_dir is None:
        raise PairLossError("data_dir: data set 'embeddings' needs --data-dir naming the file")
    x, y = data.load_embedding_file(config.data_dir, config.labels)
    x = x.float()
    return LabelledData("embeddings", x, y, False, model_options={"in_features": x.shape[1]})


def _benchmark(
    name: str, reader: Callable[[Path], BenchmarkFiles]
) -> Callable[[Any], LabelledData]:
    def load(config: Any) -> LabelledData:
        if config.data_dir is None:
            raise PairLossError(
                f"data_dir: data set {name!r} needs --data-dir (the folder of the published "
                "data set, or the folder that holds it)"
            )
        files = reader(Path(config.data_dir))
        size = _image_size(config, (224, 224))
        return LabelledData(
            name,
            ImageFiles(files.paths, size, "rgb", workers=config.workers),
            files.labels,
            True,
            train_classes=files.train_classes,
            class_names=files.class_names,
            model="torchvision:resnet50",
            pretrained="default",
            test_fraction=0.0,
        )

    return load


LOADERS: dict[str, Callable[[Any], LabelledData]] = {
    "fashion-mnist": _fashion,
    "att-faces": _att,
    "digits": _digits,
    "folder": _folder,
    "embeddings": _embeddings,
    "cub200": _benchmark("cub200", cub200_files),
    "cars196": _benchmark("cars196", cars196_files),
    "sop": _benchmark("sop", sop_files),
}
"""Data set name -> loader."""

USES: dict[str, frozenset[str]] = {
    "fashion-mnist": frozenset({"data_dir", "image_size"}),
    "att-faces": frozenset({"data_dir", "image_size", "test_fraction"}),
    "digits": frozenset({"test_fraction"}),
    "folder": frozenset({"data_dir", "image_size", "test_fraction"}),
    "embeddings": frozenset({"data_dir", "labels", "test_fraction"}),
    **{
        name: frozenset({"data_dir", "image_size", "test_fraction"})
        for name in ("cub200", "cars196", "sop")
    },
}
"""The optional data settings each data set reads (``test_fraction`` is meaningless where the
data set has an official test split)."""


DEFAULT_MODELS = {
    "fashion-mnist": "cnn28",
    "att-faces": "face",
    "digits": "mlp",
    "embeddings": "mlp",
    **dict.fromkeys(("cub200", "cars196", "sop"), "torchvision:resnet50"),
}
"""The default model of the data sets whose default does not depend on the files (a
``folder``'s depends on its images' size)."""


def load_data(config: Any) -> LabelledData:
    """The labelled samples of ``config.dataset`` (a name of :data:`LOADERS`)."""
    return LOADERS[config.dataset](config)
