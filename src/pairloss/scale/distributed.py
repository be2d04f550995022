"""Any loss over the processes of a torch.distributed group, equal to one process on the
concatenated batch.

Every process passes its own batch. The batch-major inputs (embeddings, labels, reference sets,
index tuples, slates, log-probabilities: every tensor argument with a batch dimension) are
gathered in rank order, the embeddings with gradient, so that every process holds the same
global batch; uneven local batch sizes are fine. The loss is then evaluated on the global batch
with the pair engine's rows split among the processes (:func:`pairloss.engine.sharded_rows`):
each process walks its own anchors against all candidates, the normalisers (anchors, pairs,
non-zero terms) are summed over the processes, and every process returns the same value, the
loss of the global batch. Anything a loss computes outside the engine (centroids, miners' row
statistics, regularisers) is computed identically on every process.

Gradients travel as parts: what the processes' backward passes produce sums, over the
processes, to ``world_size`` times the gradient of the global loss, so that the mean that
DistributedDataParallel takes is exactly the gradient of one process on the concatenated batch.
After ``loss.backward()`` a process's ``embeddings.grad`` is ``world_size`` times the
single-process gradient of its own rows, and the loss's own parameters (proxies, a learnable
scale) average over the processes to their single-process gradient (average them with
:func:`average_gradients` if the loss is not inside the DDP module). The gather's backward sums
each row's gradient over the processes and hands it to the process that owns the row (an
all-reduce of the gathered gradient, then the own rows: the same collectives on gloo and NCCL);
an engine call whose upstream gradient arrives in parts sums it first, so a loss that feeds one
engine result into another stays exact. A loss that draws random numbers (e.g. sampled
triplets) must draw the same on every process: seed the processes alike.

Peers get this wrong in three known ways (no gradient through the gather; a 1/world_size scale;
dropped terms, as pytorch-metric-learning's ``efficient=True``); the tests hold W processes
equal to one process in float64.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..engine import sharded_rows
from ..errors import PairLossError
from ..validation import check_bool, check_choice

MODES = ("exact", "replicated")
"""``"exact"``: each process walks its own anchor rows (the work is split); ``"replicated"``:
each process evaluates the whole global loss (the same result, W times the work)."""

_GATHERED: contextvars.ContextVar[bool] = contextvars.ContextVar("pairloss_gathered", default=False)


def is_distributed(group=None) -> bool:
    """Whether a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group=group) > 1


def _comm_device(group, tensor: torch.Tensor) -> torch.device:
    """Where a collective of ``group`` wants its tensors: CUDA for NCCL, the CPU for gloo, the
    tensor's own device for a group that has both."""
    backend = str(dist.get_backend(group)).lower()
    if "nccl" in backend and "gloo" not in backend:
        return torch.device("cuda", torch.cuda.current_device())
    if "gloo" in backend and "nccl" not in backend:
        return torch.device("cpu")
    return tensor.device


def _all_reduce_(t: torch.Tensor, group) -> torch.Tensor:
    """Sum ``t`` over the group, in place (through the communication device if needed)."""
    device = _comm_device(group, t)
    x = t if t.device == device else t.to(device)
    dist.all_reduce(x, group=group)
    if x is not t:
        t.copy_(x)
    return t


def _all_gather_rows(x: torch.Tensor, group, sizes: list[int]) -> torch.Tensor:
    """The rows of every process (``sizes[r]`` of them on rank ``r``) concatenated in rank
    order, on ``x``'s device and dtype."""
    device = _comm_device(group, x)
    wire = x.to(device)
    if wire.dtype == torch.bool:
        wire = wire.to(torch.uint8)
    most = max(sizes)
    if wire.shape[0] < most:
        pad = wire.new_zeros((most - wire.shape[0], *wire.shape[1:]))
        wire = torch.cat([wire, pad])
    parts = [torch.empty_like(wire) for _ in sizes]
    dist.all_gather(parts, wire.contiguous(), group=group)
    out = torch.cat([p[:n] for p, n in zip(parts, sizes)])
    return out.to(device=x.device, dtype=x.dtype)


class _GatherRows(torch.autograd.Function):
    """All processes' rows with gradient: the backward sums the gathered gradient over the
    processes and keeps the own rows (each row's gradient goes back to its owner)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group, sizes: list[int], rank: int):
        ctx.group = group
        ctx.lo, ctx.hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
        return _all_gather_rows(x, group, sizes)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        summed = _all_reduce_(grad.contiguous().clone(), ctx.group)
        return summed[ctx.lo : ctx.hi], None, None, None


def gather_rows(x: torch.Tensor, group=None, sizes: list[int] | None = None) -> torch.Tensor:
    """``x`` [n_r, ...] of every process concatenated in rank order along dim 0, with
    gradient when ``x`` requires it (the backward returns to each process the summed gradient
    of its own rows). ``sizes`` (rows per rank) is exchanged when not given; uneven sizes are
    fine. Without a process group of more than one process, ``x`` itself."""
    if not is_distributed(group):
        return x
    if sizes is None:
        sizes = _exchange_sizes(x.shape[0], group)
    rank = dist.get_rank(group=group)
    if x.requires_grad and torch.is_grad_enabled():
        return _GatherRows.apply(x, group, sizes, rank)
    return _all_gather_rows(x, group, sizes)


def _exchange_sizes(n: int, group) -> list[int]:
    t = torch.tensor([n], dtype=torch.long)
    world = dist.get_world_size(group=group)
    return [int(v) for v in _all_gather_rows(t, group, [1] * world)]


def batch_ids(n: int, group=None, device=None) -> torch.Tensor:
    """Ids ``offset .. offset + n - 1`` that are unique over the processes of ``group``
    (``offset``: the rows of the ranks before this one): labels for instance discrimination
    (query i's positive is document i) that stay right when the batches are gathered. Without
    a process group, ``arange(n)``."""
    offset = 0
    if is_distributed(group):
        offset = sum(_exchange_sizes(n, group)[: dist.get_rank(group=group)])
    return torch.arange(offset, offset + n, device=device)


@dataclass
class GroupShard:
    """The engine's :class:`~pairloss.engine.RowShard` for a torch.distributed group.

    A process walks the rows it owns when the anchors are the gathered batch (``sizes``: rows
    per rank), else an even split of the anchor rows (e.g. class proxies as anchors)."""

    group: object
    parts: int
    rank: int
    sizes: list[int] | None = None

    def rows(self, n_rows: int) -> tuple[int, int]:
        return self._rows_of(self.rank, n_rows)

    def _rows_of(self, rank: int, n_rows: int) -> tuple[int, int]:
        if self.sizes is not None and sum(self.sizes) == n_rows:
            lo = sum(self.sizes[:rank])
            return lo, lo + self.sizes[rank]
        return n_rows * rank // self.parts, n_rows * (rank + 1) // self.parts

    def all_sum_(self, t: torch.Tensor) -> torch.Tensor:
        return _all_reduce_(t, self.group)

    def all_rows(self, local: torch.Tensor, n_rows: int) -> torch.Tensor:
        sizes = [hi - lo for lo, hi in (self._rows_of(r, n_rows) for r in range(self.parts))]
        return _all_gather_rows(local, self.group, sizes)


# ---------------------------------------------------------------- gathering a loss's arguments


@dataclass
class _Leaf:
    path: str
    tensor: torch.Tensor
    refers_to: str | None = None  # index leaves: the argument whose rows they index


def _collect(name: str, value, out: list[_Leaf]) -> None:
    if isinstance(value, torch.Tensor):
        if value.dim() >= 1:
            out.append(_Leaf(name, value))
    elif isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            _collect(f"{name}[{i}]", v, out)


def _index_targets(n: int, anchors: str, reference: str) -> list[str]:
    """What each index tensor of a PML ``indices_tuple`` indexes: anchors or candidates."""
    if n == 3:
        return [anchors, reference, reference]
    return [anchors, reference, anchors, reference]


def _leaves(arguments: dict, replicated: Iterable[str]) -> list[_Leaf]:
    """The batch-major tensors among a call's ``arguments`` (name -> value)."""
    names = list(arguments)
    anchors = names[0] if names else ""
    reference = "ref_emb" if isinstance(arguments.get("ref_emb"), torch.Tensor) else anchors
    skip = set(replicated)
    out: list[_Leaf] = []
    for name, value in arguments.items():
        if name in skip:
            continue
        if (
            name == "indices_tuple"
            and isinstance(value, (tuple, list))
            and len(value) in (3, 4)
            and all(isinstance(v, torch.Tensor) for v in value)
        ):
            for i, (v, target) in enumerate(
                zip(value, _index_targets(len(value), anchors, reference))
            ):
                out.append(_Leaf(f"{name}[{i}]", v, target))
            continue
        _collect(name, value, out)
    return out


def _describe(leaf: _Leaf) -> str:
    t = leaf.tensor
    return f"{t.dtype}:{t.dim()}:{tuple(t.shape[1:])}:{t.requires_grad}"


def _exchange(leaves: list[_Leaf], group) -> list[list[int]]:
    """Check that every process passes the same arguments (same tensors, dtypes, trailing
    shapes, gradient flags) and return the rows of each leaf on each rank, [leaf][rank]."""
    world = dist.get_world_size(group=group)
    paths = "|".join(leaf.path for leaf in leaves)
    head = torch.tensor([len(leaves), zlib.crc32(paths.encode())], dtype=torch.long)
    heads = _all_gather_rows(head[None], group, [1] * world)
    if not bool((heads == heads[0]).all()):
        raise PairLossError(
            "inputs: the processes pass different tensor arguments (one gives a tensor where "
            "another gives None, or index tuples of different lengths); expected the same "
            f"arguments on every process (this process: {paths or 'none'})"
        )
    if not leaves:
        return []
    table = torch.tensor(
        [[leaf.tensor.shape[0], zlib.crc32(_describe(leaf).encode())] for leaf in leaves],
        dtype=torch.long,
    )
    tables = _all_gather_rows(table[None], group, [1] * world)  # [world, leaves, 2]
    for i, leaf in enumerate(leaves):
        if not bool((tables[:, i, 1] == tables[0, i, 1]).all()):
            raise PairLossError(
                f"{leaf.path}: differs across the processes in dtype, number of dimensions, "
                "trailing shape or requires_grad; expected the same on every process (this "
                f"process: dtype {leaf.tensor.dtype}, shape {tuple(leaf.tensor.shape)}, "
                f"requires_grad={leaf.tensor.requires_grad})"
            )
    return [[int(v) for v in tables[:, i, 0]] for i in range(len(leaves))]


def _rebuild(value, path: str, gathered: dict):
    if isinstance(value, torch.Tensor):
        return gathered.get(path, value)
    if isinstance(value, (tuple, list)):
        items = [_rebuild(v, f"{path}[{i}]", gathered) for i, v in enumerate(value)]
        if isinstance(value, list):
            return items
        if hasattr(value, "_fields"):  # a named tuple keeps its type
            return type(value)(*items)
        # a plain tuple of the gathered indices (a miner's output keeps its link to the local
        # tensors it was mined on, which the gathered batch is not)
        return tuple(items)
    return value


@dataclass
class GatheredCall:
    """A call's arguments gathered over the processes, and how to run it on them."""

    arguments: inspect.BoundArguments
    shard: GroupShard | None

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Run the loss on the gathered arguments: its engine calls walk this process's rows
        (mode "exact"), and nested losses do not gather again."""
        token = _GATHERED.set(True)
        try:
            with sharded_rows(self.shard):
                yield
        finally:
            _GATHERED.reset(token)


def row_mode(loss: object, mode: str) -> str:
    """``mode``, except ``"replicated"`` for a loss whose class sets ``needs_all_rows``: one
    that collects statistics inside its own engine walks (histograms, means of all pairs), which
    a split of the rows would leave partial. Every process then evaluates all rows: the same
    value and gradients, W times the work."""
    return "replicated" if getattr(loss, "needs_all_rows", False) else mode


def gather_call(
    forward, args: tuple, kwargs: dict, mode: str = "exact", group=None, replicated=()
) -> GatheredCall:
    """Gather the batch-major arguments of the call ``forward(*args, **kwargs)`` over ``group``.

    Every tensor argument with at least one dimension is concatenated along dim 0 in rank
    order (with gradient where it requires one), tuples and lists element by element; a
    pytorch-metric-learning ``indices_tuple`` of index tensors is concatenated with each rank's
    indices shifted by the rows of the ranks before it (of the first argument, the anchors, or
    of ``ref_emb`` for the candidates when given). 0-d tensors, other values and the arguments
    named in ``replicated`` (e.g. a loss's class-level ``replicated_inputs``) are passed as
    they are: they must be the same on every process. Raises :class:`PairLossError` on every
    process if the processes pass different arguments (which would otherwise hang)."""
    check_choice(mode, "gather", MODES)
    try:
        bound = inspect.signature(forward).bind(*args, **kwargs)
    except TypeError as err:
        raise PairLossError(f"inputs: {err}; expected the loss's own arguments") from None
    leaves = _leaves(bound.arguments, replicated)
    sizes = _exchange(leaves, group)
    rank = dist.get_rank(group=group)
    rows_of = {leaf.path: s for leaf, s in zip(leaves, sizes)}
    gathered = {}
    for leaf, s in zip(leaves, sizes):
        out = gather_rows(leaf.tensor, group, s)
        if leaf.refers_to is not None:
            target = rows_of.get(leaf.refers_to)
            if target is None:
                raise PairLossError(
                    f"{leaf.path}: indexes {leaf.refers_to!r}, which is not a gathered batch; "
                    "expected index tuples into the batch"
                )
            starts = torch.tensor([sum(target[:r]) for r in range(len(target))])
            shift = torch.repeat_interleave(starts, torch.tensor(s)).to(out.device)
            out = out + shift.to(out.dtype)
        gathered[leaf.path] = out
    for name, value in list(bound.arguments.items()):
        bound.arguments[name] = _rebuild(value, name, gathered)
    anchors = sizes[0] if leaves and leaves[0].path == next(iter(bound.arguments)) else None
    shard = None
    if mode == "exact":
        shard = GroupShard(group, dist.get_world_size(group=group), rank, anchors)
    return GatheredCall(bound, shard)


# ---------------------------------------------------------------- the switch and the wrapper


def _pre_hook(module: nn.Module, args: tuple, kwargs: dict):
    scopes = module.__dict__.setdefault("_pairloss_scopes", [])
    scopes.append(None)  # popped by _post_hook, which also runs when this hook raises
    mode, group = module._pairloss_gather
    if mode is None or _GATHERED.get() or not is_distributed(group):
        return None
    replicated = getattr(module, "replicated_inputs", ())
    call = gather_call(module.forward, args, kwargs, row_mode(module, mode), group, replicated)
    stack = contextlib.ExitStack()
    stack.enter_context(call.scope())
    scopes[-1] = stack
    return call.arguments.args, call.arguments.kwargs


def _post_hook(module: nn.Module, args: tuple, kwargs: dict, output):
    scopes = module.__dict__.get("_pairloss_scopes")
    if scopes:
        stack = scopes.pop()
        if stack is not None:
            stack.close()
    return None


def set_gather(loss: nn.Module, gather: str | None = "exact", group=None) -> nn.Module:
    """Switch ``loss`` (any loss module) to the global batch of a torch.distributed group.

    ``gather="exact"``: every call gathers the batch-major arguments over ``group`` (default:
    the world) and evaluates the loss of the global batch with the engine's rows split among
    the processes; ``"replicated"``: the same result, each process evaluating all rows;
    ``None``: the loss of the local batch (the default of every loss). Without a process group
    of more than one process the loss runs as is. Returns ``loss`` (switched in place; its
    parameters and state_dict keys are unchanged). The losses' constructors take the same
    switch as ``gather=``.

    A loss class whose forward takes tensors that are the same on every process (not a batch)
    names them in a class attribute ``replicated_inputs``. Batch arguments must be row-aligned
    for the concatenation to be the global batch: documents with k hard negatives each as
    [B, 1 + k, D], not as [positives; negatives] stacked along the rows (whose concatenation
    over processes would pair anchors with other processes' negatives).
    """
    if gather is not None:
        check_choice(gather, "gather", MODES)
    if not isinstance(loss, nn.Module):
        raise PairLossError(f"loss: expected a torch.nn.Module loss, got {type(loss).__name__}")
    loss._pairloss_gather = (gather, group)
    if not getattr(loss, "_pairloss_gather_hooked", False):
        loss.register_forward_pre_hook(_pre_hook, with_kwargs=True)
        loss.register_forward_hook(_post_hook, with_kwargs=True, always_call=True)
        loss._pairloss_gather_hooked = True
    return loss


class DistributedLossWrapper(nn.Module):
    """pytorch-metric-learning's ``DistributedLossWrapper(loss, efficient=False)``, exact.

    Wraps any loss module (every pairloss loss, :class:`~pairloss.scale.CrossBatchMemory`,
    :class:`~pairloss.scale.MemoryQueue`) and calls it with the same arguments on each
    process; the result is the loss of the concatenated global batch on every process, and the
    gradients are such that DistributedDataParallel's mean gives the single-process gradient
    (see the module docstring).

    ``efficient=True`` splits the engine's anchor rows among the processes (each walks its own
    anchors against all candidates); ``efficient=False`` (pytorch-metric-learning's default)
    has every process evaluate the whole global loss. Both are exact here, unlike in
    pytorch-metric-learning, whose efficient mode drops the gradient that other processes'
    anchors send to this process's embeddings. Differences: the returned value is the global
    loss (pytorch-metric-learning returns ``world_size`` times it; the gradients are the same
    as its non-efficient mode for the model), the global batch is in rank order on every
    process (so memory banks stay identical), and loss parameters get the exact gradient after
    averaging over the processes. Without a process group of more than one process the loss
    runs as is.
    """

    def __init__(self, loss: nn.Module, efficient: bool = False, group=None) -> None:
        super().__init__()
        if not isinstance(loss, nn.Module):
            raise PairLossError(f"loss: expected a torch.nn.Module loss, got {type(loss).__name__}")
        self.loss = loss
        self.efficient = check_bool(efficient, "efficient")
        self.group = group

    def forward(self, *args, **kwargs):
        """The wrapped loss's call, on the global batch."""
        if _GATHERED.get() or not is_distributed(self.group):
            return self.loss(*args, **kwargs)
        mode = row_mode(self.loss, "exact" if self.efficient else "replicated")
        replicated = getattr(self.loss, "replicated_inputs", ())
        call = gather_call(self.loss.forward, args, kwargs, mode, self.group, replicated)
        with call.scope():
            return self.loss(*call.arguments.args, **call.arguments.kwargs)


def average_gradients(parameters: Iterable[torch.Tensor] | nn.Module, group=None) -> None:
    """Replace each parameter's ``.grad`` by its mean over the processes of ``group`` (what
    DistributedDataParallel does), for parameters outside a DDP module, e.g. a loss's proxies.
    Parameters without a gradient are skipped (the same ones on every process)."""
    if isinstance(parameters, nn.Module):
        parameters = parameters.parameters()
    if not is_distributed(group):
        return
    world = dist.get_world_size(group=group)
    buckets: dict[tuple, list[torch.Tensor]] = {}
    for p in parameters:
        if p.grad is not None:
            buckets.setdefault((p.grad.dtype, p.grad.device), []).append(p.grad)
    for grads in buckets.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        _all_reduce_(flat, group).div_(world)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
