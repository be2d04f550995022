"""Every public metric function against hostile input and hostile arguments (generated)."""

import pytest

from .metric_cases import all_cases, check_metric, example_of, public_functions

CASES = all_cases()


def test_every_metric_has_an_example():
    """A public metric is covered by an example of :data:`metric_cases.EXAMPLES` or by a call
    convention of the loss catalogue; a metric with neither must add its example there."""
    assert [n for n in public_functions() if example_of(n) is None] == []


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_metric_case(case):
    check_metric(case)
