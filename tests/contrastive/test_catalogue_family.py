"""Every catalogue entry of family D, from its example call: a finite loss and gradients, the
same on the dense and blocked engines, fp32 close to fp64, and bad tensors named in a
PairLossError."""

from __future__ import annotations

import copy
import inspect
import math

import pytest
import torch

from pairloss.catalogue import LOSSES, example
from pairloss.errors import PairLossError

FAMILY = [e for e in LOSSES if e.target.startswith("pairloss.losses.contrastive.")]


def build(entry, dtype=torch.float64, **extra):
    ex = example(entry, n=12, dim=8, dtype=dtype)
    cls = entry.load()
    params = inspect.signature(cls.__init__).parameters
    accepts_engine = "engine" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    if not accepts_engine:
        extra = {}
    torch.manual_seed(0)
    return cls(**ex.init, **extra).to(dtype), ex.call, accepts_engine


def value_and_grads(loss, call):
    call = {
        k: v.clone().requires_grad_(v.is_floating_point()) if isinstance(v, torch.Tensor) else v
        for k, v in call.items()
    }
    leaves = [v for v in call.values() if isinstance(v, torch.Tensor) and v.requires_grad]
    leaves += [p for p in loss.parameters() if p.requires_grad]
    torch.manual_seed(1)
    out = loss(**call)
    grads = torch.autograd.grad(out, leaves, allow_unused=True)
    return [out.detach()] + [torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves)]


def test_family_d_is_complete():
    names = {e.name for e in FAMILY}
    assert {
        "clip",
        "siglip",
        "cwcl",
        "soft_infonce",
        "hardness_weighted_infonce",
        "isogclr",
        "amcl",
        "ntxent_am",
        "multiview_infonce",
        "mv_dhel",
        "groco",
        "icon",
        "cacr",
        "alignment",
        "uniformity",
        "barlow_twins",
        "vicreg_views",
        "wmse",
        "negative_cosine",
        "cosent",
        "angle",
        "in_batch_negatives",
    } <= names


@pytest.mark.parametrize("entry", FAMILY, ids=lambda e: e.name)
def test_example_dense_equals_blocked_and_fp32(entry):
    loss, call, engines = build(entry)
    dense = value_and_grads(loss, call)
    assert all(bool(torch.isfinite(t).all()) for t in dense)
    if engines:
        blocked_loss, _, _ = build(entry, engine="blocked", block_size=5)
        for a, b in zip(value_and_grads(blocked_loss, call), dense, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    loss32, _, _ = build(entry, dtype=torch.float32)
    call32 = {
        k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
        for k, v in call.items()
    }
    out32 = value_and_grads(loss32, call32)[0]
    assert out32.dtype == torch.float32
    assert math.isclose(float(out32), float(dense[0]), rel_tol=1e-4, abs_tol=1e-4)


@pytest.mark.parametrize("entry", FAMILY, ids=lambda e: e.name)
def test_bad_tensors_are_named(entry):
    loss, call, _ = build(entry)
    for name, value in call.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            continue
        bads = [value.clone().fill_(float("nan"))]
        if value.dim() >= 2:  # features: flat or integer is wrong (weights may be integers)
            bads.append(value.reshape(-1))
            if name != "weights":
                bads.append(value.to(torch.int64))
        for bad in bads:
            broken = dict(call, **{name: bad})
            with pytest.raises(PairLossError):
                loss(**copy.copy(broken))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("entry", FAMILY, ids=lambda e: e.name)
def test_examples_give_the_cpu_values_on_cuda(entry):
    loss, call, _ = build(entry)
    on_cpu = value_and_grads(loss, call)
    gpu_call = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in call.items()}
    on_gpu = value_and_grads(copy.deepcopy(loss).cuda(), gpu_call)
    for a, b in zip(on_gpu, on_cpu, strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-12)
