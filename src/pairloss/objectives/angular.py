"""Angular loss row objective (Wang et al., "Deep Metric Learning with Angular Loss", ICCV
2017), as pytorch-metric-learning's ``AngularLoss``: the rows are positive pairs, whose scores
against the candidates are already the exponents (see
:class:`~pairloss.losses.metric.angular.AngularLoss`)."""

from __future__ import annotations

import torch

from ..relations import BlockPairs
from .terms import FusedDualLSE, RowScale, RowTerms, masked_logsumexp


def angular_rows(
    s: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, start: int = 0, end: int = 0
) -> list[RowTerms]:
    """Per positive pair k (a row): log(1 + sum_{n in N(a_k)} e^{s_kn}); 0 for a pair whose
    anchor has no negative. One term per pair."""
    lse = masked_logsumexp(s, neg, add_one=True)
    return [RowTerms.per_anchor(lse, torch.ones_like(lse, dtype=torch.bool))]


def angular_fused(
    s: torch.Tensor, pairs: BlockPairs, grad: torch.Tensor | None, scale: RowScale | None
) -> list[RowTerms]:
    """:func:`angular_rows` on the sparse form of a block (the negatives' log(1 + sum e^s) in
    one in-place pass), with dL/ds written into ``grad``: the softmax weight of each negative
    cell, 0 on the positive and self cells."""
    work = grad if grad is not None else torch.empty_like(s)
    lse = FusedDualLSE(s, pairs, 0.0, 0.0, 1.0, 0.0, work)
    if grad is not None:
        lse.write_grad(torch.zeros_like(lse.ln), scale(0))
    ones = torch.ones_like(lse.ln)
    return [RowTerms(lse.ln, ones, lambda: (lse.ln > 0).to(s.dtype))]
