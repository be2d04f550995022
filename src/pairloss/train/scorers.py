"""Learning to rank end to end: scorers of documents, their training on query slates with any
ranking loss of the catalogue, evaluation on held-out queries, and LightGBM's LambdaMART on the
same split as a baseline.

    from pairloss.data import load_lambdarank
    from pairloss.train.scorers import evaluate_scorer, fit_scorer

    train, test = load_lambdarank("../shared/data")
    scorer = fit_scorer(pairloss.LambdaLoss(), train, epochs=30)
    print(evaluate_scorer(scorer, test))  # NDCG@1/3/5/10 (gain 2^rel - 1) and MRR
"""

from __future__ import annotations

import copy
import inspect
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..data.svmlight import RankingData
from ..errors import PairLossError
from ..metrics.ranking import RankingResult, ranking_metrics
from ..validation import check_callable, check_int, check_positive, check_real

EVAL_CUTOFFS = (1, 3, 5, 10)


class MLPScorer(nn.Module):
    """A document scorer ``x [..., D] -> s [...]``: standardisation of the features (statistics
    of the training documents, kept as buffers), then ``hidden`` ReLU layers with dropout and a
    linear output. ``hidden=()`` is a linear model. ``embedding_size``, when given, is one more
    hidden layer of that width after ``hidden`` (the representation the score is read from; the
    trainer's ``--embedding-size``)."""

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (128, 64),
        dropout: float = 0.1,
        embedding_size: int | None = None,
    ) -> None:
        super().__init__()
        in_features = check_int(in_features, "in_features", minimum=1)
        dropout = check_real(dropout, "dropout", low=0.0, high=1.0, high_open=True)
        if embedding_size is not None:
            hidden = (*hidden, check_int(embedding_size, "embedding_size", minimum=1))
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            h = check_int(h, "hidden", minimum=1)
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("std", torch.ones(in_features))

    def fit_standardisation(self, features: torch.Tensor) -> MLPScorer:
        """Set the feature mean and standard deviation from ``features`` [N, D] (constant
        features keep a scale of 1)."""
        self.mean.copy_(features.mean(dim=0))
        std = features.std(dim=0)
        self.std.copy_(torch.where(std > 0, std, torch.ones_like(std)))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std).squeeze(-1)


def linear_scorer(in_features: int) -> MLPScorer:
    """A linear document scorer (an :class:`MLPScorer` without hidden layers)."""
    return MLPScorer(in_features, hidden=())


@dataclass
class FitLog:
    """What :func:`fit_scorer` did: the mean training loss per epoch, the wall time and the
    epoch whose state was kept."""

    epoch_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    selected_epoch: int | None = None


def fit_scorer(
    loss: nn.Module,
    train: RankingData,
    scorer: nn.Module | None = None,
    epochs: int = 30,
    batch_queries: int = 16,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    max_items: int | None = None,
    log: FitLog | None = None,
    validation: RankingData | None = None,
    select: str = "ndcg@10",
) -> nn.Module:
    """Train ``scorer`` (default: an :class:`MLPScorer` standardised on ``train``) with a
    slate loss ``loss(scores [Q, L], relevance [Q, L], mask [Q, L])`` on batches of
    ``batch_queries`` queries, AdamW (``lr``, ``weight_decay``), ``epochs`` passes in a seeded
    order. With ``validation`` queries, the scorer is evaluated after every epoch and the state
    of the epoch with the best ``select`` metric (a key of :meth:`RankingResult.to_dict`, e.g.
    ``"ndcg@10"``, higher is better) is kept (``log.selected_epoch``); without, the last.
    Returns the scorer in eval mode; ``log`` (a :class:`FitLog`) receives the epoch losses."""
    check_callable(loss, "loss")
    epochs = check_int(epochs, "epochs", minimum=1)
    batch_queries = check_int(batch_queries, "batch_queries", minimum=1)
    lr = check_positive(lr, "lr")
    weight_decay = check_real(weight_decay, "weight_decay", low=0.0)
    torch.manual_seed(seed)
    if scorer is None:
        scorer = MLPScorer(train.features.shape[-1]).fit_standardisation(train.features)
    params = [p for p in scorer.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    best, best_state, best_epoch = -math.inf, None, epochs
    for epoch in range(1, epochs + 1):
        scorer.train()
        order = torch.randperm(train.n_queries, generator=g)
        total, batches = 0.0, 0
        for i in range(0, train.n_queries, batch_queries):
            idx = order[i : i + batch_queries]
            features, relevance, mask = train.select_queries(idx).slates(max_items)
            out = loss(scorer(features), relevance, mask)
            if not torch.isfinite(out):
                raise PairLossError(f"loss: became {float(out)} while training; lower lr={lr}")
            opt.zero_grad()
            out.backward()
            opt.step()
            total, batches = total + out.item(), batches + 1
        if log is not None:
            log.epoch_loss.append(total / batches)
        if validation is not None:
            scorer.eval()
            score = evaluate_scorer(scorer, validation).to_dict().get(select)
            if score is None:
                raise PairLossError(f"select: {select!r} is not a metric; expected e.g. ndcg@10")
            if score > best:
                best, best_epoch = score, epoch
                best_state = copy.deepcopy(scorer.state_dict())
    if best_state is not None:
        scorer.load_state_dict(best_state)
    scorer.eval()
    if log is not None:
        log.seconds = time.perf_counter() - start
        log.selected_epoch = best_epoch
    return scorer


SCORED_QUERIES = 256
"""Queries whose slates are built and scored at a time (the slates of all queries of a large
data set padded to its longest query would not fit in memory)."""


def score_slates(
    scorer: nn.Module, data: RankingData, device: torch.device | str | None = None
) -> tuple[torch.Tensor, ...]:
    """``(scores, relevance, mask)`` [Q, L] (on the CPU; L the longest query, padded slots
    scored 0 and masked) of every query of ``data`` under ``scorer`` (run on ``device``,
    default the CPU), :data:`SCORED_QUERIES` queries at a time, without gradient."""
    q = data.n_queries
    width = int(data.query_sizes.max()) if q else 0
    scores = torch.zeros(q, width)
    relevance = torch.full((q, width), -1.0)
    mask = torch.zeros(q, width, dtype=torch.bool)
    for lo in range(0, q, SCORED_QUERIES):
        hi = min(q, lo + SCORED_QUERIES)
        features, rel, m = data.select_queries(torch.arange(lo, hi)).slates()
        w = features.shape[1]
        with torch.no_grad():
            scores[lo:hi, :w] = scorer(features.to(device or "cpu")).float().cpu()
        relevance[lo:hi, :w], mask[lo:hi, :w] = rel, m
    return scores, relevance, mask


def evaluate_scores(
    scores: torch.Tensor, relevance: torch.Tensor, mask: torch.Tensor, k=EVAL_CUTOFFS
) -> RankingResult:
    """NDCG@k (gain ``2^rel - 1``, ties averaged), MAP@k and MRR of given slate scores; a query
    without a relevant document counts 0."""
    return ranking_metrics(scores, relevance, mask, k=k, metrics=("ndcg", "map", "mrr"))


def evaluate_scorer(
    scorer: nn.Module, data: RankingData, k=EVAL_CUTOFFS, device: torch.device | str | None = None
) -> RankingResult:
    """:func:`evaluate_scores` of ``scorer`` (run on ``device``) on the queries of ``data``."""
    return evaluate_scores(*score_slates(scorer, data, device), k=k)


def fit_lambdamart(
    train: RankingData,
    n_estimators: int = 100,
    learning_rate: float = 0.1,
    num_leaves: int = 31,
    seed: int = 0,
    threads: int = 1,
    validation: RankingData | None = None,
    early_stopping: int = 20,
    **params,
):
    """LightGBM's LambdaMART (``LGBMRanker``, objective ``lambdarank``) fitted on ``train``'s
    query groups; deterministic for a seed. With ``validation`` queries, boosting stops once
    their NDCG@10 has not improved for ``early_stopping`` rounds and the model predicts with the
    best round (``best_iteration_``). Needs the optional ``lightgbm`` package
    (``pip install "pairloss[ranking]"``)."""
    try:
        import lightgbm
    except ImportError as exc:  # the optional extra
        raise PairLossError(
            "lightgbm: not installed; expected `pip install lightgbm` (the 'ranking' extra) for "
            "the LambdaMART baseline"
        ) from exc
    model = lightgbm.LGBMRanker(
        objective="lambdarank",
        n_estimators=n_estimators,
        learning_rate=learning_rate,
        num_leaves=num_leaves,
        random_state=seed,
        n_jobs=threads,
        deterministic=True,
        force_row_wise=True,
        verbose=-1,
        **params,
    )
    fit: dict = {}
    if validation is not None:
        early_stopping = check_int(early_stopping, "early_stopping", minimum=1)
        x, y = validation.features.numpy(), validation.labels.numpy()
        newer = "eval_X" in inspect.signature(model.fit).parameters  # lightgbm >= 4.6
        fit = {
            **({"eval_X": (x,), "eval_y": (y,)} if newer else {"eval_set": [(x, y)]}),
            "eval_group": [validation.query_sizes.numpy()],
            "eval_at": [10],
            "callbacks": [lightgbm.early_stopping(early_stopping, verbose=False)],
        }
    model.fit(train.features.numpy(), train.labels.numpy(), group=train.query_sizes.numpy(), **fit)
    return model


def lambdamart_scores(model, data: RankingData) -> tuple[torch.Tensor, ...]:
    """``(scores, relevance, mask)`` [Q, L] of a fitted LightGBM ranker on ``data``."""
    features, relevance, mask = data.slates()
    flat = torch.as_tensor(model.predict(data.features.numpy()), dtype=torch.float64)
    scores = torch.zeros(mask.shape, dtype=torch.float64)
    scores[mask] = flat
    return scores, relevance, mask
