"""One training loop for every task (:class:`pairloss.train.task.Task`) and every loss.

One step: the task's next batch, ``loss(*args, **kwargs)`` with the task's loss inputs (and, when
a miner is set, the miner's output on them as ``indices_tuple``), backward, gradient clipping,
AdamW and a per-step learning-rate schedule: linear warm-up for ``warmup_epochs``, then cosine
decay to 0 at the last step. The loss's own parameters (proxies, learnable margins) are
optimised too, in their own parameter group with ``lr * loss_lr_mult`` and no weight decay.

Device and precision: ``device="auto"`` takes CUDA when there is one, else the CPU. With
``amp=True`` the forward pass runs under :func:`torch.autocast` (float16 with a gradient scaler
on CUDA, bfloat16 on the CPU); pairloss losses compute in float32 whatever their input dtype.

Model selection without peeking: every ``eval_every`` epochs (and the last) the task evaluates
the model on its validation data (carved from the training data, never the test data); the
state of the epoch with the best :meth:`Task.select` score is kept, and :meth:`Trainer.fit`
leaves the model in that state (``selected_epoch``).

Scale (:mod:`pairloss.train.parallel`): in a process group (``nproc > 1`` or ``torchrun``)
every rank draws its own batches, the model trains inside DistributedDataParallel and the loss
is that of the global batch (``gather="exact"``), and rank 0 alone validates, logs and writes
files; ``chunk_size`` turns GradCache on and ``memory_size`` wraps the loss in a cross-batch
memory. The checkpoint and the kept model hold the bare model's state either way.

Files (in ``out``): ``metrics.jsonl``, ``metrics.csv`` and ``tensorboard/`` (see
:mod:`pairloss.train.logs`), and ``checkpoint.pt`` after every epoch: a plain ``state_dict``
bundle (model, loss, optimizer, schedule, gradient scaler, RNG state, epoch, the best epoch and
its model), read back with ``weights_only=True``, so ``resume()`` continues an interrupted run
exactly where it stopped, with the same batches and augmentations.

Progress: a tqdm bar over the run's samples with the epoch, ``mean_loss`` (the mean batch loss
of the epoch so far, the number the epoch record calls ``mean_loss``), samples per second and
the time left.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import PairLossError
from . import parallel
from .logs import METRICS, RunLogs, read_history
from .task import Results, Task

CHECKPOINT = "checkpoint.pt"


def seed_everything(seed: int, device: torch.device | None = None) -> None:
    """Seed Python, NumPy and torch; on a CUDA ``device`` also ask torch for deterministic
    kernels (warn only; the CPU kernels used here are deterministic already, and the switch
    costs seconds of imports)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device is not None and device.type == "cuda":
        torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PairLossError(f"device: expected auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise PairLossError(f"device: {name} asked for, but no CUDA device is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise PairLossError(
                f"device: {name}: there are {torch.cuda.device_count()} CUDA devices"
            )
    elif device.type != "cpu":
        raise PairLossError(f"device: expected auto, cpu, cuda or cuda:N, got {name!r}")
    return device


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """The learning-rate factor at ``step``: ``(step + 1) / warmup`` during the warm-up, then
    ``0.5 (1 + cos(pi t))`` with ``t`` the fraction of the remaining steps done."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def make_optimizer(model: nn.Module, loss: nn.Module, config: Any) -> torch.optim.AdamW:
    """AdamW over the model (``lr``, ``weight_decay``) and the loss's parameters, if any
    (``lr * loss_lr_mult``, no weight decay)."""
    groups: list[dict[str, Any]] = [
        {
            "params": [p for p in model.parameters() if p.requires_grad],
            "weight_decay": config.weight_decay,
        }
    ]
    loss_params = [p for p in loss.parameters() if p.requires_grad]
    if loss_params:
        groups.append(
            {"params": loss_params, "lr": config.lr * config.loss_lr_mult, "weight_decay": 0.0}
        )
    return torch.optim.AdamW(groups, lr=config.lr)


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def flat_results(prefix: str, results: Results) -> dict[str, float]:
    """``{setting: {metric: v}}`` as ``{"<prefix><metric>": v}`` for one setting, or
    ``{"<prefix><setting>/<metric>": v}`` for several."""
    if len(results) == 1:
        return {f"{prefix}{k}": v for k, v in next(iter(results.values())).items()}
    return {f"{prefix}{s}/{k}": v for s, values in results.items() for k, v in values.items()}


class Trainer:
    """Trains ``model`` with ``loss`` on ``task`` as ``config`` says; see the module docstring.

    Args:
        task: the data, loss inputs and evaluation (:class:`pairloss.train.task.Task`).
        model: the model the task's loss inputs come from.
        loss: a loss module called as ``loss(*args, **kwargs)``.
        config: the run's settings (:class:`pairloss.train.TrainConfig`).
        out: the run folder (created).
        miner: optional miner called as ``miner(*args)`` on the loss inputs.
        progress: show the progress bar.
        on_epoch: optional callback ``f(record)`` after every epoch's record is written.
        log: where notices go (default ``print``).
    """

    def __init__(
        self,
        task: Task,
        model: nn.Module,
        loss: nn.Module,
        config: Any,
        out: str | Path,
        miner: nn.Module | None = None,
        progress: bool = True,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.task, self.config, self.miner, self.on_epoch = task, config, miner, on_epoch
        self.rank, self.world_size = parallel.world()
        self.device = parallel.device_of_rank(resolve_device(config.device), self.rank)
        self.model = model.to(self.device)
        self.forward_model = parallel.parallel_model(self.model, self.device)
        self.loss = parallel.scaled_loss(loss, config).to(self.device)
        self.scaled = self.world_size > 1 or config.memory_size is not None
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.sampler = task.batches(config, self.rank, self.world_size)
        self.steps_per_epoch = len(self.sampler)
        self.total_steps = self.steps_per_epoch * config.epochs
        warmup = round(config.warmup_epochs * self.steps_per_epoch)
        self.optimizer = make_optimizer(self.model, self.loss, config)
        self.trained = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: warmup_cosine(step, warmup, self.total_steps)
        )
        self.amp_dtype = (
            (torch.float16 if self.device.type == "cuda" else torch.bfloat16)
            if config.amp
            else None
        )
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=config.amp and self.device.type == "cuda"
        )
        self.epoch = 0
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best_epoch: int | None = None
        self.best_score = -math.inf
        self.best_model: dict[str, torch.Tensor] | None = None
        self.progress = progress
        self.log = log
        self.logs: RunLogs | None = None

    # ---------------------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (see the module docstring)."""
        return {
            "model": self.model.state_dict(),
            "loss": self.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": torch.get_rng_state(),
            "epoch": self.epoch,
            "step": self.step,
            "best_epoch": self.best_epoch,
            "best_score": self.best_score,
            "best_model": self.best_model,
        }

    def save(self) -> Path:
        """Write ``checkpoint.pt`` atomically (temporary file, then rename)."""
        path = self.out / CHECKPOINT
        tmp = path.with_suffix(".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)
        return path

    def resume(self) -> bool:
        """Load ``checkpoint.pt`` and ``metrics.jsonl`` if present; True when resumed.

        Raises:
            PairLossError: the checkpoint is unreadable or does not fit this model, loss or
                optimizer (a different embedding size, loss or model), or ``metrics.jsonl``
                is corrupt.
        """
        path = self.out / CHECKPOINT
        if not path.is_file():
            return False
        state = load_checkpoint(path)
        history = read_history(self.out / METRICS)
        try:
            self.model.load_state_dict(state["model"])
            self.loss.load_state_dict(state["loss"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.schedule.load_state_dict(state["schedule"])
            self.scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["rng"])
            epoch, step = int(state["epoch"]), int(state["step"])
            best_epoch, best_score = state["best_epoch"], float(state["best_score"])
            best_model = state["best_model"]
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PairLossError(
                f"resume: {path} does not fit this run's model, loss or optimizer ({first}); "
                "expected a checkpoint of the same settings, or start a new run with another --out"
            ) from None
        self.epoch, self.step = epoch, step
        self.best_epoch, self.best_score, self.best_model = best_epoch, best_score, best_model
        self.history = history[: self.epoch]
        return True

    # ------------------------------------------------------------------------------- training

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _step(self, batch: Any) -> float:
        if self.config.chunk_size is not None:
            value = parallel.chunked_loss(self, batch)
        else:
            with self._autocast():
                args, kwargs = self.task.loss_inputs(
                    self.forward_model, batch, self.device, self.step
                )
                if self.miner is not None:  # scaled: mined inside the loss, on all candidates
                    mined = self.miner if self.scaled else self.miner(*args)
                    kwargs = {**kwargs, "indices_tuple": mined}
                value = self.loss(*args, **kwargs)
        if value.dim() != 0:
            raise PairLossError(
                f"loss: returned shape {tuple(value.shape)}; the trainer needs one number per batch"
            )
        if not torch.isfinite(value.detach()):
            raise PairLossError(
                f"loss: the training loss became {float(value.detach())} at epoch "
                f"{self.epoch + 1}; try a lower lr or check the loss options"
            )
        if self.config.chunk_size is None:
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(value).backward()
        parallel.average_loss_gradients(self.loss)
        if self.config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.trained, self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()
        self.step += 1
        return float(value.detach())

    def _bar(self):
        from tqdm.auto import tqdm

        remaining = (self.config.epochs - self.epoch) * self.steps_per_epoch
        samples = getattr(self.sampler, "batch_size", 1)
        terminal = sys.stderr.isatty()
        return tqdm(
            total=remaining * samples,
            unit="sample",
            unit_scale=True,
            disable=not self.progress,
            dynamic_ncols=True,
            leave=not terminal,  # a log file keeps the final state of the bar
            mininterval=0.5 if terminal else 30.0,  # and gets few lines
        )

    def validate(self) -> Results:
        """The task's validation results for the current model."""
        return self.task.evaluate(self.model, "validation", self.device)

    def fit(self) -> list[dict[str, Any]]:
        """Train the remaining epochs; return one record per epoch (also in the logs), and
        leave the model in the state of the selected (best validation) epoch."""
        self.logs = RunLogs(self.out, notice=self.log) if self.rank == 0 else None
        self.model.train()
        try:
            with self._bar() as bar:
                while self.epoch < self.config.epochs:
                    self._epoch(bar)
        finally:
            if self.logs is not None:
                self.logs.close()
            parallel.release(self.loss)
        if self.best_model is not None:
            self.model.load_state_dict(self.best_model)
        return self.history

    def _epoch(self, bar: Any) -> None:
        self.sampler.set_epoch(self.epoch)
        bar.set_description(f"epoch {self.epoch + 1}/{self.config.epochs}")
        start, total, count, samples = time.perf_counter(), 0.0, 0, 0
        for batch in self.sampler:
            value = self._step(batch)
            total, count, samples = total + value, count + 1, samples + len(batch)
            if self.logs is not None:
                self.logs.batch(self.step, value)
            bar.update(len(batch))
            bar.set_postfix(mean_loss=f"{total / count:.4f}", refresh=False)
        self.epoch += 1
        seconds = time.perf_counter() - start
        record: dict[str, Any] = {
            "epoch": self.epoch,
            "mean_loss": total / max(count, 1),
            "lr": self.schedule.get_last_lr()[0],
            "train_seconds": seconds,
            "samples_per_second": samples * self.world_size / seconds if seconds > 0 else 0.0,
        }
        if self.rank != 0:  # rank 0 alone evaluates, keeps the best model and writes files
            return
        if self.epoch % self.config.eval_every == 0 or self.epoch == self.config.epochs:
            results = self.validate()
            record.update(flat_results("val_", results))
            score = self.task.select(results)
            if score is not None and score > self.best_score:
                self.best_epoch, self.best_score = self.epoch, score
                self.best_model = _cpu_state(self.model)
        if self.best_model is None and self.epoch == self.config.epochs:
            self.best_epoch, self.best_model = self.epoch, _cpu_state(self.model)
        record["best_epoch"] = self.best_epoch
        self.history.append(record)
        self.logs.epoch(self.history, self.step)
        self.save()
        if self.on_epoch is not None:
            bar.clear()
            self.on_epoch(record)
            bar.refresh()

    @property
    def selected_epoch(self) -> int | None:
        """The epoch whose model :meth:`fit` keeps (best validation score, else the last)."""
        return self.best_epoch


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by :class:`Trainer` (``torch.load(weights_only=True)``)."""
    path = Path(path)
    if not path.is_file():
        raise PairLossError(f"checkpoint: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear error
        raise PairLossError(f"checkpoint: {path} is not a readable checkpoint ({exc})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise PairLossError(f"checkpoint: {path} has no model state; expected a pairloss run")
    return state


__all__ = [
    "CHECKPOINT",
    "Trainer",
    "load_checkpoint",
    "make_optimizer",
    "resolve_device",
    "seed_everything",
    "warmup_cosine",
]
