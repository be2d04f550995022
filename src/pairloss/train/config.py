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
        """Validate the fields; raise :class:`PairLossError` naming the first bad one."""
        for name in ("embedding_size", "epochs", "p", "k", "eval_every"):
            _positive_int(getattr(self, name), name)
        for name in ("seed", "max_eval", "threads"):
            _positive_int(getattr(self, name), name, minimum=0)
        for name in ("batches_per_epoch", "train_classes", "held_out"):
            if getattr(self, name) is not None:
                _positive_int(getattr(self, name), name)
        for name in ("lr", "loss_lr_mult"):
            _number(getattr(self, name), name, strict=True)
        for name in ("weight_decay", "warmup_epochs", "grad_clip"):
            _number(getattr(self, name), name, strict=False)
        if not isinstance(self.loss_options, dict):
            raise PairLossError(
                f"loss_options: expected a table of key = value, got {type(self.loss_options)}"
            )
        return self


def _positive_int(value: object, name: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PairLossError(f"{name}: expected an integer >= {minimum}, got {value!r}")


def _number(value: object, name: str, strict: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or value < 0 or (strict and value == 0):
        sign = "> 0" if strict else ">= 0"
        raise PairLossError(f"{name}: expected a number {sign}, got {value!r}")


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
    try:
        with path.open("rb") as fh:
            values = tomllib.load(fh)
    except FileNotFoundError:
        raise PairLossError(f"config: {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise PairLossError(f"config: {path} is not valid TOML ({exc})") from None
    check_keys(values, f"config {path}")
    return values


def parse_value(text: str) -> Any:
    """A command-line value: Python/TOML literal (number, bool, list, quoted string) or text."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


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
    name = dataset or from_file.get("dataset") or TrainConfig.dataset
    values: dict[str, Any] = {"dataset": name, **DATASET_DEFAULTS.get(name, {})}
    values.update(from_file)
    options = {**from_file.get("loss_options", {}), **given.pop("loss_options", {})}
    values.update(given)
    values["loss_options"] = options
    values["dataset"] = name
    return TrainConfig(**values).checked()
