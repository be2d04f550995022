"""Training runs end to end: config, registry, schedule, checkpoints and resume, train, compare,
eval, and the command line (tiny budgets on scikit-learn's digits and the AT&T faces)."""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pairloss.cli import main
from pairloss.errors import PairLossError
from pairloss.train import TrainConfig, Trainer, build_loss, load_task, make_config
from pairloss.train.config import parse_options, parse_value
from pairloss.train.logs import read_history
from pairloss.train.registry import build_miner, loss_class, miner_class
from pairloss.train.run import build, compare, evaluate_run, parse_loss_spec, train_run
from pairloss.train.trainer import load_checkpoint, warmup_cosine

SHARED_DATA = (
    Path(os.environ["PAIRLOSS_DATA"])
    if os.environ.get("PAIRLOSS_DATA")
    else Path(__file__).resolve().parents[2].parent / "shared" / "data"
)
TINY = {"epochs": 2, "batches_per_epoch": 2, "p": 4, "k": 4, "embedding_size": 8, "threads": 1}


def tiny(tmp_path: Path, **changes) -> TrainConfig:
    values = {**TINY, "out": str(tmp_path / "run"), **changes}
    return make_config(dataset=values.pop("dataset", "digits"), **values)


# ---------------------------------------------------------------------------- config and names


def test_config_precedence_defaults_dataset_toml_flags(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('dataset = "digits"\nepochs = 7\nlr = 0.01\n[loss_options]\nalpha = 3.0\n')
    config = make_config(toml=toml, lr=0.02, loss_options={"beta": 40.0})
    assert config.dataset == "digits"
    assert config.p == 5 and config.k == 16  # digits' defaults
    assert config.epochs == 7  # file over data set defaults
    assert config.lr == 0.02  # flag over file
    assert config.loss_options == {"alpha": 3.0, "beta": 40.0}


def test_config_errors_name_the_setting(tmp_path):
    with pytest.raises(PairLossError, match="epochs"):
        make_config(dataset="digits", epochs=0)
    with pytest.raises(PairLossError, match="lr"):
        make_config(dataset="digits", lr=-1.0)
    bad = tmp_path / "bad.toml"
    bad.write_text("epochz = 3\n")
    with pytest.raises(PairLossError, match="did you mean epochs"):
        make_config(toml=bad)
    bad.write_text("epochs = [\n")
    with pytest.raises(PairLossError, match="not valid TOML"):
        make_config(toml=bad)
    with pytest.raises(PairLossError, match="does not exist"):
        make_config(toml=tmp_path / "missing.toml")


def test_parse_values_and_options():
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5
    assert parse_value("true") is True and parse_value("None") == "None"
    assert parse_value("none") == "none" and parse_value("1e999") == float("inf")
    assert parse_value("cosine") == "cosine" and parse_value("[1, 2]") == [1, 2]
    assert parse_options(["margin=0.5", "swap=false"], "o") == {"margin": 0.5, "swap": False}
    with pytest.raises(PairLossError, match="key=value"):
        parse_options(["margin"], "--option")
    assert parse_loss_spec("triplet:margin=0.1,miner=batch_hard") == (
        "triplet",
        {"margin": 0.1},
        "batch_hard",
    )


def test_loss_and_miner_names():
    from pairloss import ArcFaceLoss, MultiSimilarityLoss, TripletMarginLoss
    from pairloss.miners import BatchHardMiner

    for name in ("multi_similarity", "MultiSimilarityLoss", "multi-similarity", "ms"):
        assert loss_class(name) is MultiSimilarityLoss
    assert loss_class("triplet") is TripletMarginLoss
    assert miner_class("batch_hard") is BatchHardMiner
    with pytest.raises(PairLossError, match="did you mean multi_similarity"):
        loss_class("multisim")
    with pytest.raises(PairLossError, match="BatchHardMiner"):
        miner_class("hard")
    proxy = build_loss("arcface", {"margin": 20.0}, num_classes=7, embedding_size=5)
    assert isinstance(proxy, ArcFaceLoss) and tuple(proxy.W.shape) == (5, 7)  # [D, C]
    with pytest.raises(PairLossError, match="no option 'marginn'"):
        build_loss("contrastive", {"marginn": 1}, 3, 4)
    assert build_miner(None) is None


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 4, 20) == pytest.approx(0.25)
    assert warmup_cosine(3, 4, 20) == pytest.approx(1.0)
    assert warmup_cosine(4, 4, 20) == pytest.approx(1.0)
    assert warmup_cosine(12, 4, 20) == pytest.approx(0.5)
    assert warmup_cosine(20, 4, 20) == pytest.approx(0.0)
    assert warmup_cosine(0, 0, 10) == pytest.approx(1.0)


def test_unknown_dataset_suggests_and_missing_data_says_how(tmp_path):
    with pytest.raises(PairLossError, match="did you mean digits"):
        load_task(tiny(tmp_path, dataset="digit"))
    with pytest.raises(PairLossError, match="apt-get install -y dataset-fashion-mnist"):
        from pairloss.data import load_fashion_mnist

        load_fashion_mnist(tmp_path)


# ------------------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """One tiny run on scikit-learn's digits, shared by the tests that read its files."""
    out = tmp_path_factory.mktemp("digits") / "run"
    config = make_config(dataset="digits", out=str(out), **{**TINY, "epochs": 3})
    return train_run(config, progress=False, log=lambda *_: None)


def test_train_run_writes_every_file_with_finite_metrics(digits_run):
    result = digits_run
    out = Path(result.out)
    for name in ("config.json", "metrics.jsonl", "metrics.csv", "checkpoint.pt", "model.pt"):
        assert (out / name).is_file(), name
    for name in ("summary.json", "report.html"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    history = read_history(out / "metrics.jsonl")
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert all(math.isfinite(r["mean_loss"]) and "val_map@r" in r for r in history)
    csv_lines = (out / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,mean_loss,lr") and len(csv_lines) == 4
    names = list(result.representations)
    assert any(n.startswith("raw input (64-d)") for n in names)
    assert any(n.startswith("PCA-8") for n in names) and any(
        n.startswith("untrained") for n in names
    )
    assert any(n.startswith("trained embedding (8-d)") for n in names)
    for results in result.representations.values():
        assert set(results) == {"seen", "unseen"}
        for values in results.values():
            assert 0.0 <= values["map@r"] <= 1.0 and 0.0 <= values["recall@1"] <= 1.0
    scores = [r["seen"]["map@r"] for r in result.representations.values()]
    assert scores == sorted(scores, reverse=True)  # best first
    assert result.verdict.startswith("training changed MAP@R")
    summary = json.loads((out / "summary.json").read_text())
    assert (
        summary["metrics"] == result.metrics and summary["selected_epoch"] == result.selected_epoch
    )
    assert set(summary["seconds"]) == {"total", "training", "evaluation", "report", "cpu"}
    assert evaluate_run(out) == result.metrics  # the selected model, rebuilt from model.pt


def test_the_kept_model_is_the_best_validation_epoch(digits_run):
    history = read_history(Path(digits_run.out) / "metrics.jsonl")
    best = max(history, key=lambda r: r["val_map@r"])
    assert digits_run.selected_epoch == best["epoch"] == history[-1]["best_epoch"]


class _Stop(Exception):
    pass


def _train(config: TrainConfig, stop_after: int | None = None, resume: bool = False):
    task = load_task(config)
    model, loss, miner = build(config, task)

    def on_epoch(record):
        if stop_after is not None and record["epoch"] == stop_after:
            raise _Stop

    trainer = Trainer(
        task, model, loss, config, config.out, miner, False, on_epoch, lambda *_: None
    )
    if resume:
        assert trainer.resume()
    with contextlib.suppress(_Stop):
        trainer.fit()
    return model, trainer


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    config = tiny(tmp_path, epochs=3, loss="arcface", augment="none")
    straight, first = _train(config.replace(out=str(tmp_path / "a")))
    _train(config.replace(out=str(tmp_path / "b")), stop_after=2)
    state = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert state["epoch"] == 2
    resumed, trainer = _train(config.replace(out=str(tmp_path / "b")), resume=True)
    assert [r["epoch"] for r in trainer.history] == [1, 2, 3]
    assert trainer.best_epoch == first.best_epoch
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_model_selection_keeps_the_chosen_epoch_not_the_last(tmp_path):
    config = tiny(tmp_path, epochs=3)
    task = load_task(config)
    model, loss, miner = build(config, task)
    states = {}

    def on_epoch(record):
        states[record["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}

    task.select = lambda results: {1: 1.0, 2: 0.0, 3: 0.5}[len(states) + 1]
    trainer = Trainer(task, model, loss, config, config.out, miner, False, on_epoch, print)
    trainer.fit()
    assert trainer.selected_epoch == 1
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, states[1][name], msg=name)
    assert not all(torch.equal(states[1][k], states[3][k]) for k in states[1])


def test_proxy_parameters_are_trained_with_their_own_learning_rate(tmp_path):
    config = tiny(tmp_path, loss="normalized_softmax", loss_lr_mult=4.0)
    task = load_task(config)
    model, loss, _ = build(config, task)
    before = loss.W.detach().clone()
    trainer = Trainer(task, model, loss, config, config.out, None, False, None, lambda *_: None)
    assert trainer.optimizer.param_groups[1]["lr"] == pytest.approx(4.0 * config.lr)
    trainer.fit()
    assert not torch.equal(before, loss.W.detach())


def test_mixed_precision_on_the_cpu_trains_in_bfloat16(tmp_path):
    config = tiny(tmp_path, epochs=1, amp=True)
    task = load_task(config)
    model, loss, miner = build(config, task)
    trainer = Trainer(task, model, loss, config, config.out, miner, False, None, lambda *_: None)
    assert trainer.amp_dtype == torch.bfloat16
    history = trainer.fit()
    assert math.isfinite(history[0]["mean_loss"])


def test_device_names(tmp_path):
    from pairloss.train.trainer import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(PairLossError, match="device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(PairLossError, match="no CUDA device"):
            resolve_device("cuda")


def test_progress_bar_shows_loss_throughput_and_time_left(tmp_path, capsys):
    config = tiny(tmp_path, epochs=1)
    task = load_task(config)
    model, loss, miner = build(config, task)
    Trainer(task, model, loss, config, config.out, miner, True, None, print).fit()
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "sample/s" in err and "mean_loss=" in err


def test_checkpoint_errors(tmp_path):
    with pytest.raises(PairLossError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(PairLossError, match="not a readable checkpoint"):
        load_checkpoint(junk)


def test_compare_writes_a_sorted_leaderboard(tmp_path):
    config = tiny(tmp_path, out=str(tmp_path / "cmp"), epochs=1, batches_per_epoch=1)
    rows = compare(config, ["ms", "contrastive:pos_margin=0.1"], seeds=[0, 1], log=lambda *_: None)
    assert all(r["runs"] == 2 for r in rows)
    assert [r["map@r"] for r in rows] == sorted((r["map@r"] for r in rows), reverse=True)
    assert all("map@r_std" in r and math.isfinite(r["map@r_std"]) for r in rows)
    assert all("unseen/map@r" in r for r in rows)
    trained = [r for r in rows if not r["loss"].startswith("baseline: ")]
    assert {r["loss"] for r in trained} == {"ms", "contrastive:pos_margin=0.1"}
    baselines = {r["loss"] for r in rows} - {r["loss"] for r in trained}
    assert any("untrained model" in name for name in baselines)
    assert all("seconds" in r for r in trained)
    assert not any("seconds" in r for r in rows if r["loss"] in baselines)
    for name in ("leaderboard.json", "leaderboard.html"):
        assert (tmp_path / "cmp" / name).is_file()
    assert (tmp_path / "cmp" / "contrastive-pos_margin-0.1-seed1" / "report.html").is_file()


def test_face_protocol_reports_identification_and_verification(tmp_path):
    if not (SHARED_DATA / "att_faces").is_dir():
        pytest.fail(f"AT&T faces not found under {SHARED_DATA}; set PAIRLOSS_DATA")
    config = tiny(
        tmp_path, dataset="att-faces", data_dir=str(SHARED_DATA), epochs=1, image_size=[28, 23]
    )
    task = load_task(config)
    model, _, _ = build(config, task)
    results = task.evaluate(model, "test", torch.device("cpu"))
    assert set(results) == {"seen", "unseen"}
    for key in ("map@r", "rank1", "eer", "auc", "dir@far=0.1", "tar@far=0.1"):
        assert key in results["unseen"] and math.isfinite(results["unseen"][key]), key


# ------------------------------------------------------------------------------------------ CLI


def test_cli_train_eval_and_errors(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["--dataset", "digits", "--epochs", "1", "--batches-per-epoch", "2", "-P", "4"]
    args += ["-K", "4", "--embedding-size", "8", "--out", str(out), "--quiet"]
    assert main(["train", "--loss", "contrastive", "-o", "neg_margin=0.8", *args]) == 0
    printed = capsys.readouterr().out
    assert "MAP@R" in printed and f"report: {out / 'report.html'}" in printed
    assert "training changed MAP@R" in printed and "kept the model of epoch 1" in printed
    assert main(["eval", str(out), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert set(evaluated) == {"seen", "unseen"} and "map@r" in evaluated["seen"]
    emb = tmp_path / "emb.pt"
    torch.save({"embeddings": torch.randn(30, 4), "labels": torch.arange(30) % 3}, emb)
    assert main(["eval", str(emb)]) == 0
    assert "recall@1" in capsys.readouterr().out
    # use the run: embed its data set, then search it with query vectors from a file
    assert main(["embed", str(out), "--out", str(tmp_path / "gallery"), "--faiss"]) == 0
    capsys.readouterr()
    gallery = np.load(tmp_path / "gallery.npy")
    labels = np.load(tmp_path / "gallery.labels.npy")
    assert gallery.shape == (1797, 8) and labels.shape == (1797,)
    assert (tmp_path / "gallery.faiss").is_file()
    assert (tmp_path / "gallery.txt").read_text().splitlines()[5] == "digits/all/5"
    from sklearn.datasets import load_digits

    queries = load_digits().data[:3].astype(np.float32) / 16.0
    np.save(tmp_path / "queries.npy", queries)
    assert (
        main(
            [
                "search",
                str(out),
                "--gallery",
                str(tmp_path / "gallery"),
                "--input",
                str(tmp_path / "queries.npy"),
                "-k",
                "2",
                "--json",
            ]
        )
        == 0
    )
    found = json.loads(capsys.readouterr().out)
    assert len(found) == 3 and [n["rank"] for n in found[0]["neighbours"]] == [1, 2]
    assert found[0]["neighbours"][0]["item"] == "digits/all/0"  # a sample finds itself
    assert found[0]["neighbours"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert main(["train", "--loss", "multisim", *args]) == 2
    assert "did you mean multi_similarity" in capsys.readouterr().err
    assert main(["train", "--dataset", "fashion", "--out", str(out)]) == 2
    assert "did you mean fashion-mnist" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_output_folder_from_flag_file_or_default(tmp_path):
    from pairloss.cli import _config, build_parser

    toml = tmp_path / "c.toml"
    toml.write_text(f'dataset = "digits"\nout = "{tmp_path / "from_file"}"\n')
    parse = build_parser().parse_args
    assert _config(parse(["train", "--config", str(toml)])).out == str(tmp_path / "from_file")
    flag = parse(["train", "--config", str(toml), "--out", str(tmp_path / "flag")])
    assert _config(flag).out == str(tmp_path / "flag")
    assert _config(parse(["compare", "--losses", "ms", "--dataset", "digits"])).out == (
        "runs/compare"
    )
