"""Ranking metrics on slates: NDCG@k, MRR, MAP@k, precision@k, recall@k and Kendall's tau.

Every function takes ``scores`` [Q, L] and graded ``relevance`` [Q, L] (items of the same row
belong to one query) with an optional boolean ``mask`` [Q, L] (True = a real item) and allRank's
padding convention (``padded_value_indicator``, -1 by default: items whose relevance is -1 are
padding). An item is relevant when its relevance is > 0 (trec_eval's default level 1 for
integer labels). All arithmetic is float64.

Conventions, stated because implementations differ on them:

- Gain: ``gain="exp2"`` is ``2^rel - 1`` (Burges et al. 2005; allRank, the LambdaLoss and LETOR
  literature), ``gain="linear"`` is ``rel`` (scikit-learn's ``ndcg_score``, torchmetrics,
  trec_eval's ``ndcg``). Discount ``1 / log2(1 + rank)``.
- Ties in the scores: for NDCG ``ties="average"`` gives every item of a tied group the group's
  mean gain over the group's positions (scikit-learn and torchmetrics), ``ties="order"`` takes
  the sort order, ties in input order (a stable sort; allRank's sort leaves it unspecified).
  MRR, MAP, precision and recall take the sort order (ties in input order); trec_eval breaks
  ties by document id instead.
- A query with no relevant item: ``empty="zero"`` (default) gives 0 (scikit-learn,
  torchmetrics' default), ``empty="one"`` gives 1 (allRank's NDCG filler value), ``empty="skip"``
  leaves it out of the mean (trec_eval evaluates only queries with relevance judgements; NaN
  with ``reduction="none"``; a mean over no query at all is None, undefined).
- MAP@k divides the precisions at the relevant ranks within k by ``denominator="relevant"``:
  all relevant items of the query (trec_eval's ``map_cut_k``), ``"retrieved"``: the relevant
  items within k (torchmetrics' ``retrieval_average_precision(top_k=k)``), or ``"min"``:
  ``min(k, R)``.
- Precision@k divides by k even when the list is shorter (trec_eval ``P_k``, torchmetrics).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..validation import check_choice, check_choices, check_exp2_gains, check_int, check_slate
from ._format import format_table

GAINS = ("exp2", "linear")
TIES = ("average", "order")
EMPTY = ("zero", "one", "skip")
AP_DENOMINATORS = ("relevant", "retrieved", "min")


def _prepare(scores, relevance, mask, padded_value_indicator):
    s, rel, valid = check_slate(
        scores,
        relevance,
        mask,
        padded_value_indicator,
        nonnegative=True,
        scores_name="scores",
        relevance_name="relevance",
    )
    s = s.detach().to(torch.float64)
    s = torch.where(valid, s, torch.full_like(s, -math.inf))
    rel = rel.detach().to(torch.float64)
    order = torch.sort(s, dim=1, descending=True, stable=True).indices
    return s, rel, valid, order


def _k(k: object, n: int) -> int:
    return n if k is None else min(check_int(k, "k", minimum=1), n)


def _finish(per_query: torch.Tensor, has_relevant: torch.Tensor, empty: str, reduction: str):
    """Apply the empty-query rule, then reduce: a float (mean; None when ``empty="skip"`` left
    no query) or the [Q] tensor."""
    check_choice(empty, "empty", EMPTY)
    check_choice(reduction, "reduction", ("mean", "none"))
    fill = {"zero": 0.0, "one": 1.0, "skip": math.nan}[empty]
    per_query = torch.where(has_relevant, per_query, torch.full_like(per_query, fill))
    if reduction == "none":
        return per_query
    kept = per_query[~torch.isnan(per_query)]
    return float(kept.mean()) if kept.numel() else None


def _discounts(n: int, k: int, like: torch.Tensor) -> torch.Tensor:
    d = 1.0 / torch.log2(torch.arange(n, dtype=torch.float64, device=like.device) + 2.0)
    d[k:] = 0.0
    return d


def dcg_at_k(
    scores: torch.Tensor,
    relevance: torch.Tensor,
    k: int | None = None,
    mask: torch.Tensor | None = None,
    gain: str = "exp2",
    ties: str = "average",
    padded_value_indicator: float | None = -1,
) -> torch.Tensor:
    """DCG@k of every query, [Q] (float64); see the module docstring for ``gain`` and
    ``ties``."""
    check_choice(gain, "gain", GAINS)
    check_choice(ties, "ties", TIES)
    s, rel, valid, order = _prepare(scores, relevance, mask, padded_value_indicator)
    return _dcg(s, rel, valid, order, _k(k, s.shape[1]), gain, ties)


def _dcg(s, rel, valid, order, k, gain, ties):
    if gain == "exp2":
        check_exp2_gains(rel, valid, torch.float64)
    g = torch.expm1(rel * math.log(2.0)) if gain == "exp2" else rel
    g_sorted = torch.gather(g, 1, order)
    disc = _discounts(s.shape[1], k, s)
    if ties == "order":
        return (g_sorted * disc).sum(dim=1)
    s_sorted = torch.gather(s, 1, order)
    ok = torch.gather(valid, 1, order)
    new_group = torch.ones_like(ok)
    new_group[:, 1:] = s_sorted[:, 1:] != s_sorted[:, :-1]
    gid = torch.cumsum(new_group.long(), dim=1) - 1
    zeros = torch.zeros_like(g_sorted)
    gain_sum = zeros.scatter_add(1, gid, torch.where(ok, g_sorted, zeros))
    count = zeros.scatter_add(1, gid, ok.to(torch.float64))
    disc_sum = zeros.scatter_add(1, gid, torch.where(ok, disc.expand_as(g_sorted), zeros))
    mean_gain = gain_sum / count.clamp(min=1.0)
    return (mean_gain * disc_sum).sum(dim=1)


def ndcg_at_k(
    scores: torch.Tensor,
    relevance: torch.Tensor,
    k: int | None = None,
    mask: torch.Tensor | None = None,
    gain: str = "exp2",
    ties: str = "average",
    empty: str = "zero",
    reduction: str = "mean",
    padded_value_indicator: float | None = -1,
) -> float | torch.Tensor | None:
    """NDCG@k = DCG@k / ideal DCG@k, averaged over queries (``reduction="mean"``, a float) or
    per query (``"none"``, [Q] float64). ``k=None``: the whole list. Gain, ties and queries
    without a relevant item as the module docstring says (defaults ``"exp2"``, ``"average"``,
    ``"zero"``)."""
    check_choice(gain, "gain", GAINS)
    check_choice(ties, "ties", TIES)
    s, rel, valid, order = _prepare(scores, relevance, mask, padded_value_indicator)
    k = _k(k, s.shape[1])
    dcg = _dcg(s, rel, valid, order, k, gain, ties)
    ideal_order = torch.sort(
        torch.where(valid, rel, torch.full_like(rel, -math.inf)), dim=1, descending=True
    ).indices
    idcg = _dcg(rel, rel, valid, ideal_order, k, gain, "order")
    has = idcg > 0
    ndcg = dcg / torch.where(has, idcg, torch.ones_like(idcg))
    return _finish(ndcg, has, empty, reduction)


def _relevant_sorted(rel, valid, order):
    return torch.gather((rel > 0) & valid, 1, order)


def mrr(
    scores: torch.Tensor,
    relevance: torch.Tensor,
    k: int | None = None,
    mask: torch.Tensor | None = None,
    empty: str = "zero",
    reduction: str = "mean",
    padded_value_indicator: float | None = -1,
) -> float | torch.Tensor | None:
    """Mean reciprocal rank of the first relevant item (0 when it is below rank ``k``; ``k``
    None: no cut)."""
    s, rel, valid, order = _prepare(scores, relevance, mask, padded_value_indicator)
    k = _k(k, s.shape[1])
    hit = _relevant_sorted(rel, valid, order)
    first = torch.argmax(hit.to(torch.int8), dim=1)
    found = hit.any(dim=1) & (first < k)
    rr = torch.where(found, 1.0 / (first.to(torch.float64) + 1.0), torch.zeros_like(s[:, 0]))
    return _finish(rr, hit.any(dim=1), empty, reduction)


def map_at_k(
    scores: torch.Tensor,
    relevance: torch.Tensor,
    k: int | None = None,
    mask: torch.Tensor | None = None,
    denominator: str = "relevant",
    empty: str = "zero",
    reduction: str = "mean",
    padded_value_indicator: float | None = -1,
) -> float | torch.Tensor | None:
    """Mean average precision at k: the sum of precision@r over the relevant ranks r <= k,
    divided by ``denominator`` (module docstring; default all relevant items, as trec_eval)."""
    check_choice(denominator, "denominator", AP_DENOMINATORS)
    s, rel, valid, order = _prepare(scores, relevance, mask, padded_value_indicator)
    k = _k(k, s.shape[1])
    hit = _relevant_sorted(rel, valid, order).to(torch.float64)
    ranks = torch.arange(1, s.shape[1] + 1, dtype=torch.float64, device=s.device)
    precision = torch.cumsum(hit, dim=1) / ranks
    within = ranks <= k
    total = (precision * hit * within).sum(dim=1)
    n_rel = hit.sum(dim=1)
    if denominator == "relevant":
        div = n_rel
    elif denominator == "retrieved":
        div = (hit * within).sum(dim=1)
    else:
        div = n_rel.clamp(max=k)
    ap = torch.where(div > 0, total / div.clamp(min=1.0), torch.zeros_like(total))
    return _finish(ap, n_rel > 0, empty, reduction)


def precision_at_k(
    scores: torch.Tensor,
    relevance: torch.Tensor,
    k: int,
    mask: torch.Tensor | None = None,
    empty: str = "zero",
    reduction: str = "mean",
    padded_value_indicator: float | None = -1,
) -> float | torch.Tensor | None:
    """Precision@k: relevant items among the top k, over k."""
    k_int = check_int(k, "k", minimum=1)
    s, rel, valid, order = _prepare(scores, relevance, mask, padded_value_indicator)
    hit = _relevant_sorted(rel, valid, order)
    p = hit[:, :k_int].sum(dim=1).to(torch.float64) / k_int
    return _finish(p, hit.any(dim=1), empty, reduction)


def recall_at_k(
    scores: torch.Tensor,
    relevance: torch.Tensor,
    k: int,
    mask: torch.Tensor | None = None,
    empty: str = "zero",
    reduction: str = "mean",
    padded_value_indicator: float | None = -1,
) -> float | torch.Tensor | None:
    """Recall@k: relevant items among the top k, over all relevant items of the query."""
    k_int = check_int(k, "k", minimum=1)
    s, rel, valid, order = _prepare(scores, relevance, mask, padded_value_indicator)
    hit = _relevant_sorted(rel, valid, order)
    n_rel = hit.sum(dim=1).to(torch.float64)
    r = hit[:, :k_int].sum(dim=1).to(torch.float64) / n_rel.clamp(min=1.0)
    return _finish(r, n_rel > 0, empty, reduction)


def kendall_tau(
    scores: torch.Tensor,
    relevance: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
    padded_value_indicator: float | None = -1,
    chunk_cells: int = 1 << 22,
) -> float | torch.Tensor | None:
    """Kendall's tau-b between the scores and the relevance of every query (ties in either
    counted as in scipy's ``kendalltau``, variant b). A query where it is undefined (fewer than
    two items, or all scores or all labels equal) is left out of the mean (NaN with
    ``reduction="none"``); None when it is undefined for every query. Exact, O(L^2) per query, in chunks of queries of about
    ``chunk_cells`` pairs."""
    check_choice(reduction, "reduction", ("mean", "none"))
    chunk_cells = check_int(chunk_cells, "chunk_cells", minimum=1)
    s, rel, valid = check_slate(
        scores, relevance, mask, padded_value_indicator, scores_name="scores"
    )
    s, rel = s.detach().to(torch.float64), rel.detach().to(torch.float64)
    n_q, n = s.shape
    step = max(1, chunk_cells // max(1, n * n))
    out = []
    for start in range(0, n_q, step):
        sl = slice(start, start + step)
        pair = valid[sl, :, None] & valid[sl, None, :]
        pair = pair & torch.triu(torch.ones(n, n, dtype=torch.bool, device=s.device), 1)
        ds = torch.sign(s[sl, :, None] - s[sl, None, :])
        dr = torch.sign(rel[sl, :, None] - rel[sl, None, :])
        prod = torch.where(pair, ds * dr, torch.zeros_like(ds))
        n0 = pair.sum(dim=(1, 2)).to(torch.float64)
        tied_s = (pair & (ds == 0)).sum(dim=(1, 2)).to(torch.float64)
        tied_r = (pair & (dr == 0)).sum(dim=(1, 2)).to(torch.float64)
        denom = torch.sqrt((n0 - tied_s) * (n0 - tied_r))
        tau = prod.sum(dim=(1, 2)) / torch.where(denom > 0, denom, torch.ones_like(denom))
        out.append(torch.where(denom > 0, tau, torch.full_like(tau, math.nan)))
    tau = torch.cat(out)
    if reduction == "none":
        return tau
    kept = tau[~torch.isnan(tau)]
    return float(kept.mean()) if kept.numel() else None


RANKING_METRICS = ("ndcg", "mrr", "map", "precision", "recall", "kendall_tau")


@dataclass
class RankingResult:
    """Ranking metrics averaged over queries: ``ndcg[k]``, ``map[k]``, ``precision[k]``,
    ``recall[k]`` for each cut-off, ``mrr`` and ``kendall_tau``, and how they were computed
    (``gain``, ``ties``, ``empty``, the number of queries and of queries with a relevant
    item)."""

    ndcg: dict[int, float | None] = field(default_factory=dict)
    map: dict[int, float | None] = field(default_factory=dict)
    precision: dict[int, float | None] = field(default_factory=dict)
    recall: dict[int, float | None] = field(default_factory=dict)
    mrr: float | None = None
    kendall_tau: float | None = None
    gain: str = "exp2"
    ties: str = "average"
    empty: str = "zero"
    queries: int = 0
    queries_with_relevant: int = 0
    computed: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, float | None]:
        """Flat ``{"ndcg@10": ..., "mrr": ...}`` (None where a metric is undefined)."""
        out: dict[str, float | None] = {}
        for name in ("ndcg", "map", "precision", "recall"):
            for k, v in getattr(self, name).items():
                out[f"{name}@{k}"] = v
        for name in ("mrr", "kendall_tau"):
            if name in self.computed:
                out[name] = getattr(self, name)
        return out

    def table(self) -> str:
        """A plain-text table of the metrics."""
        title = (
            f"ranking: {self.queries} queries ({self.queries_with_relevant} with a relevant "
            f"item), gain {self.gain}, ties {self.ties}, empty queries: {self.empty}"
        )
        return format_table(title, list(self.to_dict().items()))

    def __str__(self) -> str:
        return self.table()


def ranking_metrics(
    scores: torch.Tensor,
    relevance: torch.Tensor,
    mask: torch.Tensor | None = None,
    k: int | Sequence[int] = (1, 3, 5, 10),
    metrics: Sequence[str] = RANKING_METRICS,
    gain: str = "exp2",
    ties: str = "average",
    empty: str = "zero",
    padded_value_indicator: float | None = -1,
) -> RankingResult:
    """All ranking metrics of a slate at the cut-offs ``k`` (see the module docstring)."""
    from ._checks import check_cutoffs

    cutoffs = check_cutoffs(k, "k")
    metrics = check_choices(metrics, "metrics", RANKING_METRICS)
    args = (scores, relevance)
    common = {"mask": mask, "padded_value_indicator": padded_value_indicator}
    _, rel, valid = check_slate(scores, relevance, mask, padded_value_indicator, nonnegative=True)
    res = RankingResult(
        computed=tuple(metrics),
        gain=gain,
        ties=ties,
        empty=empty,
        queries=int(valid.any(dim=1).sum()),
        queries_with_relevant=int(((rel > 0) & valid).any(dim=1).sum()),
    )
    for c in cutoffs:
        if "ndcg" in metrics:
            res.ndcg[c] = ndcg_at_k(*args, c, gain=gain, ties=ties, empty=empty, **common)
        if "map" in metrics:
            res.map[c] = map_at_k(*args, c, empty=empty, **common)
        if "precision" in metrics:
            res.precision[c] = precision_at_k(*args, c, empty=empty, **common)
        if "recall" in metrics:
            res.recall[c] = recall_at_k(*args, c, empty=empty, **common)
    if "mrr" in metrics:
        res.mrr = mrr(*args, empty=empty, **common)
    if "kendall_tau" in metrics:
        res.kendall_tau = kendall_tau(*args, **common)
    return res
