"""Label-distributionally robust losses: LDR-KL and adaptive LDR-KL (Zhu, Ying and Yang, "Label
Distributionally Robust Losses for Multi-class Classification: Consistency, Robustness and
Adaptivity", ICML 2023)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ...engine import compute_dtype
from ...errors import PairLossError
from ...reduction import ROW_REDUCTIONS, check_reduction
from ...validation import check_real
from ._checks import check_class_targets, check_logits, reduce_rows


def _gaps(logits: torch.Tensor, targets: torch.Tensor, margin: float) -> torch.Tensor:
    """z_k = f_k - f_y + c 1[k != y] in the compute dtype, shape [B, C] (z_y = 0)."""
    x = logits.to(compute_dtype(logits))
    z = x - x.gather(1, targets[:, None]) + margin
    return z.scatter(1, targets[:, None], 0.0)


def _ldr_value(z: torch.Tensor, lam: torch.Tensor | float) -> torch.Tensor:
    """lam * log((1/K) sum_k exp(z_k / lam)) per row; ``lam`` a float or a [B] tensor."""
    lam_col = lam[:, None] if isinstance(lam, torch.Tensor) else lam
    return lam * (torch.logsumexp(z / lam_col, dim=1) - math.log(z.shape[1]))


def ldr_kl_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    lam: float = 1.0,
    margin: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""LDR-KL: the worst case over label distributions p, KL-regularised towards uniform.

    .. math::
        \ell = \max_{p \in \Delta_K} \sum_k p_k\,(f_k - f_y + c\,1[k \ne y])
               - \lambda\,\mathrm{KL}(p \,\|\, \tfrac{1}{K})
             = \lambda \log\Big(\frac{1}{K} \sum_k e^{(f_k - f_y + c\,1[k \ne y]) / \lambda}\Big)

    Computed with logsumexp. Limits: lambda -> 0 gives the Crammer-Singer hinge
    max_k (f_k - f_y + c 1[k != y]); lambda -> inf gives the mean of the gaps; c = 0,
    lambda = 1 gives cross-entropy minus log K (lambda with c = 0 is temperature-scaled
    cross-entropy times lambda, minus lambda log K).

    What was checked: the closed form is derived above from the max over p (the paper's
    abstract names the LDR family, the temperature-scaled CE special case and the adaptive
    variant, but gives no formula or defaults). The defaults lam = 1, margin = 1 are this
    implementation's choice, not confirmed from the paper.

    Args:
        logits: [B, C] scores f, C >= 2, finite.
        targets: [B] integer class indices in [0, C).
        lam: the KL weight (temperature) lambda > 0; default 1.
        margin: the margin c >= 0 added to every wrong class; default 1.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` ([B]).

    Returns:
        The loss in the dtype of ``logits`` (half precision is computed in float32).
    """
    logits = check_logits(logits)
    targets = check_class_targets(targets, logits)
    lam_v = check_real(lam, "lam", 0.0, low_open=True)
    c = check_real(margin, "margin", 0.0)
    reduction = check_reduction(reduction, ROW_REDUCTIONS)
    per_row = _ldr_value(_gaps(logits, targets, c), lam_v)
    return reduce_rows(per_row, reduction, logits.dtype)


def _check_adaptive(
    lambda0: float, alpha: float, margin: float, max_iter: int
) -> tuple[float, float, float, int]:
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise PairLossError(f"max_iter: expected an integer >= 1, got {max_iter!r}")
    return (
        check_real(lambda0, "lambda0", 0.0, low_open=True),
        check_real(alpha, "alpha", 1.0, low_open=True),
        check_real(margin, "margin", 0.0),
        max_iter,
    )


def _solve_lambdas(z: torch.Tensor, lambda0: float, alpha: float, max_iter: int) -> torch.Tensor:
    """Per-row lambda: the fixed point of lambda <- lambda0 (1 - KL(q_lambda || u) / (alpha log K))
    reached from lambda0 (no gradient)."""
    log_k = math.log(z.shape[1])
    tol = 8.0 * torch.finfo(z.dtype).eps * lambda0
    with torch.no_grad():
        lam = torch.full(z.shape[:1], lambda0, dtype=z.dtype, device=z.device)
        for _ in range(max_iter):
            log_q = torch.log_softmax(z / lam[:, None], dim=1)
            kl = ((log_q.exp() * log_q).sum(dim=1) + log_k).clamp(0.0, log_k)
            new = lambda0 * (1.0 - kl / (alpha * log_k))
            done = bool(((new - lam).abs() <= tol).all())
            lam = new
            if done:
                break
    return lam


def adaptive_ldr_lambdas(
    logits: torch.Tensor,
    targets: torch.Tensor,
    lambda0: float = 1.0,
    alpha: float = 2.0,
    margin: float = 1.0,
    max_iter: int = 100,
) -> torch.Tensor:
    """The per-instance lambda used by :func:`adaptive_ldr_kl_loss`, shape [B], no gradient.

    Arguments as in :func:`adaptive_ldr_kl_loss`; returned in the dtype of ``logits``.
    """
    logits = check_logits(logits)
    targets = check_class_targets(targets, logits)
    lambda0, alpha, c, max_iter = _check_adaptive(lambda0, alpha, margin, max_iter)
    return _solve_lambdas(_gaps(logits, targets, c), lambda0, alpha, max_iter).to(logits.dtype)


def adaptive_ldr_kl_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    lambda0: float = 1.0,
    alpha: float = 2.0,
    margin: float = 1.0,
    max_iter: int = 100,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Adaptive LDR-KL (ALDR-KL): LDR-KL with a per-instance lambda chosen by the loss itself.

    With z_k = f_k - f_y + c 1[k != y], K = C classes and g(lambda) the LDR-KL value
    lambda log((1/K) sum_k exp(z_k / lambda)), each row takes

    .. math::
        \ell = \max_{\lambda \in [\lambda_0 (1 - 1/\alpha),\ \lambda_0]}
               g(\lambda) - \frac{\alpha \log K}{2 \lambda_0} (\lambda - \lambda_0)^2

    whose stationarity condition, using g'(lambda) = -KL(q_lambda || uniform) with
    q_lambda = softmax(z / lambda), is

    .. math::
        \lambda = \lambda_0 \Big(1 - \frac{\mathrm{KL}(q_\lambda \,\|\, 1/K)}{\alpha \log K}\Big).

    How lambda is chosen: starting from lambda0, that update is iterated (at most ``max_iter``
    times, without gradient) until it stops moving. The map is increasing in lambda, so the
    iterates decrease monotonically to the largest fixed point, a local maximiser of the
    objective. A row whose worst-case distribution q is far from uniform (KL large) gets a
    smaller lambda (closer to the hinge); a row with q near uniform keeps lambda near lambda0.
    alpha > 1 keeps lambda >= lambda0 (1 - 1/alpha) > 0 since KL <= log K. The gradient is taken
    with lambda held fixed, which is the exact gradient of the max at a stationary lambda
    (envelope theorem). The constant penalty term is included in the value.

    What was checked, and what is doubtful: the paper's abstract says the adaptive
    loss "automatically adapts the individualized temperature parameter to the noise degree of
    class label of each instance". The penalty form and the normalisation of alpha by
    log K / lambda0 above were reconstructed from a public third-party training code that
    descends from the authors' release (its update lambda = lambda0 (1 - KL / (alpha log K)),
    alpha > 1, defaults lambda0 = 1, alpha = 2, which also match the authors' README example
    ``--alpha=2``); they could not be checked against the paper's text. The authors keep one
    lambda per training example across epochs and update it once per visit; this stateless
    version re-solves lambda on every call instead.

    Args:
        logits: [B, C] scores f, C >= 2, finite.
        targets: [B] integer class indices in [0, C).
        lambda0: the largest lambda (the prior temperature) > 0; default 1.
        alpha: > 1, the strength of the pull of lambda towards lambda0; default 2.
        margin: the margin c >= 0 on wrong classes; default 1.
        max_iter: cap on fixed-point updates, >= 1; default 100.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` ([B]).

    Returns:
        The loss in the dtype of ``logits`` (half precision is computed in float32).
    """
    logits = check_logits(logits)
    targets = check_class_targets(targets, logits)
    lambda0, alpha, c, max_iter = _check_adaptive(lambda0, alpha, margin, max_iter)
    reduction = check_reduction(reduction, ROW_REDUCTIONS)
    z = _gaps(logits, targets, c)
    lam = _solve_lambdas(z, lambda0, alpha, max_iter)
    penalty = alpha * math.log(z.shape[1]) / (2.0 * lambda0) * (lam - lambda0).square()
    per_row = _ldr_value(z, lam) - penalty
    return reduce_rows(per_row, reduction, logits.dtype)


class LDRKLLoss(nn.Module):
    """Module form of :func:`ldr_kl_loss` (same formula, defaults, shapes)."""

    def __init__(self, lam: float = 1.0, margin: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.lam = check_real(lam, "lam", 0.0, low_open=True)
        self.margin = check_real(margin, "margin", 0.0)
        self.reduction = check_reduction(reduction, ROW_REDUCTIONS)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return ldr_kl_loss(logits, targets, self.lam, self.margin, self.reduction)


class AdaptiveLDRKLLoss(nn.Module):
    """Module form of :func:`adaptive_ldr_kl_loss` (same formula, defaults, shapes)."""

    def __init__(
        self,
        lambda0: float = 1.0,
        alpha: float = 2.0,
        margin: float = 1.0,
        max_iter: int = 100,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.lambda0, self.alpha, self.margin, self.max_iter = _check_adaptive(
            lambda0, alpha, margin, max_iter
        )
        self.reduction = check_reduction(reduction, ROW_REDUCTIONS)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return adaptive_ldr_kl_loss(
            logits, targets, self.lambda0, self.alpha, self.margin, self.max_iter, self.reduction
        )
