"""Every catalogue loss against hostile input and hostile hyper-parameters (generated)."""

import pytest

from .loss_cases import all_cases, check_loss

CASES = all_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_loss_case(case):
    check_loss(case)
