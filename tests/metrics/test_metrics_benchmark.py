"""The retrieval benchmark's methods, run in-process on a small set, report the same values."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "metrics.py"


def _benchmark():
    spec = importlib.util.spec_from_file_location("metrics_benchmark", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_method_reports_the_values_of_pml():
    bench = _benchmark()
    x, labels = bench.make_data(600, 16, 20, noise=1.5, seed=3)
    pml = bench.run_method("pml", x, labels)
    retrieval_module = importlib.import_module("pairloss.metrics.retrieval")
    compiled = retrieval_module._COMPILED_RANKS
    full = None
    for name in bench.METHODS:
        if name == "pml":
            continue
        values = bench.run_method(name, x, labels)
        for key, value in pml.items():
            assert values[key] == pytest.approx(value, abs=1e-6), (name, key)
        if name.endswith("full") or name.endswith("torch-ranks"):
            full = full or values
            assert values == full, name  # exact ranks: compiled and torch agree exactly
    assert retrieval_module._COMPILED_RANKS is compiled  # the switch is restored
