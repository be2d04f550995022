"""Z-loss of the spherical family (de Brebisson and Vincent, "The Z-loss: a shift and scale
invariant classification loss belonging to the Spherical Family", 2016).

Not the PaLM-style auxiliary "z-loss" penalty (log Z)^2 on the softmax normaliser.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...engine import compute_dtype
from ...reduction import ROW_REDUCTIONS, check_reduction
from ...validation import check_real
from ._checks import check_class_targets, check_logits, reduce_rows


def _check_hyper(a: float, b: float) -> tuple[float, float]:
    return check_real(a, "a", 0.0, low_open=True), check_real(b, "b")


def spherical_z_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    a: float,
    b: float,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Z-loss: a softplus of the standardised target logit, invariant to shift and scale.

    .. math::
        \mu = \frac{1}{C}\sum_k o_k, \quad
        \sigma = \sqrt{\frac{1}{C}\sum_k (o_k - \mu)^2}, \quad
        z_y = \frac{o_y - \mu}{\sigma}, \quad
        \ell = \frac{1}{a}\,\mathrm{softplus}\big(a\,(b - z_y)\big)

    The loss depends on o only through sum(o), sum(o^2) and o_y (the spherical family), and is
    unchanged by o -> s o + t for s > 0.

    What was checked: the formula above, including the *population* standard deviation
    (divisor C, written sigma^2 = sum(o^2)/C - mu^2 in the paper's notation), matches the
    paper's definition as quoted by secondary summaries of arXiv 1604.08859; the abstract gives
    neither the formula nor values for a and b.
    a and b are tuned hyper-parameters in the paper (a sets the sharpness, b the location of the
    softplus; note z_y <= sqrt(C - 1)); no default could be confirmed, so both are required.
    The variance is computed two-pass (mean of squared deviations) and floored at the dtype's
    smallest normal number, so a row of equal logits gets z = 0 and finite gradients.

    Args:
        logits: [B, C] unnormalised scores, C >= 2, finite.
        targets: [B] integer class indices in [0, C).
        a: softplus sharpness > 0 (required).
        b: softplus location, any real (required).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` ([B]).

    Returns:
        The loss in the dtype of ``logits`` (half precision is computed in float32).
    """
    logits = check_logits(logits)
    targets = check_class_targets(targets, logits)
    a, b = _check_hyper(a, b)
    reduction = check_reduction(reduction, ROW_REDUCTIONS)
    dtype = compute_dtype(logits)
    x = logits.to(dtype)
    centred = x - x.mean(dim=1, keepdim=True)
    var = centred.square().mean(dim=1)
    sigma = var.clamp_min(torch.finfo(dtype).tiny).sqrt()
    z_y = centred.gather(1, targets[:, None])[:, 0] / sigma
    per_row = F.softplus(a * (b - z_y)) / a
    return reduce_rows(per_row, reduction, logits.dtype)


class SphericalZLoss(nn.Module):
    """Module form of :func:`spherical_z_loss` (same formula and shapes; a, b required)."""

    def __init__(self, a: float, b: float, reduction: str = "mean") -> None:
        super().__init__()
        self.a, self.b = _check_hyper(a, b)
        self.reduction = check_reduction(reduction, ROW_REDUCTIONS)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return spherical_z_loss(logits, targets, self.a, self.b, self.reduction)
