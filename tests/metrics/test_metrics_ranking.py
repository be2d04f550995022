"""Ranking metrics against scikit-learn, torchmetrics, trec_eval (pytrec_eval), allRank and
scipy: gains, tie rules, cut-offs, queries without a relevant item, padding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pairloss.errors import PairLossError
from pairloss.metrics import (
    kendall_tau,
    map_at_k,
    mrr,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
)

from ..ranking._peers import allrank

CUTOFFS = (1, 3, 5, None)


def slate(seed, q=24, n=10, ties=False):
    """Positive scores (torchmetrics ignores items scored <= 0), graded labels 0-3, one query
    without a relevant item."""
    g = torch.Generator().manual_seed(seed)
    if ties:
        s = torch.randint(1, 5, (q, n), generator=g).to(torch.float64)
    else:
        s = 0.01 + torch.rand(q, n, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (q, n), generator=g).to(torch.float64)
    y[3] = 0
    return s, y


@pytest.mark.parametrize("seed", [0, 1])
def test_ndcg_equals_scikit_learn_with_ties(seed):
    from sklearn.metrics import ndcg_score

    s, y = slate(seed, ties=True)
    for k in CUTOFFS:
        ours = ndcg_at_k(s, y, k, gain="linear", ties="average")
        assert ours == pytest.approx(ndcg_score(y.numpy(), s.numpy(), k=k), rel=1e-12)
        order = ndcg_at_k(s, y, k, gain="linear", ties="order")
        ignore = ndcg_score(y.numpy(), (s - 1e-9 * torch.arange(10)).numpy(), k=k)
        assert order == pytest.approx(ignore, rel=1e-12)  # input order breaks the ties


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_equal_torchmetrics(seed):
    from torchmetrics.functional import retrieval as tm

    s, y = slate(seed, ties=seed == 1)
    rel = y > 0
    for k in CUTOFFS:
        ndcg = ndcg_at_k(s, y, k, gain="linear", reduction="none")
        expected = [
            float(tm.retrieval_normalized_dcg(s[q], y[q].long(), top_k=k)) for q in range(24)
        ]
        np.testing.assert_allclose(ndcg.numpy(), expected, rtol=1e-6)  # float32 inside
        if seed == 0:  # torchmetrics' own sort breaks ties differently
            ap = map_at_k(s, y, k, denominator="retrieved", reduction="none")
            expected = [
                float(tm.retrieval_average_precision(s[q], rel[q], top_k=k)) for q in range(24)
            ]
            np.testing.assert_allclose(ap.numpy(), expected, rtol=1e-6)
            rr = mrr(s, y, k, reduction="none")
            expected = [
                float(tm.retrieval_reciprocal_rank(s[q], rel[q], top_k=k)) for q in range(24)
            ]
            np.testing.assert_allclose(rr.numpy(), expected, rtol=1e-6)
        if k is not None and seed == 0:
            p = precision_at_k(s, y, k, reduction="none")
            expected = [float(tm.retrieval_precision(s[q], rel[q], top_k=k)) for q in range(24)]
            np.testing.assert_allclose(p.numpy(), expected, rtol=1e-6)
            r = recall_at_k(s, y, k, reduction="none")
            expected = [float(tm.retrieval_recall(s[q], rel[q], top_k=k)) for q in range(24)]
            np.testing.assert_allclose(r.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_equal_trec_eval(seed):
    import pytrec_eval

    s, y = slate(seed)
    y[5, 6:] = -1  # padding: not judged, not retrieved
    qrel = {f"q{q}": {f"d{i}": int(y[q, i]) for i in range(10) if y[q, i] >= 0} for q in range(24)}
    run = {f"q{q}": {f"d{i}": float(s[q, i]) for i in range(10) if y[q, i] >= 0} for q in range(24)}
    measures = {"ndcg", "ndcg_cut.3,5", "map", "map_cut.5", "P.3", "recall.5", "recip_rank"}
    res = pytrec_eval.RelevanceEvaluator(qrel, measures).evaluate(run)

    def te(measure):  # trec_eval scores queries that have a relevant document
        return np.mean([res[f"q{q}"][measure] for q in range(24) if (y[q] > 0).any()])

    skip = {"empty": "skip"}
    assert ndcg_at_k(s, y, gain="linear", **skip) == pytest.approx(te("ndcg"), rel=1e-12)
    assert ndcg_at_k(s, y, 3, gain="linear", **skip) == pytest.approx(te("ndcg_cut_3"), rel=1e-12)
    assert ndcg_at_k(s, y, 5, gain="linear", **skip) == pytest.approx(te("ndcg_cut_5"), rel=1e-12)
    assert map_at_k(s, y, **skip) == pytest.approx(te("map"), rel=1e-12)
    assert map_at_k(s, y, 5, **skip) == pytest.approx(te("map_cut_5"), rel=1e-12)
    assert precision_at_k(s, y, 3, **skip) == pytest.approx(te("P_3"), rel=1e-12)
    assert recall_at_k(s, y, 5, **skip) == pytest.approx(te("recall_5"), rel=1e-12)
    assert mrr(s, y, **skip) == pytest.approx(te("recip_rank"), rel=1e-12)


def test_ndcg_and_mrr_equal_allrank():
    peer = allrank()
    s, y = slate(2)
    y[4, 7:] = -1
    # allRank's mrr ranks an item of maximal relevance (torch.max: any of them when tied) and
    # gives 1 to a query without one unless the whole batch has none: the same as ours with
    # one relevant item per query
    one = torch.zeros_like(y)
    one[
        torch.arange(24), torch.randint(0, 7, (24,), generator=torch.Generator().manual_seed(0))
    ] = 1
    for k in (1, 3, 10):
        theirs = peer.ndcg(s.clone(), y.clone(), ats=[k])[:, 0]  # exp2 gain, filler 1.0
        ours = ndcg_at_k(s, y, k, gain="exp2", empty="one", reduction="none")
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)  # float32 discounts
        theirs = peer.mrr(s.clone(), one.clone(), ats=[k])[:, 0]
        np.testing.assert_allclose(mrr(s, one, k, reduction="none").numpy(), theirs.numpy())


def test_kendall_tau_equals_scipy():
    from scipy.stats import kendalltau

    s, y = slate(3, ties=True)
    s[7] = 2.0  # constant scores: undefined
    ours = kendall_tau(s, y, reduction="none")
    theirs = np.array([kendalltau(s[q].numpy(), y[q].numpy()).statistic for q in range(24)])
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-12, equal_nan=True)
    assert kendall_tau(s, y) == pytest.approx(np.nanmean(theirs), rel=1e-12)


def test_empty_query_rules_and_padding():
    s, y = slate(4)
    per = ndcg_at_k(s, y, 5, reduction="none")
    assert float(per[3]) == 0.0
    assert float(ndcg_at_k(s, y, 5, empty="one", reduction="none")[3]) == 1.0
    assert math.isnan(float(ndcg_at_k(s, y, 5, empty="skip", reduction="none")[3]))
    kept = torch.cat([per[:3], per[4:]]).mean()
    assert ndcg_at_k(s, y, 5, empty="skip") == pytest.approx(float(kept), rel=1e-12)
    # padding (mask or allRank's -1) anywhere gives the same metrics
    keep = torch.ones(24, 13, dtype=torch.bool)
    keep[:, [0, 5, 9]] = False
    s2 = torch.full((24, 13), math.nan, dtype=torch.float64)
    y2 = torch.full((24, 13), 3.0, dtype=torch.float64)
    s2[keep], y2[keep] = s.reshape(-1), y.reshape(-1)
    a = ranking_metrics(s, y).to_dict()
    b = ranking_metrics(s2, y2, keep).to_dict()
    assert a.keys() == b.keys() and all(a[m] == pytest.approx(b[m], rel=1e-12) for m in a)
    y3 = torch.where(keep, y2, torch.full_like(y2, -1.0))
    c = ranking_metrics(s2, y3).to_dict()
    assert all(a[m] == pytest.approx(c[m], rel=1e-12) for m in a)


def test_ranking_metrics_result_and_bad_input():
    s, y = slate(5)
    res = ranking_metrics(s, y, k=(1, 10))
    assert res.queries == 24 and res.queries_with_relevant == 23
    assert set(res.to_dict()) >= {"ndcg@1", "ndcg@10", "map@10", "mrr", "kendall_tau"}
    assert "ndcg@10" in res.table()
    with pytest.raises(PairLossError, match="gain"):
        ndcg_at_k(s, y, gain="exp")
    with pytest.raises(PairLossError, match="relevance: has negative"):
        ndcg_at_k(s, y - 2)
    with pytest.raises(PairLossError, match="k: expected an int"):
        precision_at_k(s, y, 0)
    with pytest.raises(PairLossError, match="metrics"):
        ranking_metrics(s, y, metrics=("ndcg", "auc"))
