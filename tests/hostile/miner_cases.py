"""Hostile cases for the miners of :mod:`pairloss.miners`, generated from the package.

Every miner class is (1) called directly (``masks`` for pair miners, ``indices`` for the triplet
miner, the index tuple for a miner without a row-wise rule) on the mutations of a small batch (:func:`~tests.hostile.mutations.mutations`), (2) built
with hostile values of each constructor parameter and run inside a loss, and (3) run inside every
catalogue loss that takes a ``miner``, where dense and blocked engines must agree
(:func:`~tests.hostile.loss_cases.check_loss`).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterator

import torch

import pairloss.miners as miners
from pairloss.catalogue import LOSSES, LossEntry, example

from .harness import BAD_VALUES, Refused, assert_finite, constructor_params, outcome, rule_for
from .loss_cases import DIM, Case, N, check_loss
from .mutations import mutations, scaled

ENTRIES = {e.name: e for e in LOSSES}


def miner_classes() -> list[type]:
    """The miners a user can build (the public classes but the base and the marker)."""
    return [
        getattr(miners, n)
        for n in miners.__all__
        if inspect.isclass(getattr(miners, n))
        and issubclass(getattr(miners, n), miners.Miner)
        and getattr(miners, n) is not miners.Miner
    ]


def _selects_triplets(cls: type) -> bool:
    return issubclass(cls, miners.TripletMarginMiner)


def _host(cls: type) -> LossEntry:
    """The loss a miner is run in for its hyper-parameter cases."""
    return ENTRIES["triplet_margin" if _selects_triplets(cls) else "multi_similarity"]


@dataclasses.dataclass
class MinerCase:
    """One direct, hostile call of a miner."""

    id: str
    cls: type
    call: dict
    rule: str = "either"
    reference: dict | None = None
    rtol: float = 1e-7


def _mine(cls: type, call: dict):
    """The miner's selection: its masks or triplet lists where it has a row-wise rule, else its
    pytorch-metric-learning index tuple (a seeded call: some miners sample)."""
    miner = cls()
    if not cls.has_transform:
        torch.manual_seed(0)
        return tuple(miner(**call))
    return miner.indices(**call) if _selects_triplets(cls) else miner.masks(**call)


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def check_miner_call(case: MinerCase) -> None:
    """A refusal naming an argument, or masks / index lists of the right kind; equal to the
    reference where the case has one."""
    names = ("embeddings", "labels", "ref_emb", "ref_labels")
    try:
        out = outcome(lambda: _mine(case.cls, case.call), names, case.rule, case.id)
    except Refused:
        return
    assert_finite(out, case.id)
    n = case.call["embeddings"].shape[0]
    if not case.cls.has_transform:
        size = 3 if case.cls.output == "triplets" else 4
        assert len(out) == size and all(t.dtype == torch.long and t.dim() == 1 for t in out)
    elif _selects_triplets(case.cls):
        assert len(out) == 3 and all(t.dtype == torch.long and t.dim() == 1 for t in out)
    else:
        assert len(out) == 2 and all(m.dtype == torch.bool and m.shape == (n, n) for m in out)
    if case.reference is not None:
        assert _same(out, _mine(case.cls, case.reference)), f"{case.id}: differs from reference"


def _invariant(cls: type, call: dict) -> bool:
    try:
        base = _mine(cls, call)
        return all(_same(_mine(cls, scaled(call, f)), base) for f in (2.0, 0.5))
    except Exception:  # noqa: BLE001 - such a miner is caught by its cases
        return False


def call_cases(cls: type) -> Iterator[MinerCase]:
    """The mutations of a direct call of ``cls``."""
    g = torch.Generator().manual_seed(0)
    call = {
        "embeddings": torch.randn(N, DIM, generator=g, dtype=torch.float64),
        "labels": torch.arange(N) % 4,
    }
    invariant = _invariant(cls, call)
    for m in mutations(call, N):
        rule, reference = m.rule, None
        if m.reference == "same" or (m.reference == "scaled" and invariant):
            rule, reference = "valid", m.base
        yield MinerCase(f"{cls.__name__}-{m.label}", cls, m.call, rule, reference, m.rtol)


def hyper_cases(cls: type) -> Iterator[tuple[str, type, str, object, str]]:
    """(id, miner class, parameter, hostile value, rule) for each constructor parameter."""
    for p in constructor_params(cls):
        if p.default is inspect.Parameter.empty:
            continue
        for label, value in BAD_VALUES:
            rule = rule_for(p, label)
            if rule is not None:
                yield f"{cls.__name__}-{p.name}={label}", cls, p.name, value, rule


def check_miner_hyper(case_id: str, cls: type, name: str, value: object, rule: str) -> None:
    """The miner built with ``name=value`` and run in its host loss: a refusal naming ``name``
    or a finite result on which the engines agree."""
    try:
        miner = outcome(lambda: cls(**{name: value}), (name,), "either", case_id)
    except Refused:
        return
    entry = _host(cls)
    ex = example(entry, n=N, dim=DIM)
    init = dict(ex.init, miner=miner)
    check_loss(Case(case_id, entry, init, ex.call, (name, "miner"), rule, "either"))


def loss_cases(cls: type) -> Iterator[Case]:
    """The default miner in every catalogue loss that takes a ``miner``."""
    for entry in LOSSES:
        ex = example(entry, n=N, dim=DIM)
        try:
            entry.load()(**ex.init, miner=None)
        except TypeError:
            continue
        names = ("miner", "indices_tuple", *ex.call)
        init = dict(ex.init, miner=cls())
        yield Case(f"{entry.name}-miner={cls.__name__}", entry, init, ex.call, names)
