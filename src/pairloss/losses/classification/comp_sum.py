"""Comp-sum losses (Mao, Mohri and Zhong, "Cross-Entropy Loss Functions: Theoretical Analysis and
Applications", ICML 2023)."""

from __future__ import annotations

import torch
from torch import nn

from ...engine import compute_dtype
from ...reduction import ROW_REDUCTIONS, check_reduction
from ...validation import check_real
from ._checks import check_class_targets, check_logits, reduce_rows


def comp_sum_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    tau: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""The comp-sum family: a transform Phi_tau of the sum of exponentiated logit gaps.

    .. math::
        u = \sum_{y' \ne y} e^{h_{y'} - h_y}, \qquad
        \Phi_\tau(u) = \begin{cases}
            \log(1 + u) & \tau = 1 \\
            \frac{(1 + u)^{1-\tau} - 1}{1 - \tau} & \tau \ne 1
        \end{cases}

    Members: tau = 0 the sum-exponential loss u; tau = 1 the logistic loss (cross-entropy);
    1 < tau < 2 generalized cross-entropy (1 - p_y^q) / q with q = tau - 1; tau = 2 the mean
    absolute error 1 - p_y, bounded by 1. For tau > 1 the loss is bounded by 1 / (tau - 1).

    Stable evaluation: log(1 + u) = logsumexp(h) - h_y = -log p_y (log-softmax), and for
    tau != 1 the loss is expm1((1 - tau) log(1 + u)) / (1 - tau), accurate near tau = 1. For
    tau < 1 the loss grows like exp((1 - tau) * (logit gap)) and overflows to inf for logit gaps
    beyond ~88 / (1 - tau) in float32: that is the loss's true size, not a rounding artefact.

    What was checked: the paper's abstract names cross-entropy, generalized cross-entropy and
    the mean absolute error as comp-sum members; the closed form of Phi_tau above reproduces
    exactly those members (tau = 1, 1 < tau < 2, tau = 2) and the sum-exponential loss at
    tau = 0. The full paper text was not available to check the form of Phi_tau itself.

    Args:
        logits: [B, C] scores h, C >= 2, finite.
        targets: [B] integer class indices in [0, C).
        tau: family parameter >= 0; default 1 (cross-entropy).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` ([B]).

    Returns:
        The loss in the dtype of ``logits`` (half precision is computed in float32).
    """
    logits = check_logits(logits)
    targets = check_class_targets(targets, logits)
    t = check_real(tau, "tau", 0.0)
    reduction = check_reduction(reduction, ROW_REDUCTIONS)
    log_p = torch.log_softmax(logits.to(compute_dtype(logits)), dim=1)
    ce = -log_p.gather(1, targets[:, None])[:, 0]
    per_row = ce if t == 1.0 else torch.expm1((1.0 - t) * ce) / (1.0 - t)
    return reduce_rows(per_row, reduction, logits.dtype)


class CompSumLoss(nn.Module):
    """Module form of :func:`comp_sum_loss` (same formula, defaults, shapes)."""

    def __init__(self, tau: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.tau = check_real(tau, "tau", 0.0)
        self.reduction = check_reduction(reduction, ROW_REDUCTIONS)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return comp_sum_loss(logits, targets, self.tau, self.reduction)
