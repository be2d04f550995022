"""Smoke test of the benchmark (``pairloss bench``): tiny sizes, one repeat, no timing assertions.

Each measurement runs in a fresh process, so only a few losses are run here."""

import math

import pytest

from pairloss import bench


@pytest.mark.parametrize(
    "family, losses, size",
    [("proxy", ["ArcFace", "ProxyAnchor"], "--classes=50"), ("pair", ["MultiSimilarity"], "")],
)
def test_table_has_a_finite_row_per_loss_and_both_libraries_agree(family, losses, size, capsys):
    argv = ["--family", family, "--batch", "32", "--dim", "8", "--repeats", "1"]
    argv += ["--threads", "1", "--losses", *losses] + ([size] if size else [])
    assert bench.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("B=32 D=8 ")
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert sorted(rows) == sorted(losses)
    for name, cells in rows.items():
        numbers = [float(c.rstrip("x")) for c in cells]
        assert len(numbers) >= 7 and all(math.isfinite(v) for v in numbers), (name, cells)
        if family == "proxy":  # the last column: relative difference of the two loss values
            assert numbers[-1] < 1e-5, f"{name}: the two libraries disagree on the same inputs"
