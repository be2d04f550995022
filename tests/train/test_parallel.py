"""The trainer at scale: a two-process run (gloo, spawned by the run itself) whose loss is that
of the global batch, GradCache steps equal to the plain step, and a cross-batch memory in a
run (tiny budgets on scikit-learn's digits)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from pairloss.cli import main
from pairloss.data import PKSampler
from pairloss.errors import PairLossError
from pairloss.scale import CrossBatchMemory
from pairloss.train import Trainer, build_loss, load_task, make_config
from pairloss.train.logs import read_history
from pairloss.train.models import MLPHead
from pairloss.train.run import build, check_run, train_run

TINY = {"p": 3, "k": 4, "embedding_size": 8, "threads": 1, "eval_every": 1}


def tiny(tmp_path: Path, **changes):
    values = {**TINY, "epochs": 1, "batches_per_epoch": 2, "out": str(tmp_path / "run"), **changes}
    return make_config(dataset="digits", **values)


def test_two_processes_train_the_loss_of_the_global_batch_and_rank_0_writes_the_run(tmp_path):
    config = tiny(tmp_path, nproc=2, miner="multi_similarity")
    check_run(config)
    result = train_run(config, progress=False)
    assert result is not None and result.selected_epoch == 1
    for name in ("model.pt", "checkpoint.pt", "metrics.jsonl", "summary.json", "report.html"):
        assert (result.out / name).is_file()
    assert all(v == v for s in result.metrics.values() for v in s.values())  # finite, no NaN
    # one step per rank: the epoch's loss is the loss of both ranks' batches on one process
    (record,) = read_history(result.out / "metrics.jsonl")
    task = load_task(config)
    model, loss, miner = build(config, task)
    batches = [
        next(iter(PKSampler(task.train_y, 3, 4, batches=2, seed=0, rank=r, world_size=2)))
        for r in (0, 1)
    ]
    with torch.no_grad():
        args, _ = task.loss_inputs(model, batches[0] + batches[1], torch.device("cpu"), 0)
        expected = float(loss(*args, indices_tuple=miner))
        local = float(loss(*task.loss_inputs(model, batches[0], torch.device("cpu"), 0)[0]))
    assert record["mean_loss"] == pytest.approx(expected, rel=1e-5)
    assert record["mean_loss"] != pytest.approx(local, rel=1e-3)


def _one_step(tmp_path: Path, chunk_size: int | None) -> tuple[dict, dict, float, list]:
    config = tiny(tmp_path, chunk_size=chunk_size, out=str(tmp_path / f"c{chunk_size}"))
    task = load_task(config)
    task.train_x = task.train_x.double()
    torch.manual_seed(0)
    model = MLPHead(64, 8, hidden=(16,)).double()
    rows: list[int] = []
    model.register_forward_hook(lambda m, args, out: rows.append(out.shape[0]))
    loss = build_loss("multi_similarity", {})
    trainer = Trainer(task, model, loss, config, config.out, progress=False)
    trainer.sampler.set_epoch(0)
    value = trainer._step(next(iter(trainer.sampler)))
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return grads, copy.deepcopy(model.state_dict()), value, rows


def test_chunked_step_equals_the_plain_step_in_float64(tmp_path):
    plain_grads, plain_params, plain_value, rows = _one_step(tmp_path, None)
    assert rows == [12]
    for chunk, passes in ((5, [5, 5, 2] * 2), (12, [12, 12])):
        grads, params, value, rows = _one_step(tmp_path, chunk)
        assert rows == passes  # embedded without a graph, then again with one, chunk by chunk
        assert value == pytest.approx(plain_value, rel=1e-12)
        for name, g in plain_grads.items():
            torch.testing.assert_close(grads[name], g, rtol=1e-10, atol=1e-12)
        for name, p in plain_params.items():
            torch.testing.assert_close(params[name], p, rtol=1e-10, atol=1e-12)


def test_memory_size_runs_with_a_cross_batch_memory(tmp_path):
    config = tiny(tmp_path, memory_size=30, epochs=2, batches_per_epoch=3)
    check_run(config)
    task = load_task(config)
    model, loss, miner = build(config, task)
    trainer = Trainer(task, model, loss, config, config.out, miner, progress=False)
    assert isinstance(trainer.loss, CrossBatchMemory) and trainer.loss.loss is loss
    history = trainer.fit()
    assert len(history) == 2 and all(r["mean_loss"] == r["mean_loss"] for r in history)
    assert bool(trainer.loss.has_been_filled)  # 6 batches of 12 through a memory of 30
    with pytest.raises(PairLossError, match="^memory_size: 8 cannot hold the global batch of 24"):
        check_run(tiny(tmp_path, memory_size=8, nproc=2))
    with pytest.raises(PairLossError, match="^memory_size: .*takes proxies"):
        check_run(tiny(tmp_path, memory_size=64, loss="proxy_anchor"))


@pytest.mark.parametrize(
    "flags",
    [
        ["--nproc", "0"],
        ["--chunk-size", "0"],
        ["--chunk-size", "-1"],
        ["--memory-size", "0"],
        ["--memory-size", "5"],  # less than the batch of 3 x 4
        ["--memory-size", "64", "--loss", "arcface"],
    ],
)
def test_bad_scale_flags_are_one_error_line(tmp_path, capsys, flags):
    argv = ["train", "--dataset", "digits", "-P", "3", "-K", "4", "--out", str(tmp_path / "r")]
    assert main([*argv, *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pairloss: error: ")
    assert not (tmp_path / "r").exists()


def test_nproc_other_than_torchruns_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(PairLossError, match="^nproc: 2, but torchrun started 3 processes"):
        check_run(tiny(tmp_path, nproc=2))
