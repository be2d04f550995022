"""Training runs and comparisons: what ``pairloss train`` and ``pairloss compare`` do.

A run folder holds ``config.json``, ``metrics.jsonl`` (one line per epoch), ``checkpoint.pt``,
``summary.json`` (final metrics, baselines, wall time) and ``report.html``. A comparison folder
holds one run folder per (loss, seed), ``leaderboard.json`` and ``leaderboard.html``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import load_embedding_file
from ..errors import PairLossError
from ..losses.base import PairLossModule
from ..losses.proxy.proxy_base import ProxyLossModule
from ..weights import pair_weights
from .config import TrainConfig, check_paths, from_dict, parse_options
from .evaluate import embed, evaluate_embeddings, flat, headline, pca_baseline, similarity_sample
from .models import build_model, check_model_name
from .registry import build_loss, build_miner
from .report import pca_2d, write_leaderboard, write_report
from .tasks import Task, check_applies, load_task
from .trainer import CHECKPOINT, METRICS, Trainer, load_checkpoint, read_history, seed_everything

PROJECTION_ROWS = 2000
LEADERBOARD_KEYS = ("map@r", "recall@1", "r_precision", "rank1", "eer", "dir@far=0.1")


@dataclass
class RunResult:
    """The outcome of one training run.

    Attributes:
        out: the run folder.
        metrics: the last epoch's test metrics.
        baselines: metrics of the raw inputs, their PCA, the untrained model, the trained
            model (``trained``, = ``metrics``) and the trained model's representation before
            its projection head (``trained backbone``, when the model has ``backbone``).
        history: one record per epoch.
        seconds: wall time of the whole run (loading, training, evaluation, report).
        report: path of ``report.html``.
    """

    out: Path
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    history: list[dict[str, Any]]
    seconds: float
    report: Path
    config: dict[str, Any] = field(default_factory=dict)


def build(config: TrainConfig, task: Task) -> tuple[nn.Module, nn.Module, nn.Module | None]:
    """Model, loss and miner of a run (seeded by ``config.seed``)."""
    seed_everything(config.seed)
    model = build_model(config.model or task.model, config.embedding_size, **task.model_options)
    loss = build_loss(config.loss, config.loss_options, task.num_classes, config.embedding_size)
    return model, loss, build_miner(config.miner)


def _weight_curve(loss: nn.Module, model: nn.Module, task: Task, config: TrainConfig):
    """Pair weight against similarity on one training batch (None for class-level losses)."""
    if not isinstance(loss, PairLossModule) or isinstance(loss, ProxyLossModule):
        return None
    if loss.reduction == "none":
        return None
    gen = torch.Generator().manual_seed(config.seed)
    rows = torch.randperm(len(task.train_y), generator=gen)[: config.p * config.k]
    emb = embed(model, task.train_x[rows])
    w = pair_weights(loss, emb, task.train_y[rows])
    pos = w.is_positive
    sim = (-w.score if w.is_distance else w.score).numpy()
    weight = w.weight.abs().numpy()
    return {
        "pos_sim": sim[pos.numpy()],
        "pos_weight": weight[pos.numpy()],
        "neg_sim": sim[~pos.numpy()],
        "neg_weight": weight[~pos.numpy()],
        "loss": type(loss).__name__,
    }


def _projection(emb: torch.Tensor, task: Task, seed: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(task.test_y), generator=gen)[:PROJECTION_ROWS]
    return {
        "xy": pca_2d(emb[rows]).numpy(),
        "labels": task.test_y[rows].numpy(),
        "class_names": task.class_names,
    }


def _baselines(task: Task, config: TrainConfig, untrained: torch.Tensor) -> dict[str, dict]:
    raw = flat(task.test_x)
    pca = pca_baseline(task.train_x, task.test_x, config.embedding_size, config.seed)
    return {
        "raw input": evaluate_embeddings(raw, task.test_y, task.protocol, config.seed),
        f"PCA-{pca.shape[1]}": evaluate_embeddings(pca, task.test_y, task.protocol, config.seed),
        "untrained model": evaluate_embeddings(untrained, task.test_y, task.protocol, config.seed),
    }


def _dump(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


RESUMABLE_CHANGES = frozenset({"epochs", "eval_every", "threads", "data_dir", "out", "max_eval"})
"""Settings a resumed run may change; every other one must equal the interrupted run's."""


def check_run(config: TrainConfig, resume: bool = False) -> None:
    """Check everything that can be checked before any data is loaded or file written: the
    paths, the data set name, the loss and its options, the miner, the model name, and (with
    ``resume``) that the run folder holds a checkpoint made with the same settings.

    Raises:
        PairLossError: naming the first setting that cannot work.
    """
    check_paths(config)
    check_applies(config)
    loss = build_loss(config.loss, config.loss_options, 2, config.embedding_size)
    if getattr(loss, "reduction", None) == "none":
        raise PairLossError(
            "loss_options: reduction='none' makes the loss one value per row; the trainer needs "
            "one number per batch: use reduction='mean' (the default) or 'sum'"
        )
    build_miner(config.miner)
    if config.model is not None:
        check_model_name(config.model)
    if resume:
        check_resume(config)


def check_resume(config: TrainConfig) -> None:
    """``config.out`` holds a checkpoint, a readable ``metrics.jsonl`` and a ``config.json``
    whose settings equal ``config``'s (except :data:`RESUMABLE_CHANGES`)."""
    out = Path(config.out)
    if not (out / CHECKPOINT).is_file():
        raise PairLossError(f"resume: no {CHECKPOINT} in {out}; expected an interrupted run")
    saved = read_config(out / "config.json")
    read_history(out / METRICS)
    for key, value in config.to_dict().items():
        before = getattr(saved, key)
        if key not in RESUMABLE_CHANGES and before != value:
            raise PairLossError(
                f"resume: the run in {out} was made with {key}={before!r}, this command asks for "
                f"{key}={value!r}; expected the same settings (or a new --out)"
            )


def read_config(path: Path) -> TrainConfig:
    """The :class:`TrainConfig` saved in a run's ``config.json``."""
    if not path.is_file():
        raise PairLossError(f"path: {path} not found; expected a pairloss run folder")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PairLossError(f"{path}: not a valid JSON file ({exc})") from None
    return from_dict(values, str(path))


def train_run(
    config: TrainConfig, progress: bool = True, resume: bool = False, log=print
) -> RunResult:
    """Train, evaluate and report one run into ``config.out``; see the module docstring."""
    start = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    _dump(out / "config.json", config.to_dict())
    task = load_task(config).limited(config.max_eval, config.seed)
    log(task.describe())
    model, loss, miner = build(config, task)
    test_x, test_y = task.test_x, task.test_y
    untrained = embed(model, test_x)
    baselines = _baselines(task, config, untrained)
    for name, values in baselines.items():
        log(f"  {name:>16}: {headline(values)}")
    before = similarity_sample(untrained, test_y, config.seed)

    def on_epoch(record: dict[str, Any]) -> None:
        log(f"  epoch {record['epoch']:>3}: loss {record['train_loss']:.4f}  {headline(record)}")

    trainer = Trainer(model, loss, task, config, out, miner, progress, on_epoch)
    if resume and trainer.resume():
        log(f"  resumed from {out / 'checkpoint.pt'} after epoch {trainer.epoch}")
    history = trainer.fit()
    trained = embed(model, test_x)
    final = evaluate_embeddings(trained, test_y, task.protocol, config.seed)
    baselines["trained"] = final
    if hasattr(model, "backbone"):
        features = embed(model, test_x, backbone=True)
        baselines["trained backbone"] = evaluate_embeddings(
            features, test_y, task.protocol, config.seed
        )
    report = write_report(
        out / "report.html",
        title=f"pairloss: {config.loss} on {config.dataset}",
        config=config.to_dict(),
        history=history,
        before=before,
        after=similarity_sample(trained, test_y, config.seed),
        baselines=baselines,
        pair_weight_curve=_weight_curve(loss, model, task, config),
        projection=_projection(trained, task, config.seed),
    )
    seconds = time.perf_counter() - start
    _dump(
        out / "summary.json",
        {"config": config.to_dict(), "metrics": final, "baselines": baselines, "seconds": seconds},
    )
    return RunResult(out, final, baselines, history, seconds, report, config.to_dict())


def parse_loss_spec(spec: str) -> tuple[str, dict[str, Any], str | None]:
    """``"name"`` or ``"name:key=value,key=value"`` into (name, options, miner).

    The option ``miner=<name>`` picks the miner of that run instead of a loss option.
    """
    name, _, rest = spec.partition(":")
    options = parse_options([p for p in rest.split(",") if p.strip()], f"loss spec {spec!r}")
    miner = options.pop("miner", None)
    if miner is not None and not isinstance(miner, str):
        raise PairLossError(f"losses: miner in {spec!r}: expected a miner name, got {miner!r}")
    if not name.strip():
        raise PairLossError(f"losses: expected name[:key=value,...], got {spec!r}")
    return name.strip(), options, miner


def check_compare(config: TrainConfig, losses: list[str], seeds: list[int]) -> None:
    """:func:`check_run` for every loss spec and seed of a comparison, before any training."""
    if not losses:
        raise PairLossError("losses: expected at least one loss to compare")
    if not seeds or max(seeds) > 2**32 - 1:
        raise PairLossError(f"seeds: expected seeds from 0 to 2**32 - 1, got {seeds[-1:]}")
    for spec in losses:
        name, options, miner = parse_loss_spec(spec)
        check_run(
            config.replace(
                loss=name,
                loss_options={**config.loss_options, **options},
                miner=miner if miner is not None else config.miner,
            )
        )


def _slug(spec: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in spec).strip("-")


def _aggregate(runs: list[RunResult]) -> dict[str, float]:
    keys = [k for k in runs[0].metrics if all(k in r.metrics for r in runs)]
    row: dict[str, float] = {}
    for key in keys:
        values = np.array([r.metrics[key] for r in runs], dtype=np.float64)
        row[key] = float(values.mean())
        if len(runs) > 1:
            row[f"{key}_std"] = float(values.std(ddof=1))
    row["seconds"] = float(np.mean([r.seconds for r in runs]))
    return row


def compare(
    config: TrainConfig,
    losses: list[str],
    seeds: list[int],
    progress: bool = False,
    log=print,
) -> list[dict[str, Any]]:
    """Train every loss of ``losses`` (specs as in :func:`parse_loss_spec`) with every seed under
    the same data, protocol and budget; write ``leaderboard.{json,html}`` into ``config.out``
    and return the rows sorted by MAP@R (mean over seeds, with ``_std`` when seeds > 1)."""
    if not losses:
        raise PairLossError("losses: expected at least one loss to compare")
    if not seeds:
        raise PairLossError("seeds: expected at least one seed")
    out = Path(config.out)
    rows = []
    for spec in losses:
        name, options, miner = parse_loss_spec(spec)
        runs = []
        for seed in seeds:
            run_cfg = config.replace(
                loss=name,
                loss_options={**config.loss_options, **options},
                miner=miner if miner is not None else config.miner,
                seed=seed,
                out=str(out / f"{_slug(spec)}-seed{seed}"),
            )
            log(f"== {spec} (seed {seed})")
            runs.append(train_run(run_cfg, progress=progress, log=log))
        rows.append({"loss": spec, "runs": len(runs), **_aggregate(runs)})
    rows.sort(key=lambda r: r.get("map@r", float("-inf")), reverse=True)
    _dump(out / "leaderboard.json", rows)
    write_leaderboard(
        out / "leaderboard.html",
        title=f"pairloss compare on {config.dataset} (seeds {', '.join(map(str, seeds))})",
        rows=rows,
        sort_key="map@r",
    )
    return rows


def leaderboard_table(rows: list[dict[str, Any]]) -> str:
    """The leaderboard as aligned text (mean +- std when available)."""
    keys = [k for k in LEADERBOARD_KEYS if any(k in r for r in rows)] + ["seconds"]
    header = ["loss", *keys]
    lines = []
    for r in rows:
        cells = [str(r["loss"])]
        for k in keys:
            v = r.get(k)
            if v is None:
                cells.append("-")
            elif k == "seconds":
                cells.append(f"{v:.0f}s")
            elif f"{k}_std" in r:
                cells.append(f"{v:.4f}±{r[f'{k}_std']:.4f}")
            else:
                cells.append(f"{v:.4f}")
        lines.append(cells)
    widths = [max(len(x) for x in col) for col in zip(header, *lines)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in [header, *lines])


def evaluate_run(path: str | Path, data_dir: str | None = None) -> dict[str, float]:
    """Re-evaluate a trained run: ``path`` is a run folder or its ``checkpoint.pt``; the model is
    rebuilt from the folder's ``config.json`` and evaluated on its protocol's test split."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    checkpoint = path / CHECKPOINT if path.is_dir() else path
    config = read_config(folder / "config.json")
    if data_dir is not None:
        config = config.replace(data_dir=data_dir)
    check_paths(config.replace(out=str(folder)))
    task = load_task(config).limited(config.max_eval, config.seed)
    model, _, _ = build(config, task)
    state = load_checkpoint(checkpoint)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise PairLossError(f"{checkpoint}: does not fit the model of {folder} ({first})") from None
    return evaluate_embeddings(embed(model, task.test_x), task.test_y, task.protocol, config.seed)


def evaluate_file(
    path: str | Path, labels: str | Path | None = None, protocol: str = "zero-shot", seed: int = 0
) -> dict[str, float]:
    """Evaluate precomputed embeddings (``.npy`` / ``.pt``, see
    :func:`pairloss.data.load_embedding_file`) with every sample as a query (leave-one-out)."""
    if protocol not in ("zero-shot", "face"):
        raise PairLossError(f"protocol: expected 'zero-shot' or 'face', got {protocol!r}")
    emb, y = load_embedding_file(path, labels)
    return evaluate_embeddings(emb.float(), y, protocol, seed)
