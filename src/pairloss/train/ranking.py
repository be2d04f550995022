"""Learning to rank as a task of the trainer: ``pairloss train --dataset lambdarank``.

The data are documents grouped by query in svmlight / LibSVM files (``label qid:Q index:value
...``, or a LightGBM ``.query`` file of group sizes; :func:`pairloss.data.read_svmlight`).
``--data-dir`` names, in this order of preference:

- a folder with LightGBM's example files ``rank.train`` and ``rank.test`` (or a data root with
  a ``lambdarank/`` folder holding them; the default is ``$PAIRLOSS_DATA/lambdarank``);
- a folder in the LETOR / MSLR layout, ``train.txt`` and ``test.txt`` (and ``vali.txt``, then
  the validation queries);
- one svmlight file: ``test_fraction`` of its queries (default 0.2, drawn with ``seed``) are
  the test queries.

Splits, never overlapping: the test queries only ever score the selected model and the
baselines; the validation queries (``vali.txt``, else ``val_fraction`` of the training queries,
at least one, drawn with ``seed + 1``) pick the best epoch by NDCG@10; the remaining training
queries train. A batch is ``p`` training queries, each a whole slate padded to the longest
training query (padding is masked and never reaches the loss); ``batches_per_epoch=None`` is
one pass over the training queries. ``k`` (samples per class) does not apply.

The model is :class:`~pairloss.train.scorers.MLPScorer`: the features standardised with the
training documents' statistics, hidden layers ``2 E`` and ``E`` wide (``E``: ``embedding_size``)
with ReLU and dropout 0.1, one score per document. The loss is any slate loss of the catalogue
(``inputs="slates"``: LambdaLoss, RankNet, ListNet, ApproxNDCG, ...), called as
``loss(scores [q, L], relevance [q, L], mask [q, L])``.

Evaluation on the test queries: NDCG@1/3/5/10 (gain 2^rel - 1, ties averaged as scikit-learn,
a query without a relevant document counts 0), MAP@k and MRR
(:func:`~pairloss.train.scorers.evaluate_scores`), next to baselines on the same split in the
same run: the untrained scorer; a linear scorer trained with the same loss, epochs, queries per
batch, learning rate and seed (AdamW at a constant rate, the epoch kept by validation NDCG@10);
and LightGBM's own LambdaMART (100 trees, early stopping on the validation queries' NDCG@10),
when the optional ``lightgbm`` package is installed (else a one-line note says it was left out).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import DATA_ENV
from ..data.svmlight import LAMBDARANK_DIR, RankingData, load_lambdarank, read_svmlight
from ..errors import PairLossError
from ..validation import check_int
from .scorers import (
    MLPScorer,
    evaluate_scorer,
    evaluate_scores,
    fit_lambdamart,
    fit_scorer,
    lambdamart_scores,
)
from .task import Results, Task

DEFAULT_TEST_FRACTION = 0.2
"""Share of the queries of a single svmlight file held out for testing."""

DROPOUT = 0.1
"""Dropout of the scorer's hidden layers."""

RANKING_METRICS = (
    ("ndcg@1", "NDCG@1"),
    ("ndcg@3", "NDCG@3"),
    ("ndcg@5", "NDCG@5"),
    ("ndcg@10", "NDCG@10"),
    ("mrr", "MRR"),
)
"""The metrics of the run's tables, ``(key, label)``."""


def _carve(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, carved) sorted query indices: ``round(fraction * n)`` queries (at least one when
    ``fraction > 0``, never all) drawn with ``seed``."""
    count = min(n - 1, max(1, round(fraction * n))) if fraction > 0 else 0
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[count:].sort().values, order[:count].sort().values


def load_ranking_files(config: Any) -> tuple[RankingData, RankingData | None, RankingData]:
    """``(train, validation or None, test)`` from ``config.data_dir`` (see the module
    docstring); ``validation`` is given only by a folder's ``vali.txt``."""
    if config.data_dir is None:
        if DATA_ENV not in os.environ:
            raise PairLossError(
                f"data_dir: data set 'lambdarank' needs --data-dir (LightGBM's example folder "
                f"with rank.train and rank.test, a folder with train.txt and test.txt, or one "
                f"svmlight file with qid groups), or {DATA_ENV} holding {LAMBDARANK_DIR}/"
            )
        return _pair(load_lambdarank())
    path = Path(config.data_dir)
    fraction = config.test_fraction
    if path.is_file():
        data = read_svmlight(path)
        keep, test = _carve(
            data.n_queries, DEFAULT_TEST_FRACTION if fraction is None else fraction, config.seed
        )
        if test.numel() == 0:
            raise PairLossError(
                f"test_fraction: {fraction} holds out no query of {path}; expected a share > 0"
            )
        return data.select_queries(keep), None, data.select_queries(test)
    lightgbm = (path / "rank.train").is_file() or (path / LAMBDARANK_DIR / "rank.train").is_file()
    letor = (path / "train.txt").is_file() and (path / "test.txt").is_file()
    if not (lightgbm or letor):
        raise PairLossError(
            f"data_dir: {path} holds neither rank.train and rank.test (LightGBM's example) nor "
            "train.txt and test.txt (LETOR layout); expected one of them, or one svmlight file"
        )
    if fraction is not None:
        raise PairLossError(
            f"test_fraction: {path} has its own test file; drop --test-fraction (it applies to "
            "a single svmlight file)"
        )
    if lightgbm:
        return _pair(load_lambdarank(path))
    train = read_svmlight(path / "train.txt")
    width = train.features.shape[1]
    test = read_svmlight(path / "test.txt", n_features=width)
    vali = path / "vali.txt"
    validation = read_svmlight(vali, n_features=width) if vali.is_file() else None
    return train, validation, test


def _pair(split: tuple[RankingData, RankingData]) -> tuple[RankingData, None, RankingData]:
    return split[0], None, split[1]


class QueryBatches:
    """The batches of a ranking run: lists of ``p`` training query indices.

    Every epoch draws a seeded permutation of the queries (``seed + epoch``) and cuts it into
    batches of ``p`` (the last, shorter one is dropped unless it is the only one); with
    ``batches`` set, further permutations follow until there are that many. With
    ``world_size > 1`` every rank draws the same sequence and rank ``r`` takes batches
    ``r, r + world_size, ...`` (``batches // world_size`` each, at least one).
    """

    def __init__(
        self,
        n_queries: int,
        p: int,
        batches: int | None,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.n = check_int(n_queries, "n_queries", minimum=1)
        self.p = min(check_int(p, "p", minimum=1), self.n)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        total = max(1, self.n // self.p) if batches is None else batches
        self.per_rank = max(1, total // world_size)
        self.epoch = 0

    @property
    def batch_size(self) -> int:
        """Queries per batch."""
        return self.p

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order: list[int] = []
        for i in range(self.per_rank * self.world_size):
            if len(order) < self.p:
                order = torch.randperm(self.n, generator=generator).tolist()
            batch, order = order[: self.p], order[self.p :]
            if i % self.world_size == self.rank:
                yield batch


class RankingTask(Task):
    """Learning to rank on svmlight query groups; see the module docstring.

    Args:
        train, validation, test: the splits (``validation=None``: carved from ``train``).
        config: the run's settings (``seed``, ``val_fraction``, ``embedding_size``, ``loss``,
            ``loss_options``, ``epochs``, ``p``, ``lr``, ``weight_decay``, ``threads``).
    """

    protocol = "ranking"
    headline = "test"
    selection_metric = "ndcg@10"
    columns = RANKING_METRICS

    def __init__(
        self,
        train: RankingData,
        validation: RankingData | None,
        test: RankingData,
        config: Any,
        name: str = "lambdarank",
    ) -> None:
        self.name = name
        if validation is None:
            if train.n_queries < 2:
                raise PairLossError(
                    f"data_dir: {train.n_queries} training query; expected at least 2 (one to "
                    "train, one to validate)"
                )
            if config.val_fraction == 0:
                raise PairLossError(
                    "val_fraction: 0 leaves no validation queries to pick the best epoch; "
                    "expected a share > 0 (or a vali.txt next to train.txt)"
                )
            keep, val = _carve(train.n_queries, config.val_fraction, config.seed + 1)
            train, validation = train.select_queries(keep), train.select_queries(val)
        width = train.features.shape[1]
        for split, data in (("validation", validation), ("test", test)):
            if data.features.shape[1] != width:
                raise PairLossError(
                    f"data_dir: the {split} documents have {data.features.shape[1]} features, "
                    f"the training documents {width}; expected the same"
                )
        self.train, self.validation, self.test = train, validation, test
        self.width = int(train.query_sizes.max())
        self.embedding_size = config.embedding_size
        self.skipped: str | None = None

    def describe(self) -> str:
        def part(label: str, data: RankingData) -> str:
            return f"{label} {data.n_queries} queries ({data.features.shape[0]} documents)"

        return (
            f"{self.name} (learning to rank, {self.train.features.shape[1]} features, graded "
            f"relevance): {part('train', self.train)}, {part('validation', self.validation)}, "
            f"{part('test', self.test)}"
        )

    # ---------------------------------------------------------------------------- the model

    def _hidden(self) -> list[int]:
        return [2 * self.embedding_size]

    def build_model(self, config: Any) -> nn.Module:
        model = MLPScorer(
            self.train.features.shape[1],
            hidden=self._hidden(),
            dropout=DROPOUT,
            embedding_size=config.embedding_size,
        )
        return model.fit_standardisation(self.train.features)

    def model_spec(self) -> dict[str, Any]:
        width = self.train.features.shape[1]
        return {
            "name": "scorer",
            "options": {"in_features": width, "hidden": self._hidden(), "dropout": DROPOUT},
            "inputs": {"images": False, "shape": [width]},
        }

    # -------------------------------------------------------------------------------- batches

    def batches(self, config: Any, rank: int = 0, world_size: int = 1) -> QueryBatches:
        return QueryBatches(
            self.train.n_queries, config.p, config.batches_per_epoch, config.seed, rank, world_size
        )

    def encoder_inputs(
        self, batch: Any, device: torch.device, step: int, train: bool = True
    ) -> tuple[torch.Tensor, Any]:
        features, relevance, mask = self.slates(batch)
        relevance, mask = relevance.to(device), mask.to(device)

        def finish(scores: torch.Tensor) -> tuple[tuple[Any, ...], dict[str, Any]]:
            return (scores, relevance, mask), {}

        return features.to(device), finish

    def slates(self, queries: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(features [q, L, D], relevance [q, L], mask [q, L])`` of the training queries at
        ``queries``, padded to the longest training query ``L`` (the same width in every batch
        and on every rank)."""
        features, relevance, mask = self.train.select_queries(torch.as_tensor(queries)).slates()
        pad = self.width - features.shape[1]
        features = torch.nn.functional.pad(features, (0, 0, 0, pad))
        relevance = torch.nn.functional.pad(relevance, (0, pad), value=-1.0)
        return features, relevance, torch.nn.functional.pad(mask, (0, pad))

    def loss_inputs(
        self, model: nn.Module, batch: Any, device: torch.device, step: int, train: bool = True
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        features, finish = self.encoder_inputs(batch, device, step, train)
        return finish(model(features))

    # ----------------------------------------------------------------------------- evaluation

    def _evaluate(self, model: nn.Module, data: RankingData, device: torch.device) -> dict:
        was_training = model.training
        model.eval()
        result = evaluate_scorer(model, data, device=device)
        model.train(was_training)
        return result.to_dict()

    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> Results:
        if split == "validation":
            return {"validation": self._evaluate(model, self.validation, device)}
        if split != "test":
            raise PairLossError(f"split: expected 'validation' or 'test', got {split!r}")
        return {"test": self._evaluate(model, self.test, device)}

    def baselines(
        self, config: Any, untrained: nn.Module, device: torch.device
    ) -> dict[str, Results]:
        from .registry import build_loss

        out = {"untrained MLP scorer": self.evaluate(untrained, "test", device)}
        linear = MLPScorer(self.train.features.shape[1], hidden=())
        linear.fit_standardisation(self.train.features)
        fit_scorer(
            build_loss(config.loss, config.loss_options),
            self.train,
            scorer=linear,
            epochs=config.epochs,
            batch_queries=config.p,
            lr=config.lr,
            weight_decay=config.weight_decay,
            seed=config.seed,
            validation=self.validation,
        )
        out[f"linear scorer, {config.loss}"] = {
            "test": evaluate_scorer(linear, self.test).to_dict()
        }
        try:
            gbm = fit_lambdamart(
                self.train,
                seed=config.seed,
                threads=config.threads or 1,
                validation=self.validation,
            )
        except PairLossError as exc:
            if "lightgbm" not in str(exc):
                raise
            self.skipped = (
                "LightGBM LambdaMART left out: lightgbm is not installed "
                '(pip install "pairloss[ranking]")'
            )
        else:
            scores = lambdamart_scores(gbm, self.test)
            out["LightGBM LambdaMART"] = {"test": evaluate_scores(*scores).to_dict()}
        return out

    def skipped_baselines(self) -> str | None:
        """Why LightGBM's LambdaMART was left out, or ``None``."""
        return self.skipped

    def representations(self, model: nn.Module, device: torch.device) -> dict[str, Results]:
        return {"trained MLP scorer": self.evaluate(model, "test", device)}


def check_ranking(config: Any) -> None:
    """Refuse settings the ranking task cannot use, before any data is read: a loss that does
    not take slates, a miner, a memory bank, augmentation, a protocol, another model."""
    from ..catalogue import LOSSES, find

    entry = find(config.loss)
    if entry.inputs != "slates":
        names = ", ".join(e.name for e in LOSSES if e.inputs == "slates")
        raise PairLossError(
            f"loss: {entry.name} takes {entry.inputs}, not slates; data set "
            f"{config.dataset!r} needs a ranking loss: {names}"
        )
    refused = {
        "miner": (config.miner is not None, "--miner"),
        "memory_size": (config.memory_size is not None, "--memory-size"),
        "augment": (config.augment != "none", "--augment"),
        "protocol": (config.protocol is not None, "--protocol"),
        "pretrained": (config.pretrained is not None, "--pretrained"),
        "model": (config.model not in (None, "scorer"), "--model"),
    }
    for name, (given, flag) in refused.items():
        if given:
            raise PairLossError(
                f"{name}: does not apply to data set {config.dataset!r} (query slates scored by "
                f"an MLP); drop {flag}"
            )


def refuse_slate_loss(config: Any) -> None:
    """Refuse a ranking loss for a data set of labelled samples (it takes slates, not
    embeddings with labels)."""
    from ..catalogue import find

    entry = find(config.loss)
    if entry.inputs == "slates":
        raise PairLossError(
            f"loss: {entry.name} ranks the documents of query slates; data set "
            f"{config.dataset!r} holds labelled samples (train it with --dataset lambdarank)"
        )


def ranking_task(config: Any) -> RankingTask:
    """The :class:`RankingTask` of ``config`` (files from ``config.data_dir``)."""
    train, validation, test = load_ranking_files(config)
    return RankingTask(train, validation, test, config, name=config.dataset)
