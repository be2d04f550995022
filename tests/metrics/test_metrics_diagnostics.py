"""Diagnostics against hand-computed cases, full-matrix brute force and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from pairloss.errors import PairLossError
from pairloss.losses.metric.prototypes import icnn_score_terms
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
    # no positive pair at all: undefined
    assert alignment(SQUARE, torch.arange(4)) is None
    assert tolerance(SQUARE, torch.arange(4)) is None


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


E = 1e-7


def D(t: float) -> float:  # noqa: N802  the authors' distance between points t apart on a line
    return math.sqrt(t * t + 1e-6)


def test_icnn_hand_computed():
    # A = {0, 1}, B = {3, 7} on a line, k = 1, L = 2; neighbours (excluding the sample, points
    # named by their coordinate):
    #   0: [1 (A), 3 (B)]  nu = d3   r = d1/d3, P = 1
    #   1: [0 (A), 3 (B)]  nu = d2   r = d1/d2, P = 1
    #   3: [1 (A), 0 (A)]  nu = d2   Q = 1, other-class distance d2 (= Delta)
    #   7: [3 (B), 1 (A)]  nu = d6   r = d4/d6, P = 1
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    r = icnn_score(x, torch.tensor([0, 0, 1, 1]), k=1)
    rows = D(1) / (D(3) + E) + D(1) / (D(2) + E) + D(4) / (D(6) + E)
    intra = 1 - rows / (1 + E) / (3 + E)
    inter = D(2) / (D(2) + E) / (1 + E) / (1 + E)
    assert r.intra == pytest.approx(intra, abs=1e-15) and r.intra == pytest.approx(0.5, abs=1e-6)
    assert r.inter == pytest.approx(inter, abs=1e-15) and r.gamma == 0.75
    assert r.score == pytest.approx(((intra + inter) / 2 + 0.75) / 2, abs=1e-15)
    assert (r.k, r.n_neighbors) == (1, 2)


def test_icnn_hand_computed_ratio_clipping_and_small_n():
    # A = {0, 3}, B = {1}; k = 2 and L clipped to N - 1 = 2:
    #   0: [1 (B), 3 (A)]  nu = d1, r = [d1, d3]/d1 -> divided by d3/d1: the A ratio is 1
    #   1: [0 (A), 3 (A)]  P = 0, other-class distances d1, d2
    #   3: [1 (B), 0 (A)]  nu = d2, r = [d2, d3]/d2 -> the A ratio is 1; other-class d2
    x = torch.tensor([[0.0], [3.0], [1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    r = icnn_score(x, labels, k=2)
    intra = 1 - 2 / (1 + E) / (2 + E)
    delta = D(2) + E
    inter = (D(1) / (1 + E) + (D(1) + D(2)) / (2 + E) + D(2) / (1 + E)) / delta / (3 + E)
    assert r.intra == pytest.approx(intra, abs=1e-15) and r.inter == pytest.approx(inter, 1e-15)
    assert r.gamma == pytest.approx(1 / 3, abs=1e-15)
    assert r.score == pytest.approx(((intra + inter) / 2 + 1 / 3) / 2, abs=1e-15)
    assert (r.k, r.n_neighbors) == (2, 2)
    # N <= k: k and L are clipped to N - 1, same result
    assert icnn_score(x, labels, k=4, n_neighbors=9) == r


def test_icnn_degenerate_cases():
    x, _ = clustered(12, 3, "balanced", seed=0)
    one = icnn_score(x, torch.zeros(12, dtype=torch.long))  # no other-class neighbour at all
    assert (one.score, one.intra, one.inter, one.gamma) == (1.0, 1.0, 1.0, 1.0)
    unique = icnn_score(x, torch.arange(12))  # no same-class neighbour at all
    assert (unique.intra, unique.gamma) == (1.0, 0.0)
    assert unique.score == pytest.approx(((1 + unique.inter) / 2) / 2, abs=1e-15)
    two = icnn_score(x[:2], torch.tensor([0, 1]))
    assert (two.k, two.n_neighbors, two.gamma, two.intra) == (1, 1, 0.0, 1.0)


def _icnn_loop(x, labels, k, n_neighbors=None, eps=E):
    """The steps of the authors' score written as plain loops (float64, leave-one-out)."""
    n = x.shape[0]
    pts = x.tolist()
    lab = labels.tolist()
    big_l = min(k + 1 if n_neighbors is None else n_neighbors, n - 1)
    k = min(k, big_l)
    intra_sum = inter_sum = 0.0
    n_p = n_q = p_total = 0
    delta = 0.0
    rows = []
    for i in range(n):
        dist = []
        for j in range(n):
            if j != i:
                sq = sum((a - b) ** 2 for a, b in zip(pts[i], pts[j], strict=True))
                dist.append((math.sqrt(sq + 1e-6), lab[j] == lab[i]))
        nb = sorted(dist)[:big_l]
        others = [d for d, same in nb if not same]
        first = nb[:k]
        r = [d / (min(others) + eps) if others else 0.0 for d, _ in first]
        r = [v / max(1.0, max(r)) for v in r]
        p = sum(same for _, same in first)
        q = k - p
        intra_sum += sum(v for v, (_, same) in zip(r, first, strict=True) if same) / (p + eps)
        n_p += p > 0
        p_total += p
        d_other = [d for d, same in first if not same]
        delta = max([delta, *d_other])
        rows.append((sum(d_other), q))
        n_q += q > 0
    for total, q in rows:
        inter_sum += total / (delta + eps) / (q + eps)
    intra = 1 - intra_sum / (n_p + eps)
    inter = inter_sum / (n_q + eps) if n_q else 1.0
    gamma = p_total / (n * k)
    score = ((intra + inter) / 2 + gamma) / 2
    return {"score": score, "intra": intra, "inter": inter, "gamma": gamma}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_icnn_matches_loss_terms_and_loop_reference(layout, seed):
    x, labels = clustered(45, 4, layout, seed=seed, spread=1.2)
    for k, n_nb in [(4, None), (3, 7), (1, None), (5, 5)]:
        terms = icnn_score_terms(x, labels, None, None, k, n_nb, E)
        loop = _icnn_loop(x, labels, k, n_nb)
        full = icnn_score(x, labels, k, n_neighbors=n_nb)
        chunked = icnn_score(x, labels, k, chunk_size=4, n_neighbors=n_nb)
        assert (full.k, full.n_neighbors) == (k, k + 1 if n_nb is None else n_nb)
        for name in ("score", "intra", "inter", "gamma"):
            assert getattr(full, name) == pytest.approx(float(terms[name]), abs=1e-14)
            assert getattr(full, name) == pytest.approx(loop[name], abs=1e-12)
            assert getattr(chunked, name) == pytest.approx(getattr(full, name), abs=1e-14)
    xn = x / x.norm(dim=1, keepdim=True)
    normed = icnn_score(x, labels, normalize=True, chunk_size=7)
    expected = icnn_score_terms(xn, labels, None, None, 4, None, E)["score"]
    assert normed.score == pytest.approx(float(expected), abs=1e-14)


def test_icnn_chunked_float32_and_separation():
    x, labels = clustered(300, 8, "unbalanced", seed=5)
    ref = icnn_score(x, labels)
    for chunk in (3, 13, 299, 1000):
        r = icnn_score(x, labels, chunk_size=chunk)
        assert r.score == pytest.approx(ref.score, abs=1e-14)
        assert r.inter == pytest.approx(ref.inter, abs=1e-14)
    r32 = icnn_score(x.float(), labels, chunk_size=17)
    assert r32.score == pytest.approx(ref.score, abs=1e-5)
    # tight, well separated clusters score higher than the same labels on noise
    tight, tight_labels = clustered(120, 8, "balanced", seed=6, spread=0.05)
    noise = torch.randn(120, 8, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert icnn_score(tight, tight_labels).score > icnn_score(noise, tight_labels).score + 0.3


def test_to_dict_and_tables():
    x, labels = clustered(30, 3, "balanced", seed=0)
    s = similarity_stats(x, labels)
    assert set(s.to_dict()) >= {"pos_mean", "neg_std", "overlap", "auc"} and "overlap" in str(s)
    i = icnn_score(x, labels)
    d = i.to_dict()
    assert d["icnn"] == i.score and d["icnn_gamma"] == i.gamma and d["n_neighbors"] == 5
    assert "icnn_intra" in i.table() and "n_neighbors=5" in str(i)


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
        (lambda: icnn_score(x, labels, k=True), "k"),
        (lambda: icnn_score(x, labels, chunk_size=-2), "chunk_size"),
        (lambda: icnn_score(x, labels, k=4, n_neighbors=3), "n_neighbors"),
        (lambda: icnn_score(x, labels, eps=0), "eps"),
        (lambda: icnn_score(x[:1], labels[:1]), "at least 2"),
        (lambda: icnn_score(x, labels[:4]), "labels"),
        (lambda: icnn_score(x, labels, normalize=1), "normalize"),
        (lambda: alignment(x, labels, normalize="yes"), "normalize"),
    ]
    for fn, name in cases:
        with pytest.raises(PairLossError, match=name):
            fn()
