"""Relations: which (anchor, candidate) cells are positive, negative or ignored.

A relation never stores an anchors x candidates matrix: :meth:`Relation.block` builds the masks
for one block of anchor rows on demand, so the blocked engine stays within O(block x N) memory.
Self-comparisons (anchor i against candidate i when the candidates are the anchors themselves)
are neither positive nor negative.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import PairLossError

# above this fraction of positive cells a sparse list of positives costs more than a mask
SPARSE_MAX_POS_FRACTION = 0.25


@dataclass
class BlockPairs:
    """The relation of one block of ``b`` anchor rows against ``n`` candidates, stored sparsely:
    the few positive cells as a list, every other cell negative except the ``void`` ones
    (self-comparisons). The fused objectives read this form instead of two [b, n] masks.

    Attributes:
        pos_flat: [P] flat indices ``row * n + col`` of the positive cells, grouped by row.
        pos_rows: [P] the row (0..b-1) of each positive cell.
        void_flat: [V] flat indices of the cells that are neither positive nor negative.
        n_pos: [b] positives per row.
        n_neg: [b] negatives per row.
        start: the anchor index of the block's first row.
    """

    pos_flat: torch.Tensor
    pos_rows: torch.Tensor
    void_flat: torch.Tensor
    n_pos: torch.Tensor
    n_neg: torch.Tensor
    start: int = 0

    @property
    def n_rows(self) -> int:
        return int(self.n_pos.shape[0])


class Relation:
    """Base class. ``n_anchors`` rows, ``n_candidates`` columns; ``block(start, end)`` returns
    boolean masks ``(pos, neg)`` of shape [end - start, n_candidates]; ``pairs(start, end)``
    returns the same relation as :class:`BlockPairs`, or None where that form does not apply
    (then the engine uses the masks)."""

    n_anchors: int
    n_candidates: int

    def block(self, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def pairs(self, start: int, end: int) -> BlockPairs | None:
        return None


def _self_cells(start: int, end: int, n_candidates: int, device) -> torch.Tensor:
    """Flat indices (within the block) of the cells (i, i) of anchor rows start..end-1."""
    rows = torch.arange(end - start, device=device)
    rows = rows[rows + start < n_candidates]
    return rows * n_candidates + rows + start


def _block_pairs(
    ptr: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    start: int,
    end: int,
    n: int,
    exclude_self: bool,
) -> BlockPairs:
    """Slice the row-grouped positive cells (``ptr`` [B + 1] row offsets) to one block."""
    lo, hi = int(ptr[start]), int(ptr[end])
    block_rows = rows[lo:hi] - start
    n_pos = ptr[start + 1 : end + 1] - ptr[start:end]
    void = (
        _self_cells(start, end, n, cols.device)
        if exclude_self
        else torch.zeros(0, dtype=torch.long, device=cols.device)
    )
    n_void = torch.zeros_like(n_pos)
    if exclude_self:
        n_void[: void.shape[0]] = 1
    return BlockPairs(
        pos_flat=block_rows * n + cols[lo:hi],
        pos_rows=block_rows,
        void_flat=void,
        n_pos=n_pos,
        n_neg=n - n_pos - n_void,
        start=start,
    )


def _drop_self(pos: torch.Tensor, neg: torch.Tensor, start: int) -> None:
    """Clear the cells (i, i) of a block whose first row is anchor ``start`` (in place)."""
    b = pos.shape[0]
    rows = torch.arange(b, device=pos.device)
    cols = rows + start
    inside = cols < pos.shape[1]
    pos[rows[inside], cols[inside]] = False
    neg[rows[inside], cols[inside]] = False


class LabelRelation(Relation):
    """Positive where labels match, negative where they differ.

    Args:
        labels: [B] integer class labels (or sample ids for multi-view batches: two views of
            one sample share an id).
        ref_labels: [N] labels of the candidates; ``None`` means the candidates are the anchors.
        exclude_self: drop the diagonal; defaults to ``ref_labels is None``.
        ignore: optional [B, N] boolean mask of cells to drop from both masks.
    """

    def __init__(
        self,
        labels: torch.Tensor,
        ref_labels: torch.Tensor | None = None,
        exclude_self: bool | None = None,
        ignore: torch.Tensor | None = None,
    ) -> None:
        self.labels = labels
        self.ref_labels = labels if ref_labels is None else ref_labels
        self.exclude_self = (ref_labels is None) if exclude_self is None else exclude_self
        self.n_anchors = labels.shape[0]
        self.n_candidates = self.ref_labels.shape[0]
        if ignore is not None and tuple(ignore.shape) != (self.n_anchors, self.n_candidates):
            raise PairLossError(
                f"ignore: expected a boolean mask of shape ({self.n_anchors}, "
                f"{self.n_candidates}), got {tuple(ignore.shape)}"
            )
        self.ignore = None if ignore is None else ignore.bool()
        self._cells: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None | bool = False

    def _positive_cells(self):
        """(ptr, rows, cols) of all positive cells grouped by anchor row, or None when they are
        too many for a sparse list. Built once from the candidates sorted by label."""
        if self._cells is not False:
            return self._cells
        labels, ref = self.labels, self.ref_labels
        order = torch.argsort(ref, stable=True)
        sorted_ref = ref[order]
        lo = torch.searchsorted(sorted_ref, labels)
        counts = torch.searchsorted(sorted_ref, labels, right=True) - lo
        total = int(counts.sum())
        if total > SPARSE_MAX_POS_FRACTION * self.n_anchors * self.n_candidates:
            self._cells = None
            return None
        rows = torch.repeat_interleave(torch.arange(self.n_anchors, device=labels.device), counts)
        first = torch.cumsum(counts, 0) - counts
        offsets = torch.arange(total, device=labels.device) - first[rows]
        cols = order[lo[rows] + offsets]
        if self.exclude_self:
            keep = cols != rows
            rows, cols = rows[keep], cols[keep]
            counts = torch.bincount(rows, minlength=self.n_anchors)
        ptr = torch.zeros(self.n_anchors + 1, dtype=torch.long, device=labels.device)
        torch.cumsum(counts, 0, out=ptr[1:])
        self._cells = (ptr, rows, cols)
        return self._cells

    def pairs(self, start: int, end: int) -> BlockPairs | None:
        if self.ignore is not None:
            return None
        cells = self._positive_cells()
        if cells is None:
            return None
        ptr, rows, cols = cells
        return _block_pairs(ptr, rows, cols, start, end, self.n_candidates, self.exclude_self)

    def block(self, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        same = self.labels[start:end, None] == self.ref_labels[None, :]
        pos, neg = same, ~same
        if self.ignore is not None:
            keep = ~self.ignore[start:end]
            pos, neg = pos & keep, neg & keep
        if self.exclude_self:
            _drop_self(pos, neg, start)
        return pos, neg


class DiagonalRelation(Relation):
    """Paired modalities: anchor i's positive is candidate i, every other candidate is negative
    (CLIP-style image/text batches)."""

    def __init__(self, n_anchors: int, n_candidates: int | None = None, device=None) -> None:
        self.n_anchors = n_anchors
        self.n_candidates = n_anchors if n_candidates is None else n_candidates
        self.device = device

    def block(self, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.arange(start, end, device=self.device)[:, None]
        cols = torch.arange(self.n_candidates, device=self.device)[None, :]
        pos = rows == cols
        return pos, ~pos

    def pairs(self, start: int, end: int) -> BlockPairs | None:
        n = self.n_candidates
        diagonal = torch.arange(min(self.n_anchors, n), device=self.device)
        ptr = torch.arange(self.n_anchors + 1, device=self.device).clamp_max(n)
        return _block_pairs(ptr, diagonal, diagonal, start, end, n, False)


def _check_index(idx: torch.Tensor, size: int, name: str) -> torch.Tensor:
    if not isinstance(idx, torch.Tensor) or idx.dim() != 1:
        raise PairLossError(f"{name}: expected a 1-D tensor of indices")
    if idx.is_floating_point() or idx.dtype == torch.bool:
        raise PairLossError(f"{name}: expected integer indices, got dtype {idx.dtype}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= size):
        raise PairLossError(
            f"{name}: indices must lie in [0, {size}), got range "
            f"[{int(idx.min())}, {int(idx.max())}]"
        )
    return idx.long()


def listed_cells(rows: torch.Tensor, cols: torch.Tensor, n_candidates: int, device=None):
    """Flat indices ``row * n_candidates + col`` of listed (row, column) pairs, in list order."""
    return rows.to(device) * n_candidates + cols.to(device)


def cells_of_both_kinds(pos_cells: torch.Tensor, neg_cells: torch.Tensor) -> torch.Tensor:
    """The cells of the sorted distinct ``pos_cells`` that ``neg_cells`` also holds."""
    if not (pos_cells.numel() and neg_cells.numel()):
        return pos_cells[:0]
    return pos_cells[torch.isin(pos_cells, neg_cells)]


class PairListRelation(Relation):
    """Explicit pairs: positives (a1[k], p[k]) and negatives (a2[k], n[k]).

    Accepts pytorch-metric-learning's ``indices_tuple`` layouts: pairs ``(a1, p, a2, n)`` or
    triplets ``(a, p, n)`` (read as positive pairs (a, p) and negative pairs (a, n)). The
    relation is a set of cells: a pair listed several times is one cell (the losses that count
    each listing, as pytorch-metric-learning's pair-based losses do, read the list itself: see
    :func:`pairloss.losses.base.read_listings`). A cell listed as both positive and negative is
    an error.
    """

    def __init__(self, indices_tuple, n_anchors: int, n_candidates: int, device=None) -> None:
        if not isinstance(indices_tuple, (tuple, list)) or len(indices_tuple) not in (3, 4):
            raise PairLossError(
                "indices_tuple: expected (anchors, positives, negatives) or "
                "(anchors1, positives, anchors2, negatives) index tensors"
            )
        if len(indices_tuple) == 3:
            a, p, n = indices_tuple
            a1, a2 = a, a
        else:
            a1, p, a2, n = indices_tuple
        a1 = _check_index(a1, n_anchors, "indices_tuple[anchors]")
        a2 = _check_index(a2, n_anchors, "indices_tuple[anchors]")
        p = _check_index(p, n_candidates, "indices_tuple[positives]")
        n = _check_index(n, n_candidates, "indices_tuple[negatives]")
        if a1.shape != p.shape or a2.shape != n.shape:
            raise PairLossError("indices_tuple: anchor and partner index tensors differ in length")
        self.n_anchors, self.n_candidates = n_anchors, n_candidates
        self.pos_cells = torch.unique(listed_cells(a1, p, n_candidates, device))
        self.neg_cells = torch.unique(listed_cells(a2, n, n_candidates, device))
        both = cells_of_both_kinds(self.pos_cells, self.neg_cells)
        if both.numel():
            k = int(both[0])
            raise PairLossError(
                f"indices_tuple: pair ({k // n_candidates}, {k % n_candidates}) is listed as "
                "both positive and negative; expected each pair to be one or the other"
            )

    @classmethod
    def of_cells(
        cls, pos_cells: torch.Tensor, neg_cells: torch.Tensor, n_anchors: int, n_candidates: int
    ) -> PairListRelation:
        """The relation of cells already read from a list: ``pos_cells`` / ``neg_cells`` sorted
        and distinct flat indices ``row * n_candidates + col`` (as :func:`torch.unique` gives
        them), no cell in both (:func:`cells_of_both_kinds` is empty)."""
        relation = cls.__new__(cls)
        relation.n_anchors, relation.n_candidates = n_anchors, n_candidates
        relation.pos_cells, relation.neg_cells = pos_cells, neg_cells
        return relation

    def _mask(self, cells: torch.Tensor, start: int, end: int) -> torch.Tensor:
        lo = torch.searchsorted(cells, torch.tensor(start * self.n_candidates, device=cells.device))
        hi = torch.searchsorted(cells, torch.tensor(end * self.n_candidates, device=cells.device))
        inside = cells[lo:hi] - start * self.n_candidates
        mask = torch.zeros((end - start) * self.n_candidates, dtype=torch.bool, device=cells.device)
        mask[inside] = True
        return mask.view(end - start, self.n_candidates)

    def block(self, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._mask(self.pos_cells, start, end), self._mask(self.neg_cells, start, end)


def view_ids(n_samples: int, n_views: int = 2, device=None) -> torch.Tensor:
    """Sample ids of a multi-view batch laid out view by view: [0..n-1, 0..n-1, ...].

    Two views of one sample share an id, so ``LabelRelation(view_ids(n, 2))`` makes the other
    view of each sample its positive and every other row a negative (SimCLR / NT-Xent layout).
    """
    if n_samples < 1 or n_views < 1:
        raise PairLossError(
            f"n_samples, n_views: expected positive counts, got {n_samples}, {n_views}"
        )
    return torch.arange(n_samples, device=device).repeat(n_views)


class TargetColumnRelation(Relation):
    """One target column per anchor row: cell (i, targets[i]) is positive, every other cell of
    the row (its own column included) negative; nothing is void. The softmax cross-entropy of a
    row against a chosen column (pytorch-metric-learning's ``InstanceLoss``).

    Args:
        targets: [B] column of each row, in [0, n_candidates).
        n_candidates: N.
    """

    def __init__(self, targets: torch.Tensor, n_candidates: int) -> None:
        self.targets = _check_index(targets, n_candidates, "targets")
        self.n_anchors, self.n_candidates = targets.shape[0], n_candidates

    def block(self, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        cols = torch.arange(self.n_candidates, device=self.targets.device)
        pos = cols[None, :] == self.targets[start:end, None]
        return pos, ~pos

    def pairs(self, start: int, end: int) -> BlockPairs | None:
        t = self.targets
        ptr = torch.arange(self.n_anchors + 1, device=t.device)
        rows = torch.arange(self.n_anchors, device=t.device)
        return _block_pairs(ptr, rows, t, start, end, self.n_candidates, False)
