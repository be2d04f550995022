"""Training, comparison and reports: the library behind ``pairloss train`` / ``compare`` / ``eval``.

- :class:`TrainConfig` and :func:`make_config` (flags + TOML),
- :func:`load_task` (a data set split by its protocol: zero-shot classes or held-out faces),
- :func:`build_model` (``cnn28``, ``face``, ``mlp``),
- :class:`Trainer` (AdamW, warm-up + cosine, clipping, checkpoints, resume, JSON lines),
- :func:`train_run`, :func:`compare`, :func:`evaluate_run`, :func:`evaluate_file`,
- :func:`write_report` and :func:`write_leaderboard` (self-contained HTML).
"""

from .config import TrainConfig, make_config
from .evaluate import evaluate_embeddings
from .models import FaceCNN, MLPHead, SmallCNN, build_model
from .registry import build_loss, build_miner, loss_class
from .report import write_leaderboard, write_report
from .run import RunResult, compare, evaluate_file, evaluate_run, train_run
from .tasks import Task, load_task
from .trainer import Trainer

__all__ = [
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
