"""Triplet row objectives: batch-all triplet margin (exact, without enumerating triplets) and
batch-hard triplet (Hermans et al. 2017).

All objectives work on a distance-like score ``t`` (low = close): ``t = d`` for distances and
``t = -s`` for similarities, so that a triplet (a, p, n) violates the margin when
``t_ap - t_an + margin > 0`` (for cosine this is ``s_an - s_ap + margin``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..relations import BlockPairs
from .terms import (
    RowScale,
    RowTerms,
    hide_non_negatives_,
    masked_max,
    masked_min,
    segment_max,
    segment_sum,
)

#: Upper bound on the cells of one [b, chunk, N] slab in the chunked batch-all path.
CHUNK_CELLS = 1 << 22
#: The fused batch-all path screens each row in strided groups of this many cells (columns
#: j, j + N / SCREEN, j + 2 N / SCREEN, ...) by their minimum before any per-cell search.
SCREEN = 16
#: Above this fraction of screened-in cells the fused batch-all path searches the whole block.
DENSE_FRACTION = 0.25
#: F.softplus returns x (with derivative 1) above this argument.
SOFTPLUS_THRESHOLD = 20.0

Window = tuple[float, float]


def distance_like(s: torch.Tensor, is_distance: bool) -> torch.Tensor:
    """Scores in 'low is close' form: ``s`` for distances, ``-s`` for similarities."""
    return s if is_distance else -s


def _zero_terms(s: torch.Tensor) -> list[RowTerms]:
    z = s.sum(dim=1) * 0.0
    return [RowTerms(z, z.detach().clone(), z.detach().clone())]


def batch_all_hinge_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    margin: float,
    is_distance: bool,
    window: Window | None = None,
) -> list[RowTerms]:
    """Sum over all triplets (i, p, n), p in P(i), n in N(i), of [t_ip - t_in + margin]_+.

    With ``window = (low, high)`` only triplets with low < t_in - t_ip <= high count (the
    :class:`~pairloss.mining.TripletMarginMiner` selection). Per row the negatives are sorted
    and prefix-summed once; for each positive p the active negatives (t_in < t_ip + margin,
    inside the window) form one contiguous run of the sorted row, found by binary search, so
    the row's sum is ``sum_p c_p (t_ip + margin) - (prefix[hi_p] - prefix[lo_p])``.
    O(b N log N) time and O(b N) memory; the gradient is the exact (sub)gradient through
    sort/gather/cumsum.

    Terms: ``n_terms`` = number of triplets (in the window), ``n_nonzero`` = number of
    violating ones.
    """
    if s.shape[1] == 0:
        return _zero_terms(s)
    t = distance_like(s, is_distance)
    n_cols = t.shape[1]
    n_neg = neg.sum(dim=1)
    inf = float("inf")
    sorted_neg, _ = t.masked_fill(~neg, inf).sort(dim=1)
    # centre each row on its median negative: keeps prefix sums small (rounding), cancels exactly
    mid = (n_neg // 2).clamp(max=n_cols - 1)[:, None]
    ref = sorted_neg.gather(1, mid).detach()
    ref = torch.where(torch.isfinite(ref), ref, torch.zeros_like(ref))
    finite = torch.isfinite(sorted_neg)
    centred = torch.where(finite, sorted_neg - ref, torch.zeros_like(sorted_neg))
    prefix = F.pad(centred.cumsum(dim=1), (1, 0))

    idx, slot_ok = pack_positives(pos)
    t_ap = t.gather(1, idx)
    key = t_ap.detach()
    sorted_key = sorted_neg.detach()
    bound = (key + margin).contiguous()
    upper = torch.searchsorted(sorted_key, bound, side="left")  # t_in < t_ip + margin
    low, high = window if window is not None else (-inf, inf)
    if low > -inf:
        lower = torch.searchsorted(sorted_key, (key + low).contiguous(), side="right")
    else:
        lower = torch.zeros_like(upper)
    if high < inf:
        in_high = torch.searchsorted(sorted_key, (key + high).contiguous(), side="right")
        upper = torch.where(bound <= key + high, upper, in_high)
    else:
        in_high = n_neg[:, None].expand_as(upper)
    upper = torch.maximum(upper, lower)
    zero = torch.zeros_like(upper)
    count = torch.where(slot_ok, upper - lower, zero)
    count_f = count.to(t.dtype)
    active_sum = prefix.gather(1, upper) - prefix.gather(1, lower)
    per_pos = count_f * (t_ap + margin - ref) - active_sum
    per_pos = torch.where(slot_ok, per_pos, torch.zeros_like(per_pos))
    n_terms = torch.where(slot_ok, (in_high - lower).clamp_min(0), zero)
    return [
        RowTerms(
            per_pos.sum(dim=1),
            n_terms.sum(dim=1).to(t.dtype),
            count_f.sum(dim=1),
        )
    ]


def pack_positives(pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Column indices of each row's positives packed to the left: ([b, P] long, [b, P] valid),
    P = the largest number of positives in a row (padding slots point at column 0)."""
    b = pos.shape[0]
    n_pos = pos.sum(dim=1)
    n_max = int(n_pos.max()) if b else 0
    rows, cols = pos.nonzero(as_tuple=True)
    starts = torch.cumsum(n_pos, 0) - n_pos
    slot = torch.arange(rows.shape[0], device=pos.device) - starts[rows]
    idx = torch.zeros((b, n_max), dtype=torch.long, device=pos.device)
    idx[rows, slot] = cols
    valid = torch.arange(n_max, device=pos.device)[None, :] < n_pos[:, None]
    return idx, valid


def batch_all_chunked_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    margin: float,
    is_distance: bool,
    smooth: bool,
    window: Window | None = None,
    window_scores: torch.Tensor | None = None,
    chunk_cells: int = CHUNK_CELLS,
) -> list[RowTerms]:
    """Sum over all triplets of softplus(t_ip - t_in + margin) (``smooth``) or the hinge.

    Used where the prefix-sum trick does not apply: the smooth loss, or a triplet window
    measured in another space (``window_scores``: the miner's distance-like scores [b, N],
    detached; ``None`` means ``t`` itself). Each row's positives are packed to the left, then
    processed in chunks of positive columns: one [b, chunk, N] slab at a time, at most about
    ``chunk_cells`` cells. Memory O(b N chunk); the loop runs over chunks, never rows.
    """
    if s.shape[1] == 0:
        return _zero_terms(s)
    t = distance_like(s, is_distance)
    b, n_cols = t.shape
    values = t.new_zeros(b)
    n_terms = t.new_zeros(b)
    n_nonzero = t.new_zeros(b)
    order, slot_ok = pack_positives(pos)
    n_max = order.shape[1]
    if n_max == 0:
        return [RowTerms(values + t.sum(dim=1) * 0.0, n_terms, n_nonzero)]
    inf = float("inf")
    # non-negatives at +inf and padding slots at -inf give v = -inf: a zero term, zero gradient
    t_neg = t.masked_fill(~neg, inf)
    t_ap = t.gather(1, order).masked_fill(~slot_ok, -inf)
    w = None
    if window is None:
        n_terms = (slot_ok.sum(dim=1) * neg.sum(dim=1)).to(t.dtype)
    else:
        w = t.detach() if window_scores is None else window_scores
        w_ap = w.gather(1, order)
        low, high = window
    step = max(1, chunk_cells // max(1, b * n_cols))
    for j in range(0, n_max, step):
        k = slice(j, j + step)
        v = t_ap[:, k, None] - t_neg[:, None, :] + margin
        loss = F.softplus(v) if smooth else F.relu(v)
        if w is not None:
            m = w[:, None, :] - w_ap[:, k, None]
            mask = slot_ok[:, k, None] & neg[:, None, :]
            if low > -inf:
                mask = mask & (m > low)
            if high < inf:
                mask = mask & (m <= high)
            loss = torch.where(mask, loss, torch.zeros_like(loss))
            n_terms = n_terms + mask.sum(dim=(1, 2)).to(t.dtype)
        values = values + loss.sum(dim=(1, 2))
        n_nonzero = n_nonzero + (loss > 0).sum(dim=(1, 2)).to(t.dtype)
    return [RowTerms(values, n_terms, n_nonzero)]


def batch_hard_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    margin: float,
    soft: bool,
    is_distance: bool,
) -> list[RowTerms]:
    """Per anchor i with at least one positive and one negative:

        [margin + max_p t_ip - min_n t_in]_+      (hinge)
        softplus(max_p t_ip - min_n t_in)          (soft margin)

    Other anchors give 0 and count as no term. One term per anchor.
    """
    t = distance_like(s, is_distance)
    valid = pos.any(dim=1) & neg.any(dim=1)
    hardest_pos = masked_max(t, pos)
    hardest_neg = masked_min(t, neg)
    zero = torch.zeros_like(hardest_pos)
    gap = torch.where(valid, hardest_pos, zero) - torch.where(valid, hardest_neg, zero)
    loss = F.softplus(gap) if soft else F.relu(gap + margin)
    return [RowTerms.per_anchor(loss, valid)]


def triplet_values(
    t_ap: torch.Tensor, t_an: torch.Tensor, margin: float, smooth: bool
) -> torch.Tensor:
    """Per-triplet loss of explicit triplets from distance-like scores."""
    v = t_ap - t_an + margin
    return F.softplus(v) if smooth else F.relu(v)


def _distance_like_into(s: torch.Tensor, work: torch.Tensor, is_distance: bool) -> torch.Tensor:
    """``work`` (a [b, N] buffer) filled with the distance-like scores of ``s``."""
    return work.copy_(s) if is_distance else torch.neg(s, out=work)


def _sorted_thresholds(
    thresholds: torch.Tensor, pairs: BlockPairs, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's thresholds (one per positive, in ``pairs`` order) sorted ascending in a
    [b, k] matrix whose first ``k - n_pos`` slots hold -inf. Returns (sorted thresholds, the
    sort permutation, each positive's unsorted slot, which sorted slots are real)."""
    b, rows, n_pos = pairs.n_rows, pairs.pos_rows, pairs.n_pos
    start = torch.cumsum(n_pos, 0) - n_pos
    slot = torch.arange(rows.shape[0], device=rows.device) - start[rows]
    padded = thresholds.new_full((b, k), float("-inf"))
    padded[rows, slot] = thresholds
    ordered, perm = padded.sort(dim=1)
    real = torch.arange(k, device=rows.device)[None, :] >= (k - n_pos)[:, None]
    return ordered, perm, slot, real


def _screened_cells(
    t: torch.Tensor, top: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]] | None:
    """The cells of ``t`` [b, N] that may lie below their row's ``top`` [b], as pieces
    ``(values [R, W] (a copy), rows [R] or None for all rows, flat cell indices [R, W])``; None
    when they are so many that the whole block is cheaper to search.

    Each row is cut into strided groups of :data:`SCREEN` cells (columns j + i * N // SCREEN);
    one pass of minima over the groups keeps the groups whose minimum is below ``top``. The
    N mod SCREEN last columns are always kept."""
    b, n = t.shape
    width = n // SCREEN
    main = width * SCREEN
    if width == 0:
        return None
    groups = t[:, :main].unflatten(1, (SCREEN, width))  # [b, SCREEN, width], a view
    hit = (groups.amin(dim=1) < top[:, None]).view(-1).nonzero().squeeze(1)
    if hit.shape[0] * SCREEN + b * (n - main) > DENSE_FRACTION * b * n:
        return None
    rows, j = hit // width, hit % width
    steps = torch.arange(SCREEN, device=t.device) * width
    pieces = [(groups[rows, :, j], rows, (rows * n + j)[:, None] + steps)]
    if main < n:
        cols = torch.arange(main, n, device=t.device)
        cells = torch.arange(b, device=t.device)[:, None] * n + cols
        pieces.append((t[:, main:].contiguous(), None, cells))
    return pieces


def batch_all_hinge_fused(
    s: torch.Tensor,
    pairs: BlockPairs,
    grad: torch.Tensor | None,
    scale: RowScale | None,
    margin: float,
    is_distance: bool,
) -> list[RowTerms]:
    """:func:`batch_all_hinge_rows` without a triplet window, on the sparse form of a block,
    with its gradient written into ``grad`` (see :class:`pairloss.engine.PairProblem`).

    Per anchor i with thresholds h_p = t_ip + margin (one per positive, few: sparse) the loss is
    sum_p sum_n [h_p - t_in]_+, and a triplet counts (is non-zero) iff t_in < h_p. The
    thresholds are sorted per row (padded with -inf to the block's largest positive count k).
    For a negative cell, c = k - #{h <= t_in} is the number of its active triplets, so
    dL/dt_in = -c; bucketing the negatives by #{h <= t_in} (counts and centred sums) and
    taking prefix sums over the buckets gives, for each positive, the number A_p of its active
    negatives and their sum: L_i = sum_p A_p h_p - sum of those t_in, dL/dt_ip = A_p,
    n_nonzero = sum_p A_p, n_terms = |P(i)| |N(i)|. Exact, with the same comparison as the
    mask objective, and no sort of the N columns.

    Dense work: one copy of the block into ``grad`` (positive and self cells at +inf), one pass
    of group minima that screens out the cells no threshold reaches, and zeroing ``grad``; the
    binary searches and scatters run on the screened-in cells only (on the whole block when more
    than :data:`DENSE_FRACTION` of it is screened in). Memory O(b N).
    """
    b, n = s.shape
    dtype = s.dtype
    n_terms = (pairs.n_pos * pairs.n_neg).to(dtype)
    k = int(pairs.n_pos.max()) if b else 0
    if k == 0 or n == 0:
        if grad is not None:
            grad.zero_()
        zero = s.new_zeros(b)
        return [RowTerms(zero, n_terms, zero)]
    sign = 1.0 if is_distance else -1.0
    work = grad if grad is not None else torch.empty_like(s)
    t = _distance_like_into(s, work, is_distance)
    thresholds = t.view(-1)[pairs.pos_flat] + margin
    hide_non_negatives_(t, pairs, float("inf"))
    ordered, perm, slot, real = _sorted_thresholds(thresholds, pairs, k)
    top = ordered[:, -1]
    ref = torch.where(torch.isfinite(top), top, 0.0)  # centres the sums (rounding)
    coef = None if grad is None else scale(0) * sign
    counts = s.new_zeros(b * (k + 1))
    sums = s.new_zeros(b * (k + 1))
    offsets = torch.arange(b, device=s.device) * (k + 1)
    pieces = _screened_cells(t, top)
    if pieces is None:
        # search the whole block in place: t -> centred values -> dL/ds
        idx = torch.searchsorted(ordered, t, right=True)
        bucket = idx.add_(offsets[:, None])
        counts.index_add_(0, bucket.view(-1), t.new_ones(1).expand(b * n))
        sums.index_add_(0, bucket.view(-1), t.sub_(ref[:, None]).view(-1))
        if grad is not None:
            torch.sub(bucket, (offsets + k)[:, None], out=bucket)
            grad.copy_(bucket).mul_(coef[:, None])
    else:
        if grad is not None:
            grad.zero_()
        for values, rows, cells in pieces:
            bounds = ordered if rows is None else ordered[rows]
            idx = torch.searchsorted(bounds, values, right=True)
            row_offsets = offsets[:, None] if rows is None else offsets[rows][:, None]
            centre = ref[:, None] if rows is None else ref[rows][:, None]
            bucket = (idx + row_offsets).view(-1)
            counts.index_add_(0, bucket, values.new_ones(1).expand(bucket.shape[0]))
            sums.index_add_(0, bucket, (values - centre).view(-1))
            if grad is not None:
                row_coef = coef[:, None] if rows is None else coef[rows][:, None]
                grad.view(-1)[cells.view(-1)] = ((idx - k).to(dtype) * row_coef).view(-1)
    active = counts.view(b, k + 1)[:, :k].cumsum(dim=1)  # A per sorted threshold
    below = sums.view(b, k + 1)[:, :k].cumsum(dim=1)
    per_slot = torch.where(real, active * (ordered - ref[:, None]) - below, 0.0)
    values = per_slot.sum(dim=1)
    n_nonzero = active.sum(dim=1)
    if grad is not None:
        unsorted = torch.empty_like(active).scatter_(1, perm, active)
        rows = pairs.pos_rows
        grad.view(-1).index_copy_(0, pairs.pos_flat, unsorted[rows, slot] * coef[rows])
    return [RowTerms(values, n_terms, n_nonzero)]


def _softplus_slope(x: torch.Tensor) -> torch.Tensor:
    """d softplus(x) / dx as F.softplus computes it (1 above its threshold)."""
    e = torch.exp(x.clamp_max(SOFTPLUS_THRESHOLD))
    return torch.where(x > SOFTPLUS_THRESHOLD, 1.0, e / (e + 1))


def _first_in_row(hit: torch.Tensor, flat: torch.Tensor, rows: torch.Tensor, b: int):
    """Per row, the smallest of ``flat`` where ``hit`` (-1 for rows with none)."""
    big = torch.iinfo(flat.dtype).max
    out = flat.new_full((b,), big)
    out.scatter_reduce_(0, rows, torch.where(hit, flat, big), reduce="amin")
    return torch.where(out == big, -1, out)


def _first_equal(t: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """Per row of ``t``, the first column equal to ``low``."""
    return (t == low[:, None]).to(torch.uint8).argmax(dim=1)


def _row_min(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row minima of ``t`` [b, N] (N > 0), the first column reaching each (as ``t.min(dim=1)``)
    and the rows where more than one cell reaches a finite minimum.

    One pass of minima over the strided groups of :data:`SCREEN` cells (cheaper than
    ``min(dim=1)`` with its indices), then the winning group's cells; rows with a tie (two
    groups, or two cells of the winning group) are settled exactly, row by row."""
    b, n = t.shape
    width = n // SCREEN
    main = width * SCREEN
    if width == 0:
        low, col = t.min(dim=1)
        tied = ((t == low[:, None]).sum(dim=1) > 1) & torch.isfinite(low)
        return low, col, tied.nonzero().squeeze(1)
    groups = t[:, :main].unflatten(1, (SCREEN, width))
    mins = groups.amin(dim=1)  # [b, width]
    if main < n:
        mins = torch.cat([mins, t[:, main:]], dim=1)
    low, g = mins.min(dim=1)
    in_group = g < width
    j = g.clamp_max(width - 1)
    cells = groups[torch.arange(b, device=t.device), :, j]  # [b, SCREEN]
    hit = cells == low[:, None]
    col = torch.where(in_group, j + hit.to(torch.uint8).argmax(dim=1) * width, main + g - width)
    n_equal = (mins == low[:, None]).sum(dim=1) + torch.where(in_group, hit.sum(dim=1) - 1, 0)
    tied = ((n_equal > 1) & torch.isfinite(low)).nonzero().squeeze(1)
    if tied.numel():
        col[tied] = _first_equal(t[tied], low[tied])
    return low, col, tied


def _negative_cells(
    t: torch.Tensor,
    low: torch.Tensor,
    col: torch.Tensor,
    tied: torch.Tensor,
    live: torch.Tensor,
    split_ties: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cells of the ``live`` rows that receive the hardest negative's gradient: (flat
    cells, their rows, cells per row). One per row (the first column ``col``) unless
    ``split_ties``, then every cell of a ``tied`` row that equals its minimum ``low``."""
    n = t.shape[1]
    count = torch.ones_like(low)
    single = torch.zeros_like(low, dtype=torch.bool)
    single[live] = True
    if split_ties and tied.numel():
        tied = tied[single[tied]]
    if not split_ties or tied.numel() == 0:
        return live * n + col[live], live, count
    same = t[tied] == low[tied][:, None]
    r, c = same.nonzero(as_tuple=True)
    count[tied] = same.sum(dim=1).to(low.dtype)
    single[tied] = False
    rows = single.nonzero().squeeze(1)
    cells = torch.cat([rows * n + col[rows], tied[r] * n + c])
    return cells, torch.cat([rows, tied[r]]), count


def batch_hard_fused(
    s: torch.Tensor,
    pairs: BlockPairs,
    grad: torch.Tensor | None,
    scale: RowScale | None,
    margin: float,
    soft: bool,
    is_distance: bool,
    split_ties: bool = True,
) -> list[RowTerms]:
    """:func:`batch_hard_rows` on the sparse form of a block, with its gradient written into
    ``grad`` (see :class:`pairloss.engine.PairProblem`).

    The hardest positive of each row is a segment max over the (sparse) positives; the hardest
    negative is the row minimum of a copy of the block (in ``grad``) whose positive and self
    cells are +inf. The gradient has two non-zero cells per row (more only with ties): they are
    handed over as cells (:meth:`RowScale.put_cells`), ``grad`` only serves as scratch. ``split_ties`` shares a tied extreme's gradient
    equally among the tied cells (as the mask objective's max/min); otherwise it goes to the
    first tied column (as :class:`~pairloss.mining.BatchHardMiner`, which keeps one cell per
    row). The column of each row minimum comes from :func:`_row_min`.
    """
    b, n = s.shape
    dtype = s.dtype
    inf = float("inf")
    sign = 1.0 if is_distance else -1.0
    valid = (pairs.n_pos > 0) & (pairs.n_neg > 0)
    work = grad if grad is not None else torch.empty_like(s)
    t = _distance_like_into(s, work, is_distance)
    rows = pairs.pos_rows
    t_pos = t.view(-1)[pairs.pos_flat]
    hardest_pos = segment_max(t_pos, rows, b, -inf)
    hide_non_negatives_(t, pairs, float("inf"))
    if n == 0:
        hardest_neg = s.new_full((b,), inf)
        neg_col = tied = torch.zeros(0, dtype=torch.long, device=s.device)
    elif grad is None:
        hardest_neg = t.amin(dim=1)
    else:
        hardest_neg, neg_col, tied = _row_min(t)
    zero = torch.zeros_like(hardest_pos)
    gap = torch.where(valid, hardest_pos, zero) - torch.where(valid, hardest_neg, zero)
    loss = F.softplus(gap) if soft else F.relu(gap + margin)
    values = torch.where(valid, loss, zero)
    terms = RowTerms(values, lambda: valid.to(dtype), lambda: (values > 0).to(dtype))
    if grad is None:
        return [terms]
    slope = _softplus_slope(gap) if soft else ((gap + margin) > 0).to(dtype)
    coef = torch.where(valid, scale(0) * slope * sign, zero)  # dL/ds at the hardest positive
    live = valid.nonzero().squeeze(1)
    tied_pos = t_pos == hardest_pos[rows]
    if split_ties:
        pos_cells = pairs.pos_flat[tied_pos]
        n_tied = segment_sum(tied_pos.to(dtype), rows, b).clamp_min(1)
        pos_share = (coef / n_tied)[rows[tied_pos]]
    else:
        pos_cells = _first_in_row(tied_pos, pairs.pos_flat, rows, b)[live]
        pos_share = coef[live]
    neg_cells, neg_rows, n_tied = _negative_cells(t, hardest_neg, neg_col, tied, live, split_ties)
    neg_share = (coef / n_tied)[neg_rows]
    scale.put_cells(torch.cat([pos_cells, neg_cells]), torch.cat([pos_share, -neg_share]))
    return [terms]
