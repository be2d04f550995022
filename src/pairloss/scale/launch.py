"""Start a local process group: ``spawn(fn, nproc)`` runs ``fn(rank, world_size, *args)`` in
``nproc`` fresh processes joined in a torch.distributed group, and returns their results.

Meant for data-parallel training on one machine's CPU cores (gloo) and for tests; under
``torchrun`` the group already exists and :func:`init_from_env` joins it.
"""

from __future__ import annotations

import datetime
import gc
import os
import tempfile
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..validation import check_callable, check_int


def _child(
    rank: int,
    fn: Callable,
    world: int,
    store: str,
    backend: str,
    timeout: float,
    threads: int,
    out: str,
    args: tuple,
) -> None:
    torch.set_num_threads(threads)
    dist.init_process_group(
        backend,
        init_method=f"file://{store}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=timeout),
    )
    try:
        torch.save(fn(rank, world, *args), os.path.join(out, f"result{rank}.pt"))
        # Objects that hold the group (a DistributedDataParallel's reducer sits in reference
        # cycles) must go while it lives, and no rank may tear it down while another still
        # talks on it: gloo aborts the process otherwise.
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()


def spawn(
    fn: Callable,
    nproc: int,
    *args,
    backend: str = "gloo",
    timeout: float = 120.0,
    threads: int = 1,
) -> list:
    """Run ``fn(rank, world_size, *args)`` in ``nproc`` new processes of one process group.

    ``fn`` must be importable (a module-level function; the processes are started with the
    ``spawn`` method). Each process uses ``threads`` intra-op threads, joins the group with
    ``backend`` through a temporary file store (no port to pick), and collectives wait at
    most ``timeout`` seconds. Returns the results in rank order (anything :func:`torch.save`
    can write); an exception in a process is raised here with its traceback.
    """
    check_callable(fn, "fn")
    nproc = check_int(nproc, "nproc", minimum=1)
    threads = check_int(threads, "threads", minimum=1)
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "store")
        mp.start_processes(
            _child,
            args=(fn, nproc, store, backend, float(timeout), threads, tmp, args),
            nprocs=nproc,
            start_method="spawn",
            join=True,
        )
        return [
            torch.load(os.path.join(tmp, f"result{r}.pt"), weights_only=False) for r in range(nproc)
        ]


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group that ``torchrun`` describes in the environment (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) if there is one and none is joined yet;
    ``backend`` defaults to NCCL with CUDA, else gloo. Returns whether a group is joined."""
    if dist.is_initialized():
        return True
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True
