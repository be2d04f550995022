"""Training, comparison and reports: the library behind ``pairloss train`` / ``compare`` /
``eval`` / ``embed`` / ``search``.

- :class:`TrainConfig` and :func:`make_config` (flags + TOML),
- :class:`Task` (what the trainer needs from a problem) and :func:`load_task` (a data set by
  name: :class:`ClassTask` for labelled images, faces and vectors),
- :func:`build_model` (``cnn28``, ``face``, ``mlp``, ``torchvision:<name>``),
- :class:`Trainer` (one loop for every task: device, mixed precision, AdamW, warm-up + cosine,
  clipping, model selection on validation data, checkpoints, resume, progress bar, logs),
- :func:`train_run`, :func:`compare`, :func:`evaluate_run`, :func:`evaluate_file`,
- :func:`write_report` and :func:`write_leaderboard` (self-contained HTML).
"""

from .config import TrainConfig, make_config
from .evaluate import evaluate_embeddings
from .labelled import ClassTask
from .models import FaceCNN, MLPHead, SmallCNN, build_model
from .registry import build_loss, build_miner, loss_class
from .report import write_leaderboard, write_report
from .run import RunResult, compare, evaluate_file, evaluate_run, train_run
from .task import Task
from .tasks import load_task
from .trainer import Trainer

__all__ = [
    "ClassTask",
    "FaceCNN",
    "MLPHead",
    "RunResult",
    "SmallCNN",
    "Task",
    "TrainConfig",
    "Trainer",
    "build_loss",
    "build_miner",
    "build_model",
    "compare",
    "evaluate_embeddings",
    "evaluate_file",
    "evaluate_run",
    "load_task",
    "loss_class",
    "make_config",
    "train_run",
    "write_leaderboard",
    "write_report",
]
