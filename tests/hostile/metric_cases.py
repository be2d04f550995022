"""Hostile cases for the public functions of :mod:`pairloss.metrics`.

:data:`EXAMPLES` holds one small valid call per public function (a metric added to the package
must add its example here: ``test_every_metric_has_an_example`` says so). From each example the
cases are generated as for the losses: the tensors of the call are mutated
(:func:`~tests.hostile.mutations.mutations`), every parameter with a default gets hostile values
(read from the signature), and every ``metric`` the function takes is run at ordinary and
extreme magnitudes. A result must be finite (``None`` where the metric documents an undefined
value), equal for integer labels given as floats, equal (to the dtype's rounding) in float32,
float16 and bfloat16, and unchanged at 1e-30 and 1e30 when the function is invariant to the scale
of its inputs at ordinary magnitudes (rankings, cosine scores).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator

import torch

import pairloss.metrics as metrics
from pairloss import catalogue

from .harness import BAD_VALUES, Refused, assert_finite, leaves, outcome, param_of, rule_for
from .mutations import mutations, replace, scaled

N, DIM = 24, 6
METRICS = ("cosine", "dot", "euclidean")


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, DIM, generator=g, dtype=torch.float64), torch.arange(N) % 4


def _scores() -> dict:
    g = torch.Generator().manual_seed(1)
    same = torch.arange(N) % 2 == 0
    return {"scores": torch.randn(N, generator=g, dtype=torch.float64) + same, "is_same": same}


def _probe_gallery() -> dict:
    x, y = _batch()
    half = N // 2
    return {
        "probe": x[:half],
        "probe_labels": y[:half],
        "gallery": x[half:],
        "gallery_labels": y[half:],
    }


def _open_set() -> dict:
    """Probes of four identities, two of them enrolled in the gallery."""
    call = _probe_gallery()
    keep = call["gallery_labels"] < 2
    return replace(call, gallery=call["gallery"][keep], gallery_labels=call["gallery_labels"][keep])


def _pairs() -> dict:
    x, _ = _batch()
    g = torch.Generator().manual_seed(2)
    return {"emb_a": x, "emb_b": x + 0.5 * torch.randn(N, DIM, generator=g, dtype=torch.float64)}


EXAMPLES: dict[str, Callable[[], dict]] = {  # metrics on conventions the catalogue lacks
    "retrieval": lambda: {**dict(zip(("query", "query_labels"), _batch())), "k": (1, 2, 4)},
    "knn": lambda: {"query": _batch()[0], "gallery": _batch(3)[0], "k": 5},
    "cmc": lambda: {**_probe_gallery(), "ranks": (1, 2)},
    "dir_at_far": lambda: {**_open_set(), "far": (0.5, 0.25)},
    "clustering": lambda: dict(zip(("embeddings", "labels"), _batch())),
    "kmeans_labels": lambda: {"embeddings": _batch()[0], "n_clusters": 4},
    "cluster_scores": lambda: {"labels": _batch()[1], "cluster_labels": torch.arange(N) % 3},
    "verification": _scores,
    "roc_curve": _scores,
    "roc_auc": _scores,
    "pair_scores": _pairs,
    "verification_from_pairs": lambda: {**_pairs(), "is_same": torch.arange(N) % 2 == 0},
    "alignment": lambda: dict(zip(("embeddings", "labels"), _batch())),
    "uniformity": lambda: {"embeddings": _batch()[0]},
    "tolerance": lambda: dict(zip(("embeddings", "labels"), _batch())),
    "similarity_stats": lambda: dict(zip(("embeddings", "labels"), _batch())),
    "icnn_score": lambda: dict(zip(("embeddings", "labels"), _batch())),
}
"""One valid call (argument name -> value) of each public metric whose arguments no call
convention of the loss catalogue holds."""


#: Values for required settings of a metric that no call convention holds.
SETTINGS = {"k": 2}


def _from_catalogue(name: str) -> Callable[[], dict] | None:
    """An example call of metric ``name`` built from the first call convention of the loss
    catalogue (:data:`pairloss.catalogue.EXAMPLES`) that holds every argument the metric
    requires (ranking metrics take a slate, preference metrics preference log-probabilities),
    so that a metric on a convention the catalogue knows needs no example of its own."""
    params = inspect.signature(getattr(metrics, name)).parameters
    required = {n for n, p in params.items() if p.default is inspect.Parameter.empty}
    for builder in catalogue.EXAMPLES.values():
        call = builder(N, DIM, torch.Generator().manual_seed(0), torch.float64).call
        if required - SETTINGS.keys() <= call.keys():

            def make(builder=builder) -> dict:
                call = builder(N, DIM, torch.Generator().manual_seed(0), torch.float64).call
                out = {k: v for k, v in call.items() if k in params}
                out.update({k: v for k, v in SETTINGS.items() if k in required})
                return out

            return make
    return None


def example_of(name: str) -> Callable[[], dict] | None:
    """The example call of metric ``name``: its entry of :data:`EXAMPLES`, else one built from
    the loss catalogue's call conventions (None if neither has one)."""
    return EXAMPLES.get(name) or _from_catalogue(name)


def public_functions() -> list[str]:
    """The public functions of :mod:`pairloss.metrics` that compute something from data."""
    return [
        n
        for n in metrics.__all__
        if inspect.isfunction(getattr(metrics, n)) and n != "faiss_available"
    ]


@dataclasses.dataclass
class MetricCase:
    """One hostile call of a metric function."""

    id: str
    name: str
    call: dict
    names: tuple[str, ...]
    rule: str = "either"
    reference: dict | None = None
    rtol: float = 1e-7


def _run(name: str, call: dict):
    return getattr(metrics, name)(**call)


def _flat(result) -> dict:
    """path -> number, tensor or None, for comparing two results."""
    out = {}

    def walk(v, path):
        if v is None:
            out[path] = None
        elif isinstance(v, bool):
            out[path] = v
        else:
            for p, leaf in leaves(v, path):
                out[p] = leaf

    if dataclasses.is_dataclass(result):
        for f in dataclasses.fields(result):
            walk(getattr(result, f.name), f"result.{f.name}")
    else:
        walk(result, "result")
    return out


def assert_same_result(a, b, rtol: float, what: str) -> None:
    """Two results of one metric agree: the same fields, numbers equal to ``rtol`` (relative to
    the largest number of the field), the same Nones and flags."""
    fa, fb = _flat(a), _flat(b)
    assert fa.keys() == fb.keys(), f"{what}: fields differ: {sorted(fa.keys() ^ fb.keys())}"
    for k in fa:
        x, y = fa[k], fb[k]
        if x is None or y is None or isinstance(x, bool):
            assert x == y, f"{what}: {k} is {x!r}, reference {y!r}"
            continue
        x = torch.as_tensor(x, dtype=torch.float64) if not isinstance(x, torch.Tensor) else x
        y = torch.as_tensor(y, dtype=torch.float64) if not isinstance(y, torch.Tensor) else y
        assert x.shape == y.shape, (
            f"{what}: {k} has shape {tuple(x.shape)}, reference {tuple(y.shape)}"
        )
        if not (x.is_floating_point() or y.is_floating_point()):
            assert torch.equal(x, y.to(x.dtype)), f"{what}: {k} differs"
            continue
        x, y = x.double(), y.double()
        finite = torch.isfinite(y)
        same = torch.equal(torch.isfinite(x), finite) and torch.equal(x[~finite], y[~finite])
        assert same, f"{what}: {k} has other infinities than the reference"
        x, y = x[finite], y[finite]
        scale = float(y.abs().max()) if y.numel() else 0.0
        err = float((x - y).abs().max()) if y.numel() else 0.0
        assert err <= rtol * max(scale, 1.0), (
            f"{what}: {k} differs by {err:.3g} (scale {scale:.3g})"
        )


def _without_documented_infinities(result) -> dict:
    """The result's fields (see :func:`_flat`), thresholds set aside after checking that their
    only non-finite value is the documented ``+inf`` (accept no pair: the first ROC threshold,
    as scikit-learn's ``roc_curve``, and a fold's threshold when rejecting every pair is best)."""
    out = {}
    for k, v in _flat(result).items():
        if "thresholds" in k and v is not None:
            t = torch.as_tensor(v, dtype=torch.float64)
            assert bool((torch.isfinite(t) | (t == float("inf"))).all()), f"{k} = {t}"
            continue
        out[k] = v
    return out


def check_metric(case: MetricCase) -> None:
    """The rule of :mod:`harness` and the case's reference."""
    try:
        result = outcome(lambda: _run(case.name, case.call), case.names, case.rule, case.id)
    except Refused:
        return
    assert_finite(_without_documented_infinities(result), case.id)
    if case.reference is not None:
        assert_same_result(result, _run(case.name, case.reference), case.rtol, case.id)


def _invariant(name: str, call: dict) -> bool:
    """Whether the function's result is unchanged when its floating inputs are doubled or
    halved (rankings and cosine scores are)."""
    try:
        base = _run(name, call)
        for f in (2.0, 0.5):
            assert_same_result(_run(name, scaled(call, f)), base, 1e-9, "probe")
    except (AssertionError, Exception):  # noqa: BLE001 - such a function is caught by its cases
        return False
    return True


def _params(name: str) -> list:
    fn = getattr(metrics, name)
    return [
        param_of(fn, n)
        for n, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    ]


def cases_for(name: str) -> Iterator[MetricCase]:
    """Every generated case of one metric function."""
    call = example_of(name)()
    n = max(
        (v.shape[0] for v in call.values() if isinstance(v, torch.Tensor) and v.dim()), default=0
    )
    # a refusal may name any argument: a mismatch between the data and a setting (more folds
    # than pairs, a rank beyond the gallery) names the setting
    names = tuple(inspect.signature(getattr(metrics, name)).parameters)
    invariant = _invariant(name, call)
    for m in mutations(call, n):
        rule, reference = m.rule, None
        if m.reference in ("same", "close") or (m.reference == "scaled" and invariant):
            rule, reference = "valid", m.base
        yield MetricCase(f"{name}-{m.label}", name, m.call, names, rule, reference, m.rtol)
    params = _params(name)
    for p in params:
        for label, value in BAD_VALUES:
            r = rule_for(p, label)
            if r is not None and p.name not in call:
                yield MetricCase(
                    f"{name}-{p.name}={label}", name, replace(call, **{p.name: value}), (p.name,), r
                )
    if any(p.name == "metric" for p in params):
        for metric in METRICS:
            base = replace(call, metric=metric)
            inv = _invariant(name, base)
            for f in (1.0, 1e-20, 1e20):
                rule = "valid" if f == 1.0 or inv else "either"
                yield MetricCase(
                    f"{name}-metric={metric}-times-{f:g}",
                    name,
                    scaled(base, f, torch.float32),
                    ("metric", *names),
                    rule,
                    scaled(base, 1.0, torch.float32) if inv else None,
                    1e-3,
                )


def all_cases() -> list[MetricCase]:
    """Every generated metric case."""
    return [c for name in public_functions() if example_of(name) for c in cases_for(name)]
