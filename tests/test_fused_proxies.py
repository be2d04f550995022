"""The fused blocked path of the proxy losses gives the dense engine's values and gradients
(embeddings and proxies), with miner weights and every reduction, and is the path taken."""

import pytest
import torch

import pairloss
from pairloss import miners

from .layouts import SEEDS
from .test_fused import fused_calls  # noqa: F401  (fixture)

CASES = [
    ("ArcFaceLoss", {}),
    ("ArcFaceLoss", {"margin": 40.0, "scale": 10.0, "easy_margin": True}),
    ("CosFaceLoss", {}),
    ("CosFaceLoss", {"margin": 0.2, "scale": 30.0}),
    ("NormalizedSoftmaxLoss", {}),
    ("NormalizedSoftmaxLoss", {"temperature": 0.5}),
    ("ProxyNCALoss", {}),
    ("ProxyNCALoss", {"softmax_scale": 7.0}),
    ("ProxyAnchorLoss", {}),
    ("ProxyAnchorLoss", {"margin": 0.3, "alpha": 8.0}),
]


def _run(case, engine, x, y, n_classes, reduction=None, indices_tuple=None, row_w=None):
    name, kwargs = case
    extra = {} if reduction is None else {"reduction": reduction}
    torch.manual_seed(11)
    loss = getattr(pairloss, name)(
        n_classes, x.shape[1], engine=engine, block_size=6, **kwargs, **extra
    )
    loss = loss.double()
    xx = x.clone().requires_grad_()
    out = loss(xx, y, indices_tuple)
    total = out if row_w is None else (out * row_w[: out.shape[0]]).sum()
    total.backward()
    return out.detach(), [xx.grad, loss.weight_parameter().grad]


def _same(a, b):
    torch.testing.assert_close(a[0], b[0], rtol=1e-9, atol=1e-12)
    for u, v in zip(a[1], b[1]):
        torch.testing.assert_close(u, v, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0] + str(len(c[1])))
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_classes", [7, 40])
def test_fused_proxy_losses_equal_dense(case, seed, n_classes, fused_calls):  # noqa: F811
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(30, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, n_classes, (30,), generator=g)
    fused_calls.clear()
    blocked = _run(case, "blocked", x, y, n_classes)
    assert fused_calls, "the blocked engine did not take the fused path"
    _same(blocked, _run(case, "dense", x, y, n_classes))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0] + str(len(c[1])))
def test_fused_proxy_losses_reductions_and_miner_weights(case, fused_calls):  # noqa: F811
    g = torch.Generator().manual_seed(3)
    x = torch.randn(25, 5, generator=g, dtype=torch.float64)
    y = torch.arange(25) % 9
    w = torch.linspace(-1.0, 2.0, 40, dtype=torch.float64)
    _same(
        _run(case, "blocked", x, y, 9, "none", row_w=w),
        _run(case, "dense", x, y, 9, "none", row_w=w),
    )
    _same(_run(case, "blocked", x, y, 9, "sum"), _run(case, "dense", x, y, 9, "sum"))
    pairs = miners.MultiSimilarityMiner(epsilon=0.3).indices(x, y)
    _same(
        _run(case, "blocked", x, y, 9, indices_tuple=pairs),
        _run(case, "dense", x, y, 9, indices_tuple=pairs),
    )
    assert fused_calls


def test_proxy_anchor_skips_the_counting_walk(monkeypatch):
    import pairloss.engine as engine_module

    def no_counting(self):
        raise AssertionError("counting walk ran")

    monkeypatch.setattr(engine_module._FusedWalk, "counts", no_counting)
    x = torch.randn(20, 4, dtype=torch.float64)
    y = torch.arange(20) % 6
    loss = pairloss.ProxyAnchorLoss(12, 4, engine="blocked", block_size=5).double()
    out = loss(x.requires_grad_(), y)
    out.backward()
    dense = pairloss.ProxyAnchorLoss(12, 4, engine="dense").double()
    dense.load_state_dict(loss.state_dict())
    torch.testing.assert_close(out, dense(x, y), rtol=1e-9, atol=1e-12)
