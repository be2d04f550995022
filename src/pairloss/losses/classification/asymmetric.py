"""Asymmetric loss for multi-label classification (Ridnik, Ben-Baruch, Zamir, Noy, Friedman,
Protter and Zelnik-Manor, "Asymmetric Loss For Multi-Label Classification", ICCV 2021)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...engine import compute_dtype
from ...reduction import ROW_REDUCTIONS, check_reduction
from ...validation import check_real
from ._checks import check_logits, check_multihot, reduce_rows


def _check_hyper(
    gamma_pos: float, gamma_neg: float, margin: float, eps: float
) -> tuple[float, float, float, float]:
    return (
        check_real(gamma_pos, "gamma_pos", 0.0),
        check_real(gamma_neg, "gamma_neg", 0.0),
        check_real(margin, "margin", 0.0, 1.0, high_open=True),
        check_real(eps, "eps", 0.0, 1.0, high_open=True),
    )


def asymmetric_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma_pos: float = 0.0,
    gamma_neg: float = 4.0,
    margin: float = 0.05,
    eps: float = 1e-8,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""ASL: asymmetric focusing plus probability shifting of the negatives.

    With p = sigmoid(o) per class and y the multi-hot target,

    .. math::
        \ell_{ic} = -y\,(1 - p)^{\gamma_+} \log p
                    - (1 - y)\,p_m^{\gamma_-} \log(1 - p_m),
        \qquad p_m = \max(p - m, 0)

    and row i's loss is the sum over its C classes (the paper's loss is a sum over labels).
    ``log p = logsigmoid(o)``; ``log(1 - p_m) = log(min(sigmoid(-o) + m, 1))``, which is
    ``logsigmoid(-o)`` when m = 0. Both logs are clipped below at ``log(eps)`` (the paper's
    implementation clips the probability at eps before the log; ``eps = 0`` turns the clip off).
    With gamma_pos = gamma_neg = 0, m = 0 and eps = 0 this is binary cross-entropy with logits
    summed over classes.

    Args:
        logits: [B, C] unnormalised per-class scores, C >= 2, finite.
        targets: [B, C] multi-hot labels: bool, or integer/float with values 0 and 1 only.
        gamma_pos: focusing exponent on positives, >= 0; default 0.
        gamma_neg: focusing exponent on negatives, >= 0; default 4.
        margin: probability shift m in [0, 1) for negatives; default 0.05.
        eps: clip for the logs, in [0, 1); default 1e-8.
        reduction: ``"mean"`` over rows (default), ``"sum"``, or ``"none"`` ([B] per-row sums).

    Returns:
        The loss in the dtype of ``logits`` (half precision is computed in float32).
    """
    logits = check_logits(logits)
    positive = check_multihot(targets, logits)
    g_pos, g_neg, m, clip = _check_hyper(gamma_pos, gamma_neg, margin, eps)
    reduction = check_reduction(reduction, ROW_REDUCTIONS)
    dtype = compute_dtype(logits)
    tiny = torch.finfo(dtype).tiny  # keeps d/du u^gamma finite at u = 0 when 0 < gamma < 1
    x = logits.to(dtype)
    log_p = F.logsigmoid(x)
    log_q = torch.log((torch.sigmoid(-x) + m).clamp_max(1.0)) if m > 0 else F.logsigmoid(-x)
    # focusing weights from the unclipped probabilities: (1 - p)^g+ and p_m^g-
    w_pos = (-torch.expm1(log_p)).clamp_min(tiny) ** g_pos if g_pos > 0 else None
    w_neg = (torch.sigmoid(x) - m).clamp_min(tiny) ** g_neg if g_neg > 0 else None
    if clip > 0:
        log_p = log_p.clamp_min(math.log(clip))
        log_q = log_q.clamp_min(math.log(clip))
    pos_term = -log_p if w_pos is None else -log_p * w_pos
    neg_term = -log_q if w_neg is None else -log_q * w_neg
    per_row = torch.where(positive, pos_term, neg_term).sum(dim=1)
    return reduce_rows(per_row, reduction, logits.dtype)


class AsymmetricLoss(nn.Module):
    """Module form of :func:`asymmetric_loss` (same formula, defaults, shapes)."""

    def __init__(
        self,
        gamma_pos: float = 0.0,
        gamma_neg: float = 4.0,
        margin: float = 0.05,
        eps: float = 1e-8,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.gamma_pos, self.gamma_neg, self.margin, self.eps = _check_hyper(
            gamma_pos, gamma_neg, margin, eps
        )
        self.reduction = check_reduction(reduction, ROW_REDUCTIONS)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return asymmetric_loss(
            logits, targets, self.gamma_pos, self.gamma_neg, self.margin, self.eps, self.reduction
        )
