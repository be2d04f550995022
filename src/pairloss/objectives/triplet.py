"""Triplet row objectives: batch-all triplet margin (exact, without enumerating triplets) and
batch-hard triplet (Hermans et al. 2017).

All objectives work on a distance-like score ``t`` (low = close): ``t = d`` for distances and
``t = -s`` for similarities, so that a triplet (a, p, n) violates the margin when
``t_ap - t_an + margin > 0`` (for cosine this is ``s_an - s_ap + margin``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .terms import RowTerms, masked_max, masked_min

#: Upper bound on the cells of one [b, chunk, N] slab in the chunked batch-all path.
CHUNK_CELLS = 1 << 22

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
