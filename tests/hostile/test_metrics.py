"""Every public metric function against hostile input and hostile arguments (generated)."""

import pytest

from .metric_cases import EXAMPLES, all_cases, check_metric, public_functions

CASES = all_cases()


def test_every_metric_has_an_example():
    assert sorted(public_functions()) == sorted(EXAMPLES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_metric_case(case):
    check_metric(case)
