"""N-pair row objectives (Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss
Objective", NeurIPS 2016)."""

from __future__ import annotations

import torch

from .terms import RowTerms, masked_logsumexp


def npairs_pair_rows(
    s: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, is_distance: bool = False
) -> list[RowTerms]:
    """One term per positive pair (i, p):

        -log( e^{s_ip} / (e^{s_ip} + sum_{n in N(i)} e^{s_in}) )
          = log(1 + sum_n e^{s_in - s_ip}) = softplus(LSE_n s_in - s_ip)

    (distances enter as s = -d). A row without negatives gives 0 for each of its pairs.
    """
    x = -s if is_distance else s
    has_neg = neg.any(dim=1, keepdim=True)
    lse_neg = masked_logsumexp(x, neg).unsqueeze(1)
    z = lse_neg - x
    pair = z.clamp_min(0) + torch.log1p(torch.exp(-z.abs()))
    pair = torch.where(has_neg, pair, torch.zeros_like(pair))
    return [RowTerms.per_pair(pair, pos)]


def npairs_softmax_rows(
    s: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, is_distance: bool = False
) -> list[RowTerms]:
    """One term per anchor with at least one positive: cross-entropy of the positives against
    all marked cells of the row,

        -log( sum_{p in P(i)} e^{s_ip} / sum_{c in P(i) u N(i)} e^{s_ic} ).

    With exactly one positive per anchor row (the explicit N-pair tuples of
    pytorch-metric-learning) this is the softmax cross-entropy of that positive.
    """
    x = -s if is_distance else s
    has_pos = pos.any(dim=1)
    loss = masked_logsumexp(x, pos | neg) - masked_logsumexp(x, pos)
    return [RowTerms.per_anchor(loss, has_pos)]
