"""Circle loss row objective (Sun et al., CVPR 2020), pair-label form."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .terms import RowTerms, masked_logsumexp


def circle_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    m: float,
    gamma: float,
) -> list[RowTerms]:
    """Per anchor i (similarities s, higher is closer):

        softplus( LSE_{n in N(i)} gamma a_n (s_n - m) + LSE_{p in P(i)} -gamma a_p (s_p - 1 + m) )

    with the self-paced weights a_p = [1 + m - s_p]_+ and a_n = [s_n + m]_+ held constant
    (detached). Rows missing positives or negatives give 0 and no term. One term per anchor.
    Both log-sum-exps subtract their row maximum, so gamma = 256 cannot overflow.
    """
    sd = s.detach()
    logit_p = -gamma * torch.relu(1 + m - sd) * (s - (1 - m))
    logit_n = gamma * torch.relu(sd + m) * (s - m)
    lse_p = masked_logsumexp(logit_p, pos)
    lse_n = masked_logsumexp(logit_n, neg)
    valid = pos.any(dim=1) & neg.any(dim=1)
    return [RowTerms.per_anchor(F.softplus(lse_p + lse_n), valid)]
