"""Row objectives of UNPG (unified negative pair generation, Jung et al. 2022).

Two objectives:

- :func:`unpg_rows`: the margin-softmax cross-entropy of each embedding against the class
  weights (anchors = embeddings, candidates = the class weights, ``s`` [b, C] cosines, ``pos``
  marking the own class), with one more term in every row's denominator: ``log_extra`` (a
  scalar), the log of the sum of the exponentiated in-batch negative pairs shared by all rows.
- :func:`negative_pair_exp_rows`: that sum, row by row (anchors = candidates = the embeddings):
  ``sum_k exp(scale * s_jk - shift)`` over the kept negative pairs j < k of row j.
"""

from __future__ import annotations

import torch

from .margin_softmax import arcface_target, target_value
from .terms import RowTerms


def unpg_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    kind: str,
    margin: float,
    scale: float,
    log_extra: torch.Tensor | None,
    weights: torch.Tensor | None = None,
) -> list[RowTerms]:
    """Per row: ``log(sum_c exp(scale * l_c) + exp(log_extra)) - scale * psi(cos_y)``.

    ``l_c`` is the cosine of class c, with the own class's replaced by ``psi``: ``cos - margin``
    (``kind="cosface"``) or ``cos(theta + margin)`` (``kind="arcface"``, see
    :func:`~pairloss.objectives.margin_softmax.arcface_target`). ``log_extra`` (a 0-d tensor, or
    None for no extra term) is added to every row's denominator. ``weights`` [b] weight the rows.
    Max-shifted throughout: no overflow for large scales.
    """
    cos_t = target_value(s, pos)
    if kind == "cosface":
        psi = cos_t - margin
    elif kind == "arcface":
        psi = arcface_target(cos_t, margin)
    else:
        raise ValueError(kind)
    logits = torch.where(pos, psi[:, None], s) * scale
    lse = torch.logsumexp(logits, dim=1)
    if log_extra is not None:
        lse = torch.logaddexp(lse, log_extra.expand_as(lse))
    loss = lse - psi * scale
    if weights is not None:
        loss = loss * weights
    return [RowTerms.per_anchor(loss, pos.any(dim=1))]


def kept_negative_pairs(
    s: torch.Tensor,
    neg: torch.Tensor,
    start: int,
    low: float | torch.Tensor,
    high: float | torch.Tensor,
) -> torch.Tensor:
    """Mask of the negative pairs (j, k) with j < k (each unordered pair once; rows are
    ``start:start + b``) whose score lies in [low, high]."""
    b, n = s.shape
    rows = torch.arange(start, start + b, device=s.device)[:, None]
    cols = torch.arange(n, device=s.device)[None, :]
    sd = s.detach()
    return neg & (cols > rows) & (sd >= low) & (sd <= high)


def negative_pair_exp_rows(
    s: torch.Tensor,
    neg: torch.Tensor,
    start: int,
    low: float | torch.Tensor,
    high: float | torch.Tensor,
    scale: float,
    shift: float | torch.Tensor,
) -> list[RowTerms]:
    """Per row j: ``sum_{k > j kept} exp(scale * s_jk - shift)``; with ``shift`` at least the
    log of the total, every term is <= 1 (no overflow)."""
    mask = kept_negative_pairs(s, neg, start, low, high)
    e = torch.exp(torch.where(mask, s * scale - shift, float("-inf")))
    return [RowTerms.per_anchor(e.sum(dim=1), mask.any(dim=1))]
