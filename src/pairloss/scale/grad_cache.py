"""GradCache: the exact gradient of a batch larger than the encoder's activations fit in memory.

Gao, Zhang, Han & Callan, "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup" (RepL4NLP 2021). A contrastive loss couples every pair of the batch, but its gradient
with respect to the encoder's parameters factors through the embeddings:
dL/dtheta = sum_i (dL/de_i) (de_i/dtheta). So:

1. embed the batch chunk by chunk without a graph, saving each chunk's CPU and CUDA random
   states (dropout masks are drawn again identically later);
2. one loss call on all the embeddings gives the loss and dL/d(embeddings) (the blocked engine
   computes it without a B x B graph);
3. re-run each chunk with a graph, under its saved random state, and push its slice of
   dL/d(embeddings) into it (one backward per chunk; activations of one chunk at a time).

The parameters' gradients equal those of the plain step that embeds the whole batch with a
graph (with the same random draws), at the cost of a second forward pass. Batch normalisation
sees chunk statistics and updates its running statistics in both passes (as in the paper's
implementation); models with layer normalisation (transformers) are unaffected.

With a distributed loss (``gather="exact"``, :class:`~pairloss.scale.DistributedLossWrapper`)
each process embeds its own batch and the loss is that of the global batch; the encoders'
gradients are then averaged over the group at the end (as DistributedDataParallel would; an
encoder wrapped in DDP is run through its ``.module``, so that the chunk passes, whose number
may differ between processes, run no collective).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import PairLossError
from ..validation import check_callable, check_int
from .distributed import average_gradients, is_distributed


@dataclass
class RandomState:
    """The CPU random state and that of each CUDA device in use, to replay a forward pass with
    the same random draws (dropout masks)."""

    cpu: torch.Tensor
    cuda: dict[int, torch.Tensor]

    @classmethod
    def capture(cls, devices: Sequence[int] = ()) -> RandomState:
        """The current states of the CPU generator and of CUDA ``devices``."""
        return cls(torch.get_rng_state(), {d: torch.cuda.get_rng_state(d) for d in devices})

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Run the block from this state; the generators are restored afterwards."""
        with torch.random.fork_rng(devices=list(self.cuda), device_type="cuda"):
            torch.set_rng_state(self.cpu)
            for d, state in self.cuda.items():
                torch.cuda.set_rng_state(state, d)
            yield


def _cuda_devices(chunk) -> list[int]:
    """The CUDA devices whose random state a forward pass on ``chunk`` may draw from."""
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return []
    found = {torch.cuda.current_device()}
    for t in _tensors(chunk):
        if t.is_cuda:
            found.add(t.device.index)
    return sorted(found)


def _tensors(batch) -> list[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        return [batch]
    if isinstance(batch, Mapping):
        return [t for v in batch.values() for t in _tensors(v)]
    if isinstance(batch, (tuple, list)):
        return [t for v in batch for t in _tensors(v)]
    return []


def batch_length(batch) -> int:
    """Rows of a batch: a tensor, a mapping of tensors (e.g. a tokenizer's output), or a
    tuple/list of tensors (all with the same first dimension), or a list of items."""
    tensors = _tensors(batch)
    if tensors:
        n = tensors[0].shape[0]
        if any(t.shape[0] != n for t in tensors):
            raise PairLossError(
                "inputs: tensors of one batch differ in their first dimension; expected one "
                "row per example in each"
            )
        return n
    if isinstance(batch, (list, tuple)):
        return len(batch)
    raise PairLossError(
        f"inputs: expected a tensor, a dict or a list of tensors, or a list, got "
        f"{type(batch).__name__}"
    )


def split_batch(batch, chunk_size: int) -> list:
    """``batch`` cut into chunks of ``chunk_size`` rows (the last may be shorter); mappings
    (as plain dicts), tuples and lists of tensors are cut alongside, other mapping values are
    kept as they are."""
    n = batch_length(batch)
    return [_slice(batch, lo, min(n, lo + chunk_size)) for lo in range(0, n, chunk_size)]


def _slice(batch, lo: int, hi: int):
    if isinstance(batch, torch.Tensor):
        return batch[lo:hi]
    if isinstance(batch, Mapping):
        return {k: _slice(v, lo, hi) if _tensors(v) else v for k, v in batch.items()}
    if isinstance(batch, tuple) and _tensors(batch):
        return tuple(_slice(v, lo, hi) for v in batch)
    if isinstance(batch, list) and _tensors(batch):
        return [_slice(v, lo, hi) for v in batch]
    return batch[lo:hi]


def _unwrap(encoder):
    """The module inside a DistributedDataParallel wrapper (its forward runs collectives)."""
    if isinstance(encoder, nn.parallel.DistributedDataParallel):
        return encoder.module
    return encoder


def _parameters(modules) -> list[nn.Parameter]:
    seen, out = set(), []
    for m in modules:
        if isinstance(m, nn.Module):
            for p in m.parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
    return out


def grad_cache_step(
    loss_fn: Callable[..., torch.Tensor],
    towers: Sequence[tuple[Callable, object]],
    chunk_size: int,
    autocast: torch.dtype | None = None,
    group=None,
) -> torch.Tensor:
    """One GradCache step: the gradients of ``loss_fn(*embeddings)`` with respect to the
    encoders' parameters, accumulated into their ``.grad``, embedding ``chunk_size`` rows at a
    time. Returns the loss (detached).

    Args:
        loss_fn: called once with the embeddings of every tower, in order (each [B_t, D],
            detached, requiring grad), returns a scalar; e.g. a pairloss loss with
            ``gather="exact"`` for the global batch of a process group.
        towers: ``(encoder, inputs)`` per tower: one tower (e.g. images and their labels in
            the loss), or two with different encoders (queries and documents), or the same
            encoder twice. ``encoder(chunk)`` returns the [b, D] embeddings of a chunk of
            ``inputs`` (a tensor, a dict of tensors such as a tokenizer's output, or a list;
            see :func:`split_batch`).
        chunk_size: rows per forward pass.
        autocast: a dtype (e.g. ``torch.bfloat16``) to run the encoders under
            :func:`torch.autocast` on the inputs' device type; the loss then runs in float32
            on the embeddings.
        group: the process group of a distributed loss (default: the world, if one is
            initialised): the encoders' and the loss's parameter gradients are averaged over
            it at the end.

    Paper: Gao et al. 2021 (see the module docstring). Checked: with dropout on, the
    parameters' gradients equal the plain step's in float64 (tests/scale/test_grad_cache.py).
    """
    check_callable(loss_fn, "loss_fn")
    chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
    if not isinstance(towers, (list, tuple)) or not towers:
        raise PairLossError("towers: expected a non-empty list of (encoder, inputs) pairs")
    encoders, chunked = [], []
    for i, tower in enumerate(towers):
        if not isinstance(tower, (list, tuple)) or len(tower) != 2:
            raise PairLossError(f"towers[{i}]: expected an (encoder, inputs) pair")
        encoders.append(_unwrap(check_callable(tower[0], f"towers[{i}] encoder")))
        chunked.append(split_batch(tower[1], chunk_size))

    def forward(encoder, chunk) -> torch.Tensor:
        if autocast is None:
            return encoder(chunk)
        device = next(iter(_tensors(chunk)), torch.empty(0)).device.type
        with torch.autocast(device, dtype=autocast):
            return encoder(chunk)

    embeddings, states = [], []
    with torch.no_grad():
        for encoder, chunks in zip(encoders, chunked):
            parts, saved = [], []
            for chunk in chunks:
                saved.append(RandomState.capture(_cuda_devices(chunk)))
                parts.append(forward(encoder, chunk))
            states.append(saved)
            e = torch.cat(parts)
            embeddings.append((e.float() if autocast is not None else e).requires_grad_(True))
    loss = loss_fn(*embeddings)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise PairLossError("loss_fn: expected it to return a scalar tensor")
    loss.backward()
    for encoder, chunks, saved, e in zip(encoders, chunked, states, embeddings):
        lo = 0
        for chunk, state in zip(chunks, saved):
            with state.replay():
                out = forward(encoder, chunk)
            hi = lo + out.shape[0]
            if e.grad is not None:
                out.backward(e.grad[lo:hi].to(out.dtype))
            lo = hi
    if is_distributed(group):
        params = _parameters([*encoders, loss_fn])
        for p in params:
            if p.grad is None:  # a process without rows: every process averages the same list
                p.grad = torch.zeros_like(p)
        average_gradients(params, group)
    return loss.detach()
