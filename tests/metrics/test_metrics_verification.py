"""Verification metrics against scikit-learn, brute force and hand-computed cases."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from pairloss.errors import PairLossError
from pairloss.metrics import pair_scores, roc_auc, roc_curve, verification, verification_from_pairs


def _scores(n, seed, ties):
    g = torch.Generator().manual_seed(seed)
    same = torch.rand(n, generator=g) < 0.4
    s = torch.randn(n, generator=g, dtype=torch.float64) + same.double()
    return (s * 4).round() / 4 if ties else s, same


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_matches_sklearn(ties, seed):
    s, same = _scores(300, seed, ties)
    roc = roc_curve(s, same)
    fpr, tpr, thresholds = sk_roc_curve(same.numpy(), s.numpy(), drop_intermediate=False)
    np.testing.assert_array_equal(roc.fpr.numpy(), fpr)
    np.testing.assert_array_equal(roc.tpr.numpy(), tpr)
    np.testing.assert_array_equal(roc.thresholds.numpy(), thresholds)
    assert roc_auc(s, same) == pytest.approx(roc_auc_score(same.numpy(), s.numpy()), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 3), st.booleans()), min_size=2, max_size=40))
def test_property_auc_is_mann_whitney(pairs):
    s = torch.tensor([float(v) for v, _ in pairs], dtype=torch.float64)
    same = torch.tensor([b for _, b in pairs])
    if same.all() or not same.any():
        return
    pos, neg = s[same], s[~same]
    wins = (pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()
    assert roc_auc(s, same) == pytest.approx(float(wins.mean()), abs=1e-12)


def test_hand_computed_small_case():
    # scores 0.9 0.8 0.7 0.6 0.5 0.4 with flags G G I G I I (G genuine, I impostor)
    s = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], dtype=torch.float64)
    same = torch.tensor([1, 1, 0, 1, 0, 0])
    r = verification(s, same, far=(0.5, 0.1), n_folds=2, dcf_p_target=0.5)
    # ROC points (fpr, tpr): (0,0) (0,1/3) (0,2/3) (1/3,2/3) (1/3,1) (2/3,1) (1,1)
    assert r.roc.fpr.tolist() == pytest.approx([0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    assert r.roc.tpr.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    # AUC: 1 - (1/3)(1/3) = 8/9 (one impostor above one genuine out of 9 pairs)
    assert r.auc == pytest.approx(8 / 9, abs=1e-15)
    # EER: FNR - FPR is 1/3 at (0, 2/3) and 0 at (1/3, 2/3) (threshold 0.7) -> EER = 1/3
    assert r.eer == pytest.approx(1 / 3, abs=1e-15) and r.eer_threshold == 0.7
    # TAR@FAR=0.5: largest TPR with FPR <= 0.5 is 1; FAR=0.1 needs 10 impostors, got 3
    assert r.tar_at_far == {0.5: 1.0, 0.1: None}
    assert r.notes == ("tar@far=0.1: needs at least 1/FAR = 10 impostor pairs, got 3",)
    # folds [0.9 0.8 0.7 | 0.6 0.5 0.4]. Fold 0 trains on (0.6 G, 0.5 I, 0.4 I): threshold 0.6
    # (all correct); on fold 0 it accepts all three -> 2/3. Fold 1 trains on (G G I): 0.8 ->
    # fold 1 rejects all three -> 2/3 (0.6 G wrong). Mean 2/3, std 0.
    assert r.fold_thresholds == (0.6, 0.8)
    assert r.accuracy == pytest.approx(2 / 3, abs=1e-15) and r.accuracy_std == 0.0
    # minDCF with p=0.5, costs 1: (P_miss + P_fa) / 2 / 0.5 = P_miss + P_fa; best at 0.6
    # (P_miss 0, P_fa 1/3) -> 1/3
    assert r.min_dcf == pytest.approx(1 / 3, abs=1e-15) and r.min_dcf_threshold == 0.6


def _brute_force_accuracy(s, same, n_folds):
    folds = np.array_split(np.arange(len(s)), n_folds)
    accs = []
    for f in range(n_folds):
        train = np.concatenate([folds[j] for j in range(n_folds) if j != f])
        candidates = sorted(set(s[train].tolist()) | {math.inf}, reverse=True)
        best = max(candidates, key=lambda t: ((s[train] >= t) == same[train]).sum())
        accs.append(((s[folds[f]] >= best) == same[folds[f]]).mean())
    return float(np.mean(accs)), float(np.std(accs))


def _brute_force_min_dcf(s, same, p, c_miss, c_fa):
    best = math.inf
    for t in sorted(set(s.tolist()) | {math.inf}):
        p_miss = (s[same] < t).mean()
        p_fa = (s[~same] >= t).mean()
        best = min(best, c_miss * p_miss * p + c_fa * p_fa * (1 - p))
    return best / min(c_miss * p, c_fa * (1 - p))


def _brute_force_eer(s, same):
    """Exact rational EER: walk the thresholds, interpolate where FNR - FPR changes sign."""
    n_pos, n_neg = sum(same), len(same) - sum(same)
    points = [(Fraction(0), Fraction(1))]  # (FPR, FNR) with nothing accepted
    for t in sorted(set(s), reverse=True):
        tp = sum(1 for v, y in zip(s, same, strict=True) if y and v >= t)
        fp = sum(1 for v, y in zip(s, same, strict=True) if not y and v >= t)
        points.append((Fraction(fp, n_neg), Fraction(n_pos - tp, n_pos)))
    for (f0, m0), (f1, m1) in itertools.pairwise(points):
        if m1 - f1 <= 0:
            t = (m0 - f0) / ((m0 - f0) - (m1 - f1))
            return float(f0 + t * (f1 - f0))
    raise AssertionError


@pytest.mark.parametrize("ties", [False, True])
def test_accuracy_and_min_dcf_brute_force(ties):
    s, same = _scores(230, 4, ties)
    r = verification(s, same, dcf_p_target=0.05, dcf_c_miss=2.0, dcf_c_fa=0.5)
    acc, std = _brute_force_accuracy(s.numpy(), same.numpy(), 10)
    assert r.accuracy == pytest.approx(acc, abs=1e-12) and r.accuracy_std == pytest.approx(
        std, abs=1e-12
    )
    expected = _brute_force_min_dcf(s.numpy(), same.numpy(), 0.05, 2.0, 0.5)
    assert r.min_dcf == pytest.approx(expected, abs=1e-12)
    assert r.eer == pytest.approx(_brute_force_eer(s.tolist(), same.tolist()), abs=1e-12)
    for far, tar in r.tar_at_far.items():
        if tar is not None:
            accepted = [
                (s[same] >= t).double().mean()
                for t in r.roc.thresholds
                if (s[~same] >= t).double().mean() <= far
            ]
            assert tar == pytest.approx(float(max(accepted)), abs=1e-15)


def test_from_pairs_both_forms():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(40, 5, generator=g, dtype=torch.float64)
    pairs = torch.randint(0, 40, (120, 2), generator=g)
    same = torch.rand(120, generator=g) < 0.5
    a = verification_from_pairs(emb, pairs, same)
    b = verification_from_pairs(emb[pairs[:, 0]], emb[pairs[:, 1]], same)
    assert a.to_dict() == b.to_dict()
    cos = torch.nn.functional.cosine_similarity(emb[pairs[:, 0]], emb[pairs[:, 1]])
    assert torch.allclose(pair_scores(emb, pairs=pairs), cos.float().double(), atol=1e-6)
    dist = (emb[pairs[:, 0]] - emb[pairs[:, 1]]).norm(dim=1)
    assert torch.allclose(pair_scores(emb, pairs=pairs, metric="euclidean"), -dist, atol=1e-5)
    r = verification_from_pairs(emb, pairs, same, metric="euclidean")
    assert r.auc == pytest.approx(roc_auc_score(same.numpy(), -dist.numpy()), abs=1e-6)


def test_result_dict_and_table():
    s, same = _scores(200, 0, False)
    r = verification(s, same)
    d = r.to_dict()
    assert list(d)[:3] == ["auc", "eer", "eer_threshold"]
    assert "tar@far=0.1" in d and d["tar@far=0.001"] is None and len(d["notes"]) == 2
    assert "needs at least 1/FAR = 1000 impostor pairs" in str(r)


def test_eer_is_interpolated_between_roc_points():
    # scores 3 2 1 0 with flags G I G I: ROC (0,0) (0,1/2) (1/2,1/2) (1/2,1) (1,1).
    # FNR - FPR: 1, 1/2, 0 -> crossing exactly at (1/2, 1/2): EER 1/2.
    s = torch.tensor([3.0, 2.0, 1.0, 0.0], dtype=torch.float64)
    assert verification(s, torch.tensor([1, 0, 1, 0]), n_folds=2).eer == 0.5
    # scores 3 2 1 0 with flags G I G G: ROC (0,0) (0,1/3) (1,1/3) (1,2/3) (1,1).
    # FNR - FPR: 1 at (0,0), 2/3 at (0,1/3), -1/3 at (1,1/3): t = (2/3)/(2/3 + 1/3) = 2/3,
    # EER = 0 + 2/3 * (1 - 0) = 2/3 (FNR on the segment: 2/3 as well), threshold 2
    r = verification(s, torch.tensor([1, 0, 1, 1]), n_folds=2)
    assert r.eer == pytest.approx(2 / 3, abs=1e-15) and r.eer_threshold == 2.0


def test_bad_input_messages():
    s, same = _scores(20, 0, False)
    cases = [
        (lambda: verification(s[:5], same), "is_same"),
        (lambda: verification(s, torch.ones(20, dtype=torch.bool)), "is_same"),
        (
            lambda: verification(s.clone().index_fill_(0, torch.tensor([3]), math.nan), same),
            "scores",
        ),
        (lambda: verification(s.reshape(4, 5), same), "scores"),
        (lambda: verification(s, same, far=(0.1, 1.5)), "far"),
        (lambda: verification(s, same, n_folds=1), "n_folds"),
        (lambda: verification(s, same, n_folds=21), "n_folds"),
        (lambda: verification(s, same, dcf_p_target=0), "dcf_p_target"),
        (lambda: verification(s, same, dcf_c_fa=-1), "dcf_c_fa"),
        (lambda: verification_from_pairs(torch.randn(5, 3), torch.randn(4, 3), same[:5]), "emb_b"),
        (
            lambda: verification_from_pairs(torch.randn(5, 3), torch.tensor([[0, 5]]), same[:1]),
            "pairs",
        ),
        (
            lambda: verification_from_pairs(torch.randn(5, 3), torch.tensor([0, 1]), same[:1]),
            "pairs",
        ),
        (lambda: pair_scores(torch.randn(3, 2), torch.zeros(3, 2)), "emb_b"),
    ]
    for fn, name in cases:
        with pytest.raises(PairLossError, match=name):
            fn()
