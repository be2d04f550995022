"""Tiny STS Benchmark folders cut from the real files (``../shared/data/stsbenchmark``): a few
real rows per split, chosen so that some sentences are rated against several others (which
makes preference lists), and with a mark in the test split to tell whether it was read."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

STS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "stsbenchmark"

needs_sts = pytest.mark.skipif(
    not (STS / "sts-train.csv").is_file(), reason="needs ../shared/data/stsbenchmark"
)


def tiny_rows(split: str, anchors: int, others: int) -> list[str]:
    """Lines of ``sts-{split}.csv``: every line of the first ``anchors`` sentences that appear
    in several lines with different scores, then ``others`` more lines."""
    lines = [x for x in (STS / f"sts-{split}.csv").read_text(encoding="utf-8").splitlines() if x]
    fields = [line.split("\t") for line in lines]
    counts = Counter(s for f in fields for s in (f[5], f[6]))
    scores: dict[str, set[str]] = {}
    for f in fields:
        for s in (f[5], f[6]):
            scores.setdefault(s, set()).add(f[4])
    chosen = [s for s in counts if counts[s] >= 2 and len(scores[s]) >= 2][:anchors]
    keep = [line for line, f in zip(lines, fields) if f[5] in chosen or f[6] in chosen]
    rest = [line for line in lines if line not in keep]
    return keep + rest[:others]


def write_tiny_sts(folder: Path, anchors: int = 3, others: int = 8) -> Path:
    """A ``stsbenchmark`` folder in ``folder`` with a few real rows per split."""
    root = folder / "stsbenchmark"
    root.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        rows = tiny_rows(split, anchors, others)
        (root / f"sts-{split}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root
