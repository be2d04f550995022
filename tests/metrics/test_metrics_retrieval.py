"""Retrieval metrics against hand-computed cases, PML's AccuracyCalculator, torchmetrics and a
plain reference implementation; both backends must agree exactly."""

from __future__ import annotations

import importlib
import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from torchmetrics.retrieval import (
    RetrievalMAP,
    RetrievalMRR,
    RetrievalNormalizedDCG,
    RetrievalPrecision,
)

from pairloss.errors import PairLossError
from pairloss.metrics import RetrievalResult, neighbors, retrieval
from pairloss.metrics.neighbors import ExactSearch
from pairloss.metrics.retrieval import _make_relevance, relevant_ranks

from ._reference import (
    LAYOUTS,
    clustered,
    exact_scores,
    ranking,
    reference_retrieval,
    same_values,
)

KS = (1, 2, 4, 8)
RANK_PATHS = ("compiled", "torch")
retrieval_module = importlib.import_module("pairloss.metrics.retrieval")


@pytest.fixture(params=RANK_PATHS)
def rank_path(request, monkeypatch):
    """Run a test with the exact ranks from the compiled kernel and from the torch path."""
    monkeypatch.setattr(retrieval_module, "_COMPILED_RANKS", request.param == "compiled")
    return request.param


# --- hand-computed cases -------------------------------------------------------------------


def _line_case():
    """Gallery on a line, scored by dot product with q = [1]: ranking is index order 0..4.

    gallery labels  A B A B A  (A = 0, B = 1)
    query 0 (A): relevant at ranks 1, 3, 5, R = 3
    query 1 (B): relevant at ranks 2, 4,    R = 2
    query 2 (C = 2): no relevant item -> excluded
    """
    gallery = torch.tensor([[5.0], [4.0], [3.0], [2.0], [1.0]])
    gallery_labels = torch.tensor([0, 1, 0, 1, 0])
    query = torch.ones(3, 1)
    query_labels = torch.tensor([0, 1, 2])
    return query, query_labels, gallery, gallery_labels


def test_hand_computed_every_metric():
    r = retrieval(*_line_case(), k=(1, 2, 4), metric="dot", backend="torch")
    # recall@1: query A hits at rank 1 (1), query B first hit at rank 2 (0) -> 1/2
    assert r.recall[1] == 0.5
    # recall@2: both have a hit in the top 2 -> 1
    assert r.recall[2] == 1.0
    # precision@2: A: 1/2, B: 1/2 -> 1/2 ; precision@4: A: 2/4, B: 2/4 -> 1/2
    assert r.precision[2] == 0.5 and r.precision[4] == 0.5
    # precision@1: A: 1, B: 0
    assert r.precision[1] == 0.5
    # map@r: A (R=3): (1/3)(1/1 + 2/3) = 5/9 ; B (R=2): (1/2)(1/2) = 1/4
    assert r.map_at_r == pytest.approx((5 / 9 + 1 / 4) / 2, abs=1e-15)
    # r_precision: A: 2/3, B: 1/2
    assert r.r_precision == pytest.approx((2 / 3 + 1 / 2) / 2, abs=1e-15)
    # map: A: (1/3)(1 + 2/3 + 3/5) = 34/45 ; B: (1/2)(1/2 + 2/4) = 1/2
    assert r.map == pytest.approx((34 / 45 + 1 / 2) / 2, abs=1e-15)
    # mrr: A: 1, B: 1/2
    assert r.mrr == 0.75
    # ndcg@2: A: 1 / (1 + 1/log2 3) ; B: (1/log2 3) / (1 + 1/log2 3)
    ideal = 1 + 1 / math.log2(3)
    assert r.ndcg[2] == pytest.approx((1 / ideal + (1 / math.log2(3)) / ideal) / 2, abs=1e-15)
    # ndcg@4: A: (1 + 1/log2 4) / (1 + 1/log2 3 + 1/log2 4) ; B: (1/log2 3 + 1/log2 5) / ideal
    a = (1 + 1 / 2) / (1 + 1 / math.log2(3) + 1 / 2)
    b = (1 / math.log2(3) + 1 / math.log2(5)) / ideal
    assert r.ndcg[4] == pytest.approx((a + b) / 2, abs=1e-15)
    # query C has no relevant item: excluded, with its reason
    assert r.n_queries == 3 and r.n_excluded == 1
    assert r.excluded == {"class_not_in_gallery": 1}


def test_hand_computed_macro_average():
    q, ql, g, gl = _line_case()
    q, ql = torch.ones(3, 1), torch.tensor([0, 0, 1])
    r = retrieval(q, ql, g, gl, k=1, metric="dot", backend="torch", per_class=True)
    # class A: two queries with recall@1 = 1 each -> 1; class B: 0 -> macro 1/2 (micro 2/3)
    assert r.recall[1] == 0.5 and r.average == "macro"
    micro = retrieval(q, ql, g, gl, k=1, metric="dot", backend="torch")
    assert micro.recall[1] == pytest.approx(2 / 3, abs=1e-15)


def test_hand_computed_leave_one_out_and_ties(rank_path):
    # four identical points of class 0 and one far point of class 1: every score ties
    # among the class-0 points; ties go to the lower gallery index.
    x = torch.tensor([[1.0, 0.0]] * 4 + [[0.0, 1.0]])
    labels = torch.tensor([0, 0, 0, 0, 1])
    for backend in ("torch", "faiss"):
        r = retrieval(x, labels, k=(1, 3), backend=backend)
        # class-0 queries: the 3 other class-0 points rank first -> every metric is 1
        # the class-1 query is a singleton in leave-one-out -> excluded
        assert r.recall[1] == 1.0 and r.precision[3] == 1.0 and r.map == 1.0
        assert r.excluded == {"singleton_class": 1} and r.n_excluded == 1


def test_tie_order_matters_for_map(rank_path):
    # query [1, 0]; gallery items 0 and 1 tie exactly; item 0 irrelevant, item 1 relevant.
    # Order by index: item 0 (irrelevant) at rank 1, item 1 (relevant) at rank 2 -> AP = 1/2.
    q = torch.tensor([[1.0, 0.0]])
    g = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    for backend in ("torch", "faiss"):
        r = retrieval(q, torch.tensor([1]), g, torch.tensor([0, 1, 0]), k=1, backend=backend)
        assert r.map == 0.5 and r.mrr == 0.5 and r.recall[1] == 0.0


def test_all_queries_excluded_gives_none_and_counts(rank_path):
    x = torch.randn(4, 3)
    r = retrieval(x, torch.arange(4), k=1, backend="torch")
    assert r.recall[1] is None and r.map is None
    assert r.excluded == {"singleton_class": 4}


# --- oracles --------------------------------------------------------------------------------


def _pml_knn(query, k, reference, ref_includes_query):
    """Exact k-NN for PML in the library's order (float64 scores of float32-rounded inputs)."""
    scores = exact_scores(query, reference, "cosine")
    if ref_includes_query:
        scores.fill_diagonal_(-math.inf)
    order = torch.stack(
        [
            torch.tensor(sorted(range(len(row)), key=lambda j, row=row: (-row[j], j))[:k])
            for row in scores.tolist()
        ]
    )
    return scores.gather(1, order), order


PML_KEYS = {
    "precision_at_1": "precision@1",
    "r_precision": "r_precision",
    "mean_average_precision_at_r": "map@r",
    "mean_average_precision": "map",
    "mean_reciprocal_rank": "mrr",
}


def _pml(query, labels, reference=None, reference_labels=None, avg_of_avgs=False):
    calc = AccuracyCalculator(
        include=tuple(PML_KEYS),
        k=None,
        avg_of_avgs=avg_of_avgs,
        knn_func=_pml_knn,
        device=torch.device("cpu"),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = calc.get_accuracy(query, labels, reference, reference_labels)
    return {PML_KEYS[k]: v for k, v in out.items()}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("per_class", [False, True])
def test_pml_accuracy_calculator_leave_one_out(layout, per_class):
    x, labels = clustered(150, 8, layout, seed=3)
    pml = _pml(x, labels, avg_of_avgs=per_class)
    for backend in ("torch", "faiss"):
        ours = retrieval(x, labels, k=1, backend=backend, per_class=per_class).values()
        for name, value in pml.items():
            # PML computes MRR in float32
            tol = 1e-6 if name == "mrr" else 1e-12
            assert ours[name] == pytest.approx(value, abs=tol), (name, backend)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pml_accuracy_calculator_separate_gallery(layout):
    x, labels = clustered(160, 8, layout, seed=5)
    q, ql, g, gl = x[:60], labels[:60], x[60:], labels[60:]
    pml = _pml(q, ql, g, gl)
    ours = retrieval(q, ql, g, gl, k=1, backend="faiss").values()
    for name, value in pml.items():
        assert ours[name] == pytest.approx(value, abs=1e-6 if name == "mrr" else 1e-12), name


@pytest.mark.parametrize("layout", LAYOUTS)
def test_torchmetrics_retrieval(layout):
    x, labels = clustered(120, 6, layout, seed=7)
    # torchmetrics reads scores as float32 and drops items scoring <= 0 from its average
    # precision, so it gets the exact ranking as positive integer scores instead
    scores = exact_scores(x, x, "cosine").tolist()
    n = len(x)
    preds = torch.zeros(n, n)
    for i, row in enumerate(scores):
        for position, j in enumerate(ranking(row, i)):
            preds[i, j] = n - position
    off_diagonal = ~torch.eye(n, dtype=torch.bool)
    target = (labels[:, None] == labels[None, :])[off_diagonal]
    indexes = torch.arange(n)[:, None].expand(n, n)[off_diagonal]
    preds = preds[off_diagonal]
    ours = retrieval(x, labels, k=(1, 5, 10), backend="torch").values()
    oracles = {
        "map": RetrievalMAP(empty_target_action="skip"),
        "mrr": RetrievalMRR(empty_target_action="skip"),
    }
    for k in (1, 5, 10):
        oracles[f"ndcg@{k}"] = RetrievalNormalizedDCG(top_k=k, empty_target_action="skip")
        oracles[f"precision@{k}"] = RetrievalPrecision(top_k=k, empty_target_action="skip")
    for name, metric in oracles.items():
        expected = float(metric(preds, target, indexes=indexes))
        assert ours[name] == pytest.approx(expected, abs=1e-6), name


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "dot"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_reference_implementation(metric, layout):
    x, labels = clustered(90, 5, layout, seed=11)
    for per_class in (False, True):
        expected, n_excluded = reference_retrieval(
            x, labels, ks=(1, 3, 7), metric=metric, per_class=per_class
        )
        got = retrieval(x, labels, k=(1, 3, 7), metric=metric, per_class=per_class, chunk_size=16)
        assert got.n_excluded == n_excluded
        for name, value in expected.items():
            assert got.values()[name] == pytest.approx(value, abs=1e-12), name


def test_multi_hot_labels_and_label_match(rank_path):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(60, 5, generator=g, dtype=torch.float64)
    multi_hot = torch.rand(60, 4, generator=g) < 0.3
    expected, n_excluded = reference_retrieval(
        x, multi_hot, ks=(1, 5), relevant=lambda a, b: bool((a & b).any())
    )
    for backend in ("torch", "faiss"):
        got = retrieval(x, multi_hot, k=(1, 5), backend=backend)
        assert got.n_excluded == n_excluded and got.excluded.get("no_relevant_item") == n_excluded
        for name, value in expected.items():
            assert got.values()[name] == pytest.approx(value, abs=1e-12), name
    # a custom relevance: ordinal labels within distance 1 of each other
    ordinal = torch.randint(0, 10, (60,), generator=g)
    expected, _ = reference_retrieval(
        x, ordinal, ks=(1, 5), relevant=lambda a, b: abs(int(a) - int(b)) <= 1
    )
    got = retrieval(
        x, ordinal, k=(1, 5), label_match=lambda a, b: (a[:, None] - b[None, :]).abs() <= 1
    )
    for name, value in expected.items():
        assert got.values()[name] == pytest.approx(value, abs=1e-12), name


def test_one_hot_labels_match_integer_labels():
    x, labels = clustered(80, 6, "unbalanced", seed=4)
    one_hot = torch.nn.functional.one_hot(labels).bool()
    a = retrieval(x, labels, k=(1, 4), per_class=True).values()
    b = retrieval(x, one_hot, k=(1, 4), per_class=True).values()
    assert a == pytest.approx(b, abs=1e-15)


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "dot"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_backends_agree_exactly(metric, layout, rank_path):
    x, labels = clustered(300, 16, layout, seed=13, spread=2.0)
    a = retrieval(x, labels, k=KS, metric=metric, backend="torch", chunk_size=64)
    b = retrieval(x, labels, k=KS, metric=metric, backend="faiss", chunk_size=50)
    assert a.to_dict() == b.to_dict()
    q, ql, g, gl = x[:100], labels[:100], x[100:], labels[100:]
    a = retrieval(q, ql, g, gl, k=KS, metric=metric, backend="torch")
    b = retrieval(q, ql, g, gl, k=KS, metric=metric, backend="faiss")
    assert a.to_dict() == b.to_dict()


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("backend", ["torch", "faiss"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_candidate_lists_and_full_rows_agree(metric, backend, layout, monkeypatch):
    """Long neighbour lists come from full float64 rows, short ones from re-scored candidates:
    both give the same metrics (and tie order) on the same data."""
    x, labels = clustered(300, 16, layout, seed=5, spread=2.0)
    x = torch.cat([x, x[:20]])  # exact duplicates: ties broken by index
    labels = torch.cat([labels, labels[:20]])
    names = ("recall", "precision", "ndcg", "map@r", "r_precision")
    monkeypatch.setattr(neighbors, "_WIDE_LIST", 10**9)
    full = retrieval(x, labels, k=KS, metric=metric, backend=backend, metrics=names)
    monkeypatch.setattr(neighbors, "_WIDE_LIST", 1)
    lists = retrieval(x, labels, k=KS, metric=metric, backend=backend, metrics=names)
    assert full.values() == lists.values()


def test_metric_subset_matches_full_run(rank_path):
    x, labels = clustered(120, 8, "balanced", seed=8)
    full = retrieval(x, labels, k=(1, 3)).values()
    for subset in (("mrr",), ("map",), ("precision", "map@r"), ("ndcg", "r_precision")):
        part = retrieval(x, labels, k=(1, 3), metrics=subset).values()
        assert part and all(full[name] == value for name, value in part.items())
        # k-NN lists (FAISS) and exact ranks (torch with the compiled kernel) agree
        for backend in ("torch", "faiss"):
            other = retrieval(x, labels, k=(1, 3), metrics=subset, backend=backend).values()
            assert other == part, (subset, backend)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(3, 25),
    n_classes=st.integers(1, 5),
    seed=st.integers(0, 10_000),
    integer_valued=st.booleans(),
)
def test_property_backends_and_reference(n, n_classes, seed, integer_valued):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    if integer_valued:  # many exact ties
        x = x.round().clamp(-1, 1)
        x[x.abs().sum(1) == 0] = 1.0
    labels = torch.randint(0, n_classes, (n,), generator=g)
    ks = (1, min(2, n - 1))
    a = retrieval(x, labels, k=ks, backend="torch", chunk_size=4)
    b = retrieval(x, labels, k=ks, backend="faiss", chunk_size=3)
    assert same_values(a.to_dict(), b.to_dict())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(retrieval_module, "_COMPILED_RANKS", False)
        c = retrieval(x, labels, k=ks, backend="torch", chunk_size=5)
    assert same_values(a.to_dict(), c.to_dict())
    expected, n_excluded = reference_retrieval(x, labels, ks=ks)
    assert a.n_excluded == n_excluded
    for name, value in expected.items():
        assert a.values()[name] == pytest.approx(value, abs=1e-12), name


# --- result object --------------------------------------------------------------------------


def test_result_dict_keys_and_table():
    x, labels = clustered(60, 4, "singletons", seed=1)
    r = retrieval(x, labels, k=(1, 10))
    assert isinstance(r, RetrievalResult)
    d = r.to_dict()
    assert list(d) == [
        "recall@1", "recall@10", "precision@1", "precision@10", "ndcg@1", "ndcg@10",
        "map@r", "r_precision", "map", "mrr", "n_queries", "n_excluded", "excluded",
    ]  # fmt: skip
    assert d["n_queries"] == 60 and d["excluded"] == {"singleton_class": d["n_excluded"]} != {}
    text = str(r)
    assert text == r.table()
    for key in ("recall@10", "map@r", "mrr", "singleton_class"):
        assert key in text


# --- bad input ------------------------------------------------------------------------------


def _error(fn, *names):
    with pytest.raises(PairLossError) as info:
        fn()
    for name in names:
        assert name in str(info.value)
    return str(info.value)


def test_bad_input_messages():
    x, labels = clustered(20, 4, "balanced", seed=0)
    bad = x.clone()
    bad[3, 1] = math.nan
    assert "3" in _error(lambda: retrieval(bad, labels), "query", "NaN")
    _error(lambda: retrieval(x, labels, bad, labels), "gallery", "NaN")
    inf = x.clone()
    inf[7, 0] = math.inf
    _error(lambda: retrieval(x[:5], labels[:5], inf, labels), "gallery", "7")
    _error(lambda: retrieval(x, labels, k=(1, 20)), "k", "19")
    _error(lambda: retrieval(x[:5], labels[:5], x[:3], labels[:3], k=4), "k", "3")
    _error(lambda: retrieval(x, labels, k=0), "k")
    _error(lambda: retrieval(x[:0], labels[:0]), "query", "empty")
    _error(lambda: retrieval(x, labels, x[:0], labels[:0]), "gallery", "empty")
    _error(lambda: retrieval(x, labels[:-1]), "query_labels", "19")
    _error(lambda: retrieval(x, labels, x, labels[:5]), "gallery_labels")
    _error(lambda: retrieval(x, labels, x[:, :3], labels), "gallery", "dimension")
    _error(lambda: retrieval(x, labels, x), "gallery_labels", "missing")
    _error(lambda: retrieval(x, labels, gallery_labels=labels), "gallery_labels")
    _error(lambda: retrieval(x, labels, metric="manhattan"), "metric")
    _error(lambda: retrieval(x, labels, backend="annoy"), "backend")
    _error(lambda: retrieval(x, labels, metrics=("recall", "auc")), "metrics")
    _error(lambda: retrieval(x, labels, chunk_size=0), "chunk_size")
    _error(lambda: retrieval(torch.zeros(3, 2), torch.zeros(3)), "query", "zero norm")
    _error(lambda: retrieval(x, labels.float() + 0.5), "query_labels", "integer")
    _error(lambda: retrieval(x, torch.full((20, 3), 2)), "query_labels", "multi-hot")
    _error(
        lambda: retrieval(
            x, labels, k=1, label_match=lambda a, b: torch.ones(2, 2, dtype=torch.bool)
        ),
        "label_match",
        "shape",
    )


def test_faiss_backend_missing(monkeypatch):
    import pairloss.metrics.neighbors as neighbors

    monkeypatch.setattr(neighbors, "faiss_available", lambda: False)
    x, labels = clustered(10, 3, "balanced", seed=0)
    _error(lambda: retrieval(x, labels, k=1, backend="faiss"), "backend", "pip install faiss-cpu")
    assert retrieval(x, labels, k=1, backend="auto").backend == "torch"


def test_full_ranking_breaks_ties_between_relevant_items_by_index(rank_path):
    # dot scores of q = [1]: items 0 and 2 are relevant and tie at 0.5; item 1 scores 0.9
    q, g = torch.ones(1, 1), torch.tensor([[0.5], [0.9], [0.5], [0.1]])
    ql, gl = torch.tensor([1]), torch.tensor([1, 0, 1, 0])
    search = ExactSearch(q, g, "dot", "torch")
    relevance = _make_relevance(ql, g, gl, None, search)
    # ranking by (score desc, index asc): 1, 0, 2, 3 -> relevant at ranks 2 and 3
    assert relevant_ranks(search, relevance, torch.tensor([0])).tolist() == [[2, 3]]
    for backend in ("torch", "faiss"):
        r = retrieval(q, ql, g, gl, k=1, metric="dot", backend=backend)
        assert r.map == pytest.approx((1 / 2 + 2 / 3) / 2, abs=1e-15) and r.mrr == 0.5


def _brute_force_ranks(x, labels, metric):
    """Ranks of the relevant items of every query (leave-one-out), from the reference ranking."""
    scores = exact_scores(x, x, metric).tolist()
    out = []
    for i, row in enumerate(scores):
        order = ranking(row, i)
        out.append([pos + 1 for pos, j in enumerate(order) if labels[j] == labels[i]])
    return out


def _ranks(x, labels, metric, backend="torch", rows=None):
    search = ExactSearch(x, None, metric, backend)
    relevance = _make_relevance(labels, None, None, None, search)
    rows = torch.arange(len(x)) if rows is None else rows
    ranks = relevant_ranks(search, relevance, rows)
    return [[r for r in row if r <= len(x) - 1] for row in ranks.tolist()]


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "dot"])
@pytest.mark.parametrize("max_bins", [1, 64, 2**16])
def test_relevant_ranks_match_brute_force(metric, max_bins, monkeypatch, rank_path):
    # few buckets put many items next to the relevant ones (exact float64 path), many put few
    monkeypatch.setattr(retrieval_module, "_MAX_BINS", max_bins)
    x, labels = clustered(120, 6, "unbalanced", seed=21, spread=3.0)
    keep = torch.bincount(labels)[labels] > 1
    x, labels = x[keep], labels[keep]
    assert _ranks(x, labels, metric) == _brute_force_ranks(x, labels, metric)


def test_relevant_ranks_with_float32_near_ties_and_exact_ties(rank_path):
    # copies of a few points moved by ~1e-9 (far below the float32 resolution) and exact
    # duplicates: the float32 scores tie, only the float64 scores and the index order decide
    g = torch.Generator().manual_seed(4)
    base = torch.randn(6, 5, generator=g, dtype=torch.float64)
    x = base[torch.arange(60) % 6] * (1 + 1e-9 * torch.randint(0, 3, (60, 1), generator=g))
    x[::7] = base[0]
    labels = torch.randint(0, 3, (60,), generator=g)
    for metric in ("dot", "euclidean"):
        assert _ranks(x, labels, metric) == _brute_force_ranks(x, labels, metric), metric
        expected, _ = reference_retrieval(x, labels, ks=(1, 5), metric=metric)
        for backend in ("torch", "faiss"):
            got = retrieval(x, labels, k=(1, 5), metric=metric, backend=backend).values()
            for name, value in expected.items():
                assert got[name] == pytest.approx(value, abs=1e-12), (metric, backend, name)


def test_relevant_items_deep_in_the_ranking(rank_path):
    # hard data: most relevant items lie far outside any short neighbour list
    x, labels = clustered(300, 8, "balanced", seed=17, spread=6.0)
    ranks = _ranks(x, labels, "cosine")
    assert max(r[-1] for r in ranks) > 200
    assert ranks == _brute_force_ranks(x, labels, "cosine")
    expected, _ = reference_retrieval(x, labels, ks=(1, 4))
    for backend in ("torch", "faiss"):
        for chunk_size in (None, 7):
            got = retrieval(x, labels, k=(1, 4), backend=backend, chunk_size=chunk_size)
            for name, value in expected.items():
                assert got.values()[name] == pytest.approx(value, abs=1e-12), (backend, name)


def test_mrr_alone_for_queries_without_a_hit_in_the_list(rank_path):
    x, labels = clustered(200, 8, "balanced", seed=19, spread=6.0)
    expected, _ = reference_retrieval(x, labels, ks=(1,))
    for backend in ("torch", "faiss"):
        got = retrieval(x, labels, k=1, backend=backend, metrics=("mrr",))
        assert got.mrr == pytest.approx(expected["mrr"], abs=1e-12), backend
        # the k-NN-only metrics and the full run agree with each other
        subset = retrieval(x, labels, k=(1, 4), backend=backend, metrics=("recall", "map@r"))
        full = retrieval(x, labels, k=(1, 4), backend=backend)
        assert same_values(subset.values(), {n: full.values()[n] for n in subset.values()})


def _both_paths(search, relevance, rows, monkeypatch):
    out = {}
    for path in RANK_PATHS:
        monkeypatch.setattr(retrieval_module, "_COMPILED_RANKS", path == "compiled")
        out[path] = relevant_ranks(search, relevance, rows)
    return out["compiled"], out["torch"]


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "dot"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_compiled_and_torch_ranks_agree(metric, layout, monkeypatch):
    x, labels = clustered(400, 12, layout, seed=31, spread=4.0)
    x = torch.cat([x, x[:40], -x[:10]])  # exact duplicates (ties) and mirrored points
    labels = torch.cat([labels, labels[:40], labels[:10]])
    search = ExactSearch(x, None, metric, "torch")
    relevance = _make_relevance(labels, None, None, None, search)
    rows = (relevance.counts(torch.arange(len(x))) > 0).nonzero().flatten()
    compiled, plain = _both_paths(search, relevance, rows, monkeypatch)
    assert torch.equal(compiled, plain)
    # R ranks in 1 .. N - 1 per row (leave-one-out), then padding N + 1
    in_range = (compiled >= 1) & (compiled <= len(x) - 1)
    assert torch.equal(in_range.sum(dim=1), relevance.counts(rows))
    assert bool((compiled[~in_range] == len(x) + 1).all())
    # separate gallery, multi-hot labels through a label_match function
    q, g = x[:150], x[150:]
    hot = torch.nn.functional.one_hot(labels % 5, 5) | torch.nn.functional.one_hot(labels % 3, 5)
    search = ExactSearch(q, g, metric, "torch")
    relevance = _make_relevance(hot[:150], g, hot[150:], None, search)
    rows = (relevance.counts(torch.arange(150)) > 0).nonzero().flatten()
    compiled, plain = _both_paths(search, relevance, rows, monkeypatch)
    assert torch.equal(compiled, plain)


def test_every_score_ties_when_the_query_is_zero(rank_path):
    # dot scores of a zero query are all exactly 0 (and eps = 0): the ranking is index order
    q, g = torch.zeros(1, 3), torch.randn(6, 3, generator=torch.Generator().manual_seed(2))
    ql, gl = torch.tensor([1]), torch.tensor([0, 1, 1, 0, 0, 1])
    search = ExactSearch(q, g, "dot", "torch")
    relevance = _make_relevance(ql, g, gl, None, search)
    assert relevant_ranks(search, relevance, torch.tensor([0])).tolist() == [[2, 3, 6]]


@pytest.mark.parametrize("workers", [1, 3])
def test_rank_threads_give_identical_values(workers, monkeypatch, rank_path):
    x, labels = clustered(150, 8, "unbalanced", seed=23, spread=4.0)
    expected = retrieval(x, labels, k=(1, 4), chunk_size=9).to_dict()
    monkeypatch.setattr(retrieval_module, "_WORKERS", workers)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert retrieval(x, labels, k=(1, 4), chunk_size=9).to_dict() == expected


@pytest.mark.parametrize("metric", ["dot", "euclidean"])
@pytest.mark.parametrize("scale", [1e-30, 1e25])
def test_raw_scores_of_huge_or_tiny_vectors_rank_as_the_unscaled_ones(metric, scale):
    g = torch.Generator().manual_seed(0)
    x, labels = torch.randn(40, 5, generator=g), torch.arange(40) % 5
    expected = retrieval(x, labels, k=(1, 4), metric=metric, backend="torch")
    got = retrieval(x * scale, labels, k=(1, 4), metric=metric, backend="torch")
    assert got.values() == expected.values()
