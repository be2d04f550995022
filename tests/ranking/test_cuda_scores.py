"""CUDA tensors give the CPU results for every ranking and preference loss of the catalogue
(values and gradients, both engines where there are two) and for the ranking metrics. Runs
where CUDA is available; on a CPU-only machine the module is skipped as a whole."""

from __future__ import annotations

import pytest
import torch

from pairloss.catalogue import LOSSES, example
from pairloss.metrics import ranking_metrics

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SCORE_LOSSES = [e for e in LOSSES if e.inputs not in ("embeddings", "proxies")]


def _run(entry, call, engine):
    init = {"engine": engine, "block_size": 2} if engine else {}
    tensors = {k: v.clone() for k, v in call.items() if isinstance(v, torch.Tensor)}
    first = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[first].requires_grad_(True)
    out = entry.load()(**init)(**tensors)
    (grad,) = torch.autograd.grad(out, tensors[first])
    return out.detach(), grad


@pytest.mark.parametrize("entry", SCORE_LOSSES, ids=lambda e: e.name)
def test_scores_losses_give_the_cpu_values_on_cuda(entry):
    ex = example(entry, n=6, dim=7)
    engines = [None]
    if entry.inputs == "slates" and "engine" in entry.load().__init__.__code__.co_varnames:
        engines = ["dense", "blocked"]
    for engine in engines:
        cpu = _run(entry, ex.call, engine)
        gpu_call = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in ex.call.items()}
        gpu = _run(entry, gpu_call, engine)
        for a, b in zip(gpu, cpu):
            torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-12)


def test_ranking_metrics_on_cuda_equal_cpu():
    g = torch.Generator().manual_seed(0)
    s = torch.randint(0, 4, (20, 9), generator=g).double()
    y = torch.randint(0, 4, (20, 9), generator=g).double()
    cpu = ranking_metrics(s, y).to_dict()
    gpu = ranking_metrics(s.cuda(), y.cuda()).to_dict()
    assert all(gpu[k] == pytest.approx(cpu[k], rel=1e-12) for k in cpu)
