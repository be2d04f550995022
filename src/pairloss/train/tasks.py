"""The tasks the trainer knows by data set name (``--dataset``).

Every entry of :data:`TASKS` builds a :class:`pairloss.train.task.Task` from the run's settings
and says which optional data settings it reads (``data_dir``, ``labels``, ``image_size``,
``test_fraction``, ``batch_size``); a setting given to a task that would ignore it is refused up
front, and its ``check`` refuses a model or loss it cannot train before any data is read. The
labelled data sets of :mod:`pairloss.train.datasets` are :class:`~pairloss.train.labelled.ClassTask`
tasks; a task of another kind (text pairs, ranking slates) is added with :func:`register`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import PairLossError
from .datasets import LOADERS, USES, load_data
from .labelled import ClassTask
from .models import TEXT_MODELS
from .preference_task import check_preference_task, sts_b_preference_task
from .ranking import check_ranking, ranking_task, refuse_slate_loss
from .task import Task
from .text_task import check_sentence_task, sentence_pairs_task, sts_b_task

OPTIONAL_DATA_SETTINGS = ("data_dir", "labels", "image_size", "test_fraction", "batch_size")


@dataclass(frozen=True)
class TaskEntry:
    """A data set name the trainer accepts.

    Attributes:
        name: the ``--dataset`` name.
        build: ``build(config) -> Task``.
        uses: the optional data settings (of :data:`OPTIONAL_DATA_SETTINGS`) it reads.
        check: optional ``check(config)`` that refuses, before any data is read, settings the
            task cannot use (raising :class:`PairLossError`).
    """

    name: str
    build: Callable[[Any], Task]
    uses: frozenset[str]
    check: Callable[[Any], None] | None = None


TASKS: dict[str, TaskEntry] = {}
"""Data set name -> :class:`TaskEntry`."""


def register(entry: TaskEntry) -> TaskEntry:
    """Add ``entry`` to :data:`TASKS` (names are unique)."""
    if entry.name in TASKS:
        raise PairLossError(f"name: a task called {entry.name!r} is already registered")
    TASKS[entry.name] = entry
    return entry


def _class_task(config: Any) -> Task:
    return ClassTask(load_data(config), config)


def _check_labelled(config: Any) -> None:
    if config.model in TEXT_MODELS:
        raise PairLossError(
            f"model: {config.model} embeds sentences; data set {config.dataset!r} holds images "
            "or vectors (text data sets: sts-b, sentence-pairs, sts-b-preference)"
        )
    refuse_slate_loss(config)


for _name in LOADERS:
    register(TaskEntry(_name, _class_task, USES[_name], _check_labelled))

register(
    TaskEntry("lambdarank", ranking_task, frozenset({"data_dir", "test_fraction"}), check_ranking)
)

# text: sentence pairs and preference lists of human judgements (MiniLM)
register(TaskEntry("sts-b", sts_b_task, frozenset({"data_dir", "batch_size"}), check_sentence_task))
register(
    TaskEntry(
        "sentence-pairs",
        sentence_pairs_task,
        frozenset({"data_dir", "test_fraction", "batch_size"}),
        check_sentence_task,
    )
)
register(
    TaskEntry(
        "sts-b-preference",
        sts_b_preference_task,
        frozenset({"data_dir", "batch_size"}),
        check_preference_task,
    )
)


def check_dataset(name: object) -> str:
    """``name`` if it is a known data set; else :class:`PairLossError` with close names."""
    if not isinstance(name, str) or name not in TASKS:
        close = difflib.get_close_matches(str(name), list(TASKS), n=2)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise PairLossError(
            f"dataset: unknown data set {name!r}{hint}; expected one of {', '.join(TASKS)}"
        )
    return name


def check_applies(config: Any) -> None:
    """Refuse an optional data setting that ``config.dataset`` would ignore."""
    entry = TASKS[check_dataset(config.dataset)]
    for name in OPTIONAL_DATA_SETTINGS:
        if getattr(config, name) is not None and name not in entry.uses:
            flag = "--" + name.replace("_", "-")
            raise PairLossError(f"{name}: data set {config.dataset!r} does not use it; drop {flag}")
    if entry.check is not None:
        entry.check(config)


def load_task(config: Any) -> Task:
    """The task of ``config.dataset``, loaded and split."""
    return TASKS[check_dataset(config.dataset)].build(config)


DATASETS = tuple(TASKS)
