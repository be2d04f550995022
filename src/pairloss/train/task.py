"""The interface between the trainer and a learning problem.

A :class:`Task` gives the trainer everything that depends on the data: the model to train, the
batches of an epoch, the loss's inputs for a batch, and the evaluation of a model on the
validation data (which picks the best epoch) and on the test data (what the run reports), with
the baselines the trained model is judged against. :class:`pairloss.train.Trainer` only calls
these methods, so one trainer serves every task: labelled samples (images, faces, precomputed
embeddings; :class:`pairloss.train.labelled.ClassTask`), and tasks that bring their own
batches, loss inputs and metrics (text pairs, ranking slates).

Evaluation results are ``{setting: {metric: value}}``: a task may evaluate several settings
side by side (for labelled data: the held-out images of the training classes, and the unseen
classes); :attr:`Task.headline` names the setting that decides (the best epoch on validation,
the order of the report's tables), and :attr:`Task.selection_metric` the metric (higher is
better).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import torch
from torch import nn

from ..errors import PairLossError

Metrics = dict[str, float]
"""``{metric name: value}``."""

Results = dict[str, Metrics]
"""``{setting: {metric name: value}}``."""


class EpochBatches(Protocol):
    """The batches of a run: iterating gives one epoch's batches (whatever the task's
    :meth:`Task.loss_inputs` takes, e.g. lists of sample indices); :meth:`set_epoch` selects the
    epoch (batches are reproducible, as with :class:`torch.utils.data.DistributedSampler`)."""

    def set_epoch(self, epoch: int) -> None: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Any]: ...


class Task(ABC):
    """A learning problem as the trainer sees it; see the module docstring.

    Attributes:
        name: the data set's name (for logs and reports).
        protocol: the evaluation protocol's name.
        headline: the setting that decides (a key of the evaluation results).
        selection_metric: the validation metric that picks the best epoch (higher is better).
        columns: ``(metric, display name)`` of the metrics the run's tables show (printed, in
            the report's first table, the verdict line, the epoch lines and the leaderboard);
            the representations are ranked by the headline setting's :attr:`selection_metric`.
    """

    name: str
    protocol: str
    headline: str
    selection_metric: str = "map@r"
    columns: tuple[tuple[str, str], ...] = (("map@r", "MAP@R"), ("recall@1", "R@1"))

    @abstractmethod
    def describe(self) -> str:
        """One line: what is trained on and what is evaluated."""

    @abstractmethod
    def build_model(self, config: Any) -> nn.Module:
        """The model to train (seeded by the caller)."""

    def loss_arguments(self) -> dict[str, Any]:
        """Constructor arguments the loss may need from the data (e.g. ``num_classes``)."""
        return {}

    @abstractmethod
    def batches(self, config: Any, rank: int = 0, world_size: int = 1) -> EpochBatches:
        """The run's batches (this rank's share when ``world_size > 1``)."""

    @abstractmethod
    def loss_inputs(
        self, model: nn.Module, batch: Any, device: torch.device, step: int, train: bool = True
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``(args, kwargs)`` of the loss call for ``batch`` (``loss(*args, **kwargs)``), computed
        with ``model`` on ``device`` at training step ``step`` (which seeds any random
        augmentation, so that a resumed run repeats it); ``train`` turns augmentation on."""

    def encoder_inputs(
        self, batch: Any, device: torch.device, step: int, train: bool = True
    ) -> tuple[Any, Callable[[torch.Tensor], tuple[tuple[Any, ...], dict[str, Any]]]]:
        """The batch split at the model, for GradCache (``--chunk-size``): ``(inputs,
        finish)`` such that ``finish(model(inputs))`` is :meth:`loss_inputs`'s ``(args,
        kwargs)``; ``inputs`` is cut into chunks along its first dimension. A task that does
        not split its batches this way refuses chunking (the default)."""
        raise PairLossError(
            f"chunk_size: the {self.name} task does not run its model in chunks; drop --chunk-size"
        )

    def calibrate(self, model: nn.Module, device: torch.device) -> None:  # noqa: B027
        """Make an untrained ``model`` fit to be evaluated (e.g. BatchNorm statistics of the
        training data); the default does nothing."""

    def select(self, results: Results) -> float | None:
        """The score that ranks epochs from their validation ``results`` (higher is better): the
        :attr:`selection_metric` of the first setting; ``None`` when it is missing or not
        finite (the epoch is then not a candidate)."""
        for values in results.values():
            value = values.get(self.selection_metric)
            return value if value is not None and math.isfinite(value) else None
        return None

    @abstractmethod
    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> Results:
        """The metrics of ``model`` on ``split`` (``"validation"`` or ``"test"``), per setting."""

    def baselines(
        self, config: Any, untrained: nn.Module, device: torch.device
    ) -> dict[str, Results]:
        """Test results of representations that need no training, ``{name: results}``, e.g. the
        raw inputs, their PCA and ``untrained`` (the model before training, already passed
        through :meth:`calibrate`); the default evaluates only the untrained model."""
        return {"untrained model": self.evaluate(untrained, "test", device)}

    def representations(self, model: nn.Module, device: torch.device) -> dict[str, Results]:
        """Test results of the trained model's representations, ``{name: results}``; the
        default is the model's output."""
        return {"trained": self.evaluate(model, "test", device)}

    def model_spec(self) -> dict[str, Any]:
        """What rebuilds the trained model without the data, saved in ``model.pt``:
        ``{"name", "options", "inputs"}`` (model name and options for
        :func:`pairloss.train.build_model`, and the input it takes, e.g. ``{"images": True,
        "shape": [C, H, W]}``)."""
        return {}

    def projection(self, model: nn.Module, device: torch.device) -> Mapping[str, Any] | None:
        """A 2-D view of the test embeddings for the report (``None``: no plot)."""
        return None

    def similarity_sample(self, model: nn.Module, device: torch.device) -> Mapping[str, Any] | None:
        """Positive and negative pair similarities on test data for the report's histograms."""
        return None

    def prediction_sample(self, model: nn.Module, device: torch.device) -> Mapping[str, Any] | None:
        """The model's predictions against the gold values on test data, for the report's
        predicted-vs-gold scatter: ``{"gold": [N], "predicted": [N], "gold_label": str,
        "predicted_label": str}`` and optionally ``"caption"`` (``None``: no plot)."""
        return None
