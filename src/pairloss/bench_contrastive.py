"""Speed and memory of the two-tower losses against their peers, in one process per measurement.

``pairloss bench --family contrastive`` (or ``python benchmarks/contrastive.py``) times forward +
backward of, on the same inputs (two towers X, Y [B, D], unit rows, float32):

- CLIP (symmetric InfoNCE with a learnable scale) against open_clip's ``ClipLoss``;
- SigLIP (learnable scale and bias) against open_clip's ``SigLipLoss``;
- in-batch negatives (MNRL: cosine, scale 20) against sentence-transformers'
  ``MultipleNegativesRankingLoss`` (``compute_loss_from_embeddings``),

at every batch size B and width D asked for (default B = 4,096 and 16,384, D = 384 and 512).
Each measurement runs in a fresh process and alternates the loss with the three matrix products
that any exact loss needs (S = X Y^T, G Y, G^T X: the faster of whole matrices and row blocks
into reused buffers), taking the fastest of the repeats of each: a shared machine's speed drifts, and the products timed next to a loss measure
it. Printed: each library's time and its distance to the products ("x products"), the
speed-up (the peer's distance over pairloss's: the ratio of the times, corrected for the speed
of the machine in each process), the peak memory, and the relative difference of the two loss
values on the same inputs. CLIP's column softmax needs the whole column before any gradient, so
with O(block x B) memory its exact gradient costs a fourth product (the scores of each block
twice): its floor is 4/3 of the three products.

Peak memory is the resident set's high-water mark (``ru_maxrss``) during the first call (with
its backward pass), minus the resident set after the inputs and their gradient buffers were
made.
open_clip and lightly install without their dependencies here, so open_clip's ``loss.py`` is
loaded on its own from the installed package. Not a test: run by hand.
"""

from __future__ import annotations

import importlib.util
import json
import math
import multiprocessing as mp
import sys
import time

import torch

LOSSES = ("CLIP", "SigLIP", "MNRL")
PEERS = {"CLIP": "open_clip", "SigLIP": "open_clip", "MNRL": "sentence-transformers"}


def _open_clip_loss():
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip is not installed")
    path = list(spec.submodule_search_locations)[0] + "/loss.py"
    loader_spec = importlib.util.spec_from_file_location("_bench_open_clip_loss", path)
    module = importlib.util.module_from_spec(loader_spec)
    loader_spec.loader.exec_module(module)
    return module


def _inputs(batch: int, dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(batch, dim, generator=g), dim=1)
    y = torch.nn.functional.normalize(x + 0.5 * torch.randn(batch, dim, generator=g), dim=1)
    return x.requires_grad_(), y.requires_grad_()


def _loss_fn(library: str, name: str):
    """``f(x, y, scale, bias) -> loss`` of one library's loss (scale and bias are leaves)."""
    if library == "pairloss":
        from .compat.open_clip import ClipLoss, SigLipLoss
        from .losses.contrastive.in_batch import InBatchNegativesLoss

        clip, siglip, mnrl = ClipLoss(), SigLipLoss(), InBatchNegativesLoss()
    else:
        if name == "MNRL":
            from sentence_transformers.sentence_transformer.losses import (
                MultipleNegativesRankingLoss,
            )

            st = MultipleNegativesRankingLoss(None)
            return lambda x, y, s, b: st.compute_loss_from_embeddings([x, y], None)
        oc = _open_clip_loss()
        clip, siglip = oc.ClipLoss(), oc.SigLipLoss()
    if name == "CLIP":
        return lambda x, y, s, b: clip(x, y, s.exp())
    if name == "SigLIP":
        return lambda x, y, s, b: siglip(x, y, s.exp(), b)
    return lambda x, y, s, b: mnrl(x, y)


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _products_time(x: torch.Tensor, y: torch.Tensor) -> float:
    """Time of the three products S = X Y^T, G Y, G^T X: the faster of whole matrices and row
    blocks of the two-tower engine's size written into reused buffers."""
    from .two_towers import tower_block_rows

    block = min(x.shape[0], tower_block_rows(y.shape[0], x.device))
    buffer = x.new_empty((block, y.shape[0]))
    grad_x, grad_y = torch.empty_like(x), torch.zeros_like(y)

    def whole():
        s = x @ y.T
        _ = s @ y
        _ = s.T @ x

    def blocked():
        for start in range(0, x.shape[0], block):
            end = min(x.shape[0], start + block)
            s = torch.mm(x[start:end], y.T, out=buffer[: end - start])
            torch.mm(s, y, out=grad_x[start:end])
            grad_y.addmm_(s.T, x[start:end])

    best = math.inf
    with torch.no_grad():
        for way in (whole, blocked):
            t0 = time.perf_counter()
            way()
            best = min(best, time.perf_counter() - t0)
    return best


def _measure(queue, library, name, batch, dim, repeats, threads):
    torch.set_num_threads(threads)
    try:
        x, y = _inputs(batch, dim)
        scale = torch.tensor(math.log(1 / 0.07) if name == "CLIP" else math.log(10.0))
        scale.requires_grad_(True)
        bias = torch.tensor(-10.0, requires_grad=True)
        for t in (x, y, scale, bias):
            t.grad = torch.zeros_like(t)
        fn = _loss_fn(library, name)
        base = _rss_mb()
        fn(x, y, scale, bias).backward()  # warm-up; the resident set's peak
        peak = _rss_mb() - base
        times, products, value = [], [], None
        for _ in range(repeats):  # the loss and the products in turn: the same machine state
            t0 = time.perf_counter()
            loss = fn(x, y, scale, bias)
            loss.backward()
            times.append(time.perf_counter() - t0)
            value = float(loss.detach())
            products.append(_products_time(x.detach(), y.detach()))
        queue.put({"time": min(times), "products": min(products), "peak_mb": peak, "value": value})
    except Exception as exc:  # report, e.g. out of memory or a missing peer
        queue.put({"error": f"{type(exc).__name__}: {str(exc)[:120]}"})


def measure(library, name, batch, dim, repeats, threads) -> dict:
    """One measurement in a fresh spawned process: the fastest time of the loss and of the
    three products, the peak memory and the loss value."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=_measure, args=(queue, library, name, batch, dim, repeats, threads))
    p.start()
    p.join()
    if p.exitcode != 0 and queue.empty():
        return {"error": f"process died (exit {p.exitcode}, likely out of memory)"}
    return queue.get()


def main(argv=None) -> int:
    """Parse the options, measure, print the table; 0 on success."""
    from .bench import _positive
    from .cli import OneLineParser  # one error line and exit status 2, like every command

    ap = OneLineParser(
        prog="pairloss bench --family contrastive", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--family", choices=["contrastive"], default="contrastive")
    ap.add_argument("--batch", type=_positive, nargs="+", default=[4096, 16384])
    ap.add_argument("--dim", type=_positive, nargs="+", default=[384, 512])
    ap.add_argument("--losses", nargs="+", choices=LOSSES, default=list(LOSSES))
    ap.add_argument("--repeats", type=_positive, default=3)
    ap.add_argument("--threads", type=_positive, default=torch.get_num_threads())
    ap.add_argument("--only", choices=["pairloss", "both"], default="both")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    args = ap.parse_args(argv)
    head = (
        f"{'loss':7s} {'B':>6s} {'D':>4s} {'pairloss ms':>11s} {'x products':>10s} {'peak MB':>8s}"
    )
    if args.only == "both":
        head += (
            f" {'peer':>21s} {'peer ms':>9s} {'x products':>10s} {'peer MB':>8s} "
            f"{'speed-up':>8s} {'value diff':>10s}"
        )
    print(f"threads={args.threads} repeats={args.repeats}")
    print(head, flush=True)
    rows = []
    for batch in args.batch:
        for dim in args.dim:
            for name in args.losses:
                common = (batch, dim, args.repeats, args.threads)
                ours = measure("pairloss", name, *common)
                row = {"loss": name, "batch": batch, "dim": dim, "pairloss": ours}
                line = f"{name:7s} {batch:6d} {dim:4d} "
                if "error" in ours:
                    line += ours["error"]
                else:
                    line += (
                        f"{ours['time'] * 1e3:11.0f} {ours['time'] / ours['products']:10.2f} "
                        f"{ours['peak_mb']:8.0f}"
                    )
                if args.only == "both":
                    theirs = measure("peer", name, *common)
                    row["peer"] = theirs
                    if "error" in theirs:
                        line += f"  {PEERS[name]}: {theirs['error']}"
                    elif "error" not in ours:
                        diff = abs(ours["value"] - theirs["value"]) / max(
                            abs(theirs["value"]), 1e-30
                        )
                        speedup = (theirs["time"] / theirs["products"]) / (
                            ours["time"] / ours["products"]
                        )
                        line += (
                            f" {PEERS[name]:>21s} {theirs['time'] * 1e3:9.0f} "
                            f"{theirs['time'] / theirs['products']:10.2f} {theirs['peak_mb']:8.0f} "
                            f"{speedup:7.2f}x {diff:10.1e}"
                        )
                print(line, flush=True)
                rows.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
