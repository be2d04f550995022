"""Pair generation (catalogue G): DBPM, Metrix, global proxy-based batches, offline hard
negatives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import pairloss
from pairloss.errors import PairLossError
from pairloss.pair_generation import (
    DBPM,
    GlobalProxySampler,
    Metrix,
    ProxyBank,
    mine_hard_negatives,
)


def _official_dbpm(history, epoch, max_epochs, cut_np, cut_fp, current):
    """The official DBPM procedure (models/dbpm_model.py), written out with numpy: weighted
    history means, mean +- cut * std bounds, and the normal density of the current loss."""
    w = [(1 + i) / max_epochs for i in range(epoch)]
    means = np.array([np.mean(np.array(v) * w) for v in history])
    mu, sd = means.mean(), means.std()
    flagged = (means <= mu - cut_np * sd) | (means >= mu + cut_fp * sd)
    pdf = np.exp(-0.5 * ((current - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
    return np.where(flagged, current * pdf, current)


def test_dbpm_matches_the_official_procedure():
    g = torch.Generator().manual_seed(0)
    n, epochs, warm = 40, 6, 3
    dbpm = DBPM(n, epochs, warm_epochs=warm, cut_np=1.0, cut_fp=1.5)
    history = [[] for _ in range(n)]
    for epoch in range(epochs):
        dbpm.start_epoch(epoch)
        losses = torch.rand(n, generator=g, dtype=torch.float64) + torch.linspace(0, 1, n) ** 4
        perm = torch.randperm(n, generator=g)
        out = torch.cat(
            [dbpm.reweight(perm[i : i + 10], losses[perm[i : i + 10]]) for i in range(0, n, 10)]
        )
        got = torch.empty(n, dtype=torch.float64)
        got[perm] = out
        if epoch >= warm:
            want = _official_dbpm(history, epoch, epochs, 1.0, 1.5, losses.numpy())
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
            assert bool(dbpm.flagged.any())
        else:
            torch.testing.assert_close(got, losses)
        for i in range(n):
            history[i].append(float(losses[i]))
    with pytest.raises(PairLossError, match="pair_ids"):
        dbpm.reweight(torch.tensor([n]), torch.tensor([1.0]))


def test_metrix_mixed_loss_and_pair_selection():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.arange(16) // 4
    m = Metrix(top_k=2)
    a, p, n = m.select(x, y)
    assert bool((y[a] == y[p]).all()) and bool((y[a] != y[n]).all()) and bool((a != p).all())
    d = torch.cdist(
        torch.nn.functional.normalize(x.detach()), torch.nn.functional.normalize(x.detach())
    )
    for i in range(16):  # the two closest negatives of each anchor
        closest = set(
            torch.topk(d[i].masked_fill(y == y[i], math.inf), 2, largest=False).indices.tolist()
        )
        assert set(n[a == i].tolist()) == closest
    lam = 0.3
    mixed = m.mix(x, p, n, lam)
    torch.testing.assert_close(mixed, lam * x[p] + (1 - lam) * x[n])
    got = m.mixed_loss(x[a], mixed, lam)
    dist = torch.linalg.vector_norm(
        torch.nn.functional.normalize(x[a]) - torch.nn.functional.normalize(mixed), dim=1
    )
    want = lam * torch.relu(dist).mean() + (1 - lam) * torch.relu(0.5 - dist).mean()
    torch.testing.assert_close(got, want)
    torch.manual_seed(3)
    total = m(x, y)
    torch.manual_seed(3)
    lam = m.draw_lambda()
    expected = pairloss.ContrastiveLoss(0.0, 0.5)(x, y) + 0.4 * m.mixed_loss(
        x[a], m.mix(x, p, n, lam), lam
    )
    torch.testing.assert_close(total, expected)
    (gx,) = torch.autograd.grad(total, x)
    assert torch.isfinite(gx).all()


def test_global_proxy_sampler_groups_nearest_classes():
    labels = torch.arange(120) % 12
    centres = torch.zeros(12, 3)
    for c in range(12):  # classes 0-3, 4-7 and 8-11 form three tight groups
        centres[c, c // 4] = 1.0
        centres[c] += 0.01 * c
    bank = ProxyBank(12, 3)
    bank.update(centres[labels] + 0.001 * torch.randn(120, 3), labels)
    sampler = GlobalProxySampler(labels, classes_per_batch=4, samples_per_class=5, seed=2)
    sampler.set_proxies(*bank.proxies())
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3
    used = []
    for batch in batches:
        assert len(batch) == 20
        classes = set(labels[batch].tolist())
        assert len(classes) == 4 and len({c // 4 for c in classes}) == 1  # one group per batch
        used += sorted(classes)
    assert sorted(used) == list(range(12))
    sampler.set_epoch(1)
    again = list(sampler)
    assert sorted(i for b in again for i in labels[b].tolist()) == sorted(
        i for b in batches for i in labels[b].tolist()
    )
    sampler.set_epoch(0)
    assert list(sampler) == batches  # the same seed and epoch, the same batches
    with pytest.raises(PairLossError, match="classes_per_batch"):
        GlobalProxySampler(labels, 13, 2)


def _reference_negatives(q, c, pos, k, abs_m=None, rel_m=None):
    qn = torch.nn.functional.normalize(q, dim=1)
    cn = torch.nn.functional.normalize(c, dim=1)
    out = []
    for i in range(q.shape[0]):
        s = cn @ qn[i]
        sp = float(s[pos[i]])
        order = torch.argsort(s, descending=True).tolist()
        keep = []
        for j in order:
            if j == int(pos[i]):
                continue
            sj = float(s[j])
            if abs_m is not None and sj > sp - abs_m:
                continue
            if rel_m is not None and sj > sp - abs(sp) * rel_m:
                continue
            keep.append(j)
        out.append(keep[:k])
    return out


@pytest.mark.parametrize("use_faiss", (True, False))
@pytest.mark.parametrize("margins", ({}, {"absolute_margin": 0.05}, {"relative_margin": 0.2}))
def test_offline_hard_negatives(use_faiss, margins):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(30, 8, generator=g)
    c = torch.randn(300, 8, generator=g)
    pos = torch.randint(0, 300, (30,), generator=g)
    neg, scores = mine_hard_negatives(q, c, pos, 4, range_max=300, use_faiss=use_faiss, **margins)
    want = _reference_negatives(
        q, c, pos, 4, margins.get("absolute_margin"), margins.get("relative_margin")
    )
    assert [row[row >= 0].tolist() for row in neg] == want
    assert bool((neg != pos[:, None]).all())


def test_relative_margin_is_safe_for_negative_positive_scores():
    """With s+ < 0, s <= s+ - r |s+| stays below the positive (s+ (1 - r) would be above it)."""
    q = torch.tensor([[1.0, 0.0]])
    corpus = torch.tensor([[-0.5, 0.866], [-0.45, 0.893], [-0.6, 0.8], [-0.9, 0.436]])
    neg, scores = mine_hard_negatives(
        q, corpus, torch.tensor([0]), 3, relative_margin=0.1, use_faiss=False
    )
    kept = neg[0][neg[0] >= 0].tolist()
    assert 1 not in kept  # scores above the positive (-0.45 > -0.5) are never negatives
    assert kept == [2, 3]  # -0.6 and -0.9 lie below -0.5 - 0.05
    assert bool((scores[0][: len(kept)] <= -0.55 + 1e-6).all())
