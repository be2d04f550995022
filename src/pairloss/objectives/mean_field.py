"""Row objectives of the mean-field losses (Furusawa, "Mean Field Theory in Deep Metric
Learning", ICLR 2024): pair losses whose interaction with the other samples is replaced by the
interaction with learnable class vectors (the mean fields).

Scores are cosines ``s``; the paper's distance is ``d = 1 - s``.
"""

from __future__ import annotations

import math

import torch

from .terms import RowTerms, masked_logsumexp


def mean_field_contrastive_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    pos_margin: float,
    neg_margin: float,
    weights: torch.Tensor | None = None,
) -> list[RowTerms]:
    """Anchors = embeddings, candidates = class vectors: per cell ``relu(d - pos_margin)`` on
    the own class, ``relu(neg_margin - d)`` on every other class (``d = 1 - s``); one term per
    class. ``weights`` [b] weight the rows."""
    d = 1 - s
    pair = torch.where(pos, torch.relu(d - pos_margin), torch.relu(neg_margin - d))
    if weights is not None:
        pair = pair * weights[:, None]
    return [RowTerms.per_pair(pair, torch.ones_like(pos))]


def mean_field_regularizer_rows(h: torch.Tensor, neg: torch.Tensor, power: float) -> list[RowTerms]:
    """Class vectors against class vectors: per row ``sum_{c' != c} h^power`` over the cells of
    ``neg`` (h >= 0; h = 0 gives 0 with a zero gradient for any power > 0)."""
    live = neg & (h > 0)
    hp = torch.where(live, h, torch.ones_like(h)) ** power
    total = torch.where(live, hp, torch.zeros_like(hp)).sum(dim=1)
    return [RowTerms.per_anchor(total, torch.ones_like(total, dtype=torch.bool))]


def segment_logsumexp(v: torch.Tensor, segment: torch.Tensor, n_segments: int) -> torch.Tensor:
    """Per row, the log-sum-exp of ``v`` [b, N] over the columns of each segment (``segment``
    [N] in [0, K), every segment non-empty): [b, K]. Max-shifted per segment, no overflow."""
    b = v.shape[0]
    idx = segment[None, :].expand(b, -1)
    with torch.no_grad():
        m = torch.full((b, n_segments), -math.inf, dtype=v.dtype, device=v.device)
        m = m.scatter_reduce(1, idx, v.detach(), "amax", include_self=True)
    e = torch.exp(v - m.gather(1, idx))
    total = torch.zeros(b, n_segments, dtype=v.dtype, device=v.device).index_add(1, segment, e)
    return torch.log(total) + m


def class_wise_multi_similarity_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    alpha: float,
    beta: float,
    base: float,
    column_class: torch.Tensor,
    log_class_size: torch.Tensor,
) -> list[RowTerms]:
    """Anchors = class vectors w_r, candidates = the batch.

    A row whose class is in the batch gives the positive term
    ``(1/alpha) log(1 + mean_{i in r} exp(-alpha (s_ir - base)))``. A row whose class is not in
    the batch gives the negative terms of its pairs with the batch classes c,
    ``(1/beta) sum_c log(1 + mean_{i in c} exp(beta (s_ir - base)))``; the pairs of two batch
    classes couple two rows and are computed apart. ``column_class`` [B] is each column's index
    among the K batch classes, ``log_class_size`` [K] the log of their sizes.
    """
    has_pos = pos.any(dim=1)
    n = pos.sum(dim=1).clamp_min(1).to(s.dtype)
    lp = masked_logsumexp(-alpha * (s - base), pos) - torch.log(n)
    pos_term = torch.logaddexp(lp, torch.zeros_like(lp)) / alpha
    g = segment_logsumexp(beta * (s - base), column_class, log_class_size.shape[0])
    g = g - log_class_size[None, :]
    neg_term = torch.logaddexp(g, torch.zeros_like(g)).sum(dim=1) / beta
    value = torch.where(has_pos, pos_term, neg_term)
    return [RowTerms.per_anchor(value, torch.ones_like(has_pos))]
