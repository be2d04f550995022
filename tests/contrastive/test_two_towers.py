"""CLIP, SigLIP and in-batch negatives on the two-tower engine: open_clip's losses as oracles
(float64, values and gradients of both towers, the scale and the bias), dense = blocked (fused
and autograd walks), hard-negative rows, false negatives planted as duplicates."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pairloss.compat.open_clip import ClipLoss, SigLipLoss
from pairloss.errors import PairLossError
from pairloss.losses.contrastive.clip import CLIPLoss, clip
from pairloss.losses.contrastive.in_batch import InBatchNegativesLoss
from pairloss.losses.contrastive.siglip import SigLIPLoss, siglip
from pairloss.objectives.tower_sigmoid import SigmoidTowers
from pairloss.objectives.tower_softmax import SoftmaxTowers

from .peers import open_clip_loss

ENGINES = [("dense", None), ("blocked", 4), ("blocked", 64)]


def towers(seed, b=11, d=6, extra=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, generator=g, dtype=dtype).requires_grad_()
    y = torch.randn(b + extra, d, generator=g, dtype=dtype).requires_grad_()
    return x, y


def scalar(value, dtype=torch.float64):
    return torch.tensor(value, dtype=dtype, requires_grad=True)


def value_and_grads(fn, inputs):
    out = fn()
    grads = torch.autograd.grad(out, inputs, allow_unused=True)
    return [out.detach()] + [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]


def same(a, b, rtol=1e-9, atol=1e-12):
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=rtol, atol=atol)


@pytest.fixture(params=["fused", "autograd"])
def walk(request, monkeypatch):
    """Run the blocked engine's fused walk, or force its autograd walk."""
    if request.param == "autograd":
        monkeypatch.setattr(SoftmaxTowers, "fusable", lambda self: False)
        monkeypatch.setattr(SigmoidTowers, "fusable", lambda self: False)
    return request.param


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("engine, block", ENGINES)
def test_clip_matches_open_clip(seed, engine, block, walk):
    oc = open_clip_loss()
    x, y = towers(seed)
    t = scalar(math.log(1 / 0.07) + seed)  # scales 14, 38, 104 (the last one unclamped here)
    bias = scalar(0.3)
    inputs = [x, y, t, bias]
    theirs = value_and_grads(
        lambda: oc.ClipLoss()(F.normalize(x, dim=1), F.normalize(y, dim=1), t.exp(), bias), inputs
    )
    compat = value_and_grads(
        lambda: ClipLoss(engine=engine, block_size=block)(
            F.normalize(x, dim=1), F.normalize(y, dim=1), t.exp(), bias
        ),
        inputs,
    )
    native = value_and_grads(
        lambda: clip(x, y, t.exp(), engine=engine, block_size=block), inputs[:3]
    )
    same(compat, theirs)
    same(native, theirs[:4])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("engine, block", ENGINES)
def test_siglip_matches_open_clip(seed, engine, block, walk):
    oc = open_clip_loss()
    x, y = towers(seed, b=9)
    t, bias = scalar(math.log(10.0) + 0.5 * seed), scalar(-10.0 + 3 * seed)
    inputs = [x, y, t, bias]
    theirs = value_and_grads(
        lambda: oc.SigLipLoss()(F.normalize(x, dim=1), F.normalize(y, dim=1), t.exp(), bias),
        inputs,
    )
    compat = value_and_grads(
        lambda: SigLipLoss(engine=engine, block_size=block)(
            F.normalize(x, dim=1), F.normalize(y, dim=1), t.exp(), bias
        ),
        inputs,
    )
    native = value_and_grads(
        lambda: siglip(x, y, t.exp(), bias, engine=engine, block_size=block), inputs
    )
    same(compat, theirs)
    same(native, theirs)


def test_modules_learn_their_scale_and_bias_with_the_papers_init():
    x, y = towers(3)
    clip = CLIPLoss().double()
    assert math.isclose(float(clip.scale().detach()), 1 / 0.07, rel_tol=1e-6)
    siglip = SigLIPLoss().double()
    assert math.isclose(float(siglip.scale().detach()), 10.0, rel_tol=1e-6)
    assert float(siglip.logit_bias.detach()) == -10.0
    for loss, params in (
        (clip, [clip.logit_scale]),
        (siglip, [siglip.logit_scale, siglip.logit_bias]),
    ):
        dense = value_and_grads(lambda loss=loss: loss(x, y), [x, y, *params])
        loss.engine, loss.block_size = "blocked", 3
        blocked = value_and_grads(lambda loss=loss: loss(x, y), [x, y, *params])
        same(blocked, dense)
        assert all(float(g.abs().sum()) > 0 for g in dense[1:])
    with torch.no_grad():
        clip.logit_scale.fill_(10.0)
    assert math.isclose(float(clip.scale().detach()), 100.0, rel_tol=1e-6)  # clamped in the forward
    clip.clamp_logit_scale_()
    assert math.isclose(float(clip.logit_scale.detach()), math.log(100.0), rel_tol=1e-6)


@pytest.mark.parametrize("engine, block", ENGINES)
def test_hard_negative_rows_are_negatives_of_the_first_direction(engine, block, walk):
    x, y = towers(4, b=7, extra=14)
    t = 9.0

    def logits():
        return t * F.normalize(x, dim=1) @ F.normalize(y, dim=1).T

    def reference():
        z = logits()
        rows = F.cross_entropy(z, torch.arange(7))
        cols = F.cross_entropy(z[:, :7].T, torch.arange(7))
        return (rows + cols) / 2

    same(
        value_and_grads(lambda: clip(x, y, t, engine=engine, block_size=block), [x, y]),
        value_and_grads(reference, [x, y]),
    )
    mnrl = InBatchNegativesLoss(scale=t, engine=engine, block_size=block)
    same(
        value_and_grads(lambda: mnrl(x, y), [x, y]),
        value_and_grads(lambda: F.cross_entropy(logits(), torch.arange(7)), [x, y]),
    )


@pytest.mark.parametrize("engine, block", ENGINES)
def test_duplicates_are_dropped_as_false_negatives(engine, block):
    # rows 0 and 3 are the same pair (same query and document text); row 5's hard negative
    # (row 5 + 6 of the docs) is a copy of row 1's positive
    x, y = towers(5, b=6, extra=6)
    with torch.no_grad():
        y[:6] = x + 0.2 * y[:6]  # matched pairs: each positive is its query's best candidate
        x[3] = x[0]
        y[3] = y[0]
        y[11] = y[1]
    query_ids = torch.tensor([10, 11, 12, 10, 14, 15])
    doc_ids = torch.tensor([20, 21, 22, 20, 24, 25, 30, 31, 32, 33, 34, 21])
    loss = InBatchNegativesLoss(scale=20.0, engine=engine, block_size=block)
    s = 20.0 * F.normalize(x, dim=1) @ F.normalize(y, dim=1).T
    drop = torch.zeros_like(s, dtype=torch.bool)
    drop[0, 3] = drop[3, 0] = True
    drop[1, 11] = True
    expected = F.cross_entropy(s.masked_fill(drop, float("-inf")), torch.arange(6))
    got = loss(x, y, query_ids=query_ids, doc_ids=doc_ids).detach()
    torch.testing.assert_close(got, expected)
    plain = loss(x, y).detach()
    assert float(plain) > float(got) + 0.1  # the copies count as negatives without the ids
    # a guide (here the model itself) with a margin drops the copies (scored like the positive)
    # and possibly more: never a higher loss
    guide = InBatchNegativesLoss(scale=20.0, guide_margin=0.05, engine=engine, block_size=block)
    guided = guide(x, y, guide_queries=x.detach(), guide_docs=y.detach()).detach()
    assert float(guided) <= float(got) + 1e-12


def test_two_tower_bad_input_is_named():
    x, y = towers(6)
    with pytest.raises(PairLossError, match="text_features"):
        CLIPLoss()(x, y[:5])
    with pytest.raises(PairLossError, match="text_features"):
        CLIPLoss()(x, torch.randn(11, 5, dtype=torch.float64))
    with pytest.raises(PairLossError, match="logit_scale"):
        CLIPLoss(logit_scale=0.0)
    with pytest.raises(PairLossError, match="logit_scale"):
        clip(x, y, float("nan"))
    with pytest.raises(PairLossError, match="world_size"):
        ClipLoss(world_size=2)
    with pytest.raises(PairLossError, match="docs"):
        InBatchNegativesLoss()(x, y[:10].repeat(2, 1))
    with pytest.raises(PairLossError, match="distance"):
        CLIPLoss(distance="euclidean")
    bad = x.detach().clone()
    bad[2, 1] = float("nan")
    with pytest.raises(PairLossError, match=r"image_features: contains NaN"):
        SigLIPLoss()(bad, y)


def test_float32_and_half_inputs():
    x, y = towers(7, dtype=torch.float32)
    ref = clip(x.double(), y.double(), 20.0)
    for engine in ("dense", "blocked"):
        torch.testing.assert_close(
            clip(x, y, 20.0, engine=engine, block_size=4).double(), ref, rtol=1e-5, atol=1e-5
        )
    half = clip(x.bfloat16(), y.bfloat16(), 20.0)
    assert half.dtype == torch.bfloat16 and math.isfinite(float(half))


def test_duplicates_keep_each_direction_s_own_positive():
    x, y = towers(8, b=5)
    with torch.no_grad():
        x[4], y[4] = x[1], y[1]
    ids = torch.tensor([0, 1, 2, 3, 1])
    loss = InBatchNegativesLoss(
        scale=10.0, directions=("query_to_doc", "doc_to_query"), partition="per_direction"
    )
    s = 10.0 * F.normalize(x, dim=1) @ F.normalize(y, dim=1).T
    drop = torch.zeros_like(s, dtype=torch.bool)
    drop[1, 4] = drop[4, 1] = True
    rows = s.masked_fill(drop, float("-inf"))
    cols = s.T.masked_fill(drop.T, float("-inf"))
    pos = s.diagonal()
    expected = ((torch.logsumexp(rows, 1) + torch.logsumexp(cols, 1)) / 2 - pos).mean()
    torch.testing.assert_close(loss(x, y, query_ids=ids, doc_ids=ids), expected)
