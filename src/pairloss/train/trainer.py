"""A plain PyTorch training loop for embedding models with a pairloss loss.

One step: a P x K batch from :class:`pairloss.data.PKSampler`, ``loss(model(x), y)`` (with the
miner's output as ``indices_tuple`` when a miner is set), backward, gradient clipping, AdamW
and a per-step learning-rate schedule: linear warm-up for ``warmup_epochs``, then cosine decay
to 0 at the last step. The loss's own parameters (proxies, learnable margins) are optimised too,
in their own parameter group with ``lr * loss_lr_mult`` and no weight decay.

After every ``eval_every`` epochs (and the last) the model is evaluated on the task's test split;
one JSON line per epoch goes to ``metrics.jsonl`` and the model, loss, optimizer and schedule go
to ``checkpoint.pt`` (a plain ``state_dict`` bundle, read back with ``weights_only=True``), so
``resume=True`` continues an interrupted run where it stopped, with the same batches.
"""

from __future__ import annotations

import json
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

from ..data import PKSampler
from ..errors import PairLossError
from .config import TrainConfig
from .evaluate import embed, evaluate_embeddings
from .tasks import Task

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels (warn only)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """The learning-rate factor at ``step``: ``(step + 1) / warmup`` during the warm-up, then
    ``0.5 (1 + cos(pi t))`` with ``t`` the fraction of the remaining steps done."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def make_optimizer(model: nn.Module, loss: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the model (``lr``, ``weight_decay``) and the loss's parameters, if any
    (``lr * loss_lr_mult``, no weight decay)."""
    groups: list[dict[str, Any]] = [
        {"params": list(model.parameters()), "weight_decay": config.weight_decay}
    ]
    loss_params = [p for p in loss.parameters() if p.requires_grad]
    if loss_params:
        groups.append(
            {"params": loss_params, "lr": config.lr * config.loss_lr_mult, "weight_decay": 0.0}
        )
    return torch.optim.AdamW(groups, lr=config.lr)


class Progress:
    """A one-line progress display on stderr: epoch, step, loss, samples/s and ETA.

    On a terminal the line is redrawn in place; otherwise one line per epoch is printed.
    """

    def __init__(self, total_steps: int, enabled: bool = True) -> None:
        self.total, self.enabled = total_steps, enabled
        self.tty = sys.stderr.isatty()
        self.start = time.perf_counter()
        self.done = 0
        self.samples = 0

    def update(self, epoch: int, step: int, steps: int, loss: float, batch: int) -> None:
        """Record one finished step."""
        self.done += 1
        self.samples += batch
        if self.enabled and (self.tty or step == steps):
            sys.stderr.write(("\r" if self.tty else "") + self.line(epoch, step, steps, loss))
            if not self.tty:
                sys.stderr.write("\n")
            sys.stderr.flush()

    def line(self, epoch: int, step: int, steps: int, loss: float) -> str:
        """The text of the display."""
        elapsed = time.perf_counter() - self.start
        rate = self.samples / elapsed if elapsed > 0 else 0.0
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        return (
            f"epoch {epoch} step {step}/{steps} loss {loss:.4f} "
            f"{rate:,.0f} samples/s ETA {eta:,.0f}s   "
        )

    def close(self) -> None:
        """End the in-place line."""
        if self.enabled and self.tty:
            sys.stderr.write("\n")


class Trainer:
    """Trains ``model`` with ``loss`` on ``task`` as ``config`` says; see the module docstring.

    Args:
        model: the embedding model (``[B, ...] -> [B, E]``).
        loss: a pairloss loss module called as ``loss(embeddings, labels[, indices_tuple])``.
        task: the data (:class:`pairloss.train.tasks.Task`).
        config: the run's settings.
        out: the run folder (created).
        miner: optional miner called as ``miner(embeddings, labels)``.
        progress: show the progress line.
        on_epoch: optional callback ``f(record)`` after every epoch's record is written.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        task: Task,
        config: TrainConfig,
        out: str | Path,
        miner: nn.Module | None = None,
        progress: bool = True,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.model, self.loss, self.task, self.config = model, loss, task, config
        self.miner, self.on_epoch = miner, on_epoch
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.sampler = PKSampler(
            task.train_y, config.p, config.k, batches=config.batches_per_epoch, seed=config.seed
        )
        self.steps_per_epoch = len(self.sampler)
        self.total_steps = self.steps_per_epoch * config.epochs
        warmup = round(config.warmup_epochs * self.steps_per_epoch)
        self.optimizer = make_optimizer(model, loss, config)
        self.trained = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: warmup_cosine(step, warmup, self.total_steps)
        )
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.progress = progress

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: model, loss, optimizer, schedule, epoch."""
        return {
            "model": self.model.state_dict(),
            "loss": self.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "epoch": self.epoch,
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
            epoch = int(state["epoch"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PairLossError(
                f"resume: {path} does not fit this run's model, loss or optimizer ({first}); "
                "expected a checkpoint of the same settings, or start a new run with another --out"
            ) from None
        self.epoch = epoch
        self.history = history[: self.epoch]
        return True

    def evaluate(self) -> dict[str, float]:
        """The protocol's metrics on the task's test split."""
        x, y = self.task.test_x, self.task.test_y
        return evaluate_embeddings(embed(self.model, x), y, self.task.protocol, self.config.seed)

    def _step(self, idx: list[int]) -> float:
        x, y = self.task.train_x[idx], self.task.train_y[idx]
        emb = self.model(x)
        if self.miner is not None:
            value = self.loss(emb, y, self.miner(emb, y))
        else:
            value = self.loss(emb, y)
        if not torch.isfinite(value):
            raise PairLossError(
                f"loss: the training loss became {float(value.detach())} at epoch {self.epoch + 1}; "
                "try a lower lr or check the loss options"
            )
        self.optimizer.zero_grad(set_to_none=True)
        value.backward()
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.trained, self.config.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        return float(value.detach())

    def fit(self) -> list[dict[str, Any]]:
        """Train the remaining epochs; return one record per epoch (also in ``metrics.jsonl``)."""
        progress = Progress(self.steps_per_epoch * (self.config.epochs - self.epoch), self.progress)
        self.model.train()
        while self.epoch < self.config.epochs:
            self.sampler.set_epoch(self.epoch)
            start, losses = time.perf_counter(), []
            for step, idx in enumerate(self.sampler, 1):
                losses.append(self._step(idx))
                progress.update(self.epoch + 1, step, self.steps_per_epoch, losses[-1], len(idx))
            self.epoch += 1
            record: dict[str, Any] = {
                "epoch": self.epoch,
                "train_loss": float(np.mean(losses)),
                "lr": self.schedule.get_last_lr()[0],
                "train_seconds": time.perf_counter() - start,
            }
            if self.epoch % self.config.eval_every == 0 or self.epoch == self.config.epochs:
                record.update(self.evaluate())
            self.history.append(record)
            write_history(self.out / METRICS, self.history)
            self.save()
            if self.on_epoch is not None:
                self.on_epoch(record)
        progress.close()
        return self.history


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


def write_history(path: Path, history: list[dict[str, Any]]) -> None:
    """One JSON object per line, per epoch."""
    path.write_text("".join(json.dumps(r) + "\n" for r in history))


def read_history(path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (empty when missing); a line that is not a JSON object
    raises :class:`PairLossError` naming the file and the line."""
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PairLossError(f"{path}: not UTF-8 text ({exc.reason}); expected JSON lines") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PairLossError(
                f"{path}: line {number} is not valid JSON ({exc.msg}); expected one JSON object "
                "per epoch"
            ) from None
        if not isinstance(record, dict):
            raise PairLossError(f"{path}: line {number} is not a JSON object")
        records.append(record)
    return records
