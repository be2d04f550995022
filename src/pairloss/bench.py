"""Speed and memory of pairloss losses against pytorch-metric-learning, in one process.

For every loss that both libraries have, on the same inputs: median forward+backward time, peak
memory beyond the inputs, and the time of the three matrix products that any exact
implementation must do (S = X X^T, G X, G^T X: the physical limit of a row-decomposable loss;
timed next to each loss, the faster of whole matrices and row blocks into reused buffers).
Prints ratios. Not a test: run it by hand, as ``pairloss bench`` or
``python benchmarks/losses.py`` (the same options), e.g.

    pairloss bench --batch 4096 --dim 512
    pairloss bench --batch 16384 --dim 512 --only pairloss   # memory at scale
    pairloss bench --family proxy --batch 4096 --dim 512 --classes 100000

Two families of losses:

- ``--family pair`` (the default): the in-batch pair losses; the inputs are clustered
  embeddings X [B, D] whose labels take ``--classes`` values.
- ``--family proxy``: the proxy and margin-softmax losses (ArcFace, CosFace, ProxyAnchor,
  ProxyNCA, NormalizedSoftmax); the inputs are X [B, D] with labels in [0, C), C =
  ``--classes``, and each loss owns C class weights W [C, D]. Both libraries start from the same
  weights (the same seeded draw written into each library's layout: pytorch-metric-learning keeps
  ArcFace / CosFace / NormalizedSoftmax weights as [D, C] and ProxyAnchor / ProxyNCA proxies as
  [C, D]). The three products are X W^T [B, C], G W [B, D] and G^T X [C, D].

- ``--family scale``: distributed, GradCache and memory at scale against open_clip and
  sentence-transformers (:mod:`pairloss.scale.bench`, its own options).

The peer library (pytorch-metric-learning) is needed unless ``--only pairloss``.

Peak memory is read from the process's resident set (``ru_maxrss``) in a fresh subprocess per
measurement, minus the resident set after the inputs (and the loss's weights) and their
gradients were made. With ``--device cuda`` everything runs on the GPU: times are taken after
``torch.cuda.synchronize()``, and peak memory is the CUDA allocator's peak
(``torch.cuda.max_memory_allocated``) minus its peak before the first call (the inputs, the
loss's weights and their gradients).
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing as mp
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

FAMILIES = ("pair", "proxy")
OWN_BENCHMARKS = {
    "contrastive": "pairloss.bench_contrastive",
    "ranking": "pairloss.bench_ranking",
    "scale": "pairloss.scale.bench",
}
"""Families measured by a benchmark module of their own, with its own options."""
DEFAULT_CLASSES = {"pair": 256, "proxy": 10_000}
PROXY_SEED = 1
_FILL_ROWS = 4096


def _losses(which: str, family: str = "pair"):
    if family == "proxy":
        return _proxy_losses(which)
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
        **_pml_family(pairloss),
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
        **_pml_family(L),
    }


# pytorch-metric-learning's other losses, built the same way from either library's module
_PML_FAMILY = {
    "Angular": ("AngularLoss", {}),
    "DynamicSoftMargin": ("DynamicSoftMarginLoss", {}),
    "FastAP": ("FastAPLoss", {}),
    "Histogram": ("HistogramLoss", {}),
    "Instance": ("InstanceLoss", {}),
    "IntraPairVariance": ("IntraPairVarianceLoss", {}),
    "LiftedStructurePML": ("LiftedStructureLoss", {}),
    "NCA": ("NCALoss", {}),
    "PNP": ("PNPLoss", {}),
    "RankedList": ("RankedListLoss", {"margin": 0.4, "Tn": 4.0}),
    "SNRContrastive": ("SignalToNoiseRatioContrastiveLoss", {}),
    "SmoothAP": ("SmoothAPLoss", {}),
    "ThresholdConsistentMargin": ("ThresholdConsistentMarginLoss", {}),
    "TupletMargin": ("TupletMarginLoss", {}),
    "VICReg": ("VICRegLoss", {}),
}
# losses whose inputs differ from the clustered batch: SmoothAP needs as many samples per class
# as classes (pytorch-metric-learning groups consecutive runs), VICReg two views
_SQUARE_LABELS = ("SmoothAP",)
_TWO_VIEWS = ("VICReg",)


def _pml_family(module) -> dict:
    def make(cls_name, kw, name):
        def build():
            loss = getattr(module, cls_name)(**kw)
            if name in _TWO_VIEWS:
                return lambda x, y: loss(x[0::2], ref_emb=x[1::2])
            if name == "DynamicSoftMargin" and module.__name__.startswith("pytorch_metric"):
                # its histogram keeps the last batch's graph: cut it, or the next step fails
                def step(x, y):
                    loss.hist_ = loss.hist_.detach()
                    return loss(x, y)

                return step
            return loss

        return build

    def manifold():
        made = {}

        def step(x, y):  # ManifoldLoss's proxies need the embedding size: made on the first call
            if "loss" not in made:
                torch.manual_seed(PROXY_SEED)
                made["loss"] = module.ManifoldLoss(x.shape[1]).to(x.device)
            return made["loss"](x)

        return step

    out = {name: make(cls, kw, name) for name, (cls, kw) in _PML_FAMILY.items()}
    out["Manifold"] = manifold
    return out


def fill_proxies(w: torch.Tensor) -> None:
    """Fill ``w`` [C, D] (any strides, e.g. the transpose of a [D, C] weight) in place with the
    benchmark's seeded N(0, 1) draw, a few thousand rows at a time (no second [C, D] copy)."""
    g = torch.Generator().manual_seed(PROXY_SEED)
    with torch.no_grad():
        for start in range(0, w.shape[0], _FILL_ROWS):
            end = min(w.shape[0], start + _FILL_ROWS)
            w[start:end].copy_(torch.randn(end - start, w.shape[1], generator=g))


def _pml_proxy(cls, attr: str, layout: str):
    """A factory ``(C, D) -> loss`` for a pytorch-metric-learning proxy loss whose weight
    ``attr`` is stored as ``layout`` ("CD" or "DC"), filled by :func:`fill_proxies` (k rows
    per class for the losses with several centres per class, class c's in rows c*k .. c*k+k-1
    in both libraries)."""

    def make(classes: int, dim: int):
        loss = cls(num_classes=classes, embedding_size=dim)
        w = getattr(loss, attr).data
        view = w.T if layout == "DC" else w
        if view.shape[1] != dim or view.shape[0] % classes:
            raise RuntimeError(
                f"{cls.__name__}.{attr}: expected layout {layout}, got shape {tuple(w.shape)}"
            )
        fill_proxies(view)
        return loss

    return make


def _proxy_losses(which: str):
    """Factories ``(C, D) -> loss module`` of the proxy family, both with the same weights."""
    import pairloss

    if which == "pairloss":
        init = fill_proxies
        return {
            "ArcFace": lambda c, d: pairloss.ArcFaceLoss(c, d, init=init),
            "CosFace": lambda c, d: pairloss.CosFaceLoss(c, d, init=init),
            "ProxyAnchor": lambda c, d: pairloss.ProxyAnchorLoss(c, d, init=init),
            "ProxyNCA": lambda c, d: pairloss.ProxyNCALoss(c, d, init=init),
            "NormalizedSoftmax": lambda c, d: pairloss.NormalizedSoftmaxLoss(c, d, init=init),
            "P2SGrad": lambda c, d: pairloss.P2SGradLoss(d, c, init=init),
            "SubCenterArcFace": lambda c, d: pairloss.SubCenterArcFaceLoss(c, d, init=init),
            "LargeMarginSoftmax": lambda c, d: pairloss.LargeMarginSoftmaxLoss(c, d, init=init),
            "SphereFace": lambda c, d: pairloss.SphereFaceLoss(c, d, init=init),
            "SoftTriple": lambda c, d: pairloss.SoftTripleLoss(c, d, init=init),
        }
    from pytorch_metric_learning import losses as L

    return {
        "ArcFace": _pml_proxy(L.ArcFaceLoss, "W", "DC"),
        "CosFace": _pml_proxy(L.CosFaceLoss, "W", "DC"),
        "ProxyAnchor": _pml_proxy(L.ProxyAnchorLoss, "proxies", "CD"),
        "ProxyNCA": _pml_proxy(L.ProxyNCALoss, "proxies", "CD"),
        "NormalizedSoftmax": _pml_proxy(L.NormalizedSoftmaxLoss, "W", "DC"),
        "P2SGrad": _pml_p2s(L.P2SGradLoss),
        "SubCenterArcFace": _pml_proxy(L.SubCenterArcFaceLoss, "W", "DC"),
        "LargeMarginSoftmax": _pml_proxy(L.LargeMarginSoftmaxLoss, "W", "DC"),
        "SphereFace": _pml_proxy(L.SphereFaceLoss, "W", "DC"),
        "SoftTriple": _pml_proxy(L.SoftTripleLoss, "fc", "DC"),
    }


def _pml_p2s(cls):
    """pytorch-metric-learning's P2SGradLoss (arguments (D, C), weight ``weight`` [D, C]) with
    the benchmark's weights."""

    def make(classes: int, dim: int):
        loss = cls(dim, classes)
        fill_proxies(loss.weight.data.T)
        return loss

    return make


def _proxy_inputs(batch: int, dim: int, classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (batch,), generator=g)
    x = torch.randn(batch, dim, generator=g)
    return x, y


def _inputs(batch: int, dim: int, classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (batch,), generator=g)
    centres = torch.randn(classes, dim, generator=g)
    x = centres[y] + 1.5 * torch.randn(batch, dim, generator=g)
    return x, y


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _now(device: torch.device) -> float:
    """Wall time, after the device's queued work has finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _rss_mb()


def _products_time(x: torch.Tensor, w: torch.Tensor, repeats: int) -> float:
    """Median time of the three products S = X W^T, G W, G^T X (G of the shape of S), done the
    faster of two ways: whole matrices, or row blocks of the engine's default size written into
    reused buffers (no allocation per block)."""
    from .engine import default_block_size

    block = min(x.shape[0], default_block_size(w.shape[0], x.device))
    buffer = x.new_empty((block, w.shape[0]))
    grad_x, grad_w = torch.empty_like(x), torch.zeros_like(w)

    def whole():
        s = x @ w.T
        _ = s @ w
        _ = s.T @ x

    def blocked():
        for start in range(0, x.shape[0], block):
            end = min(x.shape[0], start + block)
            s = torch.mm(x[start:end], w.T, out=buffer[: end - start])
            torch.mm(s, w, out=grad_x[start:end])
            grad_w.addmm_(s.T, x[start:end])

    best = float("inf")
    for way in (whole, blocked):
        times = []
        for _ in range(repeats + 1):  # the first run warms up and is not timed
            t0 = _now(x.device)
            way()
            times.append(_now(x.device) - t0)
        best = min(best, statistics.median(times[1:]))
    return best


def _measure(
    queue,
    library,
    name,
    batch,
    dim,
    classes,
    repeats,
    threads,
    family="pair",
    device="cpu",
    memory_gb=None,
):
    torch.set_num_threads(threads)
    if memory_gb:  # a loss that needs more fails with an out-of-memory error instead
        limit = int(memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        device = torch.device(device)
        proxy = family == "proxy"
        if name in _SQUARE_LABELS:
            classes = max(1, int(batch**0.5))
        x, y = (_proxy_inputs if proxy else _inputs)(batch, dim, classes)
        if name in _SQUARE_LABELS:  # sorted by class, as many samples per class as classes
            y = torch.arange(batch) // max(1, batch // classes)
        x, y = x.to(device), y.to(device)
        x.requires_grad_(True)
        x.grad = torch.zeros_like(x)
        fn = w = None
        if library == "products":
            # the candidates of the three products: X itself, or the class weights W [C, D]
            w = x.detach()
            if proxy:
                w = torch.empty(classes, dim)
                fill_proxies(w)
                w = w.to(device)
        elif proxy:
            fn = _losses(library, family)[name](classes, dim).to(device)
            for p in fn.parameters():
                p.grad = torch.zeros_like(p)
        else:
            fn = _losses(library)[name]()
            if isinstance(fn, torch.nn.Module):  # a loss with a miner is a plain function
                fn = fn.to(device)
        if fn is None:
            queue.put({"time": _products_time(x.detach(), w, repeats), "peak_mb": 0.0})
            return
        base = _peak_mb(device)
        times = []
        value = None
        for _ in range(repeats + 1):  # the first run warms up and is not timed
            t0 = _now(device)
            loss = fn(x, y)
            loss.backward()
            value = loss.detach()
            times.append(_now(device) - t0)
        out = {"time": statistics.median(times[1:]), "peak_mb": _peak_mb(device) - base}
        if proxy and value is not None:
            out["value"] = float(value)
        queue.put(out)
    except Exception as exc:  # report, e.g. out of memory
        queue.put({"error": f"{type(exc).__name__}: {str(exc)[:120]}"})


def measure(
    library,
    name,
    batch,
    dim,
    classes,
    repeats,
    threads,
    family="pair",
    device="cpu",
    memory_gb=None,
):
    """Run one measurement in a fresh spawned process (its address space capped at
    ``memory_gb`` when given); a dict with time and peak memory (and, for the proxy family,
    the loss value)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(
        target=_measure,
        args=(queue, library, name, batch, dim, classes, repeats, threads, family, device),
        kwargs={"memory_gb": memory_gb},
    )
    p.start()
    p.join()
    if p.exitcode != 0 and queue.empty():
        return {"error": f"process died (exit {p.exitcode}, likely out of memory)"}
    return queue.get()


def _family_of(argv: list[str]) -> str | None:
    """The value of ``--family`` in ``argv`` (``--family X`` or ``--family=X``), if any."""
    for i, arg in enumerate(argv):
        if arg == "--family" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--family="):
            return arg.split("=", 1)[1]
    return None


def _positive(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, as one error line, what the measurement would only find out later."""
    known = list(_losses("pairloss", args.family))
    unknown = [n for n in args.losses or () if n not in known]
    if unknown:
        ap.error(f"--losses: unknown {unknown[0]!r} for --family {args.family}; expected {known}")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        ap.error(f"--json: the folder of {args.json} does not exist")


def main(argv=None) -> int:
    """Parse the options, measure, print the table; 0 on success."""
    argv = sys.argv[1:] if argv is None else list(argv)
    family = _family_of(argv)
    if family in OWN_BENCHMARKS:
        return importlib.import_module(OWN_BENCHMARKS[family]).main(argv)
    from .cli import OneLineParser  # one error line and exit status 2, like every command

    ap = OneLineParser(prog="pairloss bench", description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=_positive, default=4096)
    ap.add_argument("--dim", type=_positive, default=512)
    ap.add_argument(
        "--family",
        choices=(*FAMILIES, *OWN_BENCHMARKS),
        default="pair",
        help="pair: in-batch pair losses; proxy: proxy and margin-softmax losses; "
        "contrastive: CLIP, SigLIP and MNRL against open_clip and sentence-transformers; "
        "ranking: LambdaLoss and RankNet on slates against allRank and sentence-transformers; "
        "scale: distributed, GradCache and memory at scale (each of these three has its own "
        "options: `pairloss bench --family ranking --help`)",
    )
    ap.add_argument(
        "--classes",
        type=_positive,
        default=None,
        help="pair family: classes of the labels (default 256); proxy family: C, the number of "
        "classes and of class weights (default 10000)",
    )
    ap.add_argument("--repeats", type=_positive, default=3)
    ap.add_argument("--threads", type=_positive, default=torch.get_num_threads())
    ap.add_argument("--losses", nargs="*", default=None, help="names to run (default: all)")
    ap.add_argument("--only", choices=["pairloss", "both"], default="both")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument(
        "--memory-gb",
        type=float,
        default=None,
        help="cap each measurement's address space (CPU): a loss needing more reports an "
        "out-of-memory error instead of swapping the machine",
    )
    args = ap.parse_args(argv)
    _check_args(ap, args)
    if args.classes is None:
        args.classes = DEFAULT_CLASSES[args.family]
    family = args.family
    names = args.losses or list(_losses("pairloss", family))
    common = (args.batch, args.dim, args.classes, args.repeats, args.threads)
    where = {"family": family, "device": args.device, "memory_gb": args.memory_gb}
    limit = measure("products", None, *common, **where)
    if "error" in limit:
        print(f"three products: {limit['error']}")
        return 1
    if family == "proxy":
        print(
            f"B={args.batch} D={args.dim} C={args.classes} device={args.device} "
            f"threads={args.threads}: "
            f"three products (X W^T, G W, G^T X) {limit['time'] * 1e3:.0f} ms"
        )
    else:
        print(
            f"B={args.batch} D={args.dim} classes={args.classes} device={args.device} "
            f"threads={args.threads}: "
            f"three products {limit['time'] * 1e3:.0f} ms"
        )
    head = f"{'loss':26s} {'pairloss ms':>11s} {'x limit':>7s} {'peak MB':>8s}"
    if args.only == "both":
        head += f" {'PML ms':>9s} {'PML MB':>8s} {'time ratio':>10s} {'mem ratio':>9s}"
        if family == "proxy":
            head += f" {'loss rel diff':>13s}"  # same inputs and weights: same loss value
    print(head)
    rows = []
    for i, name in enumerate(names):
        if i:  # the machine's speed drifts: time the products again next to each loss
            limit = measure("products", None, *common, **where)
        ours = measure("pairloss", name, *common, **where)
        row = {"loss": name, "pairloss": ours, "limit_ms": limit["time"] * 1e3}
        if "error" in ours:
            line = f"{name:26s} {ours['error']}"
        else:
            line = (
                f"{name:26s} {ours['time'] * 1e3:11.0f} {ours['time'] / limit['time']:7.2f} "
                f"{ours['peak_mb']:8.0f}"
            )
        if args.only == "both":
            theirs = measure("pml", name, *common, **where)
            row["pml"] = theirs
            if "error" in theirs:
                line += f"  PML: {theirs['error']}"
            elif "error" not in ours:
                line += (
                    f" {theirs['time'] * 1e3:9.0f} {theirs['peak_mb']:8.0f} "
                    f"{theirs['time'] / ours['time']:9.2f}x "
                    f"{theirs['peak_mb'] / max(ours['peak_mb'], 1):8.1f}x"
                )
                if "value" in ours and "value" in theirs:
                    diff = abs(ours["value"] - theirs["value"])
                    line += f" {diff / max(abs(theirs['value']), 1e-30):13.1e}"
        print(line, flush=True)
        rows.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
