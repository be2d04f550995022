"""AnyLoss (Han, Moniz and Chawla, "AnyLoss: Transforming Classification Metrics into Loss
Functions", KDD 2024, arXiv 2405.14745): 1 - metric on a soft confusion matrix."""

from __future__ import annotations

import torch
from torch import nn

from ...engine import compute_dtype
from ...errors import PairLossError
from ...validation import check_real
from ._checks import check_binary_scores, check_binary_targets

METRICS = ("accuracy", "f1", "fbeta", "balanced_accuracy", "gmean")


def _check_hyper(
    metric: object, beta: float, amplify: float, eps: float
) -> tuple[str, float, float, float]:
    if not isinstance(metric, str) or metric not in METRICS:
        raise PairLossError(f"metric: expected one of {METRICS}, got {metric!r}")
    return (
        metric,
        check_real(beta, "beta", 0.0, low_open=True),
        check_real(amplify, "amplify", 0.0, low_open=True),
        check_real(eps, "eps", 0.0, low_open=True),
    )


def any_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    metric: str = "f1",
    beta: float = 1.0,
    amplify: float = 73.0,
    eps: float = 1e-7,
) -> torch.Tensor:
    r"""1 - metric, with the confusion matrix built from amplified probabilities.

    .. math::
        p_i = \sigma(o_i), \qquad A_i = \frac{1}{1 + e^{-L (p_i - 0.5)}}, \\
        TP = \sum_i y_i A_i,\ FN = \sum_i y_i (1 - A_i),\
        FP = \sum_i (1 - y_i) A_i,\ TN = \sum_i (1 - y_i)(1 - A_i)

    and, with TPR = TP / (TP + FN + eps) and TNR = TN / (TN + FP + eps),

    - ``"accuracy"``: (TP + TN) / B;
    - ``"f1"``: 2 TP / (2 TP + FN + FP + eps);
    - ``"fbeta"``: (1 + b^2) TP / ((1 + b^2) TP + b^2 FN + FP + eps);
    - ``"balanced_accuracy"``: (TPR + TNR) / 2;
    - ``"gmean"``: sqrt(max(TPR TNR, eps)).

    The loss is 1 - metric: one number for the whole batch (the metric is not a sum over rows,
    so there is no reduction argument). A pushes p towards 0 or 1 so that the soft confusion
    matrix approaches the hard one; for confident predictions the loss tends to 1 - the metric
    of the hard predictions (threshold 0.5). eps (default 1e-7) guards the divisions and the
    square root; a batch without positives (or negatives) gets TPR (or TNR) = 0.

    What was checked: A(p) and the binary-only scope against the paper's arXiv HTML abstract
    and summaries (the paper treats binary classification; multi-class is left to future work,
    so no macro variant is offered); the metrics are their standard confusion-matrix
    definitions. The default L = 73 is the value usually quoted for the paper; it was not found
    in the parts of the paper text that could be read, so treat it as unverified. The eps
    smoothing constants are this implementation's choice.

    Args:
        logits: [B] or [B, 1] binary logits o (p = sigmoid(o)), finite.
        targets: [B] or [B, 1] labels 0/1 (bool, integer or float).
        metric: one of ``"accuracy"``, ``"f1"`` (default), ``"fbeta"``, ``"balanced_accuracy"``,
            ``"gmean"``.
        beta: beta > 0 of ``"fbeta"``; default 1.
        amplify: the amplifying scale L > 0; default 73.
        eps: smoothing constant > 0; default 1e-7.

    Returns:
        A scalar in the dtype of ``logits`` (half precision is computed in float32).
    """
    scores = check_binary_scores(logits, "logits")
    positive = check_binary_targets(targets, scores)
    metric, b, amp, eps = _check_hyper(metric, beta, amplify, eps)
    dtype = compute_dtype(scores)
    y = positive.to(dtype)
    a = torch.sigmoid(amp * (torch.sigmoid(scores.to(dtype)) - 0.5))
    tp = (y * a).sum()
    fn = (y * (1.0 - a)).sum()
    fp = ((1.0 - y) * a).sum()
    tn = ((1.0 - y) * (1.0 - a)).sum()
    if metric == "accuracy":
        value = (tp + tn) / scores.shape[0]
    elif metric in ("f1", "fbeta"):
        b2 = 1.0 if metric == "f1" else b * b
        value = (1.0 + b2) * tp / ((1.0 + b2) * tp + b2 * fn + fp + eps)
    else:
        tpr = tp / (tp + fn + eps)
        tnr = tn / (tn + fp + eps)
        value = (
            (tpr + tnr) / 2.0
            if metric == "balanced_accuracy"
            else (tpr * tnr).clamp_min(eps).sqrt()
        )
    return (1.0 - value).to(logits.dtype)


class AnyLoss(nn.Module):
    """Module form of :func:`any_loss` (same formula, defaults, shapes)."""

    def __init__(
        self, metric: str = "f1", beta: float = 1.0, amplify: float = 73.0, eps: float = 1e-7
    ) -> None:
        super().__init__()
        self.metric, self.beta, self.amplify, self.eps = _check_hyper(metric, beta, amplify, eps)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return any_loss(logits, targets, self.metric, self.beta, self.amplify, self.eps)
