"""Smoke test of the ranking benchmark (``pairloss bench --family ranking``): tiny sizes, one
repeat, pairloss and allRank, measured in this process (the benchmark itself spawns a fresh
process per measurement); no timing assertions."""

import math
import queue

from pairloss import bench, bench_ranking


def _in_process(library, name, queries, items, repeats, threads, device="cpu", limit_gb=0.0):
    out = queue.Queue()
    bench_ranking._measure(out, library, name, queries, items, repeats, threads, device, 0.0)
    return out.get()


def test_ranking_family_prints_a_finite_row_per_library(capsys, monkeypatch):
    monkeypatch.setattr(bench_ranking, "measure", _in_process)
    argv = ["--family", "ranking", "--queries", "3", "--items", "16", "--repeats", "1"]
    argv += ["--threads", "1", "--libraries", "pairloss", "allrank"]
    assert bench.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("Q=3 L=16 ")
    rows = [line.split() for line in lines[2:]]
    assert [(r[0], r[1]) for r in rows] == [
        ("LambdaLoss", "pairloss"), ("LambdaLoss", "allrank"),
        ("RankNet", "pairloss"), ("RankNet", "allrank"),
    ]  # fmt: skip
    for row in rows:
        assert all(math.isfinite(float(v)) for v in row[2:5]), row
    for line in (lines[3], lines[5]):  # the same losses on the same inputs
        assert float(line.split()[-1]) < 1e-5, line
