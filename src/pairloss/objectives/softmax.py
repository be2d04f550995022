"""Softmax (InfoNCE-family) row objectives: SupCon, NT-Xent and DCL.

All three read the scores as logits ``z = s / temperature`` in "higher is closer" form (``-d``
for a distance). Every log-sum-exp goes through :func:`masked_logsumexp`, so a small temperature
or large unnormalised scores cannot overflow.
"""

from __future__ import annotations

import torch

from .terms import RowTerms, masked_logsumexp


def _logits(s: torch.Tensor, temperature: float, is_distance: bool) -> torch.Tensor:
    return s * ((-1.0 if is_distance else 1.0) / temperature)


def _masked_row_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, x, 0.0).sum(dim=1)


def supcon_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    temperature: float,
    is_distance: bool = False,
) -> list[RowTerms]:
    """Supervised contrastive loss per anchor i with positives P(i):

        -1/|P(i)| sum_{p in P(i)} log( e^{z_ip} / sum_{a in P(i) u N(i)} e^{z_ia} )
      = LSE_{a in P(i) u N(i)} z_ia - mean_{p in P(i)} z_ip

    One term per anchor; anchors without a positive contribute nothing.
    """
    z = _logits(s, temperature, is_distance)
    n_pos = pos.sum(dim=1, dtype=z.dtype)
    lse = masked_logsumexp(z, pos | neg)
    mean_pos = _masked_row_sum(z, pos) / n_pos.clamp_min(1)
    return [RowTerms.per_anchor(lse - mean_pos, n_pos > 0)]


def ntxent_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    temperature: float,
    is_distance: bool = False,
) -> list[RowTerms]:
    """NT-Xent / InfoNCE per positive pair (i, p):

        -log( e^{z_ip} / (e^{z_ip} + sum_{n in N(i)} e^{z_in}) ) = log(1 + e^{LSE_n z_in - z_ip})

    computed as ``logaddexp(z_ip, LSE_n) - z_ip`` (exact, no overflow); the negatives' LSE is
    taken once per row. A pair whose anchor has no negative gives 0 (and still counts as a
    term). One term per positive pair; the non-zero count is the number of pairs whose anchor
    has a negative (their loss is > 0 barring underflow).
    """
    z = _logits(s, temperature, is_distance)
    has_neg = neg.any(dim=1).to(z.dtype)
    lse_neg = masked_logsumexp(z, neg).unsqueeze(1)
    values = _masked_row_sum(torch.logaddexp(z, lse_neg) - z, pos) * has_neg
    n_pos = pos.sum(dim=1, dtype=z.dtype)
    return [RowTerms(values, n_pos, n_pos * has_neg)]


def dcl_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    temperature: float,
    is_distance: bool = False,
    weight: torch.Tensor | None = None,
) -> list[RowTerms]:
    """Decoupled contrastive loss per positive pair (i, p):

        -w_ip z_ip + LSE_{n in N(i)} z_in

    (the positive is not in the denominator), summed per row as
    ``|P(i)| LSE_n z_in - sum_p w_ip z_ip``. ``weight`` is an optional [b, N] tensor of
    positive-term weights (1 when None). Pairs whose anchor has no negative are undefined
    (log 0) and are dropped: they give no term. One term per remaining positive pair; terms can
    be negative, so the non-zero count is simply the term count.
    """
    z = _logits(s, temperature, is_distance)
    has_neg = neg.any(dim=1).to(z.dtype)
    lse_neg = masked_logsumexp(z, neg)
    n_pos = pos.sum(dim=1, dtype=z.dtype)
    pos_sum = _masked_row_sum(z if weight is None else weight * z, pos)
    values = (n_pos * lse_neg - pos_sum) * has_neg
    n_terms = n_pos * has_neg
    return [RowTerms(values, n_terms, n_terms)]
