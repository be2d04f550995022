"""Poly-1 loss (Leng, Tan, Liu, Cubuk, Shi, Cheng and Anguelov, "PolyLoss: A Polynomial Expansion
Perspective of Classification Loss Functions", ICLR 2022)."""

from __future__ import annotations

import torch
from torch import nn

from ...engine import compute_dtype
from ...reduction import ROW_REDUCTIONS, check_reduction
from ...validation import check_real
from ._checks import check_class_targets, check_logits, reduce_rows


def poly1_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    epsilon: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Poly-1: cross-entropy plus epsilon times the first polynomial term (1 - p_t).

    .. math::
        \ell_i = -\log p_t + \varepsilon\,(1 - p_t), \qquad p_t = \mathrm{softmax}(o_i)_{y_i}

    Cross-entropy's Taylor expansion in (1 - p_t) is sum_j (1 - p_t)^j / j; Poly-1 perturbs the
    leading coefficient by epsilon. ``epsilon = 0`` is cross-entropy; ``epsilon = -1`` removes the
    first term. epsilon must be >= -1: below that the loss would increase as p_t -> 1.
    ``1 - p_t`` is computed as ``-expm1(log p_t)`` from log-softmax.

    Args:
        logits: [B, C] unnormalised scores, C >= 2, finite.
        targets: [B] integer class indices in [0, C).
        epsilon: the Poly-1 coefficient, >= -1; default 1 (the paper's Poly-1 default).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` ([B]).

    Returns:
        The loss in the dtype of ``logits`` (half precision is computed in float32).
    """
    logits = check_logits(logits)
    targets = check_class_targets(targets, logits)
    eps = check_real(epsilon, "epsilon", -1.0)
    reduction = check_reduction(reduction, ROW_REDUCTIONS)
    log_pt = torch.log_softmax(logits.to(compute_dtype(logits)), dim=1).gather(1, targets[:, None])[
        :, 0
    ]
    per_row = -log_pt - eps * torch.expm1(log_pt)
    return reduce_rows(per_row, reduction, logits.dtype)


class Poly1Loss(nn.Module):
    """Module form of :func:`poly1_loss` (same formula, defaults, shapes)."""

    def __init__(self, epsilon: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.epsilon = check_real(epsilon, "epsilon", -1.0)
        self.reduction = check_reduction(reduction, ROW_REDUCTIONS)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return poly1_loss(logits, targets, self.epsilon, self.reduction)
