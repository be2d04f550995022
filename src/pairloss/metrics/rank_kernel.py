"""Compiled exact ranks of the relevant items: one pass over each float32 score row.

Used by :func:`pairloss.metrics.retrieval.relevant_ranks` for CPU tensors when ``numba`` is
installed (``pip install pairloss[metrics]``); other devices, or no ``numba``, take the torch
path (:func:`pairloss.metrics.retrieval.relevant_ranks_torch`). Both give the ranks of the same
definition under the same bound.

For a query row with float32 scores ``s_i`` (each within ``eps`` of its exact score, see
:meth:`pairloss.metrics.neighbors.ExactSearch.score_bound`) and relevant items ``m`` with exact
float64 scores ``key_m``:

* the *window* of ``m`` is ``[key_m - eps, key_m + eps]``: an item whose float32 score lies
  above (below) it scores exactly above (below) ``key_m``. (``eps`` is twice the float32
  forward-error bound, which covers the float64 rounding of ``key_m`` and of its window.)
* The items at or above the lowest window are compacted (one branch-free pass). For each, the
  number ``p`` of windows it lies above comes from a table of cells (a non-decreasing map of the
  score, 8 cells per window) and, where a window ends inside its cell, a binary search over
  the sorted upper window ends. An item inside no window is only counted (``cnt[p]``); an item
  inside a window is *near*.
* Near items that are not relevant are scored exactly and merged with the relevant items in
  ranking order (exact score descending, gallery index ascending).

``rank_m = 1 + #(counted items above the window of m) + #(near and relevant items ahead of m)``.

The exact score of a pair is computed in float64 from the float32 coordinates: the sum of the
products ``q_d g_d`` (of ``-(q_d - g_d)^2`` for the Euclidean score) in coordinate order.
Memory beyond the score block: ``O(N)`` per call. The compiled loops release the GIL, so
calls on different blocks run in parallel threads.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

EUCLIDEAN, INNER = 0, 1
_CELLS_PER_WINDOW = 8


_jit = numba.njit(nogil=True, cache=True)


@_jit
def _exact(q, row, g, col, kind):
    """float64 score of ``(q[row], g[col])``, summed in coordinate order."""
    total = 0.0
    if kind == EUCLIDEAN:
        for d in range(q.shape[1]):
            diff = np.float64(q[row, d]) - np.float64(g[col, d])
            total += diff * diff
        return -total
    for d in range(q.shape[1]):
        total += np.float64(q[row, d]) * np.float64(g[col, d])
    return total


@_jit
def _count_below(sorted_values, x, lo, hi):
    """Entries of the ascending ``sorted_values`` strictly below ``x``, known to lie in
    ``[lo, hi]``."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if sorted_values[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@_jit
def _cell(s, floor, scale, n_cells):
    """Cell ``0 .. n_cells - 1`` of a score: a non-decreasing function of ``s``."""
    return int(min(max((s - floor) * scale, 0.0), n_cells - 1.0))


@_jit
def _ranks_of_block(scores, q, g, cols, table, table_rows, n_members, eps, kind, out):
    b, n = scores.shape
    kept = np.empty(n + 1, dtype=np.int32)
    near_cols = np.empty(n, dtype=np.int64)
    near_keys = np.empty(n, dtype=np.float64)
    for r in range(b):
        m = n_members[r]
        keys = np.empty(m, dtype=np.float64)
        for t in range(m):
            keys[t] = _exact(q, r, table, table_rows[r, t], kind)
        upper = keys + eps[r]
        by_upper = np.argsort(upper)
        upper_sorted = upper[by_upper]
        # lowest lower window end among the windows at and above each position
        lowest = np.empty(m + 1, dtype=np.float64)
        lowest[m] = np.inf
        for t in range(m - 1, -1, -1):
            lowest[t] = min(lowest[t + 1], keys[by_upper[t]] - eps[r])
        floor = lowest[0]
        # below_cell[c] (below_cell[c + 1]): windows whose upper end lies in a lower cell than c
        # (in cell c or lower); the windows below any score in cell c number between the two
        n_cells = _CELLS_PER_WINDOW * m
        scale = n_cells / max(upper_sorted[m - 1] - floor, 1e-300)
        below_cell = np.zeros(n_cells + 1, dtype=np.int64)
        for t in range(m):
            below_cell[_cell(upper_sorted[t], floor, scale, n_cells) + 1] += 1
        for c in range(n_cells):
            below_cell[c + 1] += below_cell[c]
        # the items at or above a float32 bound <= floor, compacted without a branch per item
        bound = np.float32(floor)
        if np.float64(bound) > floor:
            bound = np.nextafter(bound, np.float32(-np.inf))
        row = scores[r]
        n_kept = 0
        for i in range(n):
            kept[n_kept] = i
            n_kept += row[i] >= bound
        # cnt[p]: items outside every window, above exactly p of them
        cnt = np.zeros(m + 1, dtype=np.int64)
        n_near = 0
        for j in range(n_kept):
            i = kept[j]
            s = np.float64(row[i])
            c = _cell(s, floor, scale, n_cells)
            p = _count_below(upper_sorted, s, below_cell[c], below_cell[c + 1])
            if lowest[p] <= s:
                near_cols[n_near] = i
                n_near += 1
            else:
                cnt[p] += 1
        above = np.empty(m, dtype=np.int64)
        running = 0
        for t in range(m - 1, -1, -1):
            running += cnt[t + 1]
            above[by_upper[t]] = running
        # near items that are not relevant, scored exactly (columns ascending)
        k = 0
        for j in range(n_near):
            col = near_cols[j]
            pos = _count_below(cols[r], col, 0, m)
            if pos < m and cols[r, pos] == col:
                continue
            near_cols[k] = col
            near_keys[k] = _exact(q, r, g, col, kind)
            k += 1
        # merge both lists in ranking order: exact score descending, index ascending
        near_order = np.argsort(-near_keys[:k], kind="mergesort")
        rel_order = np.argsort(-keys, kind="mergesort")
        j = 0
        for t in range(m):
            a = rel_order[t]
            while j < k:
                c = near_order[j]
                key = near_keys[c]
                if key > keys[a] or (key == keys[a] and near_cols[c] < cols[r, a]):
                    j += 1
                else:
                    break
            out[r, t] = 1 + above[a] + t + j


def relevant_ranks_of_block(
    scores: torch.Tensor,
    query: torch.Tensor,
    gallery: torch.Tensor,
    members: torch.Tensor,
    valid: torch.Tensor,
    table: torch.Tensor,
    table_rows: torch.Tensor,
    eps: torch.Tensor,
    euclidean: bool,
) -> torch.Tensor:
    """Exact 1-based ranks of the relevant items of a block of query rows (CPU tensors).

    Args:
        scores: float32 ``[b, N]`` scores, each within ``eps`` of its exact score (``-inf``
            for an item that is never ranked, such as the query itself in leave-one-out).
        query: float32 ``[b, D]`` rows the scores come from; ``gallery`` float32 ``[N, D]``.
        members: ``[b, M]`` gallery indices of the relevant items, ``valid`` ``[b, M]`` which
            of them count (at least one per row).
        table, table_rows: float32 ``[T, D]`` and ``[b, M]``: the vector of member
            ``members[r, t]`` is ``table[table_rows[r, t]]`` (the gallery itself, or a copy
            ordered so that the members of a row are read contiguously).
        eps: float64 ``[b]`` bounds.
        euclidean: score ``-||q - g||^2`` instead of ``<q, g>``.

    Returns:
        ``[b, M]`` int64 ranks, ascending along each row, padded with ``N + 1``.
    """
    b, n = scores.shape
    cols, order = torch.where(valid, members, n).sort(dim=1)
    out = torch.full((b, members.shape[1]), n + 1, dtype=torch.int64)
    _ranks_of_block(
        scores.numpy(),
        query.contiguous().numpy(),
        gallery.numpy(),
        cols.numpy(),
        table.numpy(),
        table_rows.gather(1, order).numpy(),
        valid.sum(dim=1).numpy(),
        eps.to(torch.float64).numpy(),
        EUCLIDEAN if euclidean else INNER,
        out.numpy(),
    )
    return out
