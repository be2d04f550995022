"""The trainer at scale: data-parallel processes, GradCache and a cross-batch memory.

Three settings of :class:`~pairloss.train.TrainConfig`, each independent of the others:

- ``nproc=N`` (``--nproc N``): N processes on this machine (gloo on the CPU; NCCL when there is
  a CUDA device per process), or the processes of ``torchrun`` (read from the environment:
  ``RANK``, ``WORLD_SIZE``, ...). Every rank draws its own batches (the task's
  ``batches(config, rank, world_size)``: for labelled data, disjoint P x K batches of the same
  seeded sequence, ``batches_per_epoch`` counted over all ranks), the model runs inside
  :class:`~torch.nn.parallel.DistributedDataParallel`, and the loss is switched to
  ``gather="exact"`` (:func:`pairloss.scale.set_gather`): its value and every gradient (model
  and loss parameters, whose gradients are averaged over the ranks like DDP's) are those of one
  process on the global batch of ``N`` local batches. A miner is applied inside the loss, on the
  global batch. Rank 0 alone evaluates, logs and writes the run folder; the other ranks train.
- ``chunk_size=C`` (``--chunk-size C``): GradCache (:func:`pairloss.scale.grad_cache_step`):
  the batch is embedded C rows at a time without a graph, the loss is called once on all the
  embeddings, and each chunk is run again with its gradient; the parameters' gradients equal the
  plain step's (random draws such as dropout are replayed), with the activations of one chunk
  in memory. BatchNorm sees chunk statistics.
- ``memory_size=M`` (``--memory-size M``): the loss is wrapped in a
  :class:`~pairloss.scale.CrossBatchMemory` of the last M embeddings (pytorch-metric-learning's
  XBM); with N processes the global batch is enqueued, so the memory is the same on every rank.
  M must hold the global batch.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..errors import PairLossError
from ..scale import CrossBatchMemory, average_gradients, grad_cache_step, set_gather
from ..scale.distributed import is_distributed
from ..scale.launch import init_from_env, spawn

TIMEOUT = 3 * 3600.0
"""Seconds a collective of a spawned group waits: rank 0 evaluates while the others wait."""


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the joined process group, ``(0, 1)`` without one."""
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _torchrun_size() -> int:
    """The ``WORLD_SIZE`` that ``torchrun`` set, or 1."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise PairLossError(
            f"WORLD_SIZE: {os.environ['WORLD_SIZE']!r} in the environment is not an integer"
        ) from None


def world_size_of(config: Any) -> int:
    """The number of processes ``config`` trains with (``nproc``, or torchrun's)."""
    return max(config.nproc, _torchrun_size())


def check_scale(config: Any) -> None:
    """Refuse scale settings that cannot work, before anything runs: ``nproc`` other than
    torchrun's number of processes, a memory for a loss that does not take embeddings and
    labels or that cannot hold the global batch, GradCache with float16 on CUDA (it has no
    gradient scaler)."""
    from ..catalogue import find
    from .trainer import resolve_device

    launched = _torchrun_size()
    if launched > 1 and config.nproc not in (1, launched):
        raise PairLossError(
            f"nproc: {config.nproc}, but torchrun started {launched} processes; drop --nproc "
            "under torchrun"
        )
    if config.memory_size is not None:
        entry = find(config.loss)
        if entry.inputs != "embeddings":
            raise PairLossError(
                f"memory_size: a cross-batch memory holds embeddings with labels for a pair "
                f"loss; {entry.name} takes {entry.inputs}; drop --memory-size"
            )
        batch = config.p * config.k * world_size_of(config)
        if config.memory_size < batch:
            raise PairLossError(
                f"memory_size: {config.memory_size} cannot hold the global batch of {batch} "
                f"embeddings (P x K x processes); expected at least {batch}"
            )
    cuda = resolve_device(config.device).type == "cuda"
    if config.chunk_size is not None and config.amp and cuda:
        raise PairLossError(
            "chunk_size: GradCache runs without a gradient scaler, which float16 on CUDA "
            "(--amp) needs; drop --amp or --chunk-size"
        )


# ----------------------------------------------------------------------------- the processes


def needs_launch(config: Any) -> bool:
    """Whether :func:`launch` must start the processes (``nproc > 1``, no group joined yet)."""
    return config.nproc > 1 and not is_distributed()


def join_torchrun() -> None:
    """Join the group that ``torchrun`` describes in the environment, if any."""
    if _torchrun_size() > 1:
        init_from_env()


def _run_rank(rank: int, world_size: int, values: dict, progress: bool, resume: bool):
    from .config import from_dict
    from .run import train_run

    config = from_dict(values, "config")
    return train_run(config, progress=progress and rank == 0, resume=resume)


def launch(config: Any, progress: bool, resume: bool) -> Any:
    """Run :func:`pairloss.train.train_run` in ``config.nproc`` new processes of one process
    group (rank 0 prints); rank 0's result. A :class:`PairLossError` in a process is raised
    here with its message."""
    from .trainer import resolve_device

    cuda = resolve_device(config.device).type == "cuda"
    backend = "nccl" if cuda and torch.cuda.device_count() >= config.nproc else "gloo"
    threads = config.threads or max(1, (os.cpu_count() or 1) // config.nproc)
    try:
        results = spawn(
            _run_rank,
            config.nproc,
            config.to_dict(),
            progress,
            resume,
            backend=backend,
            timeout=TIMEOUT,
            threads=threads,
        )
    except torch.multiprocessing.ProcessRaisedException as exc:
        found = re.findall(r"PairLossError: (.*)", str(exc))
        if found:
            raise PairLossError(found[-1]) from None
        raise
    return results[0]


def device_of_rank(device: torch.device, rank: int) -> torch.device:
    """The CUDA device of ``rank`` when ``device`` is CUDA without an index and there is a
    device per rank; else ``device``."""
    if device.type == "cuda" and device.index is None and is_distributed():
        count = torch.cuda.device_count()
        if count >= dist.get_world_size():
            return torch.device("cuda", rank % count)
    return device


# ------------------------------------------------------------------------------- the model


def parallel_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` inside DistributedDataParallel in a process group (its parameters are
    broadcast from rank 0), else ``model``."""
    if not is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def scaled_loss(loss: nn.Module, config: Any) -> nn.Module:
    """``loss`` in a :class:`CrossBatchMemory` (``memory_size``), switched to the global batch
    (``gather="exact"``) in a process group."""
    if config.memory_size is not None:
        loss = CrossBatchMemory(loss, config.embedding_size, config.memory_size)
    if is_distributed():
        set_gather(loss, "exact")
    return loss


def release(loss: nn.Module) -> None:
    """Switch a loss of :func:`scaled_loss` back to the local batch (after training, rank 0
    evaluates alone)."""
    if getattr(loss, "_pairloss_gather", None) is not None:
        set_gather(loss, None)


def average_loss_gradients(loss: nn.Module) -> None:
    """Average the gradients of the loss's own parameters over the process group (the loss is
    outside the DDP module)."""
    if is_distributed():
        average_gradients([p for p in loss.parameters() if p.requires_grad])


def chunked_loss(trainer: Any, batch: Any) -> torch.Tensor:
    """One GradCache step of ``trainer`` on ``batch``: the loss (detached), with the
    parameters' gradients in their ``.grad`` (zeroed first)."""
    inputs, finish = trainer.task.encoder_inputs(batch, trainer.device, trainer.step)

    def loss_fn(embeddings: torch.Tensor) -> torch.Tensor:
        args, kwargs = finish(embeddings)
        if trainer.miner is not None:
            kwargs = {**kwargs, "indices_tuple": trainer.miner}
        return trainer.loss(*args, **kwargs)

    trainer.optimizer.zero_grad(set_to_none=True)
    return grad_cache_step(
        loss_fn, [(trainer.model, inputs)], trainer.config.chunk_size, trainer.amp_dtype
    )


__all__ = [
    "average_loss_gradients",
    "check_scale",
    "chunked_loss",
    "device_of_rank",
    "join_torchrun",
    "launch",
    "needs_launch",
    "parallel_model",
    "release",
    "scaled_loss",
    "world",
    "world_size_of",
]
