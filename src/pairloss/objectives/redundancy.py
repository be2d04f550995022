"""Feature-space objectives of two or more views: cross-correlation (Barlow Twins), variance,
invariance and covariance (VICReg) and whitening (W-MSE).

These act on the D x D statistics of the features, not on a B x N matrix of pair scores, so
they need no pair engine: each is O(B D^2) work and O(D^2) memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import PairLossError
from ..similarity import normalize_rows, power_of_two_scale


def batch_standardise(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(z - mean) / sqrt(var + eps) per feature over the batch, with the biased variance (what
    ``F.batch_norm`` does in training mode without affine parameters)."""
    return F.batch_norm(z, None, None, None, None, training=True, momentum=0.0, eps=eps)


def off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a square matrix, as a vector."""
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def cross_correlation(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """C = standardise(z_a)^T standardise(z_b) / B, the [D, D] cross-correlation of two views."""
    return batch_standardise(z_a).T @ batch_standardise(z_b) / z_a.shape[0]


def barlow_twins_terms(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(invariance, redundancy) = (sum_i (1 - C_ii)^2, sum_{i != j} C_ij^2)."""
    return (torch.diagonal(c) - 1).pow(2).sum(), off_diagonal(c).pow(2).sum()


def variance_term(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """VICReg's variance hinge: mean over features of relu(1 - sqrt(var + eps)) (unbiased
    variance over the batch)."""
    return F.relu(1.0 - torch.sqrt(z.var(dim=0) + eps)).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """VICReg's covariance term: the squared off-diagonal entries of the (unbiased) feature
    covariance, summed and divided by D."""
    z = z - z.mean(dim=0)
    cov = z.T @ z / (z.shape[0] - 1)
    return off_diagonal(cov).pow(2).sum() / z.shape[1]


def whiten(x: torch.Tensor, eps: float = 0.0, name: str = "x") -> torch.Tensor:
    """Whitened rows: ``W (x_i - mean)`` with ``W = L^{-1}``, ``L L^T`` the Cholesky factor of
    the (unbiased, shrunk by ``eps`` towards the identity) feature covariance of ``x``
    [n, D] (W-MSE's whitening; needs n > D).

    Without shrinkage the whitened rows do not depend on the scale of ``x``, so ``x`` is first
    divided by its power-of-two scale (exact, see
    :func:`~pairloss.similarity.power_of_two_scale`): the covariance neither overflows nor
    underflows at any magnitude. A covariance that is not positive definite (fewer distinct
    rows than features, a constant feature) raises a PairLossError naming ``name``."""
    if eps == 0:
        x = x / power_of_two_scale(x)
    xc = x - x.mean(dim=0)
    cov = xc.T @ xc / (x.shape[0] - 1)
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    cov = (1 - eps) * cov + eps * eye
    factor, info = torch.linalg.cholesky_ex(cov)
    if bool(info):
        raise PairLossError(
            f"{name}: the feature covariance of a whitening sub-batch is not positive definite "
            "(constant or linearly dependent features); expected features of full rank, or "
            "eps > 0"
        )
    inv_sqrt = torch.linalg.solve_triangular(factor, eye, upper=False)
    return xc @ inv_sqrt.T


def normalised_mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``|x/|x| - y/|y||^2 = 2 - 2 cos(x, y)``."""
    return 2 - 2 * (normalize_rows(x) * normalize_rows(y)).sum(dim=1).mean()
