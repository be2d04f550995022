"""The configuration of a training run: one flat dataclass, from flags and an optional TOML file.

Precedence: built-in defaults < the data set's defaults (:data:`DATASET_DEFAULTS`) < the TOML
file < command-line flags. Loss options are a table of ``key = value`` pairs passed to the loss's
constructor (``--loss-option margin=0.5`` or ``[loss_options]`` in TOML).

TOML example::

    dataset = "fashion-mnist"
    loss = "multi_similarity"
    epochs = 4
    p = 16
    k = 8

    [loss_options]
    alpha = 2.0
    beta = 50.0
"""

from __future__ import annotations

import ast
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PairLossError
from ..validation import check_bool, check_choice, check_int, check_real

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as ``config.json`` in the run folder).

    Attributes:
        dataset: a name of :data:`pairloss.train.datasets.DATASETS` (``fashion-mnist``,
            ``att-faces``, ``digits``, ``folder``, ``embeddings``, ``cub200``, ``cars196``,
            ``sop``).
        loss: a loss name from ``pairloss losses`` (catalogue name or class name).
        loss_options: keyword arguments of the loss's constructor.
        miner: optional miner name (e.g. ``"multi_similarity"``, ``"batch_hard"``).
        model: ``None`` for the data set's default (``cnn28``, ``face``, ``mlp``,
            ``torchvision:resnet50``), or one of those names.
        pretrained: weights of a ``torchvision:<name>`` model: ``"default"`` (torchvision's),
            a ``state_dict`` file, or ``None`` (random initialisation).
        embedding_size: output size of the model.
        epochs, batches_per_epoch: the budget; ``batches_per_epoch=None`` is about one pass.
        p, k: classes per batch and samples per class (P x K batches).
        batch_size: items per batch of the tasks that do not draw P x K batches (sentence
            pairs, preference lists); ``None`` for the others.
        lr, weight_decay: AdamW settings; ``loss_lr_mult`` scales the learning rate of the
            loss's own parameters (proxies, learnable margins; default 10).
        warmup_epochs: linear warm-up length (fractions allowed), then cosine decay to 0.
        grad_clip: max global gradient norm (``0`` disables).
        seed: seeds model init, sampler, augmentation and every split.
        data_dir: where the data set is (used as given, never a fallback).
        labels: label file for ``dataset="embeddings"`` when not stored in the file.
        protocol: ``"retrieval"`` or ``"face"`` (``None``: the data set's default).
        train_classes: how many first classes train (``None``: the data set's standard split,
            else half); ``held_out`` says the same from the other side (the unseen classes).
        val_fraction: share of each training class's images kept for validation (model
            selection).
        test_fraction: share of each training class's images kept for testing (the "seen
            classes, new images" setting) where the data set has no official test split.
        image_size: ``[height, width]`` images are resized to (``None``: the data set's).
        augment: ``"none"`` or a comma list of ``flip``, ``crop``, ``jitter``.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        amp: mixed precision (float16 on CUDA, bfloat16 on the CPU).
        eval_every: validate every this many epochs (the last epoch always).
        max_eval: evaluate on a seeded subset of at most this many samples per test set
            (0 = all).
        eval_memory: the memory budget of one evaluation, in bytes.
        pca_dim: components of the PCA baseline (``None``: the embedding size).
        out: the run folder.
        threads: torch CPU threads (0 = torch's default).
        workers: threads that decode image files (image folders and benchmarks).
        nproc: data-parallel processes (``torchrun`` sets its own; see
            :mod:`pairloss.train.parallel`); the loss is that of the global batch.
        chunk_size: GradCache: the batch embedded this many rows at a time (``None``: off).
        memory_size: a cross-batch memory of this many embeddings around the loss (``None``:
            off).
    """

    dataset: str = "fashion-mnist"
    loss: str = "multi_similarity"
    loss_options: dict[str, Any] = field(default_factory=dict)
    miner: str | None = None
    model: str | None = None
    pretrained: str | None = None
    embedding_size: int = 64
    epochs: int = 4
    batches_per_epoch: int | None = 100
    p: int = 16
    k: int = 8
    batch_size: int | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-4
    loss_lr_mult: float = 10.0
    warmup_epochs: float = 0.5
    grad_clip: float = 5.0
    seed: int = 0
    data_dir: str | None = None
    labels: str | None = None
    protocol: str | None = None
    train_classes: int | None = None
    held_out: int | None = None
    val_fraction: float = 0.1
    test_fraction: float | None = None
    image_size: list[int] | None = None
    augment: str = "none"
    device: str = "auto"
    amp: bool = False
    eval_every: int = 1
    max_eval: int = 0
    eval_memory: int = 2**30
    pca_dim: int | None = None
    out: str = "runs/latest"
    threads: int = 0
    workers: int = 4
    nproc: int = 1
    chunk_size: int | None = None
    memory_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (unknown keys raise :class:`PairLossError`)."""
        check_keys(changes, "config")
        merged = {**self.to_dict(), **changes}
        return TrainConfig(**merged).checked()

    def checked(self) -> TrainConfig:
        """Validate every field (type and range); raise :class:`PairLossError` naming the first
        bad one. Paths are not touched here (see :func:`check_paths`)."""
        for name, (low, high, optional) in INT_FIELDS.items():
            value = getattr(self, name)
            if not (optional and value is None):
                check_int(value, name, low, high)
        for name, (low, high, strict, optional) in REAL_FIELDS.items():
            value = getattr(self, name)
            if not (optional and value is None):
                check_real(value, name, low=low, high=high, low_open=strict)
        for name in ("dataset", "loss", "out", "augment", "device"):
            _text(getattr(self, name), name)
        for name in ("miner", "model", "pretrained", "data_dir", "labels", "protocol"):
            if getattr(self, name) is not None:
                _text(getattr(self, name), name)
        check_bool(self.amp, "amp")
        if self.protocol is not None:
            check_choice(self.protocol, "protocol", PROTOCOLS)
        if self.image_size is not None:
            size = self.image_size
            if not isinstance(size, (list, tuple)) or len(size) != 2:
                raise PairLossError(f"image_size: expected [height, width], got {size!r}")
            for value in size:
                check_int(value, "image_size", 1, 4096)
            self.image_size = [int(v) for v in size]
        if not isinstance(self.loss_options, dict) or not all(
            isinstance(k, str) for k in self.loss_options
        ):
            raise PairLossError(
                f"loss_options: expected a table of key = value, got {self.loss_options!r}"
            )
        if "miner" in self.loss_options:
            raise PairLossError(
                "loss_options: 'miner' is not a loss option here; choose the miner with "
                '--miner NAME (or miner = "NAME" in the config file)'
            )
        return self


PROTOCOLS = ("retrieval", "face")

INT_FIELDS: dict[str, tuple[int, int, bool]] = {
    "embedding_size": (1, 2**16, False),
    "epochs": (1, 10**6, False),
    "batches_per_epoch": (1, 10**9, True),
    "p": (1, 10**6, False),
    "k": (1, 10**6, False),
    "batch_size": (1, 10**6, True),
    "seed": (0, 2**32 - 1, False),
    "eval_every": (1, 10**6, False),
    "max_eval": (0, 2**40, False),
    "threads": (0, 4096, False),
    "train_classes": (1, 2**31, True),
    "held_out": (1, 2**31, True),
    "eval_memory": (2**20, 2**50, False),
    "pca_dim": (1, 2**16, True),
    "workers": (1, 256, False),
    "nproc": (1, 1024, False),
    "chunk_size": (1, 2**31, True),
    "memory_size": (1, 2**31, True),
}
"""Integer settings: (minimum, maximum, may be None)."""

REAL_FIELDS: dict[str, tuple[float, float | None, bool, bool]] = {
    "lr": (0.0, None, True, False),
    "weight_decay": (0.0, None, False, False),
    "loss_lr_mult": (0.0, None, True, False),
    "warmup_epochs": (0.0, None, False, False),
    "grad_clip": (0.0, None, False, False),
    "val_fraction": (0.0, 0.5, False, False),
    "test_fraction": (0.0, 0.9, False, True),
}
"""Real settings, all finite: (lower bound, upper bound, lower bound excluded, may be None)."""


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PairLossError(f"{name}: expected a non-empty string, got {value!r}")
    return value


def check_paths(config: TrainConfig) -> None:
    """Refuse paths that cannot work before anything runs: a ``data_dir`` or ``labels`` that
    does not exist, and an ``out`` that exists but is not a folder."""
    for name in ("data_dir", "labels"):
        value = getattr(config, name)
        if value is not None and not Path(value).exists():
            raise PairLossError(f"{name}: {value} does not exist")
    if config.labels is not None and not Path(config.labels).is_file():
        raise PairLossError(f"labels: {config.labels} is not a file; expected a label file")
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise PairLossError(f"out: {out} exists and is not a folder; expected a run folder")


FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}

DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "fashion-mnist": {
        "embedding_size": 64,
        "p": 8,
        "k": 20,
        "epochs": 3,
        "train_classes": 8,
        "val_fraction": 0.05,
    },
    "att-faces": {
        "embedding_size": 64,
        "p": 8,
        "k": 4,
        "epochs": 15,
        "batches_per_epoch": 10,
        "eval_every": 5,
        "lr": 2e-3,
    },
    "digits": {"embedding_size": 32, "p": 5, "k": 16, "epochs": 10, "batches_per_epoch": 20},
    "lambdarank": {
        "loss": "lambda_loss",
        "embedding_size": 64,
        "p": 16,
        "epochs": 30,
        "batches_per_epoch": None,
        "val_fraction": 0.2,
    },
    **{
        name: {
            "embedding_size": 512,
            "p": 16,
            "k": 5,
            "epochs": 30,
            "batches_per_epoch": None,
            "lr": 1e-4,
            "warmup_epochs": 1.0,
            "augment": "flip,crop",
        }
        for name in ("cub200", "cars196", "sop")
    },
    # text: all-MiniLM-L6-v2 fine-tuned with sentence-transformers' optimiser settings (AdamW,
    # no weight decay, gradient norm 1, 5% warm-up) for one pass over STS-B train (4 x 90
    # batches of 16 pairs), a few minutes on 2 CPU cores; at this budget 5e-5 is needed (2e-5,
    # sentence-transformers' default for several epochs, stays below the untrained model)
    **{
        name: {
            "loss": "cosent",
            "embedding_size": 384,
            "batch_size": 16,
            "epochs": 4,
            "batches_per_epoch": 90,
            "lr": 5e-5,
            "weight_decay": 0.0,
            "warmup_epochs": 0.2,
            "grad_clip": 1.0,
        }
        for name in ("sts-b", "sentence-pairs")
    },
    "sts-b-preference": {
        "loss": "dpo",
        "embedding_size": 384,
        "batch_size": 16,
        "epochs": 3,
        "batches_per_epoch": None,
        "lr": 2e-5,
        "weight_decay": 0.0,
        "warmup_epochs": 0.3,
        "grad_clip": 1.0,
    },
}
"""Per data set defaults (over the class defaults, under the TOML file and the flags)."""


def check_keys(values: dict[str, Any], source: str) -> None:
    """Raise :class:`PairLossError` for keys that are not config fields (with suggestions)."""
    import difflib

    for key in values:
        if key not in FIELDS:
            close = difflib.get_close_matches(key, sorted(FIELDS), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise PairLossError(f"{source}: unknown setting {key!r}{hint}")


def load_toml(path: str | Path) -> dict[str, Any]:
    """The settings of a TOML config file (top-level keys are :class:`TrainConfig` fields)."""
    path = Path(path)
    if path.is_dir():
        raise PairLossError(f"config: {path} is a folder; expected a TOML file")
    try:
        with path.open("rb") as fh:
            values = tomllib.load(fh)
    except FileNotFoundError:
        raise PairLossError(f"config: {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PairLossError(f"config: {path} is not valid TOML ({exc})") from None
    except OSError as exc:
        raise PairLossError(f"config: cannot read {path} ({exc.strerror})") from None
    check_keys(values, f"config {path}")
    return values


def from_dict(values: object, source: str) -> TrainConfig:
    """A checked :class:`TrainConfig` from a mapping (e.g. a run's ``config.json``)."""
    if not isinstance(values, dict):
        raise PairLossError(f"{source}: expected a table of settings, got {type(values).__name__}")
    check_keys(values, source)
    try:
        return TrainConfig(**values).checked()
    except PairLossError as exc:
        raise PairLossError(f"{source}: {exc}") from None


def parse_value(text: str) -> Any:
    """A command-line value: a bool (``true``/``false``), a Python literal (number, list,
    quoted string) or else the text itself; ``none`` stays the string ``'none'`` (options such
    as ``reduction=none`` name a mode, and no option takes Python's None from the command line).
    """
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    return text.strip() if value is None else value


def parse_options(items: list[str] | None, name: str) -> dict[str, Any]:
    """``["key=value", ...]`` into a dict (values through :func:`parse_value`)."""
    options: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise PairLossError(f"{name}: expected key=value, got {item!r}")
        options[key.strip()] = parse_value(value)
    return options


def make_config(
    dataset: str | None = None, toml: str | Path | None = None, **flags: Any
) -> TrainConfig:
    """Merge defaults, the data set's defaults, a TOML file and flags (``None`` = not given)."""
    from_file = load_toml(toml) if toml is not None else {}
    given = {k: v for k, v in flags.items() if v is not None}
    check_keys(given, "flags")
    name = dataset if dataset is not None else from_file.get("dataset", TrainConfig.dataset)
    if not isinstance(name, str):
        raise PairLossError(f"dataset: expected a data set name, got {name!r}")
    values: dict[str, Any] = {"dataset": name, **DATASET_DEFAULTS.get(name, {})}
    values.update(from_file)
    file_options = from_file.get("loss_options", {})
    if not isinstance(file_options, dict):
        raise PairLossError(
            f"config {toml}: loss_options: expected a table ([loss_options]), got {file_options!r}"
        )
    options = {**file_options, **given.pop("loss_options", {})}
    values.update(given)
    values["loss_options"] = options
    values["dataset"] = name
    return TrainConfig(**values).checked()
