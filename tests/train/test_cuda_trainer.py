"""The trainer on a CUDA device gives the CPU's results (float32), and mixed precision trains.
Runs where CUDA is available; on a CPU-only machine the module is skipped as a whole."""

from __future__ import annotations

import math

import pytest
import torch

from pairloss.train import Trainer, load_task, make_config
from pairloss.train.run import build

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TINY = {"epochs": 2, "batches_per_epoch": 3, "p": 4, "k": 4, "embedding_size": 8}


def _fit(tmp_path, device: str, amp: bool = False):
    config = make_config(
        dataset="digits", out=str(tmp_path / device), device=device, amp=amp, **TINY
    )
    task = load_task(config)
    model, loss, miner = build(config, task)
    trainer = Trainer(task, model, loss, config, config.out, miner, False, None, lambda *_: None)
    return trainer.fit(), model.cpu()


def test_cuda_training_matches_the_cpu(tmp_path):
    cpu_history, cpu_model = _fit(tmp_path, "cpu")
    cuda_history, cuda_model = _fit(tmp_path, "cuda")
    for a, b in zip(cpu_history, cuda_history):
        assert a["mean_loss"] == pytest.approx(b["mean_loss"], rel=1e-4, abs=1e-5)
        assert a["val_map@r"] == pytest.approx(b["val_map@r"], abs=2e-3)
    for (name, a), b in zip(cpu_model.state_dict().items(), cuda_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=name)


def test_cuda_mixed_precision_trains_in_float16(tmp_path):
    history, _ = _fit(tmp_path, "cuda", amp=True)
    assert all(math.isfinite(r["mean_loss"]) for r in history)
