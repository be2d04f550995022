"""Exact at any scale: the global batch of several processes, batches beyond memory, and
candidates from earlier batches.

- :mod:`.distributed`: any loss over a torch.distributed group, equal to one process on the
  concatenated batch (``gather="exact"`` on a loss, :func:`set_gather`, or
  pytorch-metric-learning's :class:`DistributedLossWrapper`);
- :mod:`.grad_cache`: GradCache, a batch embedded in chunks and back-propagated chunk by chunk;
- :mod:`.memory`: memory banks, :class:`CrossBatchMemory` (XBM) and a MoCo-style
  :class:`MemoryQueue` with a momentum encoder;
- :mod:`.launch`: a local process group for data-parallel runs on one machine.
"""

from .distributed import (
    DistributedLossWrapper,
    average_gradients,
    batch_ids,
    gather_rows,
    is_distributed,
    set_gather,
)
from .grad_cache import RandomState, grad_cache_step, split_batch
from .launch import init_from_env, spawn
from .memory import CrossBatchMemory, MemoryQueue, MomentumEncoder

__all__ = [
    "CrossBatchMemory",
    "DistributedLossWrapper",
    "MemoryQueue",
    "MomentumEncoder",
    "RandomState",
    "average_gradients",
    "batch_ids",
    "gather_rows",
    "grad_cache_step",
    "init_from_env",
    "is_distributed",
    "set_gather",
    "spawn",
    "split_batch",
]
