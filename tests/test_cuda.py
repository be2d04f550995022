"""CUDA tensors give the CPU results: every catalogue loss (both engines, values and gradients
of the embeddings and of the loss's own parameters) and the metrics. Runs where CUDA is
available; on a CPU-only machine the module is skipped as a whole."""

from __future__ import annotations

import copy

import pytest
import torch

import pairloss
import pairloss.engine as engine_module
from pairloss.catalogue import LOSSES, example
from pairloss.metrics import cmc, dir_at_far, retrieval, verification

from .metrics._reference import same_values
from .test_fused import CASES as FUSED_CASES

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

N_CLASSES, DIM = 6, 5
CUDA = torch.device("cuda")


def _build(entry, engine: str):
    cls = entry.load()
    kwargs = dict(example(entry, n=24, dim=DIM).init)
    if engine != "default":
        kwargs["engine"] = engine
    if engine == "blocked":
        kwargs["block_size"] = 5
    torch.manual_seed(0)
    return cls(**kwargs).double()


def _engines(entry) -> list[str]:
    try:
        _build(entry, "blocked")
    except TypeError:
        return ["default"]
    return ["dense", "blocked"]


def _value_and_grads(loss, x, y):
    x = x.clone().requires_grad_(True)
    out = loss(x, y)
    params = [p for p in loss.parameters() if p.requires_grad]
    grads = torch.autograd.grad(out, [x, *params], allow_unused=True)
    return [out.detach()] + [torch.zeros(()) if g is None else g.detach() for g in grads]


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(24, DIM, generator=g, dtype=torch.float64)
    y = torch.arange(24) % N_CLASSES
    return x, y[torch.randperm(24, generator=g)]


# the losses called as loss(embeddings, labels)
LABELLED = [e for e in LOSSES if e.inputs in ("embeddings", "proxies", "descriptor_weights")]


@pytest.mark.parametrize("entry", LABELLED, ids=lambda e: e.name)
def test_every_loss_gives_the_cpu_values_and_gradients(entry):
    for engine in _engines(entry):
        cpu_loss = _build(entry, engine)
        gpu_loss = copy.deepcopy(cpu_loss).to(CUDA)
        for seed in (0, 1):
            x, y = _batch(seed)
            on_cpu = _value_and_grads(cpu_loss, x, y)
            on_gpu = _value_and_grads(gpu_loss, x.to(CUDA), y.to(CUDA))
            assert on_gpu[0].device.type == "cuda"
            for a, b in zip(on_gpu, on_cpu, strict=True):
                torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", FUSED_CASES, ids=lambda c: c[0] + str(len(c[1])))
def test_fused_path_runs_on_cuda(case, monkeypatch):
    calls = []
    run = engine_module._FusedWalk.run

    def counting(self, *args, **kwargs):
        calls.append(1)
        return run(self, *args, **kwargs)

    monkeypatch.setattr(engine_module._FusedWalk, "run", counting)
    name, kwargs = case
    x, y = _batch(3)
    x = torch.cat([x, x + 0.1])
    y = torch.cat([y, y])
    results = []
    for device in ("cpu", "cuda"):
        loss = getattr(pairloss, name)(engine="blocked", block_size=7, **kwargs)
        results.append(_value_and_grads(loss, x.to(device), y.to(device)))
    assert calls, "the blocked engine did not take the fused path"
    for a, b in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-12)


def test_losses_left_on_the_cpu():
    x, y = _batch(4)
    x, y = x.to(CUDA), y.to(CUDA)
    # a fixed Margin beta (a buffer) follows the inputs; parameters must be moved by the user
    fixed = pairloss.MarginLoss(num_classes=N_CLASSES).double()
    expected = copy.deepcopy(fixed).to(CUDA)(x, y)
    torch.testing.assert_close(fixed(x, y), expected)
    for loss in (pairloss.ArcFaceLoss(N_CLASSES, DIM), pairloss.MarginLoss(learn_beta=True)):
        with pytest.raises(pairloss.PairLossError, match="move the loss"):
            loss.double()(x, y)


def test_metrics_on_cuda_equal_cpu():
    g = torch.Generator().manual_seed(5)
    centers = torch.randn(12, 16, generator=g)
    labels = torch.arange(600) % 12
    x = centers[labels] + 0.8 * torch.randn(600, 16, generator=g)
    x = torch.cat([x, x[:30]])  # exact duplicates: ties broken by index on both devices
    labels = torch.cat([labels, labels[:30]])
    for metrics in (None, ("recall", "precision", "ndcg"), ("map@r", "r_precision")):
        cpu = retrieval(x, labels, k=(1, 4, 16), backend="torch", metrics=metrics).to_dict()
        gpu = retrieval(x.to(CUDA), labels.to(CUDA), k=(1, 4, 16), backend="torch", metrics=metrics)
        assert same_values(gpu.to_dict(), cpu), metrics  # averages: summation order differs
    q, ql, gal, gl = x[:100], labels[:100], x[100:], labels[100:]
    cpu = cmc(q, ql, gal, gl, ranks=(1, 5))
    gpu = cmc(q.to(CUDA), ql.to(CUDA), gal.to(CUDA), gl.to(CUDA), ranks=(1, 5))
    assert gpu.rates == cpu.rates and torch.equal(gpu.curve.cpu(), cpu.curve)
    known = ql < 9
    cpu = dir_at_far(q, ql, gal[gl < 9], gl[gl < 9])
    gpu = dir_at_far(q.to(CUDA), ql.to(CUDA), gal[gl < 9].to(CUDA), gl[gl < 9].to(CUDA))
    assert gpu == cpu and bool(known.any())
    scores = torch.randn(3000, generator=g, dtype=torch.float64)
    same = torch.rand(3000, generator=g) < 0.3
    scores = scores + same.double()
    cpu = verification(scores, same)
    gpu = verification(scores.to(CUDA), same.to(CUDA))
    for name in ("auc", "eer", "accuracy", "min_dcf"):
        assert getattr(gpu, name) == pytest.approx(getattr(cpu, name), abs=1e-12), name
    assert gpu.tar_at_far == pytest.approx(cpu.tar_at_far, abs=1e-12)
