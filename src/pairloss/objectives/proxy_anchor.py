"""Proxy-Anchor row objective (Kim et al., CVPR 2020): the rows are the class proxies, the
columns the batch embeddings."""

from __future__ import annotations

import torch

from .terms import RowTerms, dual_masked_logsumexp, masked_logsumexp


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
