"""svmlight reader with query groups, the lambdarank example, STS-B preference pairs and lists,
and the scorer training loop with the LambdaMART baseline (tiny runs)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

import pairloss
from pairloss.data import (
    load_lambdarank,
    load_sts_scores,
    preference_lists,
    preference_pairs,
    read_sts_scores,
    read_svmlight,
)
from pairloss.errors import PairLossError
from pairloss.train.scorers import (
    FitLog,
    MLPScorer,
    evaluate_scorer,
    evaluate_scores,
    fit_lambdamart,
    fit_scorer,
    lambdamart_scores,
    linear_scorer,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "lambdarank").is_dir(), reason="../shared/data absent")

SMALL = """2 qid:7 1:0.5 3:1.5 # a comment
0 qid:7 2:-1
1 qid:9 1:2 4:0.25

3 qid:4 3:1
"""


def test_reader_with_qid_fields_and_gzip(tmp_path):
    plain = tmp_path / "small.txt"
    plain.write_text(SMALL)
    packed = tmp_path / "small.txt.gz"
    packed.write_bytes(gzip.compress(SMALL.encode()))
    for path in (plain, packed):
        data = read_svmlight(path)
        assert data.features.shape == (4, 4)
        torch.testing.assert_close(data.features[0], torch.tensor([0.5, 0.0, 1.5, 0.0]))
        assert data.labels.tolist() == [2.0, 0.0, 1.0, 3.0]
        assert data.query_sizes.tolist() == [2, 1, 1] and data.query_ids.tolist() == [7, 9, 4]
    f, rel, mask = data.slates()
    assert f.shape == (3, 2, 4) and rel.tolist() == [[2.0, 0.0], [1.0, -1.0], [3.0, -1.0]]
    assert mask.tolist() == [[True, True], [True, False], [True, False]]
    assert read_svmlight(plain, zero_based=True).features.shape == (4, 5)


def test_reader_with_a_query_file(tmp_path):
    path = tmp_path / "rank.txt"
    path.write_text("1 1:1\n0 2:1\n2 1:3\n")
    (tmp_path / "rank.txt.query").write_text("2\n1\n")
    assert read_svmlight(path).query_sizes.tolist() == [2, 1]
    other = tmp_path / "groups"
    other.write_text("1\n2\n")
    assert read_svmlight(path, query_path=other).query_sizes.tolist() == [1, 2]


@pytest.mark.parametrize(
    "text, query, match",
    [
        ("1 qid:1 1:x\n", None, "value of feature 1"),
        ("1 qid:1 a:1\n", None, "feature index 'a'"),
        ("1 qid:1 0:1\n", None, "zero_based=True"),
        ("1 qid:1 2:1 2:3\n", None, "repeated"),
        ("z qid:1 1:1\n", None, "label 'z'"),
        ("1 qid:1 1\n", None, "no ':'"),
        ("1 1:1\n", None, "no query groups"),
        ("1 qid:1 1:1\n0 qid:2 1:1\n1 qid:1 1:2\n", None, "two separate runs"),
        ("1 1:1\n0 1:2\n", "3\n", "add up to 3"),
        ("1 1:1\n", "0\n", "expected a number of documents"),
        ("", None, "no documents"),
    ],
)
def test_bad_files_are_named(tmp_path, text, query, match):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    if query is not None:
        (tmp_path / "bad.txt.query").write_text(query)
    with pytest.raises(PairLossError, match=match):
        read_svmlight(path)


def test_missing_file_and_bad_arguments(tmp_path):
    with pytest.raises(PairLossError, match="file not found"):
        read_svmlight(tmp_path / "none.txt")
    with pytest.raises(PairLossError, match="path"):
        read_svmlight(3)
    path = tmp_path / "ok.txt"
    path.write_text("1 qid:1 5:1\n")
    with pytest.raises(PairLossError, match="n_features"):
        read_svmlight(path, n_features=3)


@needs_data
def test_lambdarank_example():
    train, test = load_lambdarank(DATA)
    assert train.features.shape == (3005, 300) and train.n_queries == 201
    assert test.features.shape == (768, 300) and test.n_queries == 50
    assert sorted(set(train.labels.tolist())) == [0.0, 1.0, 2.0, 3.0, 4.0]


@needs_data
def test_scorer_training_and_lambdamart_baseline_tiny():
    train, test = load_lambdarank(DATA)
    torch.set_num_threads(1)
    log = FitLog()
    small = type(train)(train.features, train.labels, train.query_sizes, train.query_ids)
    scorer = fit_scorer(pairloss.LambdaLoss(), small, epochs=3, batch_queries=32, log=log)
    assert len(log.epoch_loss) == 3 and log.epoch_loss[-1] < log.epoch_loss[0]
    res = evaluate_scorer(scorer, test)
    assert set(res.to_dict()) >= {"ndcg@1", "ndcg@3", "ndcg@5", "ndcg@10", "mrr"}
    assert all(0.0 <= v <= 1.0 for v in res.to_dict().values())
    untrained = MLPScorer(300).fit_standardisation(train.features).eval()
    assert res.ndcg[10] > evaluate_scorer(untrained, test).ndcg[10]
    lin = linear_scorer(300).fit_standardisation(train.features)
    fit_scorer(pairloss.ListNetLoss(), train, scorer=lin, epochs=1)
    model = fit_lambdamart(train, n_estimators=5, num_leaves=7)
    gbm = evaluate_scores(*lambdamart_scores(model, test))
    assert 0.0 < gbm.ndcg[10] <= 1.0


@needs_data
def test_sts_preference_lists_and_pairs():
    rows = load_sts_scores("dev", DATA)
    assert len(rows) == 1500 and all(0.0 <= s <= 5.0 for _, _, s in rows)
    lists = preference_lists(rows)
    assert len(lists) > 0
    for anchor, cands, scores in zip(lists.anchors, lists.candidates, lists.scores):
        assert len(cands) == len(scores) >= 2 and len(set(scores)) >= 2
        assert anchor not in cands and len(set(cands)) == len(cands)
    pairs = preference_pairs(lists, min_margin=0.5)
    assert all(c - r > 0.5 for c, r in zip(pairs.chosen_scores, pairs.rejected_scores))
    scores, mask = lists.tensors()
    assert scores.shape == mask.shape and int(mask.sum()) == sum(len(c) for c in lists.candidates)
    noisy = preference_lists(rows, random_negatives=2, seed=1)
    assert all(s[-2:] == [0.0, 0.0] for s in noisy.scores)


def test_sts_rows_repeated_and_bad(tmp_path):
    path = tmp_path / "sts.csv"
    lines = [
        "g\tf\ty\t1\t4.0\tA\tB",
        "g\tf\ty\t2\t1.0\tA\tC",
        "g\tf\ty\t3\t2.0\tA\tB\textra\tcolumns",
        "g\tf\ty\t4\t3.0\tA\tA",
    ]
    path.write_text("\n".join(lines) + "\n")
    rows = read_sts_scores(path)
    assert rows[2] == ("A", "B", 2.0)
    lists = preference_lists(rows)
    assert lists.anchors == ["A"] and lists.candidates == [["B", "C"]]
    assert lists.scores == [[3.0, 1.0]]  # B scored twice: the mean
    pairs = preference_pairs(lists)
    assert (pairs.chosen, pairs.rejected) == (["B"], ["C"])
    path.write_text("g\tf\ty\t1\tfour\tA\tB\n")
    with pytest.raises(PairLossError, match="score 'four'"):
        read_sts_scores(path)
    path.write_text("g\tf\t4.0\tA\tB\n")
    with pytest.raises(PairLossError, match="expected 7"):
        read_sts_scores(path)
