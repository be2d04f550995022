"""Every similarity of the package with hostile constructor arguments, and every similarity
inside every loss that takes a ``distance`` (generated)."""

import inspect

import pytest

import pairloss
from pairloss import PairLossError
from pairloss.catalogue import LOSSES, example

from .harness import BAD_VALUES, Refused, constructor_params, outcome, rule_for
from .loss_cases import DIM, Case, N, check_loss

CLASSES = [
    getattr(pairloss, n)
    for n in pairloss.__all__
    if inspect.isclass(getattr(pairloss, n))
    and issubclass(getattr(pairloss, n), pairloss.Similarity)
    and getattr(pairloss, n) is not pairloss.Similarity
]
MS = next(e for e in LOSSES if e.name == "multi_similarity")
HYPER = [
    (f"{cls.__name__}-{p.name}={label}", cls, p.name, value, rule)
    for cls in CLASSES
    for p in constructor_params(cls)
    if p.default is not inspect.Parameter.empty
    for label, value in BAD_VALUES
    if (rule := rule_for(p, label)) is not None
]


def _takes_distance(entry) -> bool:
    try:
        entry.load()(**example(entry).init, distance=None)
    except (TypeError, PairLossError):  # no distance argument, or one it refuses
        return False
    return True


IN_LOSSES = [(e, cls) for e in LOSSES if _takes_distance(e) for cls in CLASSES]


@pytest.mark.parametrize("case", HYPER, ids=[c[0] for c in HYPER])
def test_hostile_similarity_argument(case):
    case_id, cls, name, value, rule = case
    try:
        sim = outcome(lambda: cls(**{name: value}), (name,), rule, case_id)
    except Refused:
        return
    ex = example(MS, n=N, dim=DIM)
    check_loss(Case(case_id, MS, dict(ex.init, distance=sim), ex.call, (name, "distance")))


@pytest.mark.parametrize(
    "entry, cls", IN_LOSSES, ids=[f"{e.name}-{c.__name__}" for e, c in IN_LOSSES]
)
def test_every_similarity_in_every_loss(entry, cls):
    ex = example(entry, n=N, dim=DIM)
    case = Case(
        f"{entry.name}-{cls.__name__}",
        entry,
        dict(ex.init, distance=cls()),
        ex.call,
        ("distance", *ex.call),
        "valid",
    )
    check_loss(case)
