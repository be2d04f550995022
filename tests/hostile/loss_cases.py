"""Hostile cases generated from the loss catalogue.

Every entry of :data:`pairloss.catalogue.LOSSES` gives a small valid call
(:func:`pairloss.catalogue.example`); the cases mutate whatever tensors that call holds (shapes,
dtypes, devices, NaN/Inf, empty and degenerate batches, extreme magnitudes, half precision) and
every constructor parameter (read from the signature), so a loss or a call convention added to
the catalogue is covered without new test code.

A valid outcome is checked against references (:func:`check_loss`): the value under
``torch.no_grad()`` and with inputs that need no gradient equals the value with gradients; the
dense and blocked engines (block size 5, which divides no example batch) agree on the value and
every gradient; half precision agrees with float32 on the same rounded inputs; float32 agrees
with float64; and a loss invariant to the scale of its inputs at ordinary magnitudes (cosine
losses) stays invariant at 1e-30 and 1e30.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from collections.abc import Callable, Iterator
from functools import partial

import torch

from pairloss import PairLossError
from pairloss.catalogue import LOSSES, LossEntry, example

from .harness import (
    BAD_VALUES,
    Refused,
    assert_close,
    assert_finite,
    constructor_params,
    outcome,
    rule_for,
    tolerance,
)
from .mutations import differentiable, floating, mutations, replace, scaled

N, DIM, BLOCK = 12, 6, 5
DISTANCES = ("cosine", "dot", "euclidean", "squared_euclidean")
REDUCTIONS = ("mean", "mean_valid", "mean_terms", "mean_nonzero", "sum", "none")


@dataclasses.dataclass
class Case:
    """One hostile call of a loss: constructor arguments, call arguments, the argument names a
    refusal may name, whether only a refusal is right, and a reference for the value."""

    id: str
    entry: LossEntry
    init: dict
    call: dict
    names: tuple[str, ...]
    rule: str = "either"
    init_rule: str = "either"
    reference: Callable[[], torch.Tensor] | None = None
    ref_rtol: float = 1e-7
    inputs: tuple[str, ...] | None = None  # differentiated arguments (default: of ``call``)


def supports_engine(entry: LossEntry, init: dict) -> bool:
    """Whether the loss takes ``engine`` and ``block_size`` (the pair-engine losses)."""
    try:
        entry.load()(**{**init, "engine": "dense", "block_size": BLOCK})
    except TypeError:
        return False
    return True


def build(entry: LossEntry, init: dict, **extra) -> torch.nn.Module:
    """The loss module built with ``init`` updated by ``extra``, its parameters drawn from a
    fixed seed (so two builds are equal)."""
    torch.manual_seed(0)
    return entry.load()(**{**init, **extra})


def seeded_call(loss: torch.nn.Module, call: dict):
    """``loss(**call)`` from a fixed seed of torch's global generator (restored after): a loss
    or miner that draws at random (distance-weighted sampling, histogram bins, random
    sub-batches) draws the same in every call that is compared."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return loss(**call)


def _with_grad(call: dict, inputs: tuple[str, ...] | None) -> tuple[dict, list[torch.Tensor]]:
    call = dict(call)
    names = differentiable(call) if inputs is None else inputs
    leaves_ = []
    for k in names:
        v = call.get(k)
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            v = v.detach().clone().requires_grad_(True)
            call[k] = v
            leaves_.append(v)
    return call, leaves_


def evaluate(
    loss: torch.nn.Module, call: dict, inputs: tuple[str, ...] | None = None
) -> tuple[torch.Tensor, list]:
    """(value, gradients of value.sum() with respect to the floating arguments ``inputs``
    (default: those of ``call`` that are not targets, see
    :func:`~tests.hostile.mutations.differentiable`) and the loss's parameters), both checked
    finite."""
    call, inputs = _with_grad(call, inputs)
    params = [p for p in loss.parameters() if p.requires_grad]
    value = seeded_call(loss, call)
    assert isinstance(value, torch.Tensor), f"loss returned {type(value).__name__}"
    assert_finite(value, "value")
    wrt = inputs + params
    if value.requires_grad and wrt:
        grads = torch.autograd.grad(value.sum(), wrt, allow_unused=True)
    else:
        grads = [None] * len(wrt)
    for g in grads:
        if g is not None:
            assert_finite(g, "gradient")
    return value, list(grads)


def _same_in_every_grad_mode(loss, call, value, rtol, what) -> None:
    """The value with gradients equals the value under ``torch.no_grad()`` and the value with
    inputs that need no gradient (a frozen encoder). ``loss`` is in the state it had before
    ``value`` was computed, and each call runs on a copy of it: a loss with state (moving
    averages, per-sample temperatures, a memory) updates it on every call in training mode."""
    detached = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in call.items()}
    with torch.no_grad():
        assert_close(
            seeded_call(copy.deepcopy(loss), detached), value, rtol, f"{what}: value under no_grad"
        )
    assert_close(
        seeded_call(copy.deepcopy(loss), detached), value, rtol, f"{what}: value with frozen inputs"
    )


def check_loss(case: Case) -> None:
    """The rule of :mod:`harness` plus this module's references."""
    entry, init, call = case.entry, case.init, case.call
    try:
        loss = outcome(
            lambda: build(entry, init), case.names, case.init_rule, f"{case.id} (constructor)"
        )
        before = copy.deepcopy(loss)
        value, grads = outcome(
            lambda: evaluate(loss, call, case.inputs), case.names, case.rule, f"{case.id} (call)"
        )
    except Refused:
        return
    dtype = next(iter(floating(call).values()), value).dtype
    rtol = tolerance(dtype)
    _same_in_every_grad_mode(before, call, value, rtol, case.id)
    if case.reference is not None:
        assert_close(value, case.reference(), case.ref_rtol, f"{case.id}: value vs reference")
    if not supports_engine(entry, init):
        return
    runs = {}
    for engine in ("dense", "blocked"):
        loss = build(entry, init, engine=engine, block_size=BLOCK)
        before = copy.deepcopy(loss)
        try:  # a forced engine may refuse a setting it cannot run, naming the engine
            runs[engine] = outcome(
                partial(evaluate, loss, call, case.inputs), ("engine",), what=case.id
            )
        except Refused:
            return
        _same_in_every_grad_mode(before, call, runs[engine][0], rtol, f"{case.id} [{engine}]")
    (vd, gd), (vb, gb) = runs["dense"], runs["blocked"]
    # the size of a gradient of this value with respect to inputs of this size
    inputs = [v.detach().abs().max() for v in floating(call).values() if v.numel()]
    grad_scale = (float(vd.detach().abs().sum()) + 1.0) / max(
        float(max(inputs, default=1.0)), 1e-300
    )
    assert_close(vb, vd, rtol, f"{case.id}: blocked value vs dense")
    for i, (b, d) in enumerate(zip(gb, gd)):
        if d is None or b is None:
            other = d if b is None else b
            assert other is None or not bool(other.any()), f"{case.id}: gradient {i} missing"
            continue
        assert_close(b, d, rtol * 10, f"{case.id}: blocked gradient {i} vs dense", grad_scale)


# ------------------------------------------------------------------------------- generation


def _value_of(entry: LossEntry, init: dict, call: dict) -> Callable[[], torch.Tensor]:
    def ref():
        with torch.no_grad():
            return seeded_call(build(entry, init), call)

    return ref


def _scale_invariant(entry: LossEntry, init: dict, call: dict) -> bool:
    """Whether the loss's value is unchanged when its floating inputs are doubled or halved."""
    try:
        base = _value_of(entry, init, call)()
        for f in (2.0, 0.5):
            other = _value_of(entry, init, scaled(call, f))()
            if not torch.allclose(other, base, rtol=1e-9, atol=1e-12):
                return False
    except Exception:  # noqa: BLE001 - a loss that fails here is caught by its own cases
        return False
    return True


def input_cases(entry: LossEntry) -> Iterator[Case]:
    """Cases that mutate the tensors of the entry's example call (:func:`mutations`)."""
    ex = example(entry, n=N, dim=DIM)
    init, call = ex.init, ex.call
    invariant = _scale_invariant(entry, init, call)
    inputs = tuple(differentiable(call))
    for m in mutations(call, N):
        rule, reference = m.rule, None
        if m.reference in ("same", "close") or (m.reference == "scaled" and invariant):
            reference = _value_of(entry, init, m.base)
            rule = "valid"
        yield Case(
            f"{entry.name}-{m.label}", entry, init, m.call, tuple(call), rule, "valid",
            reference, m.rtol, inputs,
        )  # fmt: skip


def hyper_cases(entry: LossEntry) -> Iterator[Case]:
    """Cases that give each constructor parameter a hostile value, and valid variants of the
    shared parameters (every distance, every reduction) at ordinary and extreme magnitudes."""
    ex = example(entry, n=N, dim=DIM)
    init, call = ex.init, ex.call
    cls = entry.load()
    params = constructor_params(cls)
    inputs = tuple(differentiable(call))
    for p in params:
        if p.name not in init and p.default is inspect.Parameter.empty:
            continue
        try:  # a parameter the subclass sets itself is not open to the caller
            cls(**replace(init, **{p.name: init.get(p.name, p.default)}))
        except (TypeError, PairLossError):
            continue
        for label, value in BAD_VALUES:
            rule = rule_for(p, label)
            if rule is None:
                continue
            yield Case(
                f"{entry.name}-{p.name}={label}", entry, replace(init, **{p.name: value}), call,
                (p.name,), rule,
            )  # fmt: skip
    names = {p.name for p in params}
    variants = []
    if "distance" in names:
        variants += [("distance", d) for d in DISTANCES]
    if "reduction" in names:
        variants += [("reduction", r) for r in REDUCTIONS]
    for name, value in variants:
        new_init = replace(init, **{name: value})
        for m in (1.0, 1e-20, 1e20):
            yield Case(
                f"{entry.name}-{name}={value}-times-{m:g}", entry, new_init,
                scaled(call, m, torch.float32),
                (name, *call), "valid" if m == 1.0 else "either", inputs=inputs,
            )  # fmt: skip


def all_cases() -> list[Case]:
    """Every generated loss case."""
    return [c for e in LOSSES for gen in (input_cases, hyper_cases) for c in gen(e)]
