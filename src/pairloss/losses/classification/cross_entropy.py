"""Cross-entropy with label smoothing (Szegedy et al., "Rethinking the Inception Architecture for
Computer Vision", CVPR 2016), computed from log-softmax."""

from __future__ import annotations

import torch
from torch import nn

from ...engine import compute_dtype
from ...reduction import ROW_REDUCTIONS, check_reduction
from ...validation import check_real
from ._checks import check_class_targets, check_logits, reduce_rows


def label_smoothing_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    smoothing: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Cross-entropy against the smoothed target (1 - eps) one_hot(y) + eps / C.

    .. math::
        \ell_i = (1 - \varepsilon)\,(-\log p_{i,y_i})
                 + \frac{\varepsilon}{C} \sum_{k=1}^{C} (-\log p_{i,k}),
        \qquad \log p_i = \mathrm{log\_softmax}(o_i)

    Equal to ``torch.nn.functional.cross_entropy(logits, targets, label_smoothing=smoothing)``
    (no class weights, no ignored index). ``smoothing = 0`` is plain cross-entropy.

    Args:
        logits: [B, C] unnormalised scores, C >= 2, finite.
        targets: [B] integer class indices in [0, C).
        smoothing: eps in [0, 1]; default 0.
        reduction: ``"mean"`` (over the B rows, default), ``"sum"`` or ``"none"`` ([B]).

    Returns:
        The loss in the dtype of ``logits`` (half precision is computed in float32).
    """
    logits = check_logits(logits)
    targets = check_class_targets(targets, logits)
    eps = check_real(smoothing, "smoothing", 0.0, 1.0)
    reduction = check_reduction(reduction, ROW_REDUCTIONS)
    log_p = torch.log_softmax(logits.to(compute_dtype(logits)), dim=1)
    nll = -log_p.gather(1, targets[:, None])[:, 0]
    per_row = (1.0 - eps) * nll - eps * log_p.mean(dim=1) if eps > 0 else nll
    return reduce_rows(per_row, reduction, logits.dtype)


class LabelSmoothingCrossEntropyLoss(nn.Module):
    """Module form of :func:`label_smoothing_cross_entropy` (same formula, defaults, shapes)."""

    def __init__(self, smoothing: float = 0.0, reduction: str = "mean") -> None:
        super().__init__()
        self.smoothing = check_real(smoothing, "smoothing", 0.0, 1.0)
        self.reduction = check_reduction(reduction, ROW_REDUCTIONS)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return label_smoothing_cross_entropy(logits, targets, self.smoothing, self.reduction)
