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
from ..validation import check_int, check_real

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as ``config.json`` in the run folder).

    Attributes:
        dataset: ``"fashion-mnist"``, ``"att-faces"``, ``"digits"``, ``"folder"`` (one subfolder
            per class under ``data_dir``) or ``"embeddings"`` (a ``.npy``/``.pt`` file
            ``data_dir`` with ``labels`` beside it).
        loss: a loss name from ``pairloss losses`` (catalogue name or class name).
        loss_options: keyword arguments of the loss's constructor.
        miner: optional miner name (e.g. ``"multi_similarity"``, ``"batch_hard"``).
        model: ``None`` for the data set's default (``cnn28``, ``face``, ``mlp``).
        embedding_size: output size of the model (default 64).
        epochs, batches_per_epoch: the budget; ``batches_per_epoch=None`` is about one pass.
        p, k: classes per batch and samples per class (P x K batches).
        lr, weight_decay: AdamW settings; ``loss_lr_mult`` scales the learning rate of the
            loss's own parameters (proxies, learnable margins; default 10).
        warmup_epochs: linear warm-up length (fractions allowed), then cosine decay to 0.
        grad_clip: max global gradient norm (``0`` disables).
        seed: seeds model init, sampler and evaluation splits.
        data_dir: data root (else ``$PAIRLOSS_DATA`` or the data set's default place).
        labels: label file for ``dataset="embeddings"`` when not stored in the file.
        train_classes: zero-shot split: how many first classes train (default: half).
        held_out: face protocol: how many identities are held out for testing (default: half).
        eval_every: evaluate every this many epochs (the last epoch always).
        max_eval: evaluate on a seeded subset of at most this many test samples (0 = all).
        out: the run folder.
        threads: torch CPU threads (0 = torch's default).
    """

    dataset: str = "fashion-mnist"
    loss: str = "multi_similarity"
    loss_options: dict[str, Any] = field(default_factory=dict)
    miner: str | None = None
    model: str | None = None
    embedding_size: int = 64
    epochs: int = 4
    batches_per_epoch: int | None = 100
    p: int = 16
    k: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    loss_lr_mult: float = 10.0
    warmup_epochs: float = 0.5
    grad_clip: float = 5.0
    seed: int = 0
    data_dir: str | None = None
    labels: str | None = None
    train_classes: int | None = None
    held_out: int | None = None
    eval_every: int = 1
    max_eval: int = 0
    out: str = "runs/latest"
    threads: int = 0

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
        for name, (low, strict) in REAL_FIELDS.items():
            check_real(getattr(self, name), name, low=low, low_open=strict)
        for name in ("dataset", "loss", "out"):
            _text(getattr(self, name), name)
        for name in ("miner", "model", "data_dir", "labels"):
            if getattr(self, name) is not None:
                _text(getattr(self, name), name)
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


INT_FIELDS: dict[str, tuple[int, int, bool]] = {
    "embedding_size": (1, 2**16, False),
    "epochs": (1, 10**6, False),
    "batches_per_epoch": (1, 10**9, True),
    "p": (1, 10**6, False),
    "k": (1, 10**6, False),
    "seed": (0, 2**32 - 1, False),
    "eval_every": (1, 10**6, False),
    "max_eval": (0, 2**40, False),
    "threads": (0, 4096, False),
    "train_classes": (1, 2**31, True),
    "held_out": (1, 2**31, True),
}
"""Integer settings: (minimum, maximum, may be None)."""

REAL_FIELDS: dict[str, tuple[float, bool]] = {
    "lr": (0.0, True),
    "weight_decay": (0.0, False),
    "loss_lr_mult": (0.0, True),
    "warmup_epochs": (0.0, False),
    "grad_clip": (0.0, False),
}
"""Real settings, all finite: (lower bound, bound excluded)."""


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
    "fashion-mnist": {"embedding_size": 64, "p": 5, "k": 32, "epochs": 4},
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
}


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
