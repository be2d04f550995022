"""Angular loss row objective (Wang et al., "Deep Metric Learning with Angular Loss", ICCV
2017), as pytorch-metric-learning's ``AngularLoss``: the rows are positive pairs."""

from __future__ import annotations

import torch

from .terms import RowTerms, masked_logsumexp


def angular_rows(
    s: torch.Tensor, neg: torch.Tensor, coef: float, bias: torch.Tensor
) -> list[RowTerms]:
    """Per positive pair k (a row): log(1 + sum_{n in N(a_k)} e^{coef s_kn + bias_k}), with
    ``s`` [b, N] the dot products of the pairs' summed vectors x_a + x_p with the candidates
    and ``bias`` [b] the pairs' own constant; 0 for a pair whose anchor has no negative. One
    term per pair."""
    z = coef * s + bias[:, None]
    lse = masked_logsumexp(z, neg, add_one=True)
    return [RowTerms.per_anchor(lse, torch.ones_like(lse, dtype=torch.bool))]
