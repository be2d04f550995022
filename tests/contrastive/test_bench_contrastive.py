"""Smoke test of ``pairloss bench --family contrastive``: tiny sizes, one repeat, one loss; the
measurements run in this process (the command runs each in a fresh one, for its peak memory);
no timing assertions."""

import math
import queue

from pairloss import bench, bench_contrastive


def in_process(library, name, batch, dim, repeats, threads):
    q = queue.Queue()
    bench_contrastive._measure(q, library, name, batch, dim, repeats, threads)
    return q.get()


def test_contrastive_table_has_finite_rows_and_the_libraries_agree(capsys, monkeypatch):
    monkeypatch.setattr(bench_contrastive, "measure", in_process)
    monkeypatch.setattr(bench_contrastive.torch, "set_num_threads", lambda n: None)
    argv = ["--family", "contrastive", "--batch", "64", "--dim", "8", "--repeats", "1"]
    assert bench.main(argv + ["--threads", "1", "--losses", "CLIP", "SigLIP"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "threads=1 repeats=1"
    rows = [line.split() for line in lines[2:]]
    assert [r[:3] for r in rows] == [["CLIP", "64", "8"], ["SigLIP", "64", "8"]]
    for row in rows:
        assert row[6] == "open_clip"
        numbers = [float(c.rstrip("x")) for c in row[3:6] + row[7:]]
        assert all(math.isfinite(v) for v in numbers)
        assert numbers[-1] < 1e-5  # the same inputs give the same loss
