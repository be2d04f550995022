"""Time and peak memory of the retrieval metrics: pairloss (torch and FAISS backends) against
pytorch-metric-learning's AccuracyCalculator, on clustered embeddings with query = gallery.

Each method runs in a fresh ``spawn`` child process. The child loads the data, imports every
library, records ``ru_maxrss`` as its baseline, runs the method once and reports the wall time
and the growth of its peak resident set size (``ru_maxrss`` after minus before), which counts
torch and FAISS allocations alike.

    python benchmarks/metrics.py                      # n=100000, dim=128, classes=1000
    python benchmarks/metrics.py --n 20000 --classes 200
    python benchmarks/metrics.py --methods faiss-full faiss-full-torch-ranks  # without numba
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing as mp
import os
import queue
import resource
import sys
import tempfile
import time

import torch

PML_SET = ("precision", "r_precision", "map@r")
METHODS = {
    "pml": "PML AccuracyCalculator (p@1, r_precision, map@r; k='max_bin_count')",
    "faiss-pml-set": "pairloss faiss, same 3 metrics",
    "torch-pml-set": "pairloss torch, same 3 metrics",
    "faiss-full": "pairloss faiss, full retrieval set",
    "torch-full": "pairloss torch, full retrieval set",
    "faiss-full-torch-ranks": "pairloss faiss, full set, exact ranks by torch ops (no numba)",
}


def make_data(n: int, dim: int, classes: int, noise: float, seed: int):
    """Balanced labels (shuffled) and L2-normalised ``center[label] + noise * N(0, I / dim)``,
    with unit-norm random class centers (normalised, so that PML's Euclidean k-NN and the
    cosine ranking of pairloss order the gallery the same way)."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % classes)[torch.randperm(n, generator=g)]
    centers = torch.nn.functional.normalize(torch.randn(classes, dim, generator=g), dim=1)
    x = centers[labels] + noise * torch.randn(n, dim, generator=g) / dim**0.5
    return torch.nn.functional.normalize(x, dim=1).float().contiguous(), labels


def run_method(name: str, x: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Run one method; return the values it shares with the others."""
    if name == "pml":
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        calc = AccuracyCalculator(
            include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
            k="max_bin_count",
            device=torch.device("cpu"),
        )
        out = calc.get_accuracy(x, labels)
        return {
            "precision@1": out["precision_at_1"],
            "r_precision": out["r_precision"],
            "map@r": out["mean_average_precision_at_r"],
        }
    from pairloss.metrics import retrieval

    if name.endswith("-torch-ranks"):
        module = importlib.import_module("pairloss.metrics.retrieval")
        compiled, module._COMPILED_RANKS = module._COMPILED_RANKS, False
        try:
            return run_method(name.removesuffix("-torch-ranks"), x, labels)
        finally:
            module._COMPILED_RANKS = compiled
    backend, subset = name.split("-", 1)
    if subset == "pml-set":
        result = retrieval(x, labels, k=1, backend=backend, metrics=PML_SET)
    else:
        result = retrieval(x, labels, backend=backend)
    values = result.values()
    keys = ("precision@1", "r_precision", "map@r", "map", "mrr", "recall@1")
    return {k: values[k] for k in keys if k in values}


def child(name: str, path: str, queue) -> None:
    """Spawned process: load, import, measure baseline, run, report."""
    import faiss  # noqa: F401
    import pytorch_metric_learning.utils.accuracy_calculator  # noqa: F401

    import pairloss.metrics  # noqa: F401

    x, labels = torch.load(path)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    values = run_method(name, x, labels)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline
    queue.put((name, seconds, peak_kib / 1024, values))


def measure(name: str, path: str) -> tuple[str, float, float, dict[str, float]]:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=child, args=(name, path, results))
    proc.start()
    while True:
        try:
            result = results.get(timeout=1.0)
            break
        except queue.Empty:
            if not proc.is_alive():
                raise RuntimeError(
                    f"{name}: the child process exited with {proc.exitcode}"
                ) from None
    proc.join()
    return result


def load() -> str:
    """The 1-minute load average (other jobs on the machine slow every method down)."""
    return f"{os.getloadavg()[0]:.1f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="embeddings (query = gallery)")
    parser.add_argument("--dim", type=int, default=128, help="embedding dimension")
    parser.add_argument("--classes", type=int, default=1000, help="balanced classes")
    parser.add_argument("--noise", type=float, default=1.5, help="noise norm vs center norm 1")
    parser.add_argument("--seed", type=int, default=0)
    default = [m for m in METHODS if not m.endswith("-torch-ranks")]
    parser.add_argument("--methods", nargs="+", default=default, choices=list(METHODS))
    args = parser.parse_args(argv)

    print(
        f"n={args.n} dim={args.dim} classes={args.classes} noise={args.noise} "
        f"torch threads={torch.get_num_threads()} cpus={os.cpu_count()} load={load()}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.pt")
        torch.save(make_data(args.n, args.dim, args.classes, args.noise, args.seed), path)
        rows = []
        for name in args.methods:
            rows.append(measure(name, path))
            _, seconds, mib, values = rows[-1]
            shown = " ".join(f"{k}={v:.4f}" for k, v in values.items())
            print(
                f"  done {name}: {seconds:.1f} s, {mib:.0f} MiB, load {load()}  {shown}", flush=True
            )
    print_table(rows)


def print_table(rows: list[tuple[str, float, float, dict[str, float]]]) -> None:
    ref = {name: (s, m) for name, s, m, _ in rows}.get("pml")
    print()
    print(
        f"{'method':<24} {'time s':>8} {'peak MiB':>9} {'time/pml':>9} {'mem/pml':>8}  description"
    )
    for name, seconds, mib, _ in rows:
        t_ratio = f"{seconds / ref[0]:.2f}" if ref else "-"
        m_ratio = f"{mib / ref[1]:.2f}" if ref and ref[1] > 0 else "-"
        print(f"{name:<24} {seconds:>8.1f} {mib:>9.0f} {t_ratio:>9} {m_ratio:>8}  {METHODS[name]}")


if __name__ == "__main__":
    sys.exit(main())
