"""Learning to rank in the trainer (``--dataset lambdarank``): the file layouts, the query
splits and batches, a run with its baselines (linear scorer, LightGBM's LambdaMART, or the note
when LightGBM is missing), compare across ranking losses, and the settings it refuses. Tiny
synthetic svmlight files, and one short run on LightGBM's example when ../shared/data has it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pairloss.cli import main
from pairloss.data import read_svmlight
from pairloss.errors import PairLossError
from pairloss.train import load_task, make_config
from pairloss.train.ranking import QueryBatches, RankingTask
from pairloss.train.run import check_run, compare, train_run

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TINY = {"epochs": 2, "p": 4, "embedding_size": 8, "threads": 1}


def write_svmlight(path: Path, queries: int, seed: int, first_qid: int = 0) -> Path:
    """``queries`` queries of 4 to 9 documents with 6 features; relevance 0-3 grows with the
    first two features (learnable), with noise."""
    rng = np.random.default_rng(seed)
    lines = []
    for q in range(queries):
        for _ in range(rng.integers(4, 10)):
            x = rng.normal(size=6)
            rel = int(np.clip(np.round(1.5 + x[0] + 0.5 * x[1] + 0.3 * rng.normal()), 0, 3))
            feats = " ".join(f"{i + 1}:{v:.4f}" for i, v in enumerate(x) if i != 5 or v > 0)
            lines.append(f"{rel} qid:{first_qid + q} {feats}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def letor(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("letor")
    write_svmlight(folder / "train.txt", 24, seed=0)
    write_svmlight(folder / "vali.txt", 6, seed=1, first_qid=100)
    write_svmlight(folder / "test.txt", 8, seed=2, first_qid=200)
    return folder


def config_for(data: Path, out: Path, **changes):
    values = {**TINY, **changes}
    return make_config(dataset="lambdarank", data_dir=str(data), out=str(out), **values)


# ------------------------------------------------------------------------- files and splits


def test_layouts_single_file_letor_folder_and_lightgbm_folder(tmp_path, letor):
    single = write_svmlight(tmp_path / "all.svm", 20, seed=3)
    task = load_task(config_for(single, tmp_path / "a", test_fraction=0.25))
    assert task.test.n_queries == 5
    ids = [set(d.query_ids.tolist()) for d in (task.train, task.validation, task.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sum(len(i) for i in ids) == 20
    assert load_task(config_for(single, tmp_path / "a")).test.n_queries == 4  # default 0.2

    task = load_task(config_for(letor, tmp_path / "b"))
    assert task.validation.n_queries == 6 and task.test.n_queries == 8  # vali.txt validates
    assert task.train.n_queries == 24
    features, relevance, mask = task.slates([0, 1])  # padded to the longest training query
    assert features.shape == (2, task.width, 6) and relevance.shape == mask.shape == (2, task.width)
    assert int(mask.sum()) == int(task.train.query_sizes[:2].sum())
    assert bool((relevance[~mask] == -1).all()) and bool((features[~mask] == 0).all())

    lightgbm = tmp_path / "lgbm"
    lightgbm.mkdir()
    for name, seed in (("rank.train", 4), ("rank.test", 5)):
        data = read_svmlight(write_svmlight(tmp_path / name, 10, seed))
        lines = [ln.split(" ", 2) for ln in (tmp_path / name).read_text().splitlines()]
        (lightgbm / name).write_text("\n".join(f"{a} {c}" for a, _, c in lines) + "\n")
        (lightgbm / f"{name}.query").write_text("\n".join(map(str, data.query_sizes.tolist())))
    task = load_task(config_for(lightgbm, tmp_path / "c", val_fraction=0.3))
    assert task.validation.n_queries == 3 and task.train.n_queries == 7
    assert task.test.n_queries == 10


def test_bad_layouts_and_settings_are_named(tmp_path, letor):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = {
        "data_dir": config_for(empty, tmp_path / "r"),
        "test_fraction": config_for(letor, tmp_path / "r", test_fraction=0.2),
    }
    for name, config in cases.items():
        with pytest.raises(PairLossError, match=f"^{name}:"):
            load_task(config)
    single = write_svmlight(tmp_path / "s.svm", 6, seed=0)
    with pytest.raises(PairLossError, match="^val_fraction: 0 leaves"):
        load_task(config_for(single, tmp_path / "r", val_fraction=0.0))
    refused = {
        "loss": {"loss": "multi_similarity"},
        "miner": {"miner": "batch_hard"},
        "memory_size": {"memory_size": 64},
        "augment": {"augment": "flip"},
        "model": {"model": "mlp"},
        "labels": {"labels": str(single)},
    }
    for name, change in refused.items():
        with pytest.raises(PairLossError, match=f"^{name}:"):
            check_run(config_for(letor, tmp_path / "r", **change))
    digits = make_config(dataset="digits", loss="lambda_loss", out=str(tmp_path / "d"))
    with pytest.raises(PairLossError, match="--dataset lambdarank"):
        check_run(digits)


def test_query_batches_are_seeded_disjoint_over_ranks_and_new_each_epoch():
    whole = QueryBatches(10, 3, batches=None, seed=0)
    whole.set_epoch(0)
    epoch0 = list(whole)
    assert len(epoch0) == len(whole) == 3 and all(len(b) == 3 for b in epoch0)
    assert len({q for b in epoch0 for q in b}) == 9  # one pass, no query twice
    whole.set_epoch(1)
    assert list(whole) != epoch0
    ranks = [QueryBatches(10, 3, batches=4, seed=0, rank=r, world_size=2) for r in (0, 1)]
    drawn = [list(r) for r in ranks]
    assert [len(d) for d in drawn] == [2, 2]
    assert drawn[0][0] != drawn[1][0]
    both = QueryBatches(10, 3, batches=4, seed=0)
    assert list(both) == [drawn[0][0], drawn[1][0], drawn[0][1], drawn[1][1]]


# ---------------------------------------------------------------------------------- runs


def test_run_selects_on_validation_and_reports_next_to_the_baselines(tmp_path, letor):
    pytest.importorskip("lightgbm")
    result = train_run(config_for(letor, tmp_path / "run"), progress=False, log=lambda _: None)
    names = list(result.representations)
    assert set(names) == {
        "trained MLP scorer",
        "untrained MLP scorer",
        "linear scorer, lambda_loss",
        "LightGBM LambdaMART",
    }
    for results in result.representations.values():
        metrics = results["test"]
        assert {"ndcg@1", "ndcg@3", "ndcg@5", "ndcg@10", "mrr"} <= set(metrics)
        assert all(0.0 <= v <= 1.0 for v in metrics.values())
    scores = [r["test"]["ndcg@10"] for r in result.representations.values()]
    assert scores == sorted(scores, reverse=True)  # best first by the selection metric
    history = result.history
    best = max(history, key=lambda r: r["val_ndcg@10"])
    assert result.selected_epoch == best["epoch"] and result.selection_metric == "ndcg@10"
    assert "NDCG@10" in result.verdict and "MRR" in result.verdict
    summary = json.loads((result.out / "summary.json").read_text())
    assert summary["selected_epoch"] == result.selected_epoch
    assert summary["metrics"] == result.metrics
    html = (result.out / "report.html").read_text()
    assert "Sorted by NDCG@10" in html and "LightGBM LambdaMART" in html
    for name in ("model.pt", "checkpoint.pt", "metrics.jsonl", "config.json"):
        assert (result.out / name).is_file()
    # the saved model rebuilds without the data and scores the test queries the same way
    from pairloss.train.run import evaluate_run

    assert evaluate_run(result.out) == result.metrics
    assert main(["embed", str(result.out), "--out", str(tmp_path / "emb")]) == 2  # no embeddings


def test_without_lightgbm_the_run_says_so_in_one_line(tmp_path, letor, monkeypatch):
    monkeypatch.setitem(sys.modules, "lightgbm", None)  # import lightgbm raises ImportError
    lines: list[str] = []
    result = train_run(
        config_for(letor, tmp_path / "run", epochs=1), progress=False, log=lines.append
    )
    assert "LightGBM LambdaMART" not in result.representations
    notes = [ln for ln in lines if "lightgbm is not installed" in ln]
    assert len(notes) == 1 and "pairloss[ranking]" in notes[0]


def test_compare_ranking_losses_sorts_by_ndcg_at_10(tmp_path, letor):
    config = config_for(letor, tmp_path / "cmp", epochs=1)
    rows = compare(config, ["ranknet", "listnet"], seeds=[0], log=lambda _: None)
    assert [r["ndcg@10"] for r in rows] == sorted((r["ndcg@10"] for r in rows), reverse=True)
    trained = {r["loss"] for r in rows if not r["loss"].startswith("baseline: ")}
    assert trained == {"ranknet", "listnet"}
    # the untrained scorer and LightGBM are shared; each linear scorer is trained with its loss
    baselines = {r["loss"] for r in rows} - trained
    assert "baseline: untrained MLP scorer" in baselines
    assert not any("linear scorer" in name for name in baselines)
    assert (tmp_path / "cmp" / "leaderboard.html").is_file()


@pytest.mark.skipif(
    not (SHARED_DATA / "lambdarank").is_dir(), reason="../shared/data/lambdarank absent"
)
def test_cli_on_lightgbms_example_prints_ndcg_and_mrr(tmp_path, capsys):
    pytest.importorskip("lightgbm")
    argv = ["train", "--dataset", "lambdarank", "--data-dir", str(SHARED_DATA), "--quiet"]
    argv += ["--epochs", "1", "--threads", "1", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "train 161 queries" in out and "test 50 queries" in out
    assert "best validation NDCG@10" in out
    table = out.split("test data, every representation, best first:")[1]
    for name in ("trained MLP scorer", "linear scorer, lambda_loss", "LightGBM LambdaMART"):
        assert name in table
    assert "NDCG@1 test" in table and "MRR test" in table


def test_scorer_model_is_rebuilt_by_name():
    from pairloss.train.models import build_model

    model = build_model("scorer", 4, in_features=6, hidden=[8], dropout=0.1)
    assert model(torch.randn(2, 5, 6)).shape == (2, 5)
    assert [m for m, _ in RankingTask.columns] == [
        "ndcg@1",
        "ndcg@3",
        "ndcg@5",
        "ndcg@10",
        "mrr",
    ]
