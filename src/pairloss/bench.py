"""Speed and memory of pairloss losses against pytorch-metric-learning, in one process.

For every loss that both libraries have, on the same inputs: median forward+backward time, peak
memory beyond the inputs, and the time of the three matrix products that any exact
implementation must do (S = X X^T, G X, G^T X: the physical limit of a row-decomposable loss).
Prints ratios. Not a test: run it by hand, as ``pairloss bench`` or
``python benchmarks/losses.py`` (the same options), e.g.

    pairloss bench --batch 4096 --dim 512
    pairloss bench --batch 16384 --dim 512 --only pairloss   # memory at scale

The peer library (pytorch-metric-learning) is needed unless ``--only pairloss``.

Peak memory is read from the process's resident set (``ru_maxrss``) in a fresh subprocess per
measurement, minus the resident set after the inputs were made.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import sys
import time

import torch


def _losses(which: str):
    import pairloss
    from pairloss import miners

    ours = {
        "MultiSimilarity": lambda: pairloss.MultiSimilarityLoss(),
        "MultiSimilarity+MSminer": lambda: pairloss.MultiSimilarityLoss(
            miner=miners.MultiSimilarityMiner()
        ),
        "Circle": lambda: pairloss.CircleLoss(),
        "SupCon": lambda: pairloss.SupConLoss(),
        "NTXent": lambda: pairloss.NTXentLoss(),
        "Contrastive": lambda: pairloss.ContrastiveLoss(),
        "TripletBatchAll": lambda: pairloss.TripletMarginLoss(),
        "TripletBatchHard": lambda: pairloss.TripletMarginLoss(miner=miners.BatchHardMiner()),
        "LiftedStructure": lambda: pairloss.GeneralizedLiftedStructureLoss(),
        "Margin": lambda: pairloss.MarginLoss(),
    }
    if which == "pairloss":
        return ours
    from pytorch_metric_learning import losses as L
    from pytorch_metric_learning import miners as M

    def with_miner(loss, miner):
        return lambda x, y: loss(x, y, miner(x, y))

    return {
        "MultiSimilarity": lambda: L.MultiSimilarityLoss(),
        "MultiSimilarity+MSminer": lambda: with_miner(
            L.MultiSimilarityLoss(), M.MultiSimilarityMiner()
        ),
        "Circle": lambda: L.CircleLoss(),
        "SupCon": lambda: L.SupConLoss(),
        "NTXent": lambda: L.NTXentLoss(),
        "Contrastive": lambda: L.ContrastiveLoss(),
        "TripletBatchAll": lambda: L.TripletMarginLoss(),
        "TripletBatchHard": lambda: with_miner(L.TripletMarginLoss(), M.BatchHardMiner()),
        "LiftedStructure": lambda: L.GeneralizedLiftedStructureLoss(),
        "Margin": lambda: L.MarginLoss(),
    }


def _inputs(batch: int, dim: int, classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (batch,), generator=g)
    centres = torch.randn(classes, dim, generator=g)
    x = centres[y] + 1.5 * torch.randn(batch, dim, generator=g)
    return x, y


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _measure(queue, library, name, batch, dim, classes, repeats, threads):
    torch.set_num_threads(threads)
    try:
        x, y = _inputs(batch, dim, classes)
        x.requires_grad_(True)
        x.grad = torch.zeros_like(x)
        fn = None if library == "products" else _losses(library)[name]()
        base = _rss_mb()
        times = []
        for _ in range(repeats + 1):  # the first run warms up and is not timed
            t0 = time.perf_counter()
            if fn is None:
                with torch.no_grad():
                    s = x @ x.T
                    _ = s @ x
                    _ = s.T @ x
                    del s
            else:
                loss = fn(x, y)
                loss.backward()
            times.append(time.perf_counter() - t0)
        queue.put({"time": statistics.median(times[1:]), "peak_mb": _rss_mb() - base})
    except Exception as exc:  # report, e.g. out of memory
        queue.put({"error": f"{type(exc).__name__}: {str(exc)[:120]}"})


def measure(library, name, batch, dim, classes, repeats, threads):
    """Run one measurement in a fresh spawned process; a dict with time and peak memory."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(
        target=_measure, args=(queue, library, name, batch, dim, classes, repeats, threads)
    )
    p.start()
    p.join()
    if p.exitcode != 0 and queue.empty():
        return {"error": f"process died (exit {p.exitcode}, likely out of memory)"}
    return queue.get()


def main(argv=None) -> int:
    """Parse the options, measure, print the table; 0 on success."""
    ap = argparse.ArgumentParser(prog="pairloss bench", description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--classes", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--losses", nargs="*", default=None, help="names to run (default: all)")
    ap.add_argument("--only", choices=["pairloss", "both"], default="both")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    args = ap.parse_args(argv)
    names = args.losses or list(_losses("pairloss"))
    common = (args.batch, args.dim, args.classes, args.repeats, args.threads)
    limit = measure("products", None, *common)
    print(
        f"B={args.batch} D={args.dim} classes={args.classes} threads={args.threads}: "
        f"three products {limit['time'] * 1e3:.0f} ms"
    )
    head = f"{'loss':26s} {'pairloss ms':>11s} {'x limit':>7s} {'peak MB':>8s}"
    if args.only == "both":
        head += f" {'PML ms':>9s} {'PML MB':>8s} {'time ratio':>10s} {'mem ratio':>9s}"
    print(head)
    rows = []
    for name in names:
        ours = measure("pairloss", name, *common)
        row = {"loss": name, "pairloss": ours, "limit_ms": limit["time"] * 1e3}
        if "error" in ours:
            line = f"{name:26s} {ours['error']}"
        else:
            line = (
                f"{name:26s} {ours['time'] * 1e3:11.0f} {ours['time'] / limit['time']:7.2f} "
                f"{ours['peak_mb']:8.0f}"
            )
        if args.only == "both":
            theirs = measure("pml", name, *common)
            row["pml"] = theirs
            if "error" in theirs:
                line += f"  PML: {theirs['error']}"
            elif "error" not in ours:
                line += (
                    f" {theirs['time'] * 1e3:9.0f} {theirs['peak_mb']:8.0f} "
                    f"{theirs['time'] / ours['time']:9.2f}x "
                    f"{theirs['peak_mb'] / max(ours['peak_mb'], 1):8.1f}x"
                )
        print(line, flush=True)
        rows.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
