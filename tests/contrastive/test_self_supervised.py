"""Self-supervised losses on views against lightly (float64, values and gradients):
NT-Xent (with and without a memory bank), DCL, Barlow Twins, VICReg, negative cosine, W-MSE,
alignment and uniformity; BYOL's momentum update."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pairloss.compat import lightly as ours
from pairloss.errors import PairLossError
from pairloss.losses.contrastive.bootstrap import NegativeCosineLoss, cosine_momentum, ema_update_
from pairloss.losses.contrastive.hypersphere import AlignmentLoss, UniformityLoss
from pairloss.losses.contrastive.redundancy import BarlowTwinsLoss, ViewVICRegLoss, WMSELoss

from .peers import lightly_module


def views(seed, b=10, d=6, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(b, d, generator=g, dtype=dtype)
    return a.requires_grad_(), (
        a + 0.5 * torch.randn(b, d, generator=g, dtype=dtype)
    ).requires_grad_()


def value_and_grads(fn, inputs):
    out = fn()
    grads = torch.autograd.grad(out, inputs, allow_unused=True)
    return [out.detach()] + [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]


def same(a, b, rtol=1e-9, atol=1e-12):
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=rtol, atol=atol)


def check(mine, theirs, a, b):
    same(value_and_grads(lambda: mine(a, b), [a, b]), value_and_grads(lambda: theirs(a, b), [a, b]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lightly_two_view_losses(seed):
    a, b = views(seed)
    L = {
        m: lightly_module(f"loss/{m}.py")
        for m in (
            "ntx_ent_loss",
            "dcl_loss",
            "barlow_twins_loss",
            "vicreg_loss",
            "negative_cosine_similarity",
        )
    }
    check(ours.NTXentLoss(), L["ntx_ent_loss"].NTXentLoss(), a, b)
    check(ours.NTXentLoss(temperature=0.1), L["ntx_ent_loss"].NTXentLoss(temperature=0.1), a, b)
    check(ours.DCLLoss(), L["dcl_loss"].DCLLoss(), a, b)
    check(ours.DCLLoss(0.3), L["dcl_loss"].DCLLoss(0.3), a, b)
    weights = L["dcl_loss"].negative_mises_fisher_weights
    check(ours.DCLLoss(weight_fn=weights), L["dcl_loss"].DCLLoss(weight_fn=weights), a, b)
    check(ours.BarlowTwinsLoss(), L["barlow_twins_loss"].BarlowTwinsLoss(), a, b)
    check(ours.BarlowTwinsLoss(0.1), L["barlow_twins_loss"].BarlowTwinsLoss(0.1), a, b)
    check(ours.VICRegLoss(), L["vicreg_loss"].VICRegLoss(), a, b)
    check(
        ours.VICRegLoss(2.0, 3.0, 4.0, eps=0.1),
        L["vicreg_loss"].VICRegLoss(2.0, 3.0, 4.0, eps=0.1),
        a,
        b,
    )
    check(
        ours.NegativeCosineSimilarity(),
        L["negative_cosine_similarity"].NegativeCosineSimilarity(),
        a,
        b,
    )
    check(BarlowTwinsLoss(), L["barlow_twins_loss"].BarlowTwinsLoss(), a, b)
    check(ViewVICRegLoss(), L["vicreg_loss"].VICRegLoss(), a, b)


def test_ntxent_with_a_memory_bank_over_three_steps():
    lightly = lightly_module("loss/ntx_ent_loss.py")
    torch.manual_seed(0)
    theirs = lightly.NTXentLoss(memory_bank_size=(7, 6)).double()
    torch.manual_seed(0)
    mine = ours.NTXentLoss(memory_bank_size=(7, 6)).double()
    for step in range(3):  # the bank fills, wraps and drops the tail of a batch
        a, b = views(10 + step, b=5)
        check(mine, theirs, a, b)
        torch.testing.assert_close(mine.memory_bank.bank, theirs.memory_bank.bank)
    with torch.no_grad():  # no update without a gradient
        before = mine.memory_bank.bank.clone()
        mine(a.detach(), b.detach())
        torch.testing.assert_close(mine.memory_bank.bank, before)
    with pytest.raises(PairLossError, match="memory_bank_size"):
        ours.NTXentLoss(memory_bank_size=16)


@pytest.mark.parametrize("n_views, w_size, w_iter", [(2, 8, 1), (3, 8, 2), (2, 16, 1)])
def test_wmse_matches_lightly(n_views, w_size, w_iter):
    lightly = lightly_module("loss/wmse_loss.py")
    g = torch.Generator().manual_seed(n_views)
    z = torch.randn(n_views * 16, 4, generator=g, dtype=torch.float64).requires_grad_()
    theirs = lightly.WMSELoss(
        embedding_dim=4, w_size=w_size, w_iter=w_iter, num_samples=n_views
    ).double()
    mine = WMSELoss(w_size=w_size, w_iter=w_iter)
    torch.manual_seed(3)
    expected = value_and_grads(lambda: theirs(z), [z])
    torch.manual_seed(3)
    got = value_and_grads(lambda: mine(z.view(n_views, 16, 4)), [z])
    same(got, expected)
    with pytest.raises(PairLossError, match="w_size"):
        WMSELoss(w_size=4)(z.view(n_views, 16, 4))


@pytest.mark.parametrize("engine, block", [("dense", None), ("blocked", 3)])
def test_alignment_and_uniformity_match_lightly_hypersphere(engine, block):
    lightly = lightly_module("loss/hypersphere_loss.py")
    a, b = views(5, b=9)
    for t, lam, alpha in ((1.0, 1.0, 2.0), (2.0, 0.5, 3.0)):
        theirs = lightly.HypersphereLoss(t=t, lam=lam, alpha=alpha)
        uniform = UniformityLoss(t=t, engine=engine, block_size=block)

        def mine(x, y, uniform=uniform, lam=lam, alpha=alpha):
            return AlignmentLoss(alpha)(x, y) + lam * (uniform(x) + uniform(y)) / 2

        check(mine, theirs, a, b)
    x = nn.functional.normalize(a, dim=1)
    d2 = torch.cdist(x, x) ** 2
    off = ~torch.eye(9, dtype=torch.bool)
    torch.testing.assert_close(UniformityLoss()(a), torch.log(torch.exp(-2 * d2[off]).mean()))
    assert float(UniformityLoss()(a[:1]).detach()) == 0.0


def test_negative_cosine_stop_gradient_and_symmetric_form():
    p1, z2 = views(6)
    p2, z1 = views(7)
    loss = NegativeCosineLoss()
    out = loss(p1, z2, p2, z1)
    expected = -0.5 * (
        nn.functional.cosine_similarity(p1, z2.detach()).mean()
        + nn.functional.cosine_similarity(p2, z1.detach()).mean()
    )
    torch.testing.assert_close(out, expected)
    grads = torch.autograd.grad(out, [p1, z2, p2, z1], allow_unused=True)
    assert grads[1] is None and grads[3] is None and float(grads[0].abs().sum()) > 0
    with pytest.raises(PairLossError, match="targets_2"):
        loss(p1, z2, p2)


def test_ema_update_and_momentum_schedule():
    online, target = nn.Linear(3, 2).double(), nn.Linear(3, 2).double()
    before = [p.clone() for p in target.parameters()]
    ema_update_(target, online, 0.9)
    for t, b, o in zip(target.parameters(), before, online.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)
    ema_update_(target, online, 0.0)
    for t, o in zip(target.parameters(), online.parameters()):
        torch.testing.assert_close(t, o)
    assert cosine_momentum(0, 100) == pytest.approx(0.996)
    assert cosine_momentum(100, 100) == pytest.approx(1.0)
    assert cosine_momentum(50, 100) == pytest.approx(0.998)
    with pytest.raises(PairLossError, match="target"):
        ema_update_(nn.Linear(3, 3), online, 0.5)
    with pytest.raises(PairLossError, match="momentum"):
        ema_update_(target, online, 1.5)


def test_view_losses_name_bad_input():
    a, b = views(8)
    with pytest.raises(PairLossError, match="z_b"):
        BarlowTwinsLoss()(a, b[:, :3])
    with pytest.raises(PairLossError, match="at least 2"):
        ViewVICRegLoss()(a[:1], b[:1])
    with pytest.raises(PairLossError, match="views"):
        WMSELoss(w_size=8)([a])
    with pytest.raises(PairLossError, match="out1"):
        ours.NTXentLoss()(a, b[:4])
    assert math.isfinite(float(ours.NTXentLoss()(a[:1], b[:1])))
