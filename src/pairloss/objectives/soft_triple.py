"""SoftTriple row objective (Qian et al., ICCV 2019)."""

from __future__ import annotations

import torch

from .margin_softmax import group_max, softmax_ce_rows
from .terms import RowTerms


def soft_triple_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    centers_per_class: int,
    la: float,
    inv_gamma: float,
    margin: float,
    weights: torch.Tensor | None = None,
) -> list[RowTerms]:
    """Per row: the relaxed class similarity S_c = sum_k softmax_k(s_ck / gamma) s_ck over each
    class's K adjacent centre columns, then cross-entropy of la * (S_c - margin [c = y]).
    ``inv_gamma`` is 1 / gamma (the exponent is ``s * inv_gamma``, as pytorch-metric-learning
    computes it)."""
    b, k = s.shape[0], centers_per_class
    sc = s.view(b, -1, k)
    prob = torch.softmax(sc * inv_gamma, dim=2)
    sim = (prob * sc).sum(dim=2)
    _, target = group_max(s, pos, k)
    logits = la * (sim - margin * target.to(sim.dtype))
    return softmax_ce_rows(logits, target, weights)
