"""Focal loss (Lin, Goyal, Girshick, He and Dollar, "Focal Loss for Dense Object Detection",
ICCV 2017), multi-class softmax form, computed from log-softmax."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...engine import compute_dtype
from ...errors import PairLossError
from ...reduction import ROW_REDUCTIONS, check_reduction
from ...validation import check_real, check_same_device
from ._checks import check_class_targets, check_logits, reduce_rows


def _check_alpha(
    alpha: torch.Tensor | Sequence[float] | None, n_classes: int | None
) -> torch.Tensor | None:
    """None, or a 1-D tensor of finite non-negative per-class weights (length C if known)."""
    if alpha is None:
        return None
    try:
        a = torch.as_tensor(alpha)
    except (TypeError, ValueError, RuntimeError):
        raise PairLossError(
            f"alpha: expected None or a sequence of class weights, got {alpha!r}"
        ) from None
    if a.dim() != 1 or a.is_complex() or a.dtype == torch.bool:
        raise PairLossError(
            f"alpha: expected a 1-D sequence of real per-class weights, got shape {tuple(a.shape)} "
            f"and dtype {a.dtype}"
        )
    if n_classes is not None and a.shape[0] != n_classes:
        raise PairLossError(f"alpha: has {a.shape[0]} weights but logits have {n_classes} classes")
    a = a.double() if not a.is_floating_point() else a
    if not bool(torch.isfinite(a).all()) or bool((a < 0).any()):
        raise PairLossError("alpha: expected finite, non-negative class weights")
    return a


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma: float = 2.0,
    alpha: torch.Tensor | Sequence[float] | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Focal loss: cross-entropy down-weighted on well-classified rows.

    .. math::
        \ell_i = -\alpha_{y_i}\,(1 - p_{t})^{\gamma} \log p_{t},
        \qquad p_t = \mathrm{softmax}(o_i)_{y_i}

    ``log p_t`` comes from log-softmax and ``1 - p_t = -expm1(log p_t)``, so both stay accurate
    for confident rows. ``gamma = 0`` and ``alpha = None`` give cross-entropy. Lin et al. use
    gamma = 2 (the default) and a scalar alpha-balance for the binary case; here ``alpha`` is an
    optional per-class weight vector (``alpha_y`` multiplies row i's loss; the ``"mean"``
    reduction still divides by B, not by the sum of the weights).

    Args:
        logits: [B, C] unnormalised scores, C >= 2, finite.
        targets: [B] integer class indices in [0, C).
        gamma: focusing exponent >= 0; default 2.
        alpha: None (default) or C non-negative class weights (sequence or 1-D tensor).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` ([B]).

    Returns:
        The loss in the dtype of ``logits`` (half precision is computed in float32).
    """
    logits = check_logits(logits)
    targets = check_class_targets(targets, logits)
    g = check_real(gamma, "gamma", 0.0)
    weights = _check_alpha(alpha, logits.shape[1])
    reduction = check_reduction(reduction, ROW_REDUCTIONS)
    dtype = compute_dtype(logits)
    log_pt = torch.log_softmax(logits.to(dtype), dim=1).gather(1, targets[:, None])[:, 0]
    # (1 - p_t) is kept >= tiny so that d/dp (1 - p)^gamma stays finite for 0 < gamma < 1.
    one_minus = (-torch.expm1(log_pt)).clamp_min(torch.finfo(dtype).tiny)
    per_row = -(one_minus**g) * log_pt if g > 0 else -log_pt
    if weights is not None:
        if isinstance(alpha, torch.Tensor):
            check_same_device(logits, alpha, "logits", "alpha")
        per_row = per_row * weights.to(device=logits.device, dtype=dtype)[targets]
    return reduce_rows(per_row, reduction, logits.dtype)


class FocalLoss(nn.Module):
    """Module form of :func:`focal_loss` (same formula, defaults, shapes).

    ``alpha`` is stored as a buffer so that it follows ``.to(device)``.
    """

    alpha: torch.Tensor | None

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: torch.Tensor | Sequence[float] | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.gamma = check_real(gamma, "gamma", 0.0)
        self.register_buffer("alpha", _check_alpha(alpha, None))
        self.reduction = check_reduction(reduction, ROW_REDUCTIONS)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, targets, self.gamma, self.alpha, self.reduction)
