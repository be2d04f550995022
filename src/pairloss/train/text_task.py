"""Sentence embeddings as a trainer task: STS-B (``--dataset sts-b``) and any file of sentence
pairs (``--dataset sentence-pairs --data-dir FILE``), with the MiniLM encoder (``--model minilm``).

Data and splits (no test pair is ever seen in training or model selection):

* ``sts-b``: the STS Benchmark's own splits (Cer et al., SemEval 2017): train (5,749 pairs)
  trains, dev (1,500) picks the best epoch, test (1,379) is reported. ``--data-dir`` is the
  ``stsbenchmark`` folder or a folder holding it (default ``$PAIRLOSS_DATA/stsbenchmark``).
* ``sentence-pairs``: a TSV, CSV or JSONL file (:func:`pairloss.data.read_sentence_pairs`:
  columns ``sentence1``, ``sentence2`` and a ``score``, a ``label`` or neither), split at random
  (seeded): ``test_fraction`` (default 0.2) for the test, ``val_fraction`` of the rest for
  validation.

How a loss trains (from its catalogue call convention):

* graded-pair losses (``cosent``, ``angle``, ``cosine_similarity_regression``) take
  ``loss(a, b, y)`` with ``y`` the gold score mapped to [0, 1] by the training scores' range
  (STS-B: ``score / 5``); labels count as scores; a file of unscored pairs is refused.
* in-batch losses (``in_batch_negatives`` = sentence-transformers' MNRL, ``clip``, ``siglip``,
  ``hardness_weighted_infonce``) take ``loss(a, b)`` on positive pairs only: scored pairs at
  80 % of the range or more (STS-B: score >= 4), labelled pairs with the largest label, or every
  pair of an unscored file; the other pairs of the batch are the negatives.

Evaluation (``{setting: metrics}``, settings ``test`` and ``dev``/``validation``): with gold
scores or labels, ``spearman``: Spearman's rank correlation x 100 of the cosine similarity of
each pair's embeddings against the gold values (the STS Benchmark's figure; ties averaged, as
``scipy.stats.spearmanr``); without, ``recall@1`` and ``mrr`` of finding each first sentence's
partner among all second sentences of the split. The best epoch is the one with the best
validation figure; the untrained encoder is the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..catalogue import find
from ..data.sentence_pairs import SentencePairs, load_sts_benchmark, read_sentence_pairs
from ..errors import PairLossError
from ..metrics.sts import spearman
from .labelled import per_class_split
from .task import Results, Task

GRADED = ("graded_pairs",)
"""Call conventions of losses that train on graded pairs ``loss(a, b, y)``."""

IN_BATCH = ("queries_docs", "image_text")
"""Call conventions of losses that train on positive pairs with in-batch negatives."""

POSITIVE_FRACTION = 0.8
"""Scored pairs at least this far up the training scores' range are positives (STS-B 0-5: 4)."""

EVAL_BATCH = 128
"""Sentences per encoder call in evaluation."""

TEXT_MODEL = "minilm"


class PairBatches:
    """Seeded batches of pair indices: each epoch a new permutation of the ``n`` pairs cut into
    ``batch_size`` pairs (the last incomplete batch dropped), ``batches`` of them per epoch
    (``None``: one pass), continuing through fresh permutations when an epoch asks for more
    than one pass. With ``world_size > 1``, rank ``r`` takes every ``world_size``-th batch.

    Args:
        n: the number of pairs (at least ``batch_size``).
        batch_size: pairs per batch.
        batches: batches per epoch, or ``None`` for one pass.
        seed: seeds every permutation (``seed``, epoch and pass).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        batches: int | None,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if n < batch_size:
            raise PairLossError(
                f"batch_size: {batch_size} is more than the {n} training items; expected at "
                f"most {n}"
            )
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_pass = n // batch_size
        self.batches = self.per_pass if batches is None else batches
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches iteration gives."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(range(self.rank, self.batches, self.world_size))

    def __iter__(self) -> Iterator[list[int]]:
        passes = math.ceil(self.batches / self.per_pass)
        order = torch.cat(
            [
                torch.randperm(
                    self.n,
                    generator=torch.Generator().manual_seed(
                        self.seed + 7919 * self.epoch + 104729 * p
                    ),
                )[: self.per_pass * self.batch_size]
                for p in range(passes)
            ]
        )
        for j in range(self.rank, self.batches, self.world_size):
            yield order[j * self.batch_size : (j + 1) * self.batch_size].tolist()


@torch.no_grad()
def fingerprint(model: nn.Module) -> float:
    """A number that changes when the model's weights change (caches evaluations)."""
    return float(
        sum(t.double().sum() for t in model.state_dict().values() if t.is_floating_point())
    )


class SplitResults:
    """The test and validation results of a model's current weights, computed once: the
    report's tables after training read them back; results of other weights are dropped."""

    def __init__(self) -> None:
        self._store: dict[tuple[str, int, float], Results] = {}

    def get(self, split: str, model: nn.Module, compute: Callable[[], Results]) -> Results:
        """The results of ``split`` for ``model``, from ``compute()`` unless kept."""
        if split not in ("validation", "test"):
            raise PairLossError(f"split: expected 'validation' or 'test', got {split!r}")
        key = (split, id(model), fingerprint(model))
        if key not in self._store:
            self._store = {k: v for k, v in self._store.items() if k[1:] == key[1:]}
            self._store[key] = compute()
        return self._store[key]


def both_splits(task: Task, model: nn.Module, device: torch.device) -> Results:
    """``task``'s test and validation results of ``model`` in one dict (the tables' rows)."""
    return {**task.evaluate(model, "test", device), **task.evaluate(model, "validation", device)}


def loss_kind(name: str) -> str:
    """``"graded"`` or ``"in_batch"``: how loss ``name`` trains on sentence pairs; raises for a
    loss of another call convention."""
    entry = find(name)
    if entry.inputs in GRADED:
        return "graded"
    if entry.inputs in IN_BATCH:
        return "in_batch"
    raise PairLossError(
        f"loss: {entry.name} takes {entry.inputs!r} inputs; sentence pairs train graded-pair "
        "losses (cosent, angle, cosine_similarity_regression) or in-batch losses "
        "(in_batch_negatives, clip, siglip, hardness_weighted_infonce)"
    )


def check_text_model(config: Any) -> None:
    """Refuse a miner, a model other than the sentence encoder and an embedding size it cannot
    give."""
    from ..text.encoder import MINILM_SIZE

    if config.miner is not None:
        raise PairLossError(
            f"miner: data set {config.dataset!r} trains on sentence pairs or preference lists, "
            "which have no class labels to mine; drop --miner"
        )
    if config.model not in (None, TEXT_MODEL):
        raise PairLossError(
            f"model: data set {config.dataset!r} holds sentences; the text model is "
            f"{TEXT_MODEL}, got {config.model!r}"
        )
    if config.embedding_size != MINILM_SIZE:
        raise PairLossError(
            f"embedding_size: {TEXT_MODEL} embeds to {MINILM_SIZE} values, got "
            f"{config.embedding_size}; drop --embedding-size or give {MINILM_SIZE}"
        )


def check_sentence_task(config: Any) -> None:
    """Everything about a sentence-pair run that can be checked before the data is read."""
    check_text_model(config)
    loss_kind(config.loss)
    if config.dataset == "sentence-pairs" and config.data_dir is None:
        raise PairLossError(
            "data_dir: data set 'sentence-pairs' needs --data-dir naming a .tsv, .csv or "
            ".jsonl file of sentence pairs"
        )


def sts_root(config: Any) -> Path | None:
    """The STS Benchmark folder of ``config.data_dir`` (the folder itself, or the data root
    holding ``stsbenchmark/``); ``None`` without ``data_dir`` (then ``$PAIRLOSS_DATA``)."""
    if config.data_dir is None:
        return None
    base = Path(config.data_dir)
    return base / "stsbenchmark" if (base / "stsbenchmark").is_dir() else base


def _gold(pairs: SentencePairs) -> torch.Tensor | None:
    if pairs.scores is not None:
        return pairs.scores.double()
    return None if pairs.labels is None else pairs.labels.double()


def _subset(pairs: SentencePairs, limit: int, seed: int) -> SentencePairs:
    if not limit or len(pairs) <= limit:
        return pairs
    rows = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))[:limit]
    return pairs.subset(rows.sort().values)


def split_pairs(
    pairs: SentencePairs, test_fraction: float, val_fraction: float, seed: int
) -> tuple[SentencePairs, SentencePairs, SentencePairs]:
    """(train, validation, test) of one file's pairs: ``test_fraction`` of the pairs (seeded)
    for the test, then ``val_fraction`` of the rest for validation."""
    one = torch.zeros(len(pairs), dtype=torch.long)
    rest, test = per_class_split(one, test_fraction, seed)
    keep, val = per_class_split(one[rest], val_fraction, seed + 1)
    return pairs.subset(rest[keep]), pairs.subset(rest[val]), pairs.subset(test)


class TextEncoderTask(Task):
    """What the tasks that fine-tune the sentence encoder share: the model's spec and seeded
    batches of ``batch_size`` items drawn from ``self.train`` (each rank its own share)."""

    train: Any

    def model_spec(self) -> dict[str, Any]:
        return {"name": TEXT_MODEL, "options": {}, "inputs": {"text": True}}

    def batches(self, config: Any, rank: int = 0, world_size: int = 1) -> PairBatches:
        return PairBatches(
            len(self.train),
            config.batch_size,
            config.batches_per_epoch,
            config.seed,
            rank,
            world_size,
        )


class SentencePairTask(TextEncoderTask):
    """Fine-tune a sentence encoder on sentence pairs; see the module docstring.

    Args:
        name: the data set's name.
        train, validation, test: the pairs of each split.
        config: the run's settings (``loss``, ``batch_size``, ``batches_per_epoch``, ``seed``,
            ``max_eval``).
        settings: display names of the validation and test settings.
    """

    protocol = "sentence similarity"
    headline = "test"

    def __init__(
        self,
        name: str,
        train: SentencePairs,
        validation: SentencePairs,
        test: SentencePairs,
        config: Any,
        settings: tuple[str, str] = ("validation", "test"),
    ) -> None:
        self.name = name
        self.seed = config.seed
        self.kind = loss_kind(config.loss)
        self.val_setting, self.headline = settings
        self.graded = _gold(train) is not None
        self.validation = _subset(validation, config.max_eval, config.seed)
        self.test = _subset(test, config.max_eval, config.seed + 1)
        for split, pairs in (("validation", self.validation), ("test", self.test)):
            if len(pairs) < 2:
                raise PairLossError(
                    f"data_dir: {name} has {len(pairs)} {split} pairs; expected at least 2"
                )
        if self.graded:
            self.selection_metric = "spearman"
            self.columns = (("spearman", "Spearman x100"),)
        else:
            self.selection_metric = "mrr"
            self.columns = (("mrr", "MRR"), ("recall@1", "Recall@1"))
        gold = _gold(train)
        if self.kind == "graded":
            if gold is None:
                raise PairLossError(
                    f"loss: {config.loss} trains on graded pairs, but {train.source} has no "
                    "score or label column; use an in-batch loss (in_batch_negatives, clip)"
                )
            low, high = float(gold.min()), float(gold.max())
            if high <= low:
                raise PairLossError(
                    f"data_dir: every training pair of {train.source} has the gold value {low}; "
                    "expected different values to learn from"
                )
            self.train, self.targets = train, ((gold - low) / (high - low)).float()
        else:
            if gold is not None:
                low, high = float(gold.min()), float(gold.max())
                cut = high if train.scores is None else low + POSITIVE_FRACTION * (high - low)
                train = train.subset((gold >= cut).nonzero().flatten())
            self.train, self.targets = train, None
        self.batch_size = config.batch_size
        if len(self.train) < self.batch_size:
            raise PairLossError(
                f"batch_size: {self.batch_size} pairs per batch, but {name} has "
                f"{len(self.train)} training pairs for {config.loss}; expected a smaller "
                "--batch-size"
            )
        self._results = SplitResults()

    def describe(self) -> str:
        use = "graded pairs" if self.kind == "graded" else "positive pairs, in-batch negatives"
        return (
            f"{self.name}: train {len(self.train)} {use}, {self.val_setting} "
            f"{len(self.validation)} pairs (picks the epoch), {self.headline} {len(self.test)} "
            "pairs"
        )

    def build_model(self, config: Any) -> nn.Module:
        from .models import build_model

        return build_model(TEXT_MODEL, config.embedding_size)

    def loss_inputs(
        self, model: nn.Module, batch: Any, device: torch.device, step: int, train: bool = True
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        pairs = self.train.subset(batch)
        a, b = model(pairs.first), model(pairs.second)
        if self.targets is None:
            return (a, b), {}
        return (a, b, self.targets[torch.as_tensor(batch)].to(device)), {}

    # ------------------------------------------------------------------------------ evaluation

    def cosines(self, model: nn.Module, pairs: SentencePairs) -> torch.Tensor:
        """Cosine similarity [P] of each pair's embeddings (float64, on the CPU)."""
        a = model.encode(pairs.first, EVAL_BATCH).double().cpu()
        b = model.encode(pairs.second, EVAL_BATCH).double().cpu()
        return nn.functional.cosine_similarity(a, b, dim=1)

    def _metrics(self, model: nn.Module, pairs: SentencePairs) -> dict[str, float]:
        gold = _gold(pairs)
        if gold is not None:
            return {"spearman": 100.0 * spearman(self.cosines(model, pairs), gold)}
        a = nn.functional.normalize(model.encode(pairs.first, EVAL_BATCH).double().cpu(), dim=1)
        b = nn.functional.normalize(model.encode(pairs.second, EVAL_BATCH).double().cpu(), dim=1)
        sims = a @ b.T
        rank = (sims > sims.diagonal()[:, None]).sum(dim=1) + 1
        return {
            "recall@1": float((rank == 1).double().mean()),
            "mrr": float((1.0 / rank.double()).mean()),
        }

    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> Results:
        def compute() -> Results:
            pairs = self.validation if split == "validation" else self.test
            setting = self.val_setting if split == "validation" else self.headline
            return {setting: self._metrics(model, pairs)}

        return self._results.get(split, model, compute)

    def baselines(
        self, config: Any, untrained: nn.Module, device: torch.device
    ) -> dict[str, Results]:
        return {"untrained model": both_splits(self, untrained, device)}

    def representations(self, model: nn.Module, device: torch.device) -> dict[str, Results]:
        return {f"trained {TEXT_MODEL}": both_splits(self, model, device)}

    def prediction_sample(self, model: nn.Module, device: torch.device) -> dict[str, Any] | None:
        gold = _gold(self.test)
        if gold is None:
            return None
        return {
            "gold": gold.numpy(),
            "predicted": self.cosines(model, self.test).numpy(),
            "gold_label": "gold score" if self.test.scores is not None else "gold label",
            "predicted_label": "cosine similarity of the embeddings",
        }


def sts_b_task(config: Any) -> SentencePairTask:
    """The ``sts-b`` task: STS-B train / dev / test."""
    root = sts_root(config)
    return SentencePairTask(
        "sts-b",
        load_sts_benchmark("train", root),
        load_sts_benchmark("dev", root),
        load_sts_benchmark("test", root),
        config,
        ("sts-b dev", "sts-b test"),
    )


def sentence_pairs_task(config: Any) -> SentencePairTask:
    """The ``sentence-pairs`` task: one file of pairs, split at random (seeded)."""
    pairs = read_sentence_pairs(config.data_dir)
    fraction = 0.2 if config.test_fraction is None else config.test_fraction
    train, validation, test = split_pairs(pairs, fraction, config.val_fraction, config.seed)
    return SentencePairTask(Path(config.data_dir).name, train, validation, test, config)
