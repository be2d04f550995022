"""Retrieval metrics over an exact neighbour ranking of a gallery.

Each query ranks the gallery by score (see :mod:`pairloss.metrics.neighbors`: descending score,
ties by ascending gallery index). With ``rel_j`` the relevance of the item at rank ``j`` (1-based)
and ``R`` the number of relevant gallery items of the query:

* ``recall@K`` (metric-learning sense): 1 if any of the top ``K`` is relevant, else 0.
* ``precision@K``: ``sum_{j<=K} rel_j / K``.
* ``ndcg@K`` (binary gains): ``DCG@K / IDCG@K`` with ``DCG@K = sum_{j<=K} rel_j / log2(j + 1)``
  and ``IDCG@K = sum_{j<=min(R, K)} 1 / log2(j + 1)``.
* ``map@r`` (Musgrave, Belongie and Lim, "A Metric Learning Reality Check", ECCV 2020):
  ``(1/R) sum_{j<=R} rel_j P(j)`` with ``P(j) = sum_{i<=j} rel_i / j``.
* ``r_precision``: ``sum_{j<=R} rel_j / R``.
* ``map``: average precision over the full ranking, ``(1/R) sum_j rel_j P(j)``.
* ``mrr``: ``1 / (rank of the first relevant item)`` over the full ranking.

Queries with ``R = 0`` are excluded from every average and counted with a reason.
"""

from __future__ import annotations

import functools
import importlib.util
import queue
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from ..errors import PairLossError
from ..validation import check_bool, check_labels, check_tensor
from ._checks import check_cutoffs
from ._format import format_table
from .neighbors import ExactSearch, rule_order

RETRIEVAL_METRICS = ("recall", "precision", "ndcg", "map@r", "r_precision", "map", "mrr")
DEFAULT_K = (1, 2, 4, 8, 16, 32)
_MAX_BINS = 2**16  # buckets per query row when counting the items above each relevant item
_WORKERS = 2  # threads computing exact ranks (most of their steps are single-threaded)
_BUCKETS_PER_ITEM = 1  # buckets per kept item of a row (more: fewer items scored exactly)
_COMPILED_RANKS = importlib.util.find_spec("numba") is not None  # exact ranks by rank_kernel

LabelMatch = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RetrievalResult:
    """Averaged retrieval metrics (see :func:`retrieval` for the definitions).

    Attributes:
        recall, precision, ndcg: ``{K: value}`` for each requested K (empty if not requested;
            the values are None when every query is excluded).
        map_at_r, r_precision, map, mrr: the averages, or None if not requested or when every
            query is excluded.
        n_queries: queries given.
        n_excluded: queries left out of the averages (no relevant gallery item).
        excluded: ``{reason: count}`` for the excluded queries.
        average: ``"micro"`` (mean over queries) or ``"macro"`` (mean of per-class means).
        metric, backend: the score and the search backend used.
    """

    recall: dict[int, float | None]
    precision: dict[int, float | None]
    ndcg: dict[int, float | None]
    map_at_r: float | None
    r_precision: float | None
    map: float | None
    mrr: float | None
    n_queries: int
    n_excluded: int
    excluded: dict[str, int] = field(default_factory=dict)
    average: str = "micro"
    metric: str = "cosine"
    backend: str = "torch"

    def values(self) -> dict[str, float]:
        """The metric values keyed like ``recall@1``, ``map@r``, ``ndcg@8``."""
        out = {f"recall@{k}": v for k, v in self.recall.items()}
        out.update({f"precision@{k}": v for k, v in self.precision.items()})
        out.update({f"ndcg@{k}": v for k, v in self.ndcg.items()})
        scalars = {
            "map@r": self.map_at_r,
            "r_precision": self.r_precision,
            "map": self.map,
            "mrr": self.mrr,
        }
        out.update({name: v for name, v in scalars.items() if v is not None})
        return out

    def to_dict(self) -> dict[str, float | int | dict[str, int]]:
        """Metric values plus ``n_queries``, ``n_excluded`` and ``excluded`` ({reason: count})."""
        out: dict[str, float | int | dict[str, int]] = dict(self.values())
        out.update(n_queries=self.n_queries, n_excluded=self.n_excluded)
        out["excluded"] = dict(self.excluded)
        return out

    def table(self) -> str:
        """A readable two-column table of the values and counts."""
        reasons = ", ".join(f"{n} {r}" for r, n in self.excluded.items()) or "none"
        title = (
            f"retrieval ({self.metric}, {self.backend} backend, {self.average} average): "
            f"{self.n_queries - self.n_excluded} of {self.n_queries} queries evaluated, "
            f"excluded: {reasons}"
        )
        return format_table(title, list(self.values().items()))

    def __str__(self) -> str:
        return self.table()


def retrieval(
    query: torch.Tensor,
    query_labels: torch.Tensor,
    gallery: torch.Tensor | None = None,
    gallery_labels: torch.Tensor | None = None,
    k: int | Sequence[int] = DEFAULT_K,
    metric: str = "cosine",
    backend: str = "auto",
    per_class: bool = False,
    label_match: LabelMatch | None = None,
    chunk_size: int | None = None,
    metrics: Sequence[str] | None = None,
) -> RetrievalResult:
    """Recall@K, Precision@K, NDCG@K, MAP@R, R-Precision, MAP and MRR of a retrieval run.

    Definitions are in the module docstring (MAP@R and R-Precision after Musgrave et al.,
    "A Metric Learning Reality Check", ECCV 2020). All values are exact: MAP@R and
    R-Precision use each query's exact ``R``; MAP and MRR use the exact rank of every relevant
    item in the full ranking (see :func:`relevant_ranks`; blocks of ``O(chunk x N)`` memory).

    Args:
        query: ``[Q, D]`` floating-point embeddings.
        query_labels: ``[Q]`` integer class labels, or ``[Q, L]`` multi-hot labels (relevance =
            at least one shared label), or anything ``label_match`` accepts.
        gallery: ``[N, D]`` embeddings. ``None`` (default) ranks the queries against each other,
            leaving each query's own row out (leave-one-out).
        gallery_labels: ``[N]`` or ``[N, L]`` labels; required with ``gallery``, else omitted.
        k: the cut-offs for recall, precision and NDCG (default ``(1, 2, 4, 8, 16, 32)``);
            each must be at most the number of gallery items a query is ranked against.
        metric: ``"cosine"`` (default), ``"euclidean"`` or ``"dot"``.
        backend: ``"auto"`` (default), ``"torch"`` or ``"faiss"``; both give identical values.
        per_class: False (default) averages over queries (micro); True averages the per-class
            means over the query classes (macro, like PML's ``avg_of_avgs``).
        label_match: optional ``f(query_labels_block [b, ...], gallery_labels [N, ...])`` that
            returns a bool ``[b, N]`` relevance matrix.
        chunk_size: query rows per block (default: automatic, see :class:`ExactSearch`).
        metrics: which of ``recall``, ``precision``, ``ndcg``, ``map@r``, ``r_precision``,
            ``map``, ``mrr`` to compute (default: all). With ``map`` (or, on the torch backend
            with the compiled ranks, with ``map@r`` or ``r_precision``), every metric comes
            from the exact ranks of all relevant items, found in one pass over the float32
            score rows (:func:`relevant_ranks`, the torch product whichever the backend) with
            no k-NN search. Otherwise the metrics come from one k-NN pass of depth
            ``max(max(k), max R)`` on the backend, and ``mrr`` of the queries without a hit in
            that list from their exact ranks.

    Returns:
        A :class:`RetrievalResult`. Queries without any relevant gallery item (a singleton
        class in leave-one-out, a class missing from the gallery) are excluded from the
        averages and counted in ``excluded``; if every query is excluded the values are None
        (undefined).
    """
    wanted = _check_metric_names(metrics)
    ks = check_cutoffs(k, "k")
    search = ExactSearch(query, gallery, metric, backend, chunk_size)
    relevance = _make_relevance(query_labels, gallery, gallery_labels, label_match, search)
    if ks[-1] > search.n_available:
        raise PairLossError(
            f"k: {ks[-1]} exceeds the {search.n_available} gallery items each query is ranked "
            f"against; expected every k <= {search.n_available}"
        )
    per_class = check_bool(per_class, "per_class")
    per_query, counts = _per_query_values(search, relevance, ks, wanted)
    valid = counts > 0
    groups = _class_ids(relevance.query_labels) if per_class else None
    means = {name: _average(v, valid, groups) for name, v in per_query.items()}
    n_excluded = int((~valid).sum())
    return RetrievalResult(
        recall={kk: means[f"recall@{kk}"] for kk in ks if "recall" in wanted},
        precision={kk: means[f"precision@{kk}"] for kk in ks if "precision" in wanted},
        ndcg={kk: means[f"ndcg@{kk}"] for kk in ks if "ndcg" in wanted},
        map_at_r=means.get("map@r"),
        r_precision=means.get("r_precision"),
        map=means.get("map"),
        mrr=means.get("mrr"),
        n_queries=search.n_queries,
        n_excluded=n_excluded,
        excluded={relevance.reason: n_excluded} if n_excluded else {},
        average="macro" if per_class else "micro",
        metric=search.metric,
        backend=search.backend,
    )


def list_metrics(
    hit: torch.Tensor, n_relevant: torch.Tensor, ks: Sequence[int], wanted: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Per-query metrics from the relevance of the top of each ranking.

    Args:
        hit: ``[b, K]`` bool, the relevance of the items at ranks ``1..K``; ``K`` must cover
            ``max(ks)`` and, for ``map@r``, ``r_precision`` and ``map``, every ``R``.
        n_relevant: ``[b]`` number of relevant gallery items ``R`` (>= 1).
        ks: cut-offs for recall, precision and NDCG.
        wanted: names from :data:`RETRIEVAL_METRICS`; ``map`` is exact only for rows whose
            list holds all ``R`` relevant items, ``mrr`` only for rows with a hit.

    Returns:
        ``{name: [b] float64}`` with names like ``recall@1``, ``map@r``.
    """
    hit64 = hit.to(torch.float64)
    r = n_relevant.to(torch.float64)
    rank = torch.arange(1, hit.shape[1] + 1, dtype=torch.float64, device=hit.device)
    cum = hit64.cumsum(dim=1)
    gain = 1.0 / torch.log2(rank + 1)
    out: dict[str, torch.Tensor] = {}
    for kk in ks:
        if "recall" in wanted:
            out[f"recall@{kk}"] = hit[:, :kk].any(dim=1).to(torch.float64)
        if "precision" in wanted:
            out[f"precision@{kk}"] = cum[:, kk - 1] / kk
        if "ndcg" in wanted:
            ideal = gain[:kk].cumsum(0)[n_relevant.clamp(1, kk) - 1]
            out[f"ndcg@{kk}"] = (hit64[:, :kk] * gain[:kk]).sum(dim=1) / ideal
    within_r = rank[None, :] <= r[:, None]
    precision_at_hits = hit64 * cum / rank
    if "map@r" in wanted:
        out["map@r"] = (precision_at_hits * within_r).sum(dim=1) / r
    if "r_precision" in wanted:
        out["r_precision"] = (hit64 * within_r).sum(dim=1) / r
    if "map" in wanted:
        out["map"] = precision_at_hits.sum(dim=1) / r
    if "mrr" in wanted:
        first = hit.to(torch.uint8).argmax(dim=1).to(torch.float64)
        out["mrr"] = torch.where(hit.any(dim=1), 1.0 / (first + 1), 0.0)
    return out


def relevant_ranks(
    search: ExactSearch,
    relevance: _Relevance,
    rows: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact 1-based rank of every relevant gallery item of each query row in its full ranking.

    The rank of relevant item ``j`` is ``1 + #{i: s_i > s_j} + #{i: s_i = s_j, i < j}`` (exact
    score desc, index asc). One float32 product gives every score of the block within ``eps``
    of its exact value (:meth:`ExactSearch.score_bound`); only the relevant items and the
    items whose float32 score lies within ``eps`` of a relevant item's exact score are scored
    exactly, every other item is counted by comparison. On CPU with ``numba`` installed a
    compiled pass does this row by row (:mod:`pairloss.metrics.rank_kernel`); otherwise
    :func:`relevant_ranks_torch`. Memory is ``O(b x N)``; no row is sorted.

    Args:
        search: the search over the gallery.
        relevance: which gallery items are relevant to which query.
        rows: ``[b]`` query rows, each with at least one relevant gallery item.
        out: optional float32 ``[>= b, N]`` buffer for the score block.

    Returns:
        ``[b, M]`` int64 ranks, ascending along each row, padded with ``N + 1`` past the row's
        ``R`` relevant items (``M`` = the largest ``R``).
    """
    return _ranker(search, relevance)(rows, out)


def _ranker(
    search: ExactSearch, relevance: _Relevance
) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """:func:`relevant_ranks` for blocks of rows of one search, with the tables it shares
    across blocks built here, before any worker thread runs."""
    if not _compiled(search):
        search.gallery64()
        return functools.partial(relevant_ranks_torch, search, relevance)
    from . import rank_kernel

    table, locate = relevance.member_table(search.g)
    euclidean = search.metric == "euclidean"

    def compiled(rows: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        members, valid = relevance.members(rows)
        return rank_kernel.relevant_ranks_of_block(
            search.approx_scores(rows, out),
            search.q[rows],
            search.g,
            members,
            valid,
            table,
            locate(rows, members),
            search.score_bound(rows),
            euclidean,
        )

    return compiled


def _compiled(search: ExactSearch) -> bool:
    """Whether the exact ranks of this search come from :mod:`pairloss.metrics.rank_kernel`."""
    return _COMPILED_RANKS and search.q.device.type == "cpu"


def relevant_ranks_torch(
    search: ExactSearch,
    relevance: _Relevance,
    rows: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`relevant_ranks` with torch operations on whole blocks (any device).

    The relevant items are scored exactly (:meth:`ExactSearch.exact_block_scores`). Items
    more than ``eps`` below the lowest relevant score cannot rank above any relevant item and
    are dropped in one comparison pass. The rest go to per-row buckets by a non-decreasing
    map of their float32 score: an item in a bucket above (below) the buckets within ``eps``
    of a relevant score provably ranks above (below) that relevant item and is only counted
    (one histogram). The few items in those buckets are scored exactly and ordered with the
    relevant items by the exact rule.
    """
    members, valid = relevance.members(rows)
    b, n, device = rows.numel(), search.n_gallery, rows.device
    keys = torch.full(members.shape, -torch.inf, dtype=torch.float64, device=device)
    which = torch.arange(b, device=device)[:, None].expand_as(members)[valid]
    keys[valid] = search.exact_block_scores(rows, which, members[valid])
    eps = search.score_bound(rows)[:, None]
    scores = search.approx_scores(rows, out)
    low = _down32(keys.masked_fill(~valid, torch.inf).min(dim=1).values - eps[:, 0])
    high = _up32(keys.max(dim=1).values + eps[:, 0])
    kept = (scores >= low[:, None]).view(-1).nonzero().squeeze(1)
    row = kept // n
    # buckets 0..n_bins of (score - low) * scale, a non-decreasing function of the score
    n_bins = int(min(max(_BUCKETS_PER_ITEM * kept.numel() // b, 64), _MAX_BINS))
    width = n_bins + 1
    finfo = torch.finfo(torch.float32)
    scale = (n_bins / (high - low).clamp(min=finfo.tiny)).clamp(max=finfo.max)  # finite

    def bucket(x: torch.Tensor, lo: torch.Tensor, sc: torch.Tensor) -> torch.Tensor:
        return ((x - lo) * sc).clamp_(0, n_bins).long()

    first = bucket(_down32(keys - eps), low[:, None], scale[:, None])
    last = bucket(_up32(keys + eps), low[:, None], scale[:, None])
    edges = torch.zeros(b, width + 1, dtype=torch.int32, device=device)
    edges.scatter_add_(1, first, valid.to(torch.int32))
    edges.scatter_add_(1, last + 1, -valid.to(torch.int32))
    flagged = edges.cumsum(dim=1)[:, :width] > 0
    key = bucket(scores.view(-1)[kept], low[row], scale[row]).add_(row * width)
    near = flagged.view(-1)[key].nonzero().squeeze(1)
    # at_most[r, t]: kept items of row r outside the flagged buckets, in bucket t or lower
    hist = torch.bincount(key, minlength=b * width)
    hist -= torch.bincount(key[near], minlength=b * width)
    at_most = hist.view(b, width).cumsum(dim=1)
    # an item outside the flagged buckets above the bucket of exact + eps scores higher
    above = at_most[:, -1:] - at_most.gather(1, last)
    # the other items in the flagged buckets, scored exactly
    near_row, near_col = row[near], kept[near] - row[near] * n
    other = ~_pair_relevance(relevance, rows, near_row, near_col)
    near_row, near_col = near_row[other], near_col[other]
    per_row = torch.bincount(near_row, minlength=b)
    slot = torch.arange(near_row.numel(), device=device) - (per_row.cumsum(0) - per_row)[near_row]
    n_rel = members.shape[1]
    size = n_rel + (int(per_row.max()) if near_row.numel() else 0)
    cols = torch.full((b, size), n, dtype=torch.long, device=device)
    cols[:, :n_rel] = members.masked_fill(~valid, n)
    cols[near_row, slot + n_rel] = near_col
    packed = torch.full((b, size), -torch.inf, dtype=torch.float64, device=device)
    packed[:, :n_rel] = keys
    packed[near_row, slot + n_rel] = search.exact_block_scores(rows, near_row, near_col)
    ahead = torch.zeros((b, size), dtype=torch.long, device=device)
    ahead[:, :n_rel] = above
    is_relevant = torch.zeros((b, size), dtype=torch.bool, device=device)
    is_relevant[:, :n_rel] = valid
    order = rule_order(packed, cols)
    position = torch.arange(1, size + 1, device=device)
    ranks = torch.where(is_relevant.gather(1, order), ahead.gather(1, order) + position, n + 1)
    return ranks.sort(dim=1).values[:, :n_rel]


def _pair_relevance(
    relevance: _Relevance, rows: torch.Tensor, row: torch.Tensor, col: torch.Tensor
) -> torch.Tensor:
    """``[P]`` relevance of the pairs ``(rows[row[p]], col[p])``."""
    if isinstance(relevance, _SameLabel):
        return relevance.gallery_labels[col] == relevance.query_labels[rows[row]]
    return relevance.full(rows)[row, col]


def ranking_metrics(ranks: torch.Tensor, found: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average precision and reciprocal rank from the ranks of the relevant items.

    Args:
        ranks: ``[b, M]`` 1-based ranks of the relevant items, ascending (entries past a row's
            ``R`` relevant items are ignored).
        found: ``[b]`` the number ``R >= 1`` of relevant items of each row.

    Returns:
        ``(ap [b], rr [b])`` in float64: ``AP = (1/R) sum_m m / rank_(m)``, ``RR = 1 / rank_(1)``.
    """
    m = torch.arange(1, ranks.shape[1] + 1, device=ranks.device, dtype=torch.float64)
    in_list = m[None, :] <= found[:, None]
    ap = (m / ranks * in_list).sum(dim=1) / found
    return ap, 1.0 / ranks[:, 0].to(torch.float64)


def hits_from_ranks(ranks: torch.Tensor, depth: int) -> torch.Tensor:
    """``[b, depth]`` bool relevance of ranks ``1..depth`` from the ranks of the relevant items."""
    hit = torch.zeros(ranks.shape[0], depth + 1, dtype=torch.bool, device=ranks.device)
    hit.scatter_(1, (ranks - 1).clamp(max=depth), True)
    return hit[:, :depth]


def _down32(x: torch.Tensor) -> torch.Tensor:
    """float32 values ``<= x`` (float64), within one float32 step."""
    y = x.to(torch.float32)
    return torch.where(y.to(torch.float64) > x, torch.nextafter(y, y.new_tensor(-torch.inf)), y)


def _up32(x: torch.Tensor) -> torch.Tensor:
    """float32 values ``>= x`` (float64), within one float32 step."""
    y = x.to(torch.float32)
    return torch.where(y.to(torch.float64) < x, torch.nextafter(y, y.new_tensor(torch.inf)), y)


def _per_query_values(
    search: ExactSearch, relevance: _Relevance, ks: tuple[int, ...], wanted: tuple[str, ...]
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    needs_r = bool({"map@r", "r_precision", "map"} & set(wanted))
    # a k-NN list as deep as R costs more on the torch backend than the compiled exact ranks
    from_ranks = "map" in wanted or (needs_r and search.backend == "torch" and _compiled(search))
    names = _list_names(ks, wanted)
    per_query = {name: torch.zeros(search.n_queries, dtype=torch.float64) for name in names}
    counts = torch.empty(search.n_queries, dtype=torch.long, device=search.q.device)
    missed = []
    for rows in search.blocks():
        n_rel = relevance.counts(rows)
        counts[rows] = n_rel
        if from_ranks:
            continue  # every metric comes from the exact ranks below
        depth = max(ks[-1], int(n_rel.max())) if needs_r else ks[-1]
        indices, _ = search.topk(rows, depth, with_scores=False)
        hit = relevance.gather(rows, indices)
        for name, v in list_metrics(hit, n_rel.clamp(min=1), ks, wanted).items():
            per_query[name][rows.cpu()] = v.cpu()
        if "mrr" in wanted:
            missed.append(rows[~hit.any(dim=1) & (n_rel > 0)])
    if from_ranks:
        ranked = (counts > 0).nonzero().flatten()
    else:
        ranked = torch.cat(missed) if missed else counts[:0]
    for rows, values in _ranked_values(search, relevance, ranked, counts, ks, wanted):
        for name, v in values.items():
            if from_ranks or name == "mrr":
                per_query[name][rows.cpu()] = v.cpu()
    return per_query, counts.cpu()


def _ranked_values(
    search: ExactSearch,
    relevance: _Relevance,
    rows: torch.Tensor,
    counts: torch.Tensor,
    ks: tuple[int, ...],
    wanted: tuple[str, ...],
) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """``(rows_part, {name: values})`` from the exact ranks of all relevant items, for parts of
    ``rows`` of at most ``search.full_rows`` rows, computed by up to :data:`_WORKERS` threads
    (each with its own score block: most steps of a part run on one core)."""
    parts = list(search.full_blocks(rows))
    if not parts:
        return
    workers = max(1, min(_WORKERS, torch.get_num_threads(), len(parts)))
    ranker = _ranker(search, relevance)
    buffers: queue.SimpleQueue[torch.Tensor] = queue.SimpleQueue()
    listed = tuple(name for name in wanted if name not in ("map", "mrr"))
    names = _list_names(ks, wanted)

    def task(part: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        try:
            buffer = buffers.get_nowait()
        except queue.Empty:
            buffer = torch.empty(search.full_rows, search.n_gallery, device=search.q.device)
        try:
            ranks = ranker(part, buffer)
        finally:
            buffers.put(buffer)
        found = counts[part]
        values = list_metrics(
            hits_from_ranks(ranks, max(ks[-1], int(found.max()))), found, ks, listed
        )
        values["map"], values["mrr"] = ranking_metrics(ranks, found)
        return part, {name: values[name] for name in names}

    if workers == 1:
        yield from map(task, parts)
        return
    with ThreadPoolExecutor(workers) as pool:
        yield from pool.map(task, parts)


def _list_names(ks: tuple[int, ...], wanted: tuple[str, ...]) -> list[str]:
    names = [f"{m}@{kk}" for kk in ks for m in ("recall", "precision", "ndcg") if m in wanted]
    return names + [m for m in ("map@r", "r_precision", "map", "mrr") if m in wanted]


def _average(
    values: torch.Tensor, valid: torch.Tensor, groups: torch.Tensor | None
) -> float | None:
    if not bool(valid.any()):
        return None
    if groups is None:
        return float(values[valid].mean())
    ids, v = groups[valid], values[valid]
    n_groups = int(ids.max()) + 1
    sums = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, ids, v)
    sizes = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, ids, torch.ones_like(v))
    present = sizes > 0
    return float((sums[present] / sizes[present]).mean())


def _class_ids(labels: torch.Tensor) -> torch.Tensor:
    labels = labels.cpu()
    if labels.dim() == 1:
        return torch.unique(labels, return_inverse=True)[1]
    return torch.unique(labels.reshape(labels.shape[0], -1), dim=0, return_inverse=True)[1]


def _check_metric_names(metrics: Sequence[str] | None) -> tuple[str, ...]:
    if metrics is None:
        return RETRIEVAL_METRICS
    if isinstance(metrics, str):
        metrics = (metrics,)
    if not isinstance(metrics, (list, tuple)):
        raise PairLossError(
            f"metrics: got {metrics!r}; expected a non-empty subset of "
            f"{', '.join(RETRIEVAL_METRICS)}"
        )
    unknown = [m for m in metrics if m not in RETRIEVAL_METRICS]
    if unknown or not metrics:
        raise PairLossError(
            f"metrics: got {list(metrics)!r}; expected a non-empty subset of "
            f"{', '.join(RETRIEVAL_METRICS)}"
        )
    return tuple(m for m in RETRIEVAL_METRICS if m in metrics)


class _Relevance:
    """Which gallery items are relevant to which query (own row excluded in leave-one-out)."""

    reason = "no_relevant_item"
    query_labels: torch.Tensor

    def counts(self, rows: torch.Tensor) -> torch.Tensor:
        """``[b]`` number of relevant gallery items of each query row."""
        raise NotImplementedError

    def gather(self, rows: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """``[b, K]`` relevance of the gallery ``indices`` of each query row."""
        raise NotImplementedError

    def members(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``([b, M] gallery indices, [b, M] valid)`` of the relevant items of each query row."""
        raise NotImplementedError

    def member_table(
        self, gallery: torch.Tensor
    ) -> tuple[torch.Tensor, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
        """``(table, locate)``: the vector of member ``members[r, t]`` (``members, _ =
        members(rows)``) is ``table[locate(rows, members)[r, t]]`` (default: the gallery)."""
        return gallery, lambda rows, members: members


class _SameLabel(_Relevance):
    """Relevant = same integer class label."""

    def __init__(self, query_labels: torch.Tensor, gallery_labels: torch.Tensor, loo: bool):
        self.query_labels, self.gallery_labels, self.loo = query_labels, gallery_labels, loo
        self.reason = "singleton_class" if loo else "class_not_in_gallery"
        classes, sizes = torch.unique(gallery_labels, return_counts=True)
        pos = torch.searchsorted(classes, query_labels).clamp(max=classes.numel() - 1)
        present = classes[pos] == query_labels
        self._class_size = torch.where(present, sizes[pos], 0)
        self._class_start = (sizes.cumsum(0) - sizes)[pos]
        self._by_class = gallery_labels.argsort(stable=True)

    def counts(self, rows: torch.Tensor) -> torch.Tensor:
        return self._class_size[rows] - int(self.loo)

    def gather(self, rows: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return self.gallery_labels[indices] == self.query_labels[rows, None]

    def members(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = self._class_size[rows]
        offsets = torch.arange(int(size.max()), device=rows.device)
        members = self._by_class[self._slots(rows, offsets)]
        valid = offsets[None, :] < size[:, None]
        if self.loo:
            valid &= members != rows[:, None]
        return members, valid

    def member_table(
        self, gallery: torch.Tensor
    ) -> tuple[torch.Tensor, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
        """The gallery ordered by class: the members of a query row are contiguous rows."""

        def locate(rows: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
            return self._slots(rows, torch.arange(members.shape[1], device=rows.device))

        return gallery[self._by_class].contiguous(), locate

    def _slots(self, rows: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """``[b, M]`` positions in the class-sorted gallery of each row's class members."""
        return (self._class_start[rows, None] + offsets).clamp(max=self._by_class.numel() - 1)


class _MatchedLabels(_Relevance):
    """Relevant = ``label_match(query_labels, gallery_labels)`` (default: a shared label)."""

    def __init__(
        self,
        query_labels: torch.Tensor,
        gallery_labels: torch.Tensor,
        loo: bool,
        label_match: LabelMatch | None,
    ):
        self.query_labels, self.gallery_labels, self.loo = query_labels, gallery_labels, loo
        self.match = label_match or share_a_label
        self._cached: tuple[torch.Tensor, torch.Tensor] | None = None

    def full(self, rows: torch.Tensor) -> torch.Tensor:
        """``[b, N]`` relevance of the whole gallery for each query row (cached per block)."""
        cached = self._cached  # one read: other threads may replace it
        if cached is not None and cached[0] is rows:
            return cached[1]
        rel = self.match(self.query_labels[rows], self.gallery_labels)
        expected = (rows.numel(), self.gallery_labels.shape[0])
        if not isinstance(rel, torch.Tensor) or tuple(rel.shape) != expected:
            got = tuple(rel.shape) if isinstance(rel, torch.Tensor) else type(rel).__name__
            raise PairLossError(
                f"label_match: returned {got}; expected a bool tensor of shape {expected} "
                "(query block x gallery)"
            )
        rel = rel.to(device=rows.device, dtype=torch.bool)
        if self.loo:
            rel[torch.arange(rows.numel(), device=rows.device), rows] = False
        self._cached = (rows, rel)
        return rel

    def counts(self, rows: torch.Tensor) -> torch.Tensor:
        return self.full(rows).sum(dim=1)

    def gather(self, rows: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return self.full(rows).gather(1, indices)

    def members(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rel = self.full(rows)
        flags, members = rel.to(torch.uint8).topk(int(rel.sum(dim=1).max()), dim=1)
        return members, flags.bool()


def share_a_label(query_labels: torch.Tensor, gallery_labels: torch.Tensor) -> torch.Tensor:
    """Default relevance of multi-hot labels: ``[b, L]`` and ``[N, L]`` share a label -> ``[b, N]``."""
    return (query_labels.to(torch.float32) @ gallery_labels.to(torch.float32).T) > 0


def _make_relevance(
    query_labels: object,
    gallery: torch.Tensor | None,
    gallery_labels: object,
    label_match: LabelMatch | None,
    search: ExactSearch,
) -> _Relevance:
    if gallery is None and gallery_labels is not None:
        raise PairLossError(
            "gallery_labels: given without gallery; pass both, or neither for leave-one-out"
        )
    if gallery is not None and gallery_labels is None:
        raise PairLossError("gallery_labels: missing; expected one label per gallery row")
    if label_match is not None and not callable(label_match):
        raise PairLossError(f"label_match: expected a callable or None, got {label_match!r}")
    q_labels = _check_any_labels(query_labels, search.n_queries, "query_labels", label_match)
    g_labels = (
        q_labels
        if gallery is None
        else _check_any_labels(gallery_labels, search.n_gallery, "gallery_labels", label_match)
    )
    device = search.q.device
    q_labels, g_labels = q_labels.to(device), g_labels.to(device)
    if label_match is None and q_labels.dim() == 1:
        if g_labels.dim() != 1:
            raise PairLossError(
                f"gallery_labels: has shape {tuple(g_labels.shape)} but query_labels is 1-D; "
                "expected the same label layout"
            )
        return _SameLabel(q_labels, g_labels, search.leave_one_out)
    if label_match is None and g_labels.shape[1:] != q_labels.shape[1:]:
        raise PairLossError(
            f"gallery_labels: has shape {tuple(g_labels.shape)} but query_labels has "
            f"{tuple(q_labels.shape)}; expected the same number of label columns"
        )
    return _MatchedLabels(q_labels, g_labels, search.leave_one_out, label_match)


def _check_any_labels(
    labels: object, n: int, name: str, label_match: LabelMatch | None
) -> torch.Tensor:
    labels = check_tensor(labels, name)
    if label_match is None and labels.dim() == 1:
        return check_labels(labels, n, name)
    if label_match is None and labels.dim() != 2:
        raise PairLossError(
            f"{name}: got shape {tuple(labels.shape)}; expected [{n}] class labels or "
            f"[{n}, L] multi-hot labels"
        )
    if labels.dim() == 0 or labels.shape[0] != n:
        raise PairLossError(
            f"{name}: has shape {tuple(labels.shape)} but there are {n} embedding rows; "
            "expected one label (row) per embedding"
        )
    if label_match is None and not bool(((labels == 0) | (labels == 1)).all()):
        raise PairLossError(f"{name}: 2-D labels must be multi-hot (0/1 or bool entries)")
    return labels
