"""Training runs and comparisons: what ``pairloss train`` and ``pairloss compare`` do.

A run folder holds ``config.json``, the logs (``metrics.jsonl``, ``metrics.csv``,
``tensorboard/``), ``checkpoint.pt`` (to resume), ``model.pt`` (the selected epoch's model, for
``pairloss eval``, ``embed`` and ``search``), ``summary.json`` (every representation's test
metrics, the selected epoch, the wall times and the verdict line) and ``report.html``. A
comparison folder holds one run folder per (loss, seed), ``leaderboard.json`` and
``leaderboard.html``.
"""

from __future__ import annotations

import copy
import json
import math
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
from . import parallel
from .backbones import PREFIX, torchvision_models
from .config import TrainConfig, check_paths, from_dict, parse_options
from .datasets import DEFAULT_MODELS
from .evaluate import PROTOCOLS, evaluate_embeddings
from .labelled import SETTINGS
from .logs import METRICS, read_history
from .models import check_model_name
from .parallel import check_scale
from .registry import build_loss, build_miner
from .report import write_leaderboard, write_report
from .task import Results, Task
from .tasks import check_applies, load_task
from .trainer import CHECKPOINT, Trainer, resolve_device, seed_everything

MODEL = "model.pt"
LEADERBOARD_KEYS = ("map@r", "recall@1", "r_precision", "rank1", "eer", "dir@far=0.1")
LEADERBOARD_KEYS += ("ndcg@1", "ndcg@3", "ndcg@5", "ndcg@10", "mrr")  # ranking
TEXT_LEADERBOARD_KEYS = ("spearman", "ndcg", "pair_accuracy", "reward_accuracy")  # text


@dataclass
class RunResult:
    """The outcome of one training run.

    Attributes:
        out: the run folder.
        metrics: the trained model's test results ``{setting: {metric: value}}`` (of the
            selected epoch).
        representations: test results of every representation, ``{name: {setting: metrics}}``:
            the baselines (raw inputs, PCA, the untrained model) and the trained model's
            embedding and backbone; ordered best first by the headline setting's MAP@R.
        headline: the setting that decides (``"seen"`` or ``"unseen"`` for labelled data).
        selected_epoch: the epoch whose model was kept (best validation score).
        verdict: one line saying what training changed.
        history: one record per epoch.
        seconds: wall times ``total``, ``training``, ``evaluation``, ``report``, and ``cpu``,
            the CPU time of the process (all its threads; on a shared machine the wall time
            depends on the load, this does less).
        report: path of ``report.html``.
        config: the run's settings.
        selection_metric: the metric that picked the epoch and orders the representations.
        columns: ``(key, label)`` of the metrics the tables show.
    """

    out: Path
    metrics: Results
    representations: dict[str, Results]
    headline: str
    selected_epoch: int | None
    verdict: str
    history: list[dict[str, Any]]
    seconds: dict[str, float]
    report: Path
    config: dict[str, Any] = field(default_factory=dict)
    selection_metric: str = "map@r"
    columns: tuple[tuple[str, str], ...] = Task.columns


# ----------------------------------------------------------------------------- checks up front

RESUMABLE_CHANGES = frozenset(
    {
        "epochs",
        "eval_every",
        "threads",
        "data_dir",
        "out",
        "max_eval",
        "device",
        "workers",
        "eval_memory",
        "amp",
    }
)
"""Settings a resumed run may change; every other one must equal the interrupted run's."""


def check_run(config: TrainConfig, resume: bool = False) -> None:
    """Check everything that can be checked before any data is loaded or file written: the
    paths, the data set and the settings it reads, the device, the loss and its options, the
    miner, the model name, and (with ``resume``) that the run folder holds a checkpoint made
    with the same settings.

    Raises:
        PairLossError: naming the first setting that cannot work.
    """
    check_paths(config)
    check_applies(config)
    check_scale(config)
    resolve_device(config.device)
    loss = build_loss(config.loss, config.loss_options, 2, config.embedding_size)
    if getattr(loss, "reduction", None) == "none":
        raise PairLossError(
            "loss_options: reduction='none' makes the loss one value per row; the trainer needs "
            "one number per batch: use reduction='mean' (the default) or 'sum'"
        )
    build_miner(config.miner)
    model = config.model or DEFAULT_MODELS.get(config.dataset)
    if model is not None:
        check_model_name(model)
        if model.startswith(PREFIX):
            torchvision_models()  # installed, or a clear error before any data is read
        elif config.pretrained is not None:
            raise PairLossError(
                f"pretrained: model {model!r} has no pretrained weights; they apply to "
                f"{PREFIX}<name> models"
            )
    if config.pretrained not in (None, "default") and not Path(config.pretrained).is_file():
        raise PairLossError(
            f"pretrained: {config.pretrained} is not a file; expected default or a .pth file"
        )
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


# ------------------------------------------------------------------------------------ one run


def build(config: TrainConfig, task: Task) -> tuple[nn.Module, nn.Module, nn.Module | None]:
    """Model, loss and miner of a run (seeded by ``config.seed``)."""
    seed_everything(config.seed, resolve_device(config.device))
    model = task.build_model(config)
    loss = build_loss(
        config.loss,
        config.loss_options,
        embedding_size=config.embedding_size,
        **task.loss_arguments(),
    )
    return model, loss, build_miner(config.miner)


def _weight_curve(loss: nn.Module, model: nn.Module, task: Task, config: TrainConfig, device):
    """Pair weight against similarity on one training batch (None for class-level losses)."""
    if not isinstance(loss, PairLossModule) or isinstance(loss, ProxyLossModule):
        return None
    sampler = task.batches(config)
    sampler.set_epoch(0)
    batch = next(iter(sampler))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        args, _ = task.loss_inputs(model, batch, device, step=0, train=False)
    model.train(was_training)
    emb, labels = args[0].float().cpu(), args[1].cpu()
    w = pair_weights(loss.cpu(), emb, labels)
    loss.to(device)
    pos = w.is_positive.numpy()
    sim = (-w.score if w.is_distance else w.score).numpy()
    weight = w.weight.abs().numpy()
    return {
        "pos_sim": sim[pos],
        "pos_weight": weight[pos],
        "neg_sim": sim[~pos],
        "neg_weight": weight[~pos],
        "loss": type(loss).__name__,
    }


def _dump(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _score(results: Results, setting: str, key: str = "map@r") -> float:
    value = results.get(setting, {}).get(key)
    return value if value is not None and math.isfinite(value) else -math.inf


COLUMNS = Task.columns
"""The columns of the tables of labelled data: MAP@R and Recall@1."""

VERDICT_LABELS = {"recall@1": "Recall@1"}
"""Labels of the verdict line where they differ from the tables' short ones."""


def ranked(
    representations: dict[str, Results], headline: str, key: str = "map@r"
) -> dict[str, Results]:
    """``representations`` ordered best first by the headline setting's ``key`` metric."""
    order = sorted(representations, key=lambda n: -_score(representations[n], headline, key))
    return {name: representations[name] for name in order}


def verdict_line(
    baselines: dict[str, Results],
    trained: tuple[str, Results],
    headline: str,
    settings: list[str],
    metrics: tuple[tuple[str, str], ...] = COLUMNS,
    key: str | None = None,
) -> str:
    """One line: the best baseline's ``metrics`` (``(key, label)``) against the trained
    model's, on each setting (headline first); the best baseline is the one with the best
    ``key`` metric (default: the first of ``metrics``)."""
    name, results = trained
    first = metrics[0][0] if key is None else key
    parts = []
    for setting in [headline, *(s for s in settings if s != headline)]:
        best = max(baselines, key=lambda n: _score(baselines[n], setting, first), default=None)
        if best is None or setting not in results:
            continue
        base, mine = baselines[best][setting], results[setting]
        change = " and ".join(
            f"{VERDICT_LABELS.get(m, label)} {base[m]:.3f} -> {mine[m]:.3f}"
            for m, label in metrics
            if m in base and m in mine
        )
        parts.append(f"{change} on {SETTINGS.get(setting, setting)} (best baseline: {best})")
    return f"training changed {'; '.join(parts)}" if parts else "no test results"


def format_table(
    representations: dict[str, Results],
    settings: list[str],
    metrics: tuple[tuple[str, str], ...] = COLUMNS,
) -> str:
    """The representations as aligned text: ``metrics`` (``(key, label)``; by default MAP@R
    and Recall@1) per setting."""
    header = ["representation"] + [
        f"{label} {SETTINGS.get(s, s)}" for s in settings for _, label in metrics
    ]
    rows = [header]
    for name, results in representations.items():
        cells = [name]
        for s in settings:
            for key, _ in metrics:
                value = results.get(s, {}).get(key)
                cells.append("-" if value is None else f"{value:.4f}")
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    )


def save_model(out: Path, model: nn.Module, epoch: int | None, task: Task) -> Path:
    """Write ``model.pt``: the selected epoch's weights, the epoch and the task's
    :meth:`~pairloss.train.task.Task.model_spec` (to rebuild the model without the data)."""
    path = out / MODEL
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    torch.save({"model": state, "epoch": epoch, "spec": task.model_spec()}, path)
    return path


def train_run(
    config: TrainConfig, progress: bool = True, resume: bool = False, log=print
) -> RunResult:
    """Train, select, evaluate and report one run into ``config.out``; see the module docstring.
    With ``nproc > 1`` (or under ``torchrun``) the run is data-parallel
    (:mod:`pairloss.train.parallel`): rank 0 returns the result, the other ranks ``None``."""
    if parallel.needs_launch(config):
        return parallel.launch(config, progress, resume)
    parallel.join_torchrun()
    if parallel.world()[0] != 0:
        return _follow(config, resume)
    start, cpu_start = time.perf_counter(), time.process_time()
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    _dump(out / "config.json", config.to_dict())
    task = load_task(config)
    log(task.describe())
    device = resolve_device(config.device)
    model, loss, miner = build(config, task)
    model.to(device)
    evaluation = time.perf_counter()
    untrained = copy.deepcopy(model)
    task.calibrate(untrained, device)
    baselines = task.baselines(config, untrained, device)
    before = task.similarity_sample(untrained, device)
    predicted_before = task.prediction_sample(untrained, device)
    del untrained
    evaluation = time.perf_counter() - evaluation
    settings = list(next(iter(baselines.values())))
    key, metrics = task.selection_metric, task.columns
    log("before training, on the test data:")
    table = format_table(ranked(baselines, task.headline, key), settings, metrics)
    for line in table.splitlines():
        log("  " + line)
    skipped = getattr(task, "skipped_baselines", lambda: None)()
    if skipped:
        log(f"  ({skipped})")

    def on_epoch(record: dict[str, Any]) -> None:
        val = "  ".join(
            f"{k.removeprefix('val_')} {record[k]:.4f}"
            for k in [f"val_{m}" for m, _ in metrics]
            if k in record
        )
        kept = " (best so far)" if record.get("best_epoch") == record["epoch"] and val else ""
        log(
            f"  epoch {record['epoch']:>3}: mean_loss {record['mean_loss']:.4f}  "
            f"{record['samples_per_second']:,.0f} samples/s"
            + (f"  validation {val}{kept}" if val else "")
        )

    trainer = Trainer(task, model, loss, config, out, miner, progress, on_epoch, log)
    if resume and trainer.resume():
        log(f"  resumed from {out / CHECKPOINT} after epoch {trainer.epoch}")
    history = trainer.fit()
    save_model(out, model, trainer.selected_epoch, task)
    tested = time.perf_counter()
    mine = task.representations(model, device)
    after = task.similarity_sample(model, device)
    predicted_after = task.prediction_sample(model, device)
    projection = task.projection(model, device)
    evaluation += time.perf_counter() - tested
    table = ranked({**baselines, **mine}, task.headline, key)
    trained_name = next(iter(mine))
    verdict = verdict_line(
        baselines, (trained_name, mine[trained_name]), task.headline, settings, metrics, key
    )
    notes = [n for n in [getattr(task, "skipped_baselines", lambda: None)()] if n]
    notes.append(
        f"Test figures of the model of epoch {trainer.selected_epoch} of {len(history)}, the "
        f"best by validation {dict(metrics).get(key, key)}; the test data played no part in "
        "choosing it."
    )
    reporting = time.perf_counter()
    report = write_report(
        out / "report.html",
        title=f"pairloss: {config.loss} on {config.dataset}",
        config=config.to_dict(),
        history=history,
        before=before,
        after=after,
        representations=table,
        settings={s: SETTINGS.get(s, s) for s in settings},
        headline=task.headline,
        verdict=verdict,
        notes=notes,
        pair_weight_curve=_weight_curve(loss, model, task, config, device),
        projection=projection,
        columns=metrics,
        sort_by=key,
        predictions=(predicted_before, predicted_after),
    )
    reporting = time.perf_counter() - reporting
    total = time.perf_counter() - start
    training = sum(r.get("train_seconds", 0.0) for r in history)
    seconds = {
        "total": total,
        "training": training,
        "evaluation": evaluation,
        "report": reporting,
        "cpu": time.process_time() - cpu_start,
    }
    _dump(
        out / "summary.json",
        {
            "config": config.to_dict(),
            "headline": task.headline,
            "selected_epoch": trainer.selected_epoch,
            "verdict": verdict,
            "metrics": mine[trained_name],
            "representations": table,
            "seconds": seconds,
        },
    )
    return RunResult(
        out,
        mine[trained_name],
        table,
        task.headline,
        trainer.selected_epoch,
        verdict,
        history,
        seconds,
        report,
        config.to_dict(),
        task.selection_metric,
        task.columns,
    )


def _follow(config: TrainConfig, resume: bool) -> None:
    """A rank other than 0 of a data-parallel run: the same task, model and loss, trained
    without evaluation, logs or files."""
    task = load_task(config)
    model, loss, miner = build(config, task)
    trainer = Trainer(task, model, loss, config, config.out, miner, progress=False, log=_quiet)
    if resume:
        trainer.resume()
    trainer.fit()


def _quiet(_: str) -> None:
    """A log that drops its lines."""


# ----------------------------------------------------------------------------------- compare


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


def _spec_config(config: TrainConfig, spec: str, seed: int, out: Path) -> TrainConfig:
    name, options, miner = parse_loss_spec(spec)
    return config.replace(
        loss=name,
        loss_options={**config.loss_options, **options},
        miner=miner if miner is not None else config.miner,
        seed=seed,
        out=str(out / f"{_slug(spec)}-seed{seed}"),
    )


def check_compare(config: TrainConfig, losses: list[str], seeds: list[int]) -> None:
    """:func:`check_run` for every loss spec and seed of a comparison, before any training."""
    if not losses:
        raise PairLossError("losses: expected at least one loss to compare")
    if not seeds or max(seeds) > 2**32 - 1:
        raise PairLossError(f"seeds: expected seeds from 0 to 2**32 - 1, got {seeds[-1:]}")
    for spec in losses:
        check_run(_spec_config(config, spec, seeds[0], Path(config.out)))


def _slug(spec: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in spec).strip("-")


def _aggregate_results(results: list[Results], headline: str) -> dict[str, float]:
    """Mean (and sample std over seeds) of test metrics ``{setting: {metric: value}}``, one per
    seed: the headline setting's under their plain names, the other settings' as
    ``<setting>/<metric>``."""
    row: dict[str, float] = {}
    for setting in results[0]:
        for key in results[0][setting]:
            values = [r.get(setting, {}).get(key) for r in results]
            if any(v is None for v in values):
                continue
            name = key if setting == headline else f"{setting}/{key}"
            array = np.array(values, dtype=np.float64)
            row[name] = float(array.mean())
            if len(results) > 1:
                row[f"{name}_std"] = float(array.std(ddof=1))
    return row


def _aggregate(runs: list[RunResult]) -> dict[str, float]:
    """:func:`_aggregate_results` of the trained model's test metrics, and the mean wall time."""
    row = _aggregate_results([r.metrics for r in runs], runs[0].headline)
    row["seconds"] = float(np.mean([r.seconds["total"] for r in runs]))
    return row


def _baseline_rows(runs_per_loss: list[list[RunResult]]) -> list[dict[str, Any]]:
    """Leaderboard rows for the representations every loss's runs share (the untrained model,
    raw inputs, PCA, LightGBM, ...; not those trained with the loss itself), from the first
    loss's runs (mean and std over its seeds), labelled ``baseline: <name>``."""
    shared = [
        name
        for name in runs_per_loss[0][0].representations
        if not name.startswith("trained ")
        and all(name in runs[0].representations for runs in runs_per_loss)
    ]
    first = runs_per_loss[0]
    return [
        {
            "loss": f"baseline: {name}",
            "runs": len(first),
            **_aggregate_results([r.representations[name] for r in first], first[0].headline),
        }
        for name in shared
    ]


def compare(
    config: TrainConfig,
    losses: list[str],
    seeds: list[int],
    progress: bool = False,
    log=print,
) -> list[dict[str, Any]]:
    """Train every loss of ``losses`` (specs as in :func:`parse_loss_spec`) with every seed under
    the same data, protocol and budget; write ``leaderboard.{json,html}`` into ``config.out``
    and return the rows sorted by the headline setting's first column metric (MAP@R for
    labelled data; mean over seeds, with ``_std``
    when seeds > 1; other settings' metrics as ``<setting>/<metric>``). The baselines the runs
    share (the untrained model, raw inputs, PCA, LightGBM, ...) are ranked with them, as rows
    ``baseline: <name>`` without a wall time."""
    check_compare(config, losses, seeds)
    out = Path(config.out)
    rows, runs_per_loss = [], []
    for spec in losses:
        runs = []
        for seed in seeds:
            log(f"== {spec} (seed {seed})")
            runs.append(
                train_run(_spec_config(config, spec, seed, out), progress=progress, log=log)
            )
        runs_per_loss.append(runs)
        rows.append({"loss": spec, "runs": len(runs), **_aggregate(runs)})
    rows += _baseline_rows(runs_per_loss)
    key = runs[0].selection_metric
    rows.sort(key=lambda r: r.get(key, float("-inf")), reverse=True)
    _dump(out / "leaderboard.json", rows)
    write_leaderboard(
        out / "leaderboard.html",
        title=f"pairloss compare on {config.dataset} (seeds {', '.join(map(str, seeds))})",
        rows=rows,
        sort_key=key,
    )
    return rows


def leaderboard_table(rows: list[dict[str, Any]]) -> str:
    """The leaderboard as aligned text (mean +- std when available)."""
    present = [k for k in dict.fromkeys(k for r in rows for k in r) if not k.endswith("_std")]
    shown = LEADERBOARD_KEYS + TEXT_LEADERBOARD_KEYS
    keys = [k for k in present if k.split("/")[-1] in shown] + ["seconds"]
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


# -------------------------------------------------------------------------- using a run later


def evaluate_run(path: str | Path, data_dir: str | None = None) -> Results:
    """Re-evaluate a trained run (its folder) on its test data with the selected model:
    ``{setting: {metric: value}}``."""
    from .use import load_trained

    trained = load_trained(path)
    config = trained.config
    if data_dir is not None:
        config = config.replace(data_dir=data_dir)
    check_paths(config.replace(out=str(path)))
    task = load_task(config)
    return task.evaluate(trained.model, "test", resolve_device(config.device))


def evaluate_file(
    path: str | Path, labels: str | Path | None = None, protocol: str = "retrieval", seed: int = 0
) -> Results:
    """Evaluate precomputed embeddings (``.npy`` / ``.pt``, see
    :func:`pairloss.data.load_embedding_file`) with every sample as a query (leave-one-out):
    ``{"all": {metric: value}}``."""
    if protocol not in PROTOCOLS:
        raise PairLossError(f"protocol: expected one of {PROTOCOLS}, got {protocol!r}")
    emb, y = load_embedding_file(path, labels)
    return {"all": evaluate_embeddings(emb.float(), y, protocol, seed)}


__all__ = [
    "RunResult",
    "check_compare",
    "check_run",
    "compare",
    "evaluate_file",
    "evaluate_run",
    "leaderboard_table",
    "train_run",
]
