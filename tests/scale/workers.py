"""What the spawned processes of the distributed tests run.

:func:`run_all` runs on every rank of a gloo group of 3 (started once by
``pairloss.scale.spawn``; ranks 0 and 1 also form a group of 2), runs all the cases and returns,
per case, None when the distributed result equals one process on the concatenated batch
(computed on every rank from the same seed), a message saying what differed, or ``"skip: ..."``
when the loss itself refuses that input on one process. Few processes, many cases: a process
costs seconds to start.
"""

from __future__ import annotations

import copy
import functools

import torch
import torch.distributed as dist
from torch import nn

import pairloss
from pairloss.catalogue import LOSSES, example
from pairloss.errors import PairLossError
from pairloss.miners import BatchHardMiner, MultiSimilarityMiner
from pairloss.scale import (
    CrossBatchMemory,
    DistributedLossWrapper,
    MemoryQueue,
    average_gradients,
    batch_ids,
    grad_cache_step,
    set_gather,
)

RTOL, ATOL = 1e-9, 1e-12
SIZES = {2: [8, 4], 3: [5, 3, 4]}  # uneven local batches of a global batch of 12


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=RTOL, atol=ATOL))


def worst(a: torch.Tensor, b: torch.Tensor) -> str:
    if a.shape != b.shape:
        return f"shapes {tuple(a.shape)} vs {tuple(b.shape)}"
    return f"max |diff| {float((a - b).abs().max()):.3g} (scale {float(b.abs().max()):.3g})"


def bounds(sizes: list[int], rank: int) -> tuple[int, int]:
    lo = sum(sizes[:rank])
    return lo, lo + sizes[rank]


def row_split(call: dict, sizes: list[int], rank: int, keep=()) -> dict:
    """This rank's part of a global call: rows of every batch-major tensor (not ``keep``)."""
    lo, hi = bounds(sizes, rank)
    return {
        k: v[lo:hi] if isinstance(v, torch.Tensor) and v.dim() >= 1 and k not in keep else v
        for k, v in call.items()
    }


def float_args(call: dict) -> list[str]:
    return [k for k, v in call.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]


def leaf_copy(call: dict) -> dict:
    out = dict(call)
    for k in float_args(call):
        out[k] = call[k].detach().clone().requires_grad_(True)
    return out


def scalar(out: torch.Tensor) -> torch.Tensor:
    """A scalar from a loss output; per-row outputs get different weights per row."""
    if out.dim() == 0:
        return out
    return (out * torch.linspace(0.5, 1.5, out.shape[0], dtype=out.dtype)).sum()


def compare(make_loss, global_call, local_call, rows, group, switch) -> str | None:
    """One process on ``global_call`` against this rank's ``local_call`` through ``switch``:
    None when the value, the gradients of the float arguments (``rows[name]`` = this rank's
    rows of that argument, divided by the world size) and of the loss's parameters (averaged
    over the group) agree."""
    world = dist.get_world_size(group=group)
    torch.manual_seed(0)
    try:
        base = make_loss().double()
    except PairLossError as err:
        return f"skip: {err}"
    ref_loss, ref_call = copy.deepcopy(base), leaf_copy(global_call)
    try:
        ref = ref_loss(**ref_call)
    except PairLossError as err:
        return f"skip: {err}"
    scalar(ref).backward()
    dist_loss = switch(copy.deepcopy(base), group)
    mine = leaf_copy(local_call)
    out = dist_loss(**mine)
    scalar(out).backward()
    average_gradients(dist_loss, group)
    if not close(out.detach(), ref.detach()):
        return f"value: {worst(out.detach(), ref.detach())}"
    for k in float_args(global_call):
        lo, hi = rows[k]
        want, got = ref_call[k].grad, mine[k].grad
        if want is None and got is None:
            continue
        if want is None or got is None:
            return f"grad of {k}: present on one side only"
        if not close(got / world, want[lo:hi]):
            return f"grad of {k}: {worst(got / world, want[lo:hi])}"
    for (name, p), q in zip(dist_loss.named_parameters(), ref_loss.parameters()):
        if (p.grad is None) != (q.grad is None):
            return f"grad of parameter {name}: present on one side only"
        if p.grad is not None and not close(p.grad, q.grad):
            return f"grad of parameter {name}: {worst(p.grad, q.grad)}"
    return None


def exact(loss, group):
    return set_gather(loss, "exact", group)


def wrapper(efficient: bool):
    def switch(loss, group):
        return DistributedLossWrapper(loss, efficient=efficient, group=group)

    return switch


def rows_of(call: dict, sizes: list[int], rank: int) -> dict:
    return {k: bounds(sizes, rank) for k in float_args(call)}


def triplets_within(labels: torch.Tensor, lo: int, hi: int) -> tuple:
    """Triplets (a, p, n) among rows lo:hi (local indices): every positive pair with the first
    negative of its anchor."""
    y = labels[lo:hi]
    a, p = torch.where((y[:, None] == y[None, :]) & ~torch.eye(len(y), dtype=torch.bool))
    first_neg = [torch.where(y != y[i])[0] for i in a.tolist()]
    keep = torch.tensor([f.numel() > 0 for f in first_neg], dtype=torch.bool)
    n = torch.tensor([int(f[0]) if f.numel() else 0 for f in first_neg], dtype=torch.long)
    return a[keep], p[keep], n[keep]


def accepts(cls, init: dict, **extra) -> bool:
    """Whether the loss's constructor takes the arguments ``extra`` (a ``**kwargs`` passed on
    to a base that does not take them is a TypeError)."""
    try:
        cls(**init, **extra)
    except TypeError:
        return False
    except PairLossError:
        return True  # taken, refused for its value: the comparison reports it
    return True


def catalogue_cases(rank: int, groups: dict) -> dict:
    """Every catalogue loss, W = 3: its example call with dense and blocked engines, through
    gather='exact' and both modes of the wrapper; for the embeddings convention also a
    reference set split unevenly, two miners, explicit triplets and per-row output. W = 2: the
    example call through gather='exact', dense and blocked."""
    results = {}
    for w, group in groups.items():
        if group is None:
            continue
        full = w == max(groups)
        sizes, n = SIZES[w], sum(SIZES[w])
        for entry in LOSSES:
            ex = example(entry, n=n, dim=5, seed=7)
            cls = entry.load()
            variants = {"dense": {}}
            if accepts(cls, ex.init, engine="blocked", block_size=2):
                variants["blocked"] = {"engine": "blocked", "block_size": 2}
            keep = getattr(cls, "replicated_inputs", ())
            local = row_split(ex.call, sizes, rank, keep)
            rows = rows_of(ex.call, sizes, rank)
            for engine, extra in variants.items():
                make = functools.partial(cls, **ex.init, **extra)
                tag = f"W{w} {entry.name} {engine}"
                switches = {"exact": exact}
                if engine == "dense" and full:
                    switches.update({"wrapper efficient": wrapper(True), "wrapper": wrapper(False)})
                for how, switch in switches.items():
                    results[f"{tag} {how}"] = compare(make, ex.call, local, rows, group, switch)
                if entry.inputs != "embeddings" or not full:
                    continue
                results.update(embedding_cases(tag, make, ex.call, sizes, rank, group))
                if accepts(cls, {**ex.init, **extra}, reduction="none"):
                    make_rows = functools.partial(cls, **{**ex.init, **extra, "reduction": "none"})
                    results[f"{tag} reduction none"] = compare(
                        make_rows, ex.call, local, rows, group, exact
                    )
    return results


def embedding_cases(tag, make, call, sizes, rank, group) -> dict:
    out = {}
    n, d = call["embeddings"].shape
    g = torch.Generator().manual_seed(3)
    ref_sizes = [s - 1 for s in sizes]  # a reference set split differently from the batch
    with_ref = {
        **call,
        "ref_emb": torch.randn(sum(ref_sizes), d, generator=g),
        "ref_labels": torch.arange(sum(ref_sizes)) % 3,
    }
    local = {
        **row_split(call, sizes, rank),
        **{k: v for k, v in row_split(with_ref, ref_sizes, rank).items() if k.startswith("ref")},
    }
    rows = {"embeddings": bounds(sizes, rank), "ref_emb": bounds(ref_sizes, rank)}
    out[f"{tag} ref_emb"] = compare(make, with_ref, local, rows, group, exact)
    for miner in (MultiSimilarityMiner(0.3), BatchHardMiner()):
        # the miner as indices_tuple: mined inside the engine, each row against all candidates
        mined = {**call, "indices_tuple": miner}
        local = row_split(mined, sizes, rank)
        out[f"{tag} {type(miner).__name__}"] = compare(
            make, mined, local, rows_of(call, sizes, rank), group, exact
        )
    per_rank = [triplets_within(call["labels"], *bounds(sizes, r)) for r in range(len(sizes))]
    union = tuple(
        torch.cat([t[i] + bounds(sizes, r)[0] for r, t in enumerate(per_rank)]) for i in range(3)
    )
    local = {**row_split(call, sizes, rank), "indices_tuple": per_rank[rank]}
    out[f"{tag} triplets"] = compare(
        make, {**call, "indices_tuple": union}, local, rows_of(call, sizes, rank), group, exact
    )
    return out


def empty_rank_cases(rank: int, group) -> dict:
    """A process with no rows at all (local batch [0, D])."""
    sizes = [6, 0, 6]
    out = {}
    for name in ("ntxent", "triplet_margin", "proxy_anchor", "multi_similarity"):
        entry = pairloss.catalogue.find(name)
        ex = example(entry, n=12, dim=5, seed=1)
        cls = entry.load()
        for engine in ("dense", "blocked"):
            make = functools.partial(cls, **ex.init, engine=engine, block_size=3)
            local = row_split(ex.call, sizes, rank)
            out[f"empty rank {name} {engine}"] = compare(
                make, ex.call, local, rows_of(ex.call, sizes, rank), group, exact
            )
    return out


def model(seed: int, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(6, 16), nn.Dropout(dropout), nn.Tanh(), nn.Linear(16, 4)
    ).double()


def ddp_cases(rank: int, groups: dict) -> dict:
    """One DistributedDataParallel step (model and a loss with parameters, SGD) equals the
    single-process step on the concatenated batch."""
    out = {}
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(12, 6, generator=g, dtype=torch.float64), torch.arange(12) % 4
    for w, group in groups.items():
        if group is None:
            continue
        lo, hi = bounds(SIZES[w], rank)
        for name, make_loss in {
            "proxy_anchor": lambda: pairloss.ProxyAnchorLoss(4, 4).double(),
            "multi_similarity + miner": lambda: pairloss.MultiSimilarityLoss(
                miner=MultiSimilarityMiner(0.3)
            ),
            "margin (learnable beta)": lambda: pairloss.MarginLoss(learn_beta=True).double(),
        }.items():
            ref_model, ref_loss = model(1), make_loss()
            net, loss = (
                copy.deepcopy(ref_model),
                set_gather(copy.deepcopy(ref_loss), "exact", group),
            )
            ddp = nn.parallel.DistributedDataParallel(net, process_group=group)
            params = [*ref_model.parameters(), *ref_loss.parameters()]
            ref_opt = torch.optim.SGD(params, lr=0.5)
            opt = torch.optim.SGD([*ddp.parameters(), *loss.parameters()], lr=0.5)
            ref_value = ref_loss(ref_model(x), y)
            ref_value.backward()
            ref_opt.step()
            value = loss(ddp(x[lo:hi]), y[lo:hi])
            value.backward()
            average_gradients(loss, group)
            opt.step()
            problem = None
            if not close(value.detach(), ref_value.detach()):
                problem = f"value: {worst(value.detach(), ref_value.detach())}"
            after = [*net.parameters(), *loss.parameters()]
            for p, q in zip(after, [*ref_model.parameters(), *ref_loss.parameters()]):
                if problem is None and not close(p.detach(), q.detach()):
                    problem = f"parameters after the step: {worst(p.detach(), q.detach())}"
            out[f"ddp W{w} {name}"] = problem
    return out


def pml_efficient_case(rank: int, world: int) -> dict:
    """pytorch-metric-learning's efficient wrapper against pairloss's on the same input (equal
    local batches, which PML needs): the largest difference of the embeddings' gradient from
    one process on the concatenated batch."""
    from pytorch_metric_learning import losses as pml_losses
    from pytorch_metric_learning.utils import distributed as pml_dist

    g = torch.Generator().manual_seed(11)
    x, y = torch.randn(12, 5, generator=g, dtype=torch.float64), torch.arange(12) % 4
    lo, hi = 4 * rank, 4 * rank + 4
    diffs = {}
    for name, single, wrapped in (
        ("pml", pml_losses.ContrastiveLoss(), pml_dist.DistributedLossWrapper(
            pml_losses.ContrastiveLoss(), efficient=True)),
        ("pairloss", pairloss.ContrastiveLoss(), DistributedLossWrapper(
            pairloss.ContrastiveLoss(), efficient=True)),
    ):  # fmt: skip
        full = x.clone().requires_grad_(True)
        single(full, y).backward()
        part = x[lo:hi].clone().requires_grad_(True)
        wrapped(part, y[lo:hi]).backward()
        diffs[name] = float((part.grad / world - full.grad[lo:hi]).abs().max())
    return diffs


def grad_cache_cases(rank: int, groups: dict) -> dict:
    """GradCache with a distributed loss, dropout on, one tower (labels) and two towers
    (queries and documents with different encoders, MNRL-style instance labels): the
    parameters' gradients equal the plain step of the global batch with the same random
    draws (each process's chunks drawn from its own seed)."""
    out = {}
    g = torch.Generator().manual_seed(9)
    xq = torch.randn(12, 6, generator=g, dtype=torch.float64)
    xd = torch.randn(12, 6, generator=g, dtype=torch.float64)
    y = torch.arange(12) % 4
    for w, group in groups.items():
        if group is None:
            continue
        sizes = SIZES[w]
        lo, hi = bounds(sizes, rank)
        q_net, d_net = model(2, dropout=0.3), model(3, dropout=0.3)
        for towers in (1, 2):
            tag = f"grad cache W{w} {towers} tower{'s' if towers > 1 else ''}"
            ntx = pairloss.NTXentLoss(temperature=0.1)
            # plain step of the global batch, rank r's chunks under rank r's seed
            ref_q, ref_d = copy.deepcopy(q_net), copy.deepcopy(d_net)
            parts_q, parts_d = [], []
            for r in range(w):
                a, b = bounds(sizes, r)
                torch.manual_seed(100 + r)
                parts_q += [ref_q(c) for c in xq[a:b].split(3)]
                if towers == 2:
                    parts_d += [ref_d(c) for c in xd[a:b].split(3)]
            if towers == 1:
                ntx(torch.cat(parts_q), y).backward()
            else:
                ids = torch.arange(12)
                # ref_labels a tensor of its own (the labels tensor itself means self pairs)
                ntx(
                    torch.cat(parts_q), ids, ref_emb=torch.cat(parts_d), ref_labels=ids.clone()
                ).backward()
            nets = (copy.deepcopy(q_net), copy.deepcopy(d_net))
            loss = set_gather(pairloss.NTXentLoss(temperature=0.1), "exact", group)
            torch.manual_seed(100 + rank)
            if towers == 1:
                step_loss = functools.partial(loss, labels=y[lo:hi])
                grad_cache_step(step_loss, [(nets[0], xq[lo:hi])], 3, group=group)
            else:
                ids = batch_ids(hi - lo, group)

                def step_loss(q, d, loss=loss, ids=ids):
                    return loss(q, ids, ref_emb=d, ref_labels=ids.clone())

                towers_in = [(nets[0], xq[lo:hi]), (nets[1], xd[lo:hi])]
                grad_cache_step(step_loss, towers_in, 3, group=group)
            problem = None
            refs = [*ref_q.parameters(), *(ref_d.parameters() if towers == 2 else [])]
            mine = [*nets[0].parameters(), *(nets[1].parameters() if towers == 2 else [])]
            for p, q in zip(mine, refs):
                if problem is None and not close(p.grad, q.grad):
                    problem = f"parameter gradient: {worst(p.grad, q.grad)}"
            out[tag] = problem
    return out


def memory_cases(rank: int, groups: dict) -> dict:
    """XBM and the MoCo queue under a distributed loss, four steps (the memory wraps around):
    every step's value and gradients equal one process on the concatenated batches, and the
    memories end identical on every process and equal to the single process's."""
    out = {}
    for w, group in groups.items():
        if group is None:
            continue
        sizes = SIZES[w]
        lo, hi = bounds(sizes, rank)
        for kind in ("xbm", "xbm + miner", "xbm enqueue_mask", "queue", "queue labelled"):
            for efficient in (True, False):
                if kind.startswith("xbm"):
                    miner = MultiSimilarityMiner(0.3) if "miner" in kind else None
                    single = CrossBatchMemory(pairloss.ContrastiveLoss(), 5, 20, miner=miner)
                else:
                    single = MemoryQueue(pairloss.NTXentLoss(0.2), 5, memory_size=20)
                single = single.double()
                wrapped = DistributedLossWrapper(copy.deepcopy(single), efficient, group)
                g = torch.Generator().manual_seed(21)
                problem = None
                for step in range(4):
                    x = torch.randn(12, 5, generator=g, dtype=torch.float64)
                    k = torch.randn(12, 5, generator=g, dtype=torch.float64)
                    y = torch.randint(0, 4, (12,), generator=g)
                    mask = torch.arange(12) % 3 == 0
                    full, part = (
                        x.clone().requires_grad_(True),
                        x[lo:hi].clone().requires_grad_(True),
                    )
                    if kind.startswith("xbm"):
                        extra = {"enqueue_mask": mask} if "mask" in kind else {}
                        part_extra = {"enqueue_mask": mask[lo:hi]} if "mask" in kind else {}
                        ref = single(full, y, **extra)
                        got = wrapped(part, y[lo:hi], **part_extra)
                    elif kind == "queue":
                        ref, got = single(full, k), wrapped(part, k[lo:hi])
                    else:
                        ref, got = single(full, k, y), wrapped(part, k[lo:hi], y[lo:hi])
                    ref.backward()
                    got.backward()
                    if problem is None and not close(got.detach(), ref.detach()):
                        problem = f"step {step} value: {worst(got.detach(), ref.detach())}"
                    if problem is None and not close(part.grad / w, full.grad[lo:hi]):
                        problem = f"step {step} grad: {worst(part.grad / w, full.grad[lo:hi])}"
                memory = wrapped.loss.embedding_memory
                everyone = [torch.empty_like(memory) for _ in range(w)]
                dist.all_gather(everyone, memory.contiguous(), group=group)
                if problem is None and not all(torch.equal(m, memory) for m in everyone):
                    problem = "memories differ between processes"
                if problem is None and not torch.equal(memory, single.embedding_memory):
                    problem = "memory differs from the single process's"
                out[f"{kind} W{w} efficient={efficient}"] = problem
    return out


def mismatch_case(rank: int) -> dict:
    """Processes that pass different arguments get a PairLossError each, not a hang."""
    loss = pairloss.MultiSimilarityLoss(gather="exact")
    x, y = torch.randn(4, 5), torch.arange(4) % 2
    ref = {"ref_emb": torch.randn(3, 5), "ref_labels": torch.arange(3)} if rank == 0 else {}
    messages = {}
    try:
        loss(x, y, **ref)
        messages["structure"] = "no error"
    except PairLossError as err:
        messages["structure"] = str(err)
    try:
        loss(torch.randn(4, 5 + rank), y)
        messages["shape"] = "no error"
    except PairLossError as err:
        messages["shape"] = str(err)
    return messages


def run_all(rank: int, world: int) -> dict:
    torch.set_default_dtype(torch.float64)
    pair = dist.new_group([0, 1])
    groups = {world: dist.group.WORLD, 2: pair if rank < 2 else None}
    results = {}
    results.update(catalogue_cases(rank, groups))
    results.update(empty_rank_cases(rank, dist.group.WORLD))
    results.update(ddp_cases(rank, groups))
    results.update(grad_cache_cases(rank, groups))
    results.update(memory_cases(rank, groups))
    return {
        "cases": results,
        "pml": pml_efficient_case(rank, world),
        "mismatch": mismatch_case(rank),
    }
