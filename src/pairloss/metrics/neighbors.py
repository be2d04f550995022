"""Exact k-nearest-neighbour search with a chunked torch backend and a FAISS backend.

Scores (larger means closer), for a query row ``q`` and a gallery row ``g``:

* ``"cosine"``: ``<q / ||q||, g / ||g||>``
* ``"dot"``: ``<q, g>``
* ``"euclidean"``: ``-||q - g||^2`` (the ranking is the one of the Euclidean distance)

Order: gallery items are ranked by the float64 score (the *exact* score below), descending,
and ties by gallery index, ascending. Both backends return exactly this order, so every metric
built on them is identical whichever backend ran:

1. The embeddings are rounded once to float32 (for cosine, after L2 normalisation in float64).
   The exact score of a pair is computed in float64 from these float32 vectors.
2. A candidate list of ``k + 8`` items per query is found with float32 arithmetic, either by a
   chunked matrix product and :func:`torch.topk` or by an exact FAISS flat index
   (``IndexFlatIP`` for cosine and dot, ``IndexFlatL2`` for Euclidean).
3. A float32 score differs from the exact one by at most ``eps = 2 (D + 4) 2^-24 s`` with
   ``s = ||q|| max||g||`` (cosine, dot) or ``(||q|| + max||g||)^2`` (Euclidean), twice the
   forward-error bound of a length-``D`` float32 dot product. Candidates whose float32 score
   is within ``2 eps`` of a neighbour in the list are re-scored exactly; the others are
   already in exact order. The list is then sorted by (score desc, index asc).
4. If every one of the top ``k`` provably beats (by more than ``eps``) the lowest float32 score
   in the list, no item outside the list can enter the top ``k`` and the row is exact. Rows
   that fail this check (near-ties at the list boundary) are recomputed from their full
   float64 score row.

In leave-one-out mode (query set = gallery) each query's own row is excluded.
Memory is ``O(chunk x N)`` for the torch backend and ``O(chunk x k)`` plus the FAISS index for
the FAISS backend.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..errors import PairLossError
from ..similarity import row_scale
from ..validation import check_embeddings

METRICS = ("cosine", "euclidean", "dot")
BACKENDS = ("auto", "torch", "faiss")

_UNIT_ROUNDOFF = 2.0**-24
_BLOCK_ENTRIES = 2**24  # similarity entries per torch block
_RESCORE_ENTRIES = 2**22  # gathered float64 entries per re-scoring step
_FAISS_BLOCK_ROWS = 2048
_ROW_CHUNK = 65536
_AUTO_FAISS_MIN_PAIRS = 2**26
_EXTRA_CANDIDATES = 8
_WIDE_LIST = 16  # lists of at least N / 16 items come from full float64 rows


@dataclass(frozen=True)
class Neighbors:
    """The exact top-k gallery items of each query.

    Attributes:
        indices: ``[Q, k]`` int64 gallery indices, best first (score desc, index asc).
        scores: ``[Q, k]`` float64 scores (larger is closer; ``-squared distance`` for
            ``"euclidean"``).
    """

    indices: torch.Tensor
    scores: torch.Tensor


def faiss_available() -> bool:
    """True when the optional ``faiss`` package can be imported."""
    return importlib.util.find_spec("faiss") is not None


def check_metric(metric: object, name: str = "metric") -> str:
    """Return ``metric`` if it is one of :data:`METRICS`, else raise naming ``name``."""
    if metric not in METRICS:
        raise PairLossError(f"{name}: got {metric!r}; expected one of {', '.join(METRICS)}")
    return str(metric)


def check_chunk_size(chunk_size: object, name: str = "chunk_size") -> int | None:
    """``None`` (automatic) or a positive int."""
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise PairLossError(f"{name}: expected a positive int or None, got {chunk_size!r}")
    return chunk_size


def resolve_backend(backend: object, n_pairs: int) -> str:
    """The backend to run: ``"auto"`` picks FAISS when installed and ``n_pairs >= 2**26``."""
    if backend not in BACKENDS:
        raise PairLossError(f"backend: got {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "faiss" and not faiss_available():
        raise PairLossError(
            "backend: 'faiss' was requested but faiss is not installed; "
            "install it with `pip install faiss-cpu` or use backend='torch'"
        )
    if backend == "auto":
        return "faiss" if faiss_available() and n_pairs >= _AUTO_FAISS_MIN_PAIRS else "torch"
    return str(backend)


def common_scale(*xs: torch.Tensor) -> float:
    """1, or the power of two at or above the largest |entry| of ``xs`` when that entry lies
    outside [2^-40, 2^40]: dot products and squared distances of the float32 embeddings divided
    by it can neither overflow nor vanish, and since dividing by a power of two is exact, every
    ranking (and every score, multiplied back) is the one of the unscaled embeddings."""
    top = max((float(x.detach().abs().amax()) for x in xs if x.numel()), default=0.0)
    if top == 0.0 or 2.0**-40 <= top <= 2.0**40:
        return 1.0
    return 2.0 ** math.ceil(math.log2(top))


def prepare(x: torch.Tensor, metric: str, name: str, scale: float = 1.0) -> torch.Tensor:
    """The float32 matrix every score is computed from: L2-normalised in float64 for cosine
    (each row first divided by the power of two at its largest |entry|, exactly, so that no norm
    overflows or vanishes), divided by ``scale`` (see :func:`common_scale`) otherwise."""
    x = x.detach()
    if metric != "cosine":
        x = x if scale == 1.0 else x.to(torch.float64) / scale
        return x.to(torch.float32).contiguous()
    x = x / row_scale(x)
    norms = squared_norms(x).sqrt_()
    zero = (norms == 0).nonzero().flatten()
    if zero.numel():
        shown = ", ".join(str(int(i)) for i in zero[:5])
        raise PairLossError(
            f"{name}: row(s) {shown} have zero norm, so the cosine similarity is undefined; "
            "expected non-zero embeddings (or use metric='dot' or 'euclidean')"
        )
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    for rows in torch.arange(x.shape[0], device=x.device).split(_ROW_CHUNK):
        out[rows] = (x[rows].to(torch.float64) / norms[rows, None]).to(torch.float32)
    return out


def squared_norms(x: torch.Tensor) -> torch.Tensor:
    """float64 squared L2 norm of each row, computed in row chunks."""
    parts = [(c.to(torch.float64) ** 2).sum(dim=1) for c in x.split(_ROW_CHUNK)]
    return torch.cat(parts)


def candidate_scores(q: torch.Tensor, g: torch.Tensor, metric: str) -> torch.Tensor:
    """float64 scores of the row pairs ``(q[p], g[p])`` of two ``[P, D]`` matrices, shape ``[P]``."""
    q64 = q.to(torch.float64)
    g64 = g.to(torch.float64)
    if metric == "euclidean":
        return -((q64 - g64) ** 2).sum(-1)
    return (q64 * g64).sum(-1)


def rule_order(scores: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Per-row permutation sorting by score descending, ties by (distinct) index ascending."""
    by_index = indices.argsort(dim=1)
    by_score = scores.gather(1, by_index).argsort(dim=1, descending=True, stable=True)
    return by_index.gather(1, by_score)


def sort_by_rule(scores: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row by score descending, ties by index ascending; returns (scores, indices)."""
    perm = rule_order(scores, indices)
    return scores.gather(1, perm), indices.gather(1, perm)


def ordered_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``k`` items of each row of ``scores [b, N]`` in (score desc, index asc) order.

    Exact with ties: every item scoring at least the k-th largest value is collected first.
    """
    kth = scores.topk(k, dim=1).values[:, -1:]
    wide = int((scores >= kth).sum(dim=1).max())
    values, indices = scores.topk(wide, dim=1)
    values, indices = sort_by_rule(values, indices)
    return values[:, :k], indices[:, :k]


def _faiss():
    import faiss

    return faiss


class ExactSearch:
    """Exact neighbour search of ``query [Q, D]`` against ``gallery [N, D]``.

    Args:
        query: ``[Q, D]`` floating-point embeddings.
        gallery: ``[N, D]`` embeddings, or ``None`` for leave-one-out search of the queries
            among themselves (each query's own row excluded).
        metric: ``"cosine"``, ``"euclidean"`` or ``"dot"``.
        backend: ``"auto"``, ``"torch"`` or ``"faiss"``.
        chunk_size: query rows per block (default: ``2**24 // N`` rows for torch, 2048 for FAISS).
        names: the argument names used in error messages.
    """

    def __init__(
        self,
        query: torch.Tensor,
        gallery: torch.Tensor | None,
        metric: str = "cosine",
        backend: str = "auto",
        chunk_size: int | None = None,
        names: tuple[str, str] = ("query", "gallery"),
    ) -> None:
        self.metric = check_metric(metric)
        q_name, g_name = names
        query = check_embeddings(query, q_name)
        self.leave_one_out = gallery is None
        if gallery is not None:
            gallery = check_embeddings(gallery, g_name)
            if gallery.shape[1] != query.shape[1]:
                raise PairLossError(
                    f"{g_name}: has {gallery.shape[1]} features per row but {q_name} has "
                    f"{query.shape[1]}; expected the same embedding dimension"
                )
            if gallery.device != query.device:
                raise PairLossError(
                    f"{g_name}: is on device {gallery.device} but {q_name} is on {query.device}; "
                    "expected both on the same device"
                )
        # scores of the prepared embeddings times ``score_scale`` are the scores of the inputs
        scale = (
            1.0
            if self.metric == "cosine"
            else common_scale(query, *([gallery] if gallery is not None else []))
        )
        self.score_scale = scale * scale
        self.q = prepare(query, self.metric, q_name, scale)
        self.g = self.q if gallery is None else prepare(gallery, self.metric, g_name, scale)
        self.backend = resolve_backend(backend, self.q.shape[0] * self.g.shape[0])
        chunk_size = check_chunk_size(chunk_size)
        self.full_rows = max(1, _BLOCK_ENTRIES // self.g.shape[0])
        default = _FAISS_BLOCK_ROWS if self.backend == "faiss" else self.full_rows
        self.chunk_size = chunk_size or default
        if chunk_size is not None:
            self.full_rows = min(self.full_rows, chunk_size)
        self._g_sq = squared_norms(self.g)
        self._g_norm_max = float(self._g_sq.max().sqrt())
        self._g_sq32 = self._g_sq.to(torch.float32)
        self._g64: torch.Tensor | None = None
        self._index = None

    @property
    def n_queries(self) -> int:
        """Number of query rows ``Q``."""
        return self.q.shape[0]

    @property
    def n_gallery(self) -> int:
        """Number of gallery rows ``N``."""
        return self.g.shape[0]

    @property
    def n_available(self) -> int:
        """Gallery items each query is ranked against (``N``, or ``N - 1`` leave-one-out)."""
        return self.n_gallery - int(self.leave_one_out)

    def blocks(self) -> Iterator[torch.Tensor]:
        """Query row indices, one block of at most ``chunk_size`` rows at a time."""
        for start in range(0, self.n_queries, self.chunk_size):
            stop = min(start + self.chunk_size, self.n_queries)
            yield torch.arange(start, stop, device=self.q.device)

    def full_blocks(self, rows: torch.Tensor) -> Iterator[torch.Tensor]:
        """Split ``rows`` into pieces small enough for full ``[b, N]`` float64 score rows."""
        if rows.numel():
            yield from rows.split(self.full_rows)

    def full_scores(self, rows: torch.Tensor) -> torch.Tensor:
        """float64 scores ``[b, N]`` of the query ``rows`` against the whole gallery.

        In leave-one-out mode each query's own entry is ``-inf``.
        """
        if self._g64 is None:
            self._g64 = self.g.to(torch.float64)
        q64 = self.q[rows].to(torch.float64)
        scores = q64 @ self._g64.T
        if self.metric == "euclidean":
            scores = 2 * scores - self._g_sq[None, :] - (q64**2).sum(1, keepdim=True)
        if self.leave_one_out:
            scores[torch.arange(rows.numel(), device=rows.device), rows] = -torch.inf
        return scores

    def approx_scores(self, rows: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """float32 scores ``[b, N]`` of the query ``rows`` against the whole gallery, each within
        :meth:`score_bound` of the exact score (``-inf`` for a query's own entry in
        leave-one-out mode).

        Args:
            rows: ``[b]`` query row indices.
            out: optional float32 buffer with at least ``b`` rows of ``N`` columns, reused across
                calls (a fresh ``[b, N]`` block per call costs page faults on large galleries).
        """
        q = self.q[rows]
        scores = q @ self.g.T if out is None else torch.mm(q, self.g.T, out=out[: rows.numel()])
        if self.metric == "euclidean":
            q_sq = (q**2).sum(1, keepdim=True)
            scores.mul_(2).sub_(self._g_sq32[None, :]).sub_(q_sq)
        if self.leave_one_out:
            scores[torch.arange(rows.numel(), device=rows.device), rows] = -torch.inf
        return scores

    def score_bound(self, rows: torch.Tensor) -> torch.Tensor:
        """``[b]`` float64 ``eps``: every float32 score of a query row (from the torch product or
        the FAISS index) is within ``eps`` of its exact score (see the module docstring)."""
        return self._eps(rows)

    def gallery64(self) -> torch.Tensor:
        """The gallery in float64 (created on first use)."""
        if self._g64 is None:
            self._g64 = self.g.to(torch.float64)
        return self._g64

    def exact_block_scores(
        self, rows: torch.Tensor, which: torch.Tensor, columns: torch.Tensor
    ) -> torch.Tensor:
        """float64 exact scores ``[P]`` of the pairs ``(rows[which[p]], columns[p])`` (the
        arithmetic of the re-scoring in :meth:`topk`, so both give the same values)."""
        g64 = self.gallery64()
        q64 = self.q[rows].to(torch.float64)
        step = max(1, _RESCORE_ENTRIES // 4 // self.q.shape[1])
        parts = []
        for i, j in zip(which.split(step), columns.split(step), strict=True):
            parts.append(candidate_scores(q64[i], g64[j], self.metric))
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.float64)

    def topk(
        self, rows: torch.Tensor, k: int, with_scores: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The exact top ``k`` of the query ``rows``.

        Returns:
            ``(indices [b, k], scores [b, k] float64)``; scores are None when ``with_scores``
            is False, which skips re-scoring the candidates whose float32 scores are more than
            ``2 eps`` apart from their neighbours in the list (their order is already exact).

        The candidate generators return rows sorted by float32 score, descending; only rows
        with near-ties are re-sorted.
        """
        if not 1 <= k <= self.n_available:
            raise PairLossError(
                f"k: got {k}; expected 1 <= k <= {self.n_available}, the number of gallery "
                "items each query is ranked against"
            )
        if k * _WIDE_LIST >= self.n_available:
            return self._full_topk(rows, k, with_scores)
        width = min(k + _EXTRA_CANDIDATES, self.n_available)
        if self.backend == "faiss":
            approx, candidates, lowest = self._faiss_candidates(rows, width)
        else:
            approx, candidates, lowest = self._torch_candidates(rows, width)
        eps = self._eps(rows)[:, None]
        close = (approx[:, :-1] - approx[:, 1:]) <= 2 * eps
        near = torch.zeros_like(approx, dtype=torch.bool)
        near[:, :-1] |= close
        near[:, 1:] |= close
        key = approx.clone()
        key[near] = self._rescore(rows[:, None].expand_as(near)[near], candidates[near])
        lower = torch.where(near, key, approx - eps)
        mixed = near.any(dim=1).nonzero().flatten()
        perm = rule_order(key[mixed], candidates[mixed])
        candidates[mixed] = candidates[mixed].gather(1, perm)
        lower[mixed] = lower[mixed].gather(1, perm)
        indices, lower = candidates[:, :k].contiguous(), lower[:, :k]
        if width < self.n_available:
            uncertain = lower.min(dim=1).values <= lowest + eps[:, 0]
            for part in self.full_blocks(uncertain.nonzero().flatten()):
                indices[part] = ordered_topk(self.full_scores(rows[part]), k)[1]
        if not with_scores:
            return indices, None
        scores = self._rescore(rows[:, None].expand_as(indices).flatten(), indices.flatten())
        return indices, scores.view_as(indices)

    def _full_topk(
        self, rows: torch.Tensor, k: int, with_scores: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`topk` from full float64 score rows: for lists longer than ``N / 16`` one
        float64 product per block costs less than re-scoring every listed pair one by one."""
        indices = torch.empty(rows.numel(), k, dtype=torch.long, device=rows.device)
        scores = torch.empty(rows.numel(), k, dtype=torch.float64, device=rows.device)
        for part in self.full_blocks(torch.arange(rows.numel(), device=rows.device)):
            scores[part], indices[part] = ordered_topk(self.full_scores(rows[part]), k)
        return indices, scores if with_scores else None

    def _eps(self, rows: torch.Tensor) -> torch.Tensor:
        q_norm = self.q[rows].to(torch.float64).norm(dim=1)
        if self.metric == "euclidean":
            scale = (q_norm + self._g_norm_max) ** 2
        else:
            scale = q_norm * self._g_norm_max
        return 2 * (self.q.shape[1] + 4) * _UNIT_ROUNDOFF * scale

    def _rescore(self, query_rows: torch.Tensor, gallery_rows: torch.Tensor) -> torch.Tensor:
        """float64 scores of the pairs ``(query_rows[p], gallery_rows[p])``, shape ``[P]``."""
        step = max(1, _RESCORE_ENTRIES // self.q.shape[1])
        parts = [
            candidate_scores(self.q[i], self.g[j], self.metric)
            for i, j in zip(query_rows.split(step), gallery_rows.split(step), strict=True)
        ]
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.float64)

    def _torch_candidates(
        self, rows: torch.Tensor, width: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        values, indices = self.approx_scores(rows).topk(width, dim=1)
        values = values.to(torch.float64)
        return values, indices, values[:, -1]

    def _faiss_candidates(
        self, rows: torch.Tensor, width: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._index is None:
            faiss = _faiss()
            dim = self.g.shape[1]
            self._index = (
                faiss.IndexFlatL2(dim) if self.metric == "euclidean" else faiss.IndexFlatIP(dim)
            )
            self._index.add(self.g.cpu().numpy())
        fetch = width + int(self.leave_one_out)
        values, indices = self._index.search(self.q[rows].cpu().numpy(), fetch)
        values = torch.from_numpy(values).to(self.q.device, torch.float64)
        indices = torch.from_numpy(indices).to(self.q.device, torch.long)
        if self.metric == "euclidean":
            values = -values
        lowest = values[:, -1]
        if self.leave_one_out:
            keep = indices != rows[:, None]
            keep[keep.all(dim=1), -1] = False
            values = values[keep].view(rows.numel(), width)
            indices = indices[keep].view(rows.numel(), width)
        return values, indices, lowest


def knn(
    query: torch.Tensor,
    gallery: torch.Tensor | None = None,
    k: int = 10,
    metric: str = "cosine",
    backend: str = "auto",
    chunk_size: int | None = None,
) -> Neighbors:
    """Exact k nearest neighbours of each query row, in (score desc, gallery index asc) order.

    Args:
        query: ``[Q, D]`` floating-point embeddings.
        gallery: ``[N, D]`` embeddings; ``None`` searches the queries among themselves,
            leaving each query's own row out.
        k: neighbours per query, ``1 <= k <= N`` (``N - 1`` leave-one-out).
        metric: ``"cosine"`` (default), ``"euclidean"`` or ``"dot"``; see the module docstring
            for the score of each and for how exactness and ties are guaranteed.
        backend: ``"torch"`` (chunked matrix products), ``"faiss"`` (exact flat index) or
            ``"auto"`` (FAISS when installed and ``Q * N >= 2**26``). Both give identical output.
        chunk_size: query rows per block (default ``2**24 // N`` for torch, 2048 for FAISS).

    Returns:
        :class:`Neighbors` with ``indices [Q, k]`` and float64 ``scores [Q, k]``.
    """
    search = ExactSearch(query, gallery, metric, backend, chunk_size)
    if isinstance(k, bool) or not isinstance(k, int):
        raise PairLossError(f"k: expected an int, got {k!r}")
    parts = [search.topk(rows, k) for rows in search.blocks()]
    scores = torch.cat([p[1] for p in parts])
    if search.score_scale != 1.0:
        scores = scores * search.score_scale
    return Neighbors(torch.cat([p[0] for p in parts]), scores)
