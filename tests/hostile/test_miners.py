"""Every miner against hostile input and hostile arguments, alone and inside every loss that
takes one (generated)."""

import pytest

from .loss_cases import check_loss
from .miner_cases import (
    call_cases,
    check_miner_call,
    check_miner_hyper,
    hyper_cases,
    loss_cases,
    miner_classes,
)

CLASSES = miner_classes()
CALLS = [c for cls in CLASSES for c in call_cases(cls)]
HYPER = [c for cls in CLASSES for c in hyper_cases(cls)]
IN_LOSSES = [c for cls in CLASSES for c in loss_cases(cls)]


@pytest.mark.parametrize("case", CALLS, ids=[c.id for c in CALLS])
def test_hostile_miner_call(case):
    check_miner_call(case)


@pytest.mark.parametrize("case", HYPER, ids=[c[0] for c in HYPER])
def test_hostile_miner_argument(case):
    check_miner_hyper(*case)


@pytest.mark.parametrize("case", IN_LOSSES, ids=[c.id for c in IN_LOSSES])
def test_miner_inside_every_loss(case):
    check_loss(case)
