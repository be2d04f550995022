"""Metric learning on labelled samples (images, faces, feature vectors): the splits, batches,
loss inputs and evaluation of :class:`ClassTask`.

Splits (all seeded by ``seed``; no test sample is ever seen in training or model selection):

1. Classes: the training classes are the standard split's (CUB-200, Cars196, SOP) or the first
   ``train_classes`` sorted classes (equivalently all but the last ``held_out``); the others are
   *unseen classes*. With every class in training there is no unseen setting.
2. Test images of the training classes (*seen classes, new images*): the official test split
   where the data set has one (Fashion-MNIST); otherwise ``test_fraction`` of each training
   class's images, drawn per class.
3. Validation: ``val_fraction`` of each training class's remaining images. The best epoch is the
   one with the best validation MAP@R; the test figures are those of that epoch's model.

Evaluation settings (``{setting: metrics}``), side by side: ``"seen"`` (the new images of the
training classes) and ``"unseen"`` (the unseen classes), each a leave-one-out retrieval
within the set (and, for the face protocol, identification and verification within it).
The headline setting is ``"seen"`` when there are test images of the training classes, else
``"unseen"``.

Baselines, on the same test sets: the raw inputs, their PCA fitted on the training samples
(``pca_dim`` components, by default the embedding size), and the untrained model with its
BatchNorm statistics calibrated on training batches. Representations of the trained model: its
output (the embedding) and, where the model has a projection head, the backbone before it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..data import PKSampler
from ..data.images import ImageFiles
from ..errors import PairLossError
from .augment import ImageAugment, parse_augment
from .datasets import LabelledData
from .evaluate import (
    HISTOGRAM_ROWS,
    PCA,
    calibrate_batchnorm,
    embed,
    evaluate_embeddings,
    flat,
    similarity_sample,
    subset,
)
from .task import Results, Task

SETTINGS = {
    "seen": "seen classes, new images",
    "unseen": "unseen classes",
    "validation": "validation (training classes)",
}
"""Evaluation settings and their display names."""

CALIBRATION_BATCHES = 20
"""P x K training batches that calibrate the untrained model's BatchNorm statistics."""


def take(x: Any, rows: torch.Tensor) -> Any:
    """The samples of ``x`` (a tensor or :class:`ImageFiles`) at ``rows``."""
    return x.subset(rows) if isinstance(x, ImageFiles) else x[rows]


def per_class_split(
    labels: torch.Tensor, fraction: float, seed: int, keep: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, carved) sorted indices: ``fraction`` of each class's samples (rounded, at least 2
    when the fraction is positive) drawn at random, as long as ``keep`` samples of the class
    remain; smaller classes give nothing."""
    gen = torch.Generator().manual_seed(seed)
    kept, carved = [], []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        count = max(2, round(idx.numel() * fraction)) if fraction > 0 else 0
        if idx.numel() - count < keep:
            count = 0
        carved.append(idx[:count])
        kept.append(idx[count:])
    return _sorted_cat(kept), _sorted_cat(carved)


def _sorted_cat(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(parts).sort().values if parts else torch.empty(0, dtype=torch.long)


@torch.no_grad()
def _fingerprint(model: nn.Module) -> float:
    """A number that changes when the model's weights or BatchNorm statistics change."""
    return float(
        sum(t.double().sum() for t in model.state_dict().values() if t.is_floating_point())
    )


def _train_class_ids(data: LabelledData, classes: torch.Tensor, config: Any) -> torch.Tensor:
    """The training classes (a sorted subset of ``classes``) from the settings."""
    n = classes.numel()
    count = config.train_classes
    if config.held_out is not None:
        if count is not None and count + config.held_out != n:
            raise PairLossError(
                f"held_out: {config.held_out} unseen plus train_classes {count} is not the "
                f"{n} classes of {data.name}; give one of the two"
            )
        count = n - config.held_out
    if count is None and data.train_classes is not None:
        chosen = torch.tensor(sorted(data.train_classes))
        return chosen[torch.isin(chosen, classes)]
    if count is None:
        count = max(1, n // 2)
    if not 1 <= count <= n:
        raise PairLossError(
            f"train_classes: expected 1 to {n} (the classes of {data.name}), got {count}"
        )
    return classes[:count]


class ClassTask(Task):
    """Metric learning on labelled samples; see the module docstring.

    Args:
        data: the labelled samples (:func:`pairloss.train.datasets.load_data`).
        config: the run's settings (``train_classes``, ``held_out``, ``val_fraction``,
            ``test_fraction``, ``protocol``, ``augment``, ``max_eval``, ``eval_memory``,
            ``pca_dim``, ``seed``, ``p``, ``k``, ``batches_per_epoch``).
    """

    def __init__(self, data: LabelledData, config: Any) -> None:
        self.name = data.name
        self.protocol = config.protocol or data.protocol
        self.images = data.images
        self.seed = config.seed
        self.memory = config.eval_memory
        self.class_names = data.class_names
        self.model_name = config.model or data.model
        default_model = config.model is None or config.model == data.model
        self.model_options = dict(data.model_options) if default_model else {}
        self.pretrained = config.pretrained
        if self.pretrained is None and default_model:
            self.pretrained = data.pretrained
        kinds = parse_augment(config.augment)
        if kinds and not self.images:
            raise PairLossError(f"augment: data set {data.name!r} holds vectors, not images")
        self.augment = ImageAugment(kinds, config.seed)
        pool_classes = data.y.unique()
        train_ids = _train_class_ids(data, pool_classes, config)
        in_train = torch.isin(data.y, train_ids)
        self.eval_sets: dict[str, tuple[Any, torch.Tensor]] = {}
        if data.test is None:
            seen_rows = in_train.nonzero().flatten()
            fraction = data.test_fraction if config.test_fraction is None else config.test_fraction
            keep, test = per_class_split(data.y[seen_rows], fraction, config.seed)
            if test.numel():
                self._add("seen", take(data.x, seen_rows[test]), data.y[seen_rows[test]], config)
            train_rows = seen_rows[keep]
            unseen_rows = (~in_train).nonzero().flatten()
            if unseen_rows.numel():
                self._add("unseen", take(data.x, unseen_rows), data.y[unseen_rows], config)
        else:
            train_rows = in_train.nonzero().flatten()
            test_x, test_y = data.test
            seen = torch.isin(test_y, train_ids)
            if seen.any():
                rows = seen.nonzero().flatten()
                self._add("seen", take(test_x, rows), test_y[rows], config)
            if (~seen).any():
                rows = (~seen).nonzero().flatten()
                self._add("unseen", take(test_x, rows), test_y[rows], config)
        if not self.eval_sets:
            raise PairLossError(
                "test_fraction: no test samples: every class trains and test_fraction is 0; "
                "hold out classes (--held-out) or images (--test-fraction)"
            )
        labels = data.y[train_rows]
        keep, val = per_class_split(labels, config.val_fraction, config.seed + 1)
        self.val_x, self.val_y = take(data.x, train_rows[val]), labels[val]
        self.train_x = take(data.x, train_rows[keep])
        self.train_ids = train_ids
        self.train_y = torch.searchsorted(train_ids, labels[keep])  # 0 .. C-1, for proxies
        self.headline = "seen" if "seen" in self.eval_sets else "unseen"
        self.p, self.k, self.batches_per_epoch = config.p, config.k, config.batches_per_epoch
        self.pca_dim = config.pca_dim or config.embedding_size
        self.embedding_size = config.embedding_size
        self._embedded: dict[str, torch.Tensor] = {}
        self._embedded_key: tuple[int, float] | None = None

    def _add(self, setting: str, x: Any, y: torch.Tensor, config: Any) -> None:
        rows = subset(len(y), config.max_eval, config.seed)
        self.eval_sets[setting] = (x, y) if rows is None else (take(x, rows), y[rows])

    # ----------------------------------------------------------------------- what it trains on

    @property
    def num_classes(self) -> int:
        """The number of training classes."""
        return int(self.train_ids.numel())

    def describe(self) -> str:
        parts = [
            f"{self.name} ({self.protocol}): train {len(self.train_y)} samples of "
            f"{self.num_classes} classes, validation {len(self.val_y)}"
        ]
        for setting, (_, y) in self.eval_sets.items():
            parts.append(
                f"test {SETTINGS[setting]}: {len(y)} samples of {y.unique().numel()} classes"
            )
        return "; ".join(parts)

    def build_model(self, config: Any) -> nn.Module:
        from .models import build_model

        options = dict(self.model_options)
        if self.pretrained is not None:
            options["pretrained"] = self.pretrained
        return build_model(self.model_name, config.embedding_size, **options)

    def model_spec(self) -> dict[str, Any]:
        shape = list(self.train_x.shape[1:])
        if self.images and len(shape) == 2:
            shape = [1, *shape]
        return {
            "name": self.model_name,
            "options": dict(self.model_options),
            "inputs": {"images": self.images, "shape": shape},
        }

    def loss_arguments(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes}

    def batches(self, config: Any, rank: int = 0, world_size: int = 1) -> PKSampler:
        return PKSampler(
            self.train_y,
            config.p,
            config.k,
            batches=config.batches_per_epoch,
            seed=config.seed,
            rank=rank,
            world_size=world_size,
        )

    def encoder_inputs(
        self, batch: Any, device: torch.device, step: int, train: bool = True
    ) -> tuple[Any, Any]:
        rows = torch.as_tensor(batch)
        x = self.train_x[rows].to(device, non_blocking=True)
        if train and self.augment:
            x = self.augment(x, step)
        labels = self.train_y[rows].to(device)

        def finish(embeddings: torch.Tensor) -> tuple[tuple[Any, ...], dict[str, Any]]:
            return (embeddings, labels), {}

        return x, finish

    def loss_inputs(
        self, model: nn.Module, batch: Any, device: torch.device, step: int, train: bool = True
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        x, finish = self.encoder_inputs(batch, device, step, train)
        return finish(model(x))

    # ------------------------------------------------------------------------------ evaluation

    def calibrate(self, model: nn.Module, device: torch.device) -> None:
        sampler = self.batches_for_calibration()
        calibrate_batchnorm(model, (self.train_x[torch.as_tensor(b)].to(device) for b in sampler))

    def batches_for_calibration(self) -> list[list[int]]:
        """Seeded P x K training batches for :meth:`calibrate`."""
        sampler = PKSampler(
            self.train_y, self.p, self.k, batches=CALIBRATION_BATCHES, seed=self.seed, replace=True
        )
        return list(sampler)

    def _results(self, emb_of: Any, sets: dict[str, tuple[Any, torch.Tensor]]) -> Results:
        return {
            setting: evaluate_embeddings(emb_of(x), y, self.protocol, self.seed, self.memory)
            for setting, (x, y) in sets.items()
        }

    def test_embeddings(self, model: nn.Module, device: torch.device) -> dict[str, torch.Tensor]:
        """``{setting: embeddings}`` of the test sets, computed once per model state (the
        report's histograms and projection reuse the evaluation's embeddings)."""
        key = (id(model), _fingerprint(model))
        if self._embedded_key != key:
            self._embedded = {s: embed(model, x, device) for s, (x, _) in self.eval_sets.items()}
            self._embedded_key = key
        return self._embedded

    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> Results:
        if split == "validation":
            if len(self.val_y) < 2:
                return {}
            emb = embed(model, self.val_x, device)
            return {
                "validation": evaluate_embeddings(
                    emb, self.val_y, self.protocol, self.seed, self.memory
                )
            }
        if split != "test":
            raise PairLossError(f"split: expected 'validation' or 'test', got {split!r}")
        embedded = self.test_embeddings(model, device)
        return {
            setting: evaluate_embeddings(
                embedded[setting], y, self.protocol, self.seed, self.memory
            )
            for setting, (_, y) in self.eval_sets.items()
        }

    def _fits(self, features: int) -> bool:
        """Whether raw vectors of ``features`` values for the largest evaluation set (and the
        PCA's fitting rows) fit the evaluation memory (about 3 copies of 4-8 bytes each)."""
        largest = max(len(y) for _, y in self.eval_sets.values())
        return max(largest, min(10000, len(self.train_y))) * features * 24 <= self.memory

    def baselines(
        self, config: Any, untrained: nn.Module, device: torch.device
    ) -> dict[str, Results]:
        out: dict[str, Results] = {}
        features = math.prod(self.train_x.shape[1:])
        if self._fits(features):
            out[f"raw input ({features}-d)"] = self._results(flat, self.eval_sets)
            pca = PCA(self.train_x, self.pca_dim, self.seed)
            out[f"PCA-{pca.dim} of the training samples"] = self._results(pca, self.eval_sets)
        width = getattr(untrained, "embedding_size", self.embedding_size)
        out[f"untrained model ({width}-d)"] = self.evaluate(untrained, "test", device)
        return out

    def skipped_baselines(self) -> str | None:
        """Why the raw-input and PCA baselines were left out, or ``None``."""
        features = math.prod(self.train_x.shape[1:])
        if self._fits(features):
            return None
        return (
            f"raw input and PCA left out: {features}-d vectors of the test sets exceed the "
            f"evaluation memory of {self.memory:,} bytes (--eval-memory)"
        )

    def representations(self, model: nn.Module, device: torch.device) -> dict[str, Results]:
        width = getattr(model, "embedding_size", self.embedding_size)
        out = {f"trained embedding ({width}-d)": self.evaluate(model, "test", device)}
        if hasattr(model, "backbone"):
            features = None

            def backbone(x: Any) -> torch.Tensor:
                nonlocal features
                emb = embed(model, x, device, backbone=True)
                features = emb.shape[1]
                return emb

            results = self._results(backbone, self.eval_sets)
            out[f"trained backbone ({features}-d, before the head)"] = results
        return out

    def _headline_sample(
        self, model: nn.Module, device: torch.device, limit: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.test_embeddings(model, device)[self.headline]
        y = self.eval_sets[self.headline][1]
        rows = subset(len(y), limit, self.seed)
        return (emb, y) if rows is None else (emb[rows], y[rows])

    def similarity_sample(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        emb, y = self._headline_sample(model, device, HISTOGRAM_ROWS)
        return similarity_sample(emb, y, self.seed)

    def projection(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        from .report import pca_2d

        emb, y = self._headline_sample(model, device, 2000)
        names = [self.class_names.get(int(c), str(int(c))) for c in range(int(y.max()) + 1)]
        return {"xy": pca_2d(emb).numpy(), "labels": y.numpy(), "class_names": names}
