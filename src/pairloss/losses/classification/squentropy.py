"""Squentropy (Hui, Belkin and Wright, "Cut your Losses with Squentropy", ICML 2023)."""

from __future__ import annotations

import torch
from torch import nn

from ...engine import compute_dtype
from ...reduction import ROW_REDUCTIONS, check_reduction
from ._checks import check_class_targets, check_logits, reduce_rows


def squentropy_loss(
    logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    r"""Cross-entropy plus the average square loss over the incorrect classes.

    .. math::
        \ell_i = -\log \mathrm{softmax}(f_i)_{y_i}
                 + \frac{1}{C - 1} \sum_{k \ne y_i} f_{i,k}^2

    (the square loss pushes each wrong-class logit to 0). What was checked: the paper's
    abstract defines squentropy as "the sum of two terms: the cross-entropy loss and the
    average square loss over the incorrect classes" and says it has no parameter; the target 0
    for the incorrect logits is the usual square-loss target and was not checked against the
    full text.

    Args:
        logits: [B, C] unnormalised scores f, C >= 2, finite.
        targets: [B] integer class indices in [0, C).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` ([B]).

    Returns:
        The loss in the dtype of ``logits`` (half precision is computed in float32).
    """
    logits = check_logits(logits)
    targets = check_class_targets(targets, logits)
    reduction = check_reduction(reduction, ROW_REDUCTIONS)
    x = logits.to(compute_dtype(logits))
    log_p = torch.log_softmax(x, dim=1)
    ce = -log_p.gather(1, targets[:, None])[:, 0]
    wrong = x.square().scatter(1, targets[:, None], 0.0).sum(dim=1)
    per_row = ce + wrong / (x.shape[1] - 1)
    return reduce_rows(per_row, reduction, logits.dtype)


class SquentropyLoss(nn.Module):
    """Module form of :func:`squentropy_loss` (same formula, defaults, shapes)."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction, ROW_REDUCTIONS)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return squentropy_loss(logits, targets, self.reduction)
