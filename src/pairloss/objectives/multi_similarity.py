"""Multi-Similarity row objective (Wang et al., CVPR 2019)."""

from __future__ import annotations

import torch

from .terms import RowTerms, dual_masked_logsumexp


def multi_similarity_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    alpha: float,
    beta: float,
    base: float,
    is_distance: bool = False,
) -> list[RowTerms]:
    """Per anchor i:

        1/alpha log(1 + sum_{p in P(i)} e^{-alpha (s_ip - base)})
      + 1/beta  log(1 + sum_{n in N(i)} e^{ beta (s_in - base)})

    For a distance d the signs flip: e^{alpha (d - base)} and e^{-beta (d - base)}.
    Rows with no pairs give 0. One term per anchor.
    """
    sign = -1.0 if is_distance else 1.0
    lp, ln, has_pos, has_neg = dual_masked_logsumexp(
        s, pos, neg, -alpha * sign, alpha * sign * base, beta * sign, -beta * sign * base
    )
    return [RowTerms.per_anchor(lp / alpha + ln / beta, has_pos | has_neg)]
