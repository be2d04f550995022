"""Train a sentence encoder on the STS Benchmark with a catalogue loss, and evaluate it.

:func:`train_sts` is the text job's core: it fine-tunes all-MiniLM-L6-v2 (or a given
:class:`~pairloss.text.encoder.SentenceEncoder`) on STS-B train for a budget of steps (and
optionally seconds) and reports Spearman x 100 of the cosine similarity on STS-B dev and test
before and after. Graded-pair losses (CoSENT, AnglE, the cosine regression) train on every
pair with its gold score; in-batch losses (in-batch negatives, CLIP, ...) train on the pairs
scored at least ``min_positive_score`` (4 by default) as positive pairs.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..catalogue import find
from ..data.sentence_pairs import SentencePairs, load_sts_benchmark
from ..errors import PairLossError
from ..metrics.sts import sts_spearman
from ..validation import check_int, check_real
from .encoder import SentenceEncoder, minilm

GRADED = ("graded_pairs",)
PAIRED = ("queries_docs", "image_text")
STS_MAX_SCORE = 5.0


def evaluate_sts(encoder: SentenceEncoder, pairs: SentencePairs, batch_size: int = 128) -> float:
    """Spearman x 100 of the cosine similarity of the encoded pairs against their gold scores."""
    if pairs.scores is None:
        raise PairLossError(f"{pairs.source}: the pairs have no gold scores to evaluate against")
    first = encoder.encode(pairs.first, batch_size)
    second = encoder.encode(pairs.second, batch_size)
    return sts_spearman(first, second, pairs.scores)


def sts_loss(name: str, **options) -> tuple[nn.Module, str]:
    """The catalogue loss ``name`` built with ``options``, and how it trains: ``"graded"``
    (pairs with gold scores) or ``"paired"`` (positive pairs, in-batch negatives)."""
    entry = find(name)
    if entry.inputs in GRADED:
        return entry.load()(**options), "graded"
    if entry.inputs in PAIRED:
        return entry.load()(**options), "paired"
    raise PairLossError(
        f"loss: {entry.name} takes {entry.inputs!r} inputs; a text job trains graded pairs "
        "(cosent, angle, cosine_similarity_regression) or positive pairs (in_batch_negatives, "
        "hardness_weighted_infonce, clip, siglip, ...)"
    )


@dataclass
class STSReport:
    """What :func:`train_sts` measured (Spearman x 100 of cosine similarity)."""

    loss: str
    steps: int
    seconds: float
    batch_size: int
    lr: float
    seed: int
    dev_before: float | None
    test_before: float | None
    dev_after: float | None
    test_after: float | None

    def as_dict(self) -> dict:
        """The report as a plain dict."""
        return asdict(self)


def train_sts(
    loss: str = "cosent",
    *,
    steps: int = 360,
    seconds: float | None = None,
    batch_size: int = 16,
    lr: float = 2e-5,
    warmup: float = 0.1,
    seed: int = 0,
    root: str | Path | None = None,
    encoder: SentenceEncoder | None = None,
    max_length: int = 128,
    min_positive_score: float = 4.0,
    evaluate: bool = True,
    progress: bool = False,
    loss_options: dict | None = None,
) -> tuple[STSReport, SentenceEncoder]:
    """Fine-tune a sentence encoder on STS-B train with catalogue loss ``loss``.

    Args:
        loss: a catalogue name (``cosent``, ``angle``, ``cosine_similarity_regression``,
            ``in_batch_negatives``, ``clip``, ...).
        steps: optimiser steps (the budget; default 360, about one epoch of STS-B at 16 pairs).
        seconds: an optional wall-clock budget; training stops at whichever comes first.
        batch_size: pairs per step (default 16).
        lr, warmup: AdamW's learning rate and the fraction of steps of linear warm-up (then
            linear decay to 0), as sentence-transformers' trainer.
        seed: seeds the batch order and dropout.
        root: the STS Benchmark folder (default ``$PAIRLOSS_DATA/stsbenchmark``).
        encoder: the model to train (default: a fresh all-MiniLM-L6-v2).
        max_length: tokens per sentence while training (evaluation uses the encoder's own).
        min_positive_score: gold score from which a pair is a positive for in-batch losses.
        evaluate: measure dev and test before and after (otherwise the report holds None).
        progress: show a progress bar with the time left (tqdm).
        loss_options: constructor arguments of the loss.

    Returns:
        ``(report, encoder)``: an :class:`STSReport` and the trained encoder.
    """
    steps = check_int(steps, "steps", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=2)
    lr = check_real(lr, "lr", low=0.0, low_open=True)
    warmup = check_real(warmup, "warmup", low=0.0, high=1.0)
    if seconds is not None:
        seconds = check_real(seconds, "seconds", low=0.0, low_open=True)
    loss_fn, kind = sts_loss(loss, **(loss_options or {}))
    train = load_sts_benchmark("train", root)
    if kind == "paired":
        train = train.positives(min_positive_score)
    dev, test = load_sts_benchmark("dev", root), load_sts_benchmark("test", root)
    torch.manual_seed(seed)
    model = encoder if encoder is not None else minilm()
    before = (evaluate_sts(model, dev), evaluate_sts(model, test)) if evaluate else (None, None)
    params = [p for p in list(model.parameters()) + list(loss_fn.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warm = math.ceil(warmup * steps)

    def factor(k: int) -> float:  # linear warm-up from 0, then linear decay to 0 (as HF's)
        if k < warm:
            return k / warm
        return max(0.0, (steps - k) / max(1, steps - warm))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=g)
    cursor, done, start = 0, 0, time.perf_counter()
    max_length, model.max_length = model.max_length, check_int(max_length, "max_length", minimum=1)
    bar = _progress(steps) if progress else None
    model.train()
    try:
        while done < steps:
            if seconds is not None and time.perf_counter() - start > seconds:
                break
            if cursor + batch_size > len(order):
                order, cursor = torch.randperm(len(train), generator=g), 0
            batch = train.subset(order[cursor : cursor + batch_size])
            cursor += batch_size
            a, b = model(batch.first), model(batch.second)
            if kind == "graded":
                value = loss_fn(a, b, batch.scores.to(a) / STS_MAX_SCORE)
            else:
                value = loss_fn(a, b)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            schedule.step()
            done += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(value):.4f}")
    finally:
        model.max_length = max_length
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - start
    after = (evaluate_sts(model, dev), evaluate_sts(model, test)) if evaluate else (None, None)
    report = STSReport(find(loss).name, done, elapsed, batch_size, lr, seed, *before, *after)
    return report, model


def _progress(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="train", unit="step", dynamic_ncols=True)
