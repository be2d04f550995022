"""Self-supervised losses on the feature statistics of views: Barlow Twins, VICReg and W-MSE."""

from __future__ import annotations

import torch
from torch import nn

from ...errors import PairLossError
from ...objectives.redundancy import (
    barlow_twins_terms,
    covariance_term,
    cross_correlation,
    normalised_mse,
    variance_term,
    whiten,
)
from ...validation import check_int, check_real, check_result
from .views import check_two_views, check_views


def _float(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class BarlowTwinsLoss(nn.Module):
    r"""Barlow Twins: drive the cross-correlation of two views to the identity.

    .. math::
        C = \frac{1}{B} \hat z_a^\top \hat z_b, \qquad
        L = \sum_i (1 - C_{ii})^2 + \lambda \sum_{i \ne j} C_{ij}^2

    with :math:`\hat z` each view standardised per feature over the batch (biased variance,
    eps 1e-5, as batch normalisation). Paper: Zbontar et al., ICML 2021, eq. 1 (``lambda =
    5e-3``). Checked against lightly's ``BarlowTwinsLoss`` (values and gradients, float64). A
    feature-space loss: O(B D^2), no pair matrix, no engine.

    Shapes: ``z_a``, ``z_b`` [B, D] with B >= 2. Returns a scalar.
    """

    def __init__(self, lambda_param: float = 5e-3) -> None:
        super().__init__()
        self.lambda_param = check_real(lambda_param, "lambda_param", low=0.0)

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        """The loss of two views."""
        a, b = check_two_views(z_a, z_b, min_batch=2)
        invariance, redundancy = barlow_twins_terms(cross_correlation(_float(a), _float(b)))
        return (invariance + self.lambda_param * redundancy).to(z_a.dtype)


class ViewVICRegLoss(nn.Module):
    r"""VICReg on two views (lightly's call convention ``loss(z_a, z_b)``).

    .. math::
        L = \lambda\, \mathrm{MSE}(z_a, z_b)
          + \frac{\mu}{2} \big(v(z_a) + v(z_b)\big) + \nu \big(c(z_a) + c(z_b)\big)

    with :math:`v(z) = \frac{1}{D}\sum_d \mathrm{relu}(1 - \sqrt{\mathrm{Var}(z_{\cdot d}) +
    \epsilon})` and :math:`c(z) = \frac{1}{D}\sum_{d \ne e} \mathrm{Cov}(z)_{de}^2`. Paper:
    Bardes, Ponce & LeCun, ICLR 2022 (``lambda = mu = 25``, ``nu = 1``, ``eps = 1e-4``).
    Checked against lightly's ``VICRegLoss`` (values and gradients, float64). The name keeps
    ``pairloss.VICRegLoss`` free for pytorch-metric-learning's convention
    (``loss(embeddings, ref_emb=...)``); :class:`pairloss.compat.lightly.VICRegLoss` is this
    class under lightly's name.

    Shapes: ``z_a``, ``z_b`` [B, D] with B >= 2. Returns a scalar.
    """

    def __init__(
        self,
        lambda_param: float = 25.0,
        mu_param: float = 25.0,
        nu_param: float = 1.0,
        eps: float = 1e-4,
    ) -> None:
        super().__init__()
        self.lambda_param = check_real(lambda_param, "lambda_param", low=0.0)
        self.mu_param = check_real(mu_param, "mu_param", low=0.0)
        self.nu_param = check_real(nu_param, "nu_param", low=0.0)
        self.eps = check_real(eps, "eps", low=0.0)

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        """The loss of two views."""
        a, b = check_two_views(z_a, z_b, min_batch=2)
        a, b = _float(a), _float(b)
        invariance = nn.functional.mse_loss(a, b)
        variance = 0.5 * (variance_term(a, self.eps) + variance_term(b, self.eps))
        covariance = covariance_term(a) + covariance_term(b)
        loss = (
            self.lambda_param * invariance + self.mu_param * variance + self.nu_param * covariance
        )
        return check_result(loss.to(z_a.dtype), a, "z_a")


class WMSELoss(nn.Module):
    r"""W-MSE: whiten every view in random sub-batches, then pull the views together.

    The B samples are split at random into sub-batches of ``w_size``; in each, every view is
    whitened (:func:`~pairloss.objectives.redundancy.whiten`: centred and decorrelated by the
    inverse Cholesky factor of its covariance), and the loss is the mean over the V (V - 1) / 2
    pairs of views of the normalised squared error ``2 - 2 cos``, averaged over ``w_iter``
    draws. Paper: Ermolov et al., "Whitening for Self-Supervised Representation Learning", ICML
    2021 (``w_size`` must exceed D, the paper uses twice D). The random split uses
    ``torch.randperm`` (seed torch for a reproducible draw). Checked against lightly's
    ``WMSELoss`` on the same draws (values and gradients, float64; lightly's running whitening
    statistics only serve its evaluation mode and are not kept here).

    Args:
        w_size: samples per whitening sub-batch (B must be a multiple; default 256).
        w_iter: number of random splits averaged (default 1).
        eps: shrinkage of the covariance towards the identity (default 0).

    Shapes: ``views`` [V, B, D] or a list of V [B, D] tensors, V >= 2. Returns a scalar.
    """

    def __init__(self, w_size: int = 256, w_iter: int = 1, eps: float = 0.0) -> None:
        super().__init__()
        self.w_size = check_int(w_size, "w_size", minimum=2)
        self.w_iter = check_int(w_iter, "w_iter", minimum=1)
        self.eps = check_real(eps, "eps", low=0.0, high=1.0)

    def forward(self, views) -> torch.Tensor:
        """The loss of V views of B samples."""
        z = _float(check_views(views))
        n_views, b, d = z.shape
        if b % self.w_size:
            raise PairLossError(
                f"views: have {b} samples, not a multiple of w_size={self.w_size}; expected "
                "whole whitening sub-batches"
            )
        if self.w_size <= d:
            raise PairLossError(
                f"w_size: is {self.w_size} but the features have {d} dimensions; expected "
                "w_size > dim (the covariance of a sub-batch must have full rank)"
            )
        loss = z.new_zeros(())
        pairs = n_views * (n_views - 1) // 2
        for _ in range(self.w_iter):
            white = torch.empty_like(z)
            for idx in torch.randperm(b).view(-1, self.w_size).to(z.device):
                for v in range(n_views):
                    white[v, idx] = whiten(z[v, idx], self.eps, "views")
            for i in range(n_views - 1):
                for j in range(i + 1, n_views):
                    loss = loss + normalised_mse(white[i], white[j])
        return (loss / (self.w_iter * pairs)).to(views[0].dtype)


def barlow_twins(z_a, z_b, lambda_param: float = 5e-3) -> torch.Tensor:
    """Functional form of :class:`BarlowTwinsLoss`."""
    return BarlowTwinsLoss(lambda_param)(z_a, z_b)


def view_vicreg(z_a, z_b, lambda_param=25.0, mu_param=25.0, nu_param=1.0, eps=1e-4):
    """Functional form of :class:`ViewVICRegLoss`."""
    return ViewVICRegLoss(lambda_param, mu_param, nu_param, eps)(z_a, z_b)


def wmse(views, w_size: int = 256, w_iter: int = 1, eps: float = 0.0) -> torch.Tensor:
    """Functional form of :class:`WMSELoss`."""
    return WMSELoss(w_size, w_iter, eps)(views)
