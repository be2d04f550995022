"""Diagnostics against hand-computed cases, full-matrix brute force and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from pairloss.errors import PairLossError
from pairloss.metrics import alignment, icnn_score, similarity_stats, tolerance, uniformity

from ._reference import LAYOUTS, clustered

SQUARE = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
SQUARE_LABELS = torch.tensor([0, 0, 1, 1])


def test_hand_computed_alignment_uniformity_tolerance():
    # positive pairs (0,1) and (2,3), both at squared distance 2
    assert alignment(SQUARE, SQUARE_LABELS) == pytest.approx(2.0, abs=1e-15)
    assert alignment(SQUARE, SQUARE_LABELS, alpha=1) == pytest.approx(math.sqrt(2), abs=1e-15)
    # 6 pairs: four at squared distance 2, two (opposite points) at 4
    expected = math.log((4 * math.exp(-4) + 2 * math.exp(-8)) / 6)
    assert uniformity(SQUARE) == pytest.approx(expected, abs=1e-14)
    # positive pairs are orthogonal: tolerance 0
    assert tolerance(SQUARE, SQUARE_LABELS) == pytest.approx(0.0, abs=1e-15)
    # one class of three: similarities 1/sqrt2, 0, 1/sqrt2 -> sqrt(2)/3
    three = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    assert tolerance(three, torch.zeros(3)) == pytest.approx(math.sqrt(2) / 3, abs=1e-7)
    # no positive pair at all
    assert math.isnan(alignment(SQUARE, torch.arange(4)))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_brute_force_chunked(layout):
    x, labels = clustered(50, 4, layout, seed=1)
    xn = x / x.norm(dim=1, keepdim=True)
    d2 = torch.cdist(xn, xn) ** 2
    upper = torch.triu(torch.ones(50, 50, dtype=torch.bool), diagonal=1)
    pos = upper & (labels[:, None] == labels[None, :])
    assert alignment(x, labels, chunk_size=3) == pytest.approx(float(d2[pos].mean()), abs=1e-12)
    expected_u = float(torch.log(torch.exp(-2 * d2[upper]).mean()))
    assert uniformity(x, chunk_size=7) == pytest.approx(expected_u, abs=1e-12)
    sims = xn @ xn.T
    assert tolerance(x, labels, chunk_size=5) == pytest.approx(float(sims[pos].mean()), abs=1e-12)
    raw = torch.cdist(x, x) ** 2
    assert alignment(x, labels, alpha=3, normalize=False) == pytest.approx(
        float((raw[pos] ** 1.5).mean()), abs=1e-9
    )


@pytest.mark.parametrize("layout", LAYOUTS)
def test_similarity_stats_brute_force_and_sklearn(layout):
    x, labels = clustered(60, 5, layout, seed=2, spread=1.5)
    xn = x / x.norm(dim=1, keepdim=True)
    upper = torch.triu(torch.ones(60, 60, dtype=torch.bool), diagonal=1)
    same = (labels[:, None] == labels[None, :])[upper]
    s = (xn @ xn.T)[upper]
    r = similarity_stats(x, labels, bins=20, chunk_size=9)
    assert (r.n_pos, r.n_neg) == (int(same.sum()), int((~same).sum()))
    assert r.pos_mean == pytest.approx(float(s[same].mean()), abs=1e-12)
    assert r.neg_std == pytest.approx(float(s[~same].std(unbiased=False)), abs=1e-12)
    hist_pos = np.histogram(s[same].numpy(), bins=20, range=(-1, 1))[0] / int(same.sum())
    hist_neg = np.histogram(s[~same].numpy(), bins=20, range=(-1, 1))[0] / int((~same).sum())
    np.testing.assert_allclose(r.pos_hist.numpy(), hist_pos, atol=1e-15)
    np.testing.assert_allclose(r.neg_hist.numpy(), hist_neg, atol=1e-15)
    assert r.overlap == pytest.approx(float(np.minimum(hist_pos, hist_neg).sum()), abs=1e-12)
    assert r.auc == pytest.approx(roc_auc_score(same.numpy(), s.numpy()), abs=1e-12)
    assert r.auc_pairs == 60 * 59 // 2


def test_similarity_stats_hand_computed_and_sampled_auc():
    # positives at similarity 1, negatives at -1 (bins [-1, 0) and [0, 1]): no overlap, AUC 1
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [-1.0, 0.0], [-3.0, 0.0]])
    r = similarity_stats(x, torch.tensor([0, 0, 1, 1]), bins=2)
    assert r.pos_hist.tolist() == [0.0, 1.0] and r.neg_hist.tolist() == [1.0, 0.0]
    assert (r.overlap, r.auc, r.pos_mean, r.neg_mean, r.pos_std) == (0.0, 1.0, 1.0, -1.0, 0.0)
    big, labels = clustered(200, 4, "balanced", seed=3)
    a = similarity_stats(big, labels, max_auc_pairs=1000, seed=5)
    # m = floor((1 + sqrt(8001)) / 2) = 45 rows -> 990 pairs
    assert (
        a.auc_pairs == 990
        and a.auc == similarity_stats(big, labels, max_auc_pairs=1000, seed=5).auc
    )
    assert abs(a.auc - similarity_stats(big, labels).auc) < 0.1


def test_icnn_hand_computed():
    # classes A = {0, 1}, B = {10, 12}, C = {100} on a line (normalize=False), k = 1:
    #   anchor 0: intra 1, inter 10 -> 10/11     anchor 1: intra 1, inter 9 -> 9/10
    #   anchor 10: intra 2, inter 9 -> 9/11      anchor 12: intra 2, inter 11 -> 11/13
    #   anchor 100 has no same-class neighbour -> excluded
    x = torch.tensor([[0.0], [1.0], [10.0], [12.0], [100.0]], dtype=torch.float64)
    r = icnn_score(x, torch.tensor([0, 0, 1, 1, 2]), k=1, normalize=False)
    assert r.score == pytest.approx((10 / 11 + 9 / 10 + 9 / 11 + 11 / 13) / 4, abs=1e-6)
    assert r.intra == pytest.approx(1.5, abs=1e-6) and r.inter == pytest.approx(9.75, abs=1e-6)
    assert (r.n_anchors, r.n_excluded, r.k) == (4, 1, 1)
    # k = 2 (only one same-class neighbour each): inter distances are the mean of both
    # other-class points: anchor 0 -> (10 + 12)/2 = 11, 1 -> (9 + 11)/2 = 10,
    # 10 -> (10 + 9)/2 = 9.5, 12 -> (12 + 11)/2 = 11.5
    r2 = icnn_score(x[:4], torch.tensor([0, 0, 1, 1]), k=2, normalize=False)
    assert r2.inter == pytest.approx((11 + 10 + 9.5 + 11.5) / 4, abs=1e-6)
    assert r2.intra == pytest.approx(1.5, abs=1e-6)


def test_icnn_brute_force():
    x, labels = clustered(40, 3, "unbalanced", seed=4)
    xn = x / x.norm(dim=1, keepdim=True)
    d = torch.cdist(xn, xn)
    scores, intra_all, inter_all = [], [], []
    for i in range(40):
        same = [float(d[i, j]) for j in range(40) if j != i and labels[j] == labels[i]]
        other = [float(d[i, j]) for j in range(40) if labels[j] != labels[i]]
        if not same or not other:
            continue
        a = sum(sorted(same)[:3]) / len(sorted(same)[:3])
        e = sum(sorted(other)[:3]) / 3
        scores.append(e / (a + e))
        intra_all.append(a)
        inter_all.append(e)
    r = icnn_score(x, labels, k=3, chunk_size=6)
    assert r.score == pytest.approx(sum(scores) / len(scores), abs=1e-9)
    assert r.intra == pytest.approx(sum(intra_all) / len(intra_all), abs=1e-9)
    assert r.n_anchors == len(scores)


def test_to_dict_and_tables():
    x, labels = clustered(30, 3, "balanced", seed=0)
    s = similarity_stats(x, labels)
    assert set(s.to_dict()) >= {"pos_mean", "neg_std", "overlap", "auc"} and "overlap" in str(s)
    i = icnn_score(x, labels)
    assert i.to_dict()["icnn"] == i.score and "icnn_intra" in i.table()


def test_bad_input_messages():
    x, labels = clustered(10, 3, "balanced", seed=0)
    cases = [
        (lambda: alignment(x, labels[:5]), "labels"),
        (lambda: alignment(x, labels, alpha=0), "alpha"),
        (lambda: uniformity(x, t=-1), "t"),
        (lambda: uniformity(x[:1]), "embeddings"),
        (lambda: uniformity(x, sample=1), "sample"),
        (lambda: tolerance(x.clone().fill_(math.inf), labels), "embeddings"),
        (lambda: tolerance(torch.zeros(3, 2), torch.zeros(3)), "zero norm"),
        (lambda: similarity_stats(x, labels, bins=0), "bins"),
        (lambda: similarity_stats(x, labels, max_auc_pairs=0), "max_auc_pairs"),
        (lambda: icnn_score(x, labels, k=0), "k"),
        (lambda: icnn_score(x, labels, chunk_size=-2), "chunk_size"),
        (lambda: alignment(x, labels, normalize="yes"), "normalize"),
    ]
    for fn, name in cases:
        with pytest.raises(PairLossError, match=name):
            fn()
