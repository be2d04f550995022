"""W processes equal one process: every catalogue loss, DDP, GradCache and memory banks.

One gloo group of 3 processes (ranks 0 and 1 also form a group of 2) is spawned once for the
module and runs every case (see workers.py); each process compares its results with one process
on the concatenated batch, computed from the same seed, in float64 at rtol 1e-9.
"""

from __future__ import annotations

import pytest
import torch

import pairloss
from pairloss.catalogue import LOSSES
from pairloss.errors import PairLossError
from pairloss.scale import DistributedLossWrapper, set_gather, spawn

from . import workers


@pytest.fixture(scope="module")
def results():
    return spawn(workers.run_all, 3, timeout=300)


def cases(results, prefix: str = "") -> dict:
    """Case -> (rank, problem) of the first rank where the case went wrong, or None."""
    out = {}
    for rank, result in enumerate(results):
        for case, problem in result["cases"].items():
            if case.startswith(prefix) and out.get(case) is None:
                out[case] = None if problem is None else (rank, problem)
    return out


def test_every_catalogue_loss_equals_one_process(results):
    found = cases(results, "W")
    names = {case.split()[1] for case in found}
    assert names == {e.name for e in LOSSES}
    failed = {c: p for c, p in found.items() if p is not None and not p[1].startswith("skip")}
    assert not failed, "\n".join(f"{c}: {p}" for c, p in sorted(failed.items()))
    skipped = {c for c, p in found.items() if p is not None}
    # skips only where the loss itself refuses the input on one process
    for case in skipped:
        assert case.split()[-1] in ("ref_emb", "MultiSimilarityMiner", "BatchHardMiner", "triplets")
        message = found[case][1]
        assert any(arg in message for arg in ("ref_emb", "indices_tuple", "miner")), (case, message)
    exact = [c for c, p in found.items() if p is None]
    assert len(exact) > 300


@pytest.mark.parametrize(
    "prefix", ["empty rank", "ddp", "grad cache", "xbm", "queue"], ids=lambda p: p
)
def test_scale_cases_equal_one_process(results, prefix):
    found = cases(results, prefix)
    assert found
    failed = {c: p for c, p in found.items() if p is not None}
    assert not failed, failed


def test_pml_efficient_wrapper_is_not_exact_but_pairloss_is(results):
    for result in results:
        assert result["pml"]["pml"] > 1e-3  # PML drops the gradient other ranks send back
        assert result["pml"]["pairloss"] < 1e-12


def test_processes_with_different_arguments_all_raise(results):
    for result in results:
        assert "different tensor arguments" in result["mismatch"]["structure"]
        assert "embeddings: differs across the processes" in result["mismatch"]["shape"]


def test_without_a_process_group_the_loss_runs_as_is():
    x, y = torch.randn(10, 4, dtype=torch.float64), torch.arange(10) % 3
    plain = pairloss.MultiSimilarityLoss()(x, y)
    assert torch.equal(pairloss.MultiSimilarityLoss(gather="exact")(x, y), plain)
    assert torch.equal(DistributedLossWrapper(pairloss.MultiSimilarityLoss())(x, y), plain)


def test_bad_switches_are_named():
    with pytest.raises(PairLossError, match="gather"):
        pairloss.NTXentLoss(gather="all")
    with pytest.raises(PairLossError, match="gather"):
        set_gather(pairloss.NTXentLoss(), "yes")
    with pytest.raises(PairLossError, match="loss"):
        DistributedLossWrapper(lambda x: x)
    with pytest.raises(PairLossError, match="efficient"):
        DistributedLossWrapper(pairloss.NTXentLoss(), efficient="yes")
