"""Proxy-Anchor row objective (Kim et al., CVPR 2020): the rows are the class proxies, the
columns the batch embeddings."""

from __future__ import annotations

import torch

from ..relations import BlockPairs
from .terms import FusedDualLSE, RowScale, RowTerms, dual_masked_logsumexp, masked_logsumexp


def proxy_anchor_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    alpha: float,
    margin: float,
    col_shift: torch.Tensor | None = None,
) -> list[RowTerms]:
    """Two components per proxy p (row):

        pos: log(1 + sum_{x in X_p+} e^{-alpha (s_px - margin)})   (a term only if X_p+ exists)
        neg: log(1 + sum_{x in X_p-} e^{ alpha (s_px + margin)})   (a term for every proxy)

    so that reduction "mean_valid" divides the first by the number of proxies with a positive
    and the second by the number of proxies. ``col_shift`` [N] is added to every exponent of
    column x (pytorch-metric-learning's miner-weight shift). Max-shifted sums: no overflow.
    """
    if col_shift is None:
        out = dual_masked_logsumexp(s, pos, neg, -alpha, alpha * margin, alpha, alpha * margin)
        lp, ln = out[0], out[1]
    else:
        lp = masked_logsumexp(-alpha * (s - margin) + col_shift, pos, add_one=True)
        ln = masked_logsumexp(alpha * (s + margin) + col_shift, neg, add_one=True)
    every = torch.ones_like(lp, dtype=torch.bool)
    return [RowTerms.per_anchor(lp, pos.any(dim=1)), RowTerms.per_anchor(ln, every)]


def proxy_anchor_fused(
    s: torch.Tensor,
    pairs: BlockPairs,
    grad: torch.Tensor | None,
    scale: RowScale | None,
    alpha: float,
    margin: float,
) -> list[RowTerms]:
    """:func:`proxy_anchor_rows` (without miner weights) on the sparse form of a block of
    proxies, with dL/ds written into ``grad`` (see :class:`pairloss.engine.PairProblem`): each
    proxy's few positives from their list, its negatives one exponential pass."""
    work = grad if grad is not None else torch.empty_like(s)
    lse = FusedDualLSE(s, pairs, -alpha, alpha * margin, alpha, alpha * margin, work)
    if grad is not None:
        lse.write_grad(torch.where(lse.has_pos, scale(0), 0.0), scale(1))
    every = torch.ones_like(lse.has_pos)
    return [RowTerms.per_anchor(lse.lp, lse.has_pos), RowTerms.per_anchor(lse.ln, every)]
