"""GradCache gives the plain step's gradients: one tower or two, dropout on, autocast."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

import pairloss
from pairloss.errors import PairLossError
from pairloss.scale import RandomState, grad_cache_step, split_batch


def net(seed: int, dropout: float = 0.3, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Dropout(dropout), nn.Tanh(), nn.Linear(16, 4)).to(
        dtype
    )


def grads(*modules) -> list[torch.Tensor]:
    return [p.grad.clone() for m in modules for p in m.parameters()]


def assert_same(got: list, want: list, rtol=1e-9, atol=1e-12) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


X = torch.randn(23, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
XD = torch.randn(23, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
Y = torch.arange(23) % 5


@pytest.mark.parametrize("chunk", [1, 4, 23, 50])
def test_one_tower_with_dropout_equals_the_plain_step(chunk):
    loss = pairloss.MultiSimilarityLoss()
    cached, plain = net(0), net(0)
    torch.manual_seed(7)
    value = grad_cache_step(lambda e: loss(e, Y), [(cached, X)], chunk)
    after_cached = torch.rand(1)
    torch.manual_seed(7)
    want = loss(torch.cat([plain(c) for c in X.split(chunk)]), Y)
    want.backward()
    assert torch.equal(torch.rand(1), after_cached)  # the replays leave the generator as it was
    torch.testing.assert_close(value, want.detach(), rtol=1e-12, atol=0)
    assert_same(grads(cached), grads(plain))


def test_two_towers_with_dropout_equal_the_plain_step():
    ids = torch.arange(23)
    loss = pairloss.NTXentLoss(temperature=0.05)  # MNRL at scale 20 with ref_emb = documents
    q, d, q0, d0 = net(1), net(2), net(1), net(2)
    torch.manual_seed(3)
    grad_cache_step(
        lambda qe, de: loss(qe, ids, ref_emb=de, ref_labels=ids.clone()), [(q, X), (d, XD)], 5
    )
    torch.manual_seed(3)
    qe = torch.cat([q0(c) for c in X.split(5)])
    de = torch.cat([d0(c) for c in XD.split(5)])
    loss(qe, ids, ref_emb=de, ref_labels=ids.clone()).backward()
    assert_same(grads(q, d), grads(q0, d0))


def test_without_dropout_it_equals_one_pass_over_the_whole_batch():
    loss = pairloss.SupConLoss(engine="blocked", block_size=4)
    cached, plain = net(4, dropout=0.0), net(4, dropout=0.0)
    grad_cache_step(lambda e: loss(e, Y), [(cached, X)], 6)
    loss(plain(X), Y).backward()
    assert_same(grads(cached), grads(plain))


def test_the_random_state_replay_is_what_makes_it_exact(monkeypatch):
    loss = pairloss.MultiSimilarityLoss()
    cached, plain = net(0), net(0)
    monkeypatch.setattr(RandomState, "replay", lambda self: contextlib.nullcontext())
    torch.manual_seed(7)
    grad_cache_step(lambda e: loss(e, Y), [(cached, X)], 4)
    torch.manual_seed(7)
    loss(torch.cat([plain(c) for c in X.split(4)]), Y).backward()
    worst = max(float((a - b).abs().max()) for a, b in zip(grads(cached), grads(plain)))
    assert worst > 1e-3


def test_under_bfloat16_autocast_on_cpu():
    loss = pairloss.MultiSimilarityLoss()
    x = X.float()
    cached, plain = net(5, dtype=torch.float32), net(5, dtype=torch.float32)
    torch.manual_seed(1)
    grad_cache_step(lambda e: loss(e, Y), [(cached, x)], 8, autocast=torch.bfloat16)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        emb = torch.cat([plain(c) for c in x.split(8)])
    assert emb.dtype == torch.bfloat16
    loss(emb.float(), Y).backward()
    assert_same(grads(cached), grads(plain), rtol=2e-2, atol=1e-3)


def test_dict_inputs_are_cut_alongside():
    batch = {"a": X, "b": XD, "name": "kept"}
    chunks = split_batch(batch, 10)
    assert [c["a"].shape[0] for c in chunks] == [10, 10, 3]
    assert all(c["name"] == "kept" for c in chunks)
    torch.testing.assert_close(torch.cat([c["b"] for c in chunks]), XD)
    cached, plain = net(6, 0.0), net(6, 0.0)
    loss = pairloss.ContrastiveLoss()
    grad_cache_step(lambda e: loss(e, Y), [(lambda f: cached(f["a"] + f["b"]), batch)], 10)
    loss(plain(X + XD), Y).backward()
    assert_same(grads(cached), grads(plain))


def test_bad_arguments_are_named():
    loss = pairloss.ContrastiveLoss()
    with pytest.raises(PairLossError, match="chunk_size"):
        grad_cache_step(lambda e: loss(e, Y), [(net(0), X)], 0)
    with pytest.raises(PairLossError, match="towers"):
        grad_cache_step(lambda e: loss(e, Y), [], 4)
    with pytest.raises(PairLossError, match="towers\\[0\\]"):
        grad_cache_step(lambda e: loss(e, Y), [net(0)], 4)
    with pytest.raises(PairLossError, match="loss_fn"):
        grad_cache_step(lambda e: e.sum(1), [(net(0), X)], 4)
    with pytest.raises(PairLossError, match="first dimension"):
        split_batch({"a": X, "b": XD[:5]}, 4)
