"""Speed and memory of the pairwise ranking losses on long lists against allRank and
sentence-transformers, in one run (``pairloss bench --family ranking`` or
``python benchmarks/ranking.py``; the same options), e.g.

    pairloss bench --family ranking --queries 256 --items 1024

For LambdaLoss (NDCG-Loss2++ weights, the sentence-transformers default) and RankNet, on the
same scores [Q, L] (standard normal) and graded labels 0-4: the median forward + backward time
and the peak memory beyond the inputs, each measurement in a fresh process. pairloss walks the
pairs of every query in item blocks (memory O(Q x L x block)); allRank 1.4.3 (``lambdaLoss``
with ``ndcgLoss2PP_scheme`` and mean reduction, ``rankNet``) and sentence-transformers 6
(``LambdaLoss``, ``RankNetLoss``, driven by a stand-in cross-encoder whose scores are the given
logits) build [Q, L, L] tensors. Every peer measurement runs under an address-space limit
(``--peer-memory-gb``) so that a peer that needs more fails with "out of memory" instead of
exhausting a shared machine. The values of the two sides are printed as a relative difference
(the same losses to rounding; sentence-transformers' RankNet is in bits, its log2, so its value
is pairloss's RankNet over ln 2).

Peak memory is the process's resident-set peak (``ru_maxrss``) minus the resident set after the
inputs were made; with ``--device cuda``, the CUDA allocator's peak beyond the inputs, and times
after ``torch.cuda.synchronize()``. Not a test: run it by hand.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import multiprocessing as mp
import resource
import statistics
import sys
import time
import types
from pathlib import Path

import torch

LOSSES = ("LambdaLoss", "RankNet")
LIBRARIES = ("pairloss", "allrank", "sentence-transformers")


def _inputs(queries: int, items: int, device: str):
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(queries, items, generator=g)
    labels = torch.randint(0, 5, (queries, items), generator=g).to(torch.float32)
    return scores.to(device).requires_grad_(True), labels.to(device)


_ALLRANK: dict = {}


def _allrank_losses():
    """allRank's lambdaLoss and rankNet, loaded from their files (the package imports
    torchvision and other things these losses do not use)."""
    if _ALLRANK:
        return _ALLRANK
    spec = importlib.machinery.PathFinder.find_spec("allrank")
    if spec is None or spec.origin is None:
        raise ImportError("allRank is not installed")
    root = Path(spec.origin).parent / "models" / "losses"
    stubs = {
        "allrank": {},
        "allrank.data": {},
        "allrank.data.dataset_loading": {"PADDED_Y_VALUE": -1},
        "allrank.models": {},
        "allrank.models.losses": {"DEFAULT_EPS": 1e-10},
    }
    saved = {name: sys.modules.get(name) for name in stubs}
    try:  # the stand-in package modules live only while the two files are loaded
        for name, attrs in stubs.items():
            module = types.ModuleType(name)
            for key, value in attrs.items():
                setattr(module, key, value)
            sys.modules[name] = module
        for file, fn in (("lambdaLoss", "lambdaLoss"), ("rankNet", "rankNet")):
            path = root / f"{file}.py"
            mod_spec = importlib.util.spec_from_file_location(f"allrank_{file}", path)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
            _ALLRANK[fn] = getattr(module, fn)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return _ALLRANK


def _st_loss(name: str, scores: torch.Tensor):
    """A sentence-transformers cross-encoder loss whose model returns ``scores`` as logits."""
    from sentence_transformers.cross_encoder import CrossEncoder
    from sentence_transformers.cross_encoder import losses as st

    class GivenLogits(CrossEncoder):
        num_labels = 1

        def __init__(self, logits):
            torch.nn.Module.__init__(self)
            self.logits = logits

        @property
        def device(self):
            return self.logits.device

        def preprocess(self, pairs, prompt=None, task=None):
            return {"index": torch.tensor([d for _, d in pairs], device=self.logits.device)}

        def forward(self, tokens):
            return {"scores": self.logits.reshape(-1)[tokens["index"]][:, None]}

    model = GivenLogits(scores)
    q, n = scores.shape
    queries = [f"q{i}" for i in range(q)]
    docs = [list(range(i * n, (i + 1) * n)) for i in range(q)]
    cls = st.LambdaLoss if name == "LambdaLoss" else st.RankNetLoss
    loss = cls(model, mini_batch_size=-1)
    return lambda labels: loss([queries, docs], list(labels))


def _make(library: str, name: str, scores: torch.Tensor):
    if library == "pairloss":
        import pairloss

        loss = pairloss.LambdaLoss() if name == "LambdaLoss" else pairloss.RankNetLoss()
        return lambda labels: loss(scores, labels)
    if library == "allrank":
        fns = _allrank_losses()
        if name == "LambdaLoss":
            return lambda labels: fns["lambdaLoss"](
                scores, labels, weighing_scheme="ndcgLoss2PP_scheme", reduction="mean"
            )
        return lambda labels: fns["rankNet"](scores, labels)
    return _st_loss(name, scores)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _measure(queue, library, name, queries, items, repeats, threads, device, limit_gb):
    torch.set_num_threads(threads)
    try:
        if library != "pairloss" and limit_gb > 0 and device == "cpu":
            cap = int(limit_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        scores, labels = _inputs(queries, items, device)
        fn = _make(library, name, scores)
        dev = torch.device(device)

        def now():
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            return time.perf_counter()

        base = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else _rss_mb()
        times, value = [], None
        for _ in range(repeats + 1):  # the first run warms up and is not timed
            scores.grad = None
            t0 = now()
            out = fn(labels)
            out.backward()
            times.append(now() - t0)
            value = float(out.detach())
        peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else _rss_mb()
        queue.put({"time": statistics.median(times[1:]), "peak_mb": peak - base, "value": value})
    except (MemoryError, RuntimeError) as exc:
        text = str(exc).lower()
        oom = isinstance(exc, MemoryError) or "memory" in text or "alloc" in text
        queue.put({"error": "out of memory" if oom else f"{type(exc).__name__}: {str(exc)[:100]}"})
    except Exception as exc:  # report anything else (a peer not installed, ...)
        queue.put({"error": f"{type(exc).__name__}: {str(exc)[:100]}"})


def measure(library, name, queries, items, repeats, threads, device="cpu", limit_gb=10.0):
    """One measurement in a fresh spawned process: time (s), peak memory (MB) and the value."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    args = (queue, library, name, queries, items, repeats, threads, device, limit_gb)
    p = ctx.Process(target=_measure, args=args)
    p.start()
    p.join()
    if p.exitcode != 0 and queue.empty():
        return {"error": f"process died (exit {p.exitcode}, likely out of memory)"}
    return queue.get()


def main(argv=None) -> int:
    """Parse the options, measure, print the table; 0 on success."""
    from .bench import _positive
    from .cli import OneLineParser  # one error line and exit status 2, like every command

    ap = OneLineParser(prog="pairloss bench --family ranking", description=__doc__.split("\n")[0])
    ap.add_argument("--family", choices=["ranking"], default="ranking")
    ap.add_argument("--queries", type=_positive, default=256)
    ap.add_argument("--items", type=_positive, default=1024)
    ap.add_argument("--repeats", type=_positive, default=3)
    ap.add_argument("--threads", type=_positive, default=torch.get_num_threads())
    ap.add_argument("--losses", nargs="*", choices=LOSSES, default=list(LOSSES))
    ap.add_argument("--libraries", nargs="*", choices=LIBRARIES, default=list(LIBRARIES))
    ap.add_argument("--peer-memory-gb", type=float, default=10.0)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    args = ap.parse_args(argv)
    print(
        f"Q={args.queries} L={args.items} device={args.device} threads={args.threads} "
        f"peer memory cap={args.peer_memory_gb:g} GB"
    )
    print(f"{'loss':12s} {'library':22s} {'ms':>9s} {'peak MB':>9s} {'value':>12s}  vs pairloss")
    rows = []
    for name in args.losses:
        ours = None
        for library in args.libraries:
            res = measure(
                library,
                name,
                args.queries,
                args.items,
                args.repeats,
                args.threads,
                args.device,
                args.peer_memory_gb,
            )
            rows.append({"loss": name, "library": library, **res})
            if "error" in res:
                print(f"{name:12s} {library:22s} {res['error']}", flush=True)
                continue
            line = (
                f"{name:12s} {library:22s} {res['time'] * 1e3:9.0f} {res['peak_mb']:9.0f} "
                f"{res['value']:12.6f}"
            )
            if library == "pairloss":
                ours = res
            elif ours is not None:
                line += (
                    f"  time x{res['time'] / ours['time']:.1f}, memory "
                    f"x{res['peak_mb'] / max(ours['peak_mb'], 1.0):.1f}, value rel diff "
                    f"{abs(res['value'] - ours['value']) / max(abs(ours['value']), 1e-30):.1e}"
                )
            print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
