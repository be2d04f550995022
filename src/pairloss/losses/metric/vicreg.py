"""VICReg loss (Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", ICLR 2022), with pytorch-metric-learning's ``VICRegLoss`` call,
names, defaults and results."""

from __future__ import annotations

import torch

from ...errors import PairLossError
from ...reducers import MeanReducer
from ...validation import (
    check_embeddings,
    check_real,
    check_result,
    check_same_device_dtype,
)
from ..base import Component, PairLossModule


class VICRegLoss(PairLossModule):
    r"""VICReg on two views ``embeddings`` Z and ``ref_emb`` Z' [B, D] of the same batch:

    .. math::
        L = \lambda\, s(Z, Z') + \mu\,[v(Z) + v(Z')] + \nu\,[c(Z) + c(Z')],\quad
        s = \frac{1}{B}\sum_i \frac{1}{D}\|z_i - z'_i\|^2,\quad
        v(Z) = \frac{1}{D}\sum_d \frac{[1 - \sqrt{\mathrm{Var}(z_{\cdot d}) + \epsilon}]_+}{2},
        \quad c(Z) = \frac{1}{D}\sum_{d \ne d'} C(Z)_{dd'}^2

    with Var and the covariance C unbiased over the batch. Paper: Bardes et al., ICLR 2022,
    eq. 1-6. Call and defaults as pytorch-metric-learning's ``VICRegLoss``:
    ``loss(embeddings, ref_emb=...)``, ``invariance_lambda=25``, ``variance_mu=25``,
    ``covariance_v=1``, ``eps=1e-4``; four sub-losses (``invariance_loss`` one term per row,
    ``variance_loss1`` / ``variance_loss2`` one per feature, ``covariance_loss`` already
    reduced) reduced by ``reducer`` (a mean each by default) and added. No labels, no
    ``indices_tuple``, no distance and no embedding regularizer (as there). Without ``ref_emb``
    the second view is the first (the invariance term is 0).

    Not a pair loss: its terms are per row and per feature, O(B D + D^2).
    """

    components = (
        Component("invariance_loss"),
        Component("variance_loss1"),
        Component("variance_loss2"),
        Component("covariance_loss", "already_reduced"),
    )
    pml_default_reducer = MeanReducer

    def __init__(
        self,
        invariance_lambda: float = 25,
        variance_mu: float = 25,
        covariance_v: float = 1,
        eps: float = 1e-4,
        **kwargs,
    ) -> None:
        if "distance" in kwargs:
            raise PairLossError("distance: VICRegLoss takes no distance; expected none")
        if "embedding_regularizer" in kwargs:
            raise PairLossError("embedding_regularizer: VICRegLoss takes no regularizer")
        super().__init__(**kwargs)
        self.invariance_lambda = check_real(invariance_lambda, "invariance_lambda")
        self.variance_mu = check_real(variance_mu, "variance_mu")
        self.covariance_v = check_real(covariance_v, "covariance_v")
        self.eps = check_real(eps, "eps", low=0.0)

    def invariance_loss(self, emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        """Per row, the mean squared difference of the two views [B]."""
        return torch.mean((emb - ref_emb) ** 2, dim=1)

    def variance_loss(self, emb: torch.Tensor, ref_emb: torch.Tensor):
        """Per feature, [1 - std]+ / 2 of each view ([D], [D])."""
        std_a = torch.sqrt(emb.var(dim=0) + self.eps)
        std_b = torch.sqrt(ref_emb.var(dim=0) + self.eps)
        return torch.relu(1 - std_a) / 2, torch.relu(1 - std_b) / 2

    def covariance_loss(self, emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        """Sum of the squared off-diagonal covariances of each view, over D, added."""
        n, d = emb.shape
        total = emb.new_zeros(())
        for z in (emb, ref_emb):
            z = z - z.mean(dim=0)
            cov = (z.T @ z) / (n - 1)
            total = total + (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / d
        return total

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of the two views ``embeddings`` and ``ref_emb`` [B, D]."""
        if labels is not None or ref_labels is not None:
            raise PairLossError("labels: not supported by VICRegLoss; expected None")
        if indices_tuple is not None:
            raise PairLossError("indices_tuple: not supported by VICRegLoss; expected None")
        embeddings = check_embeddings(embeddings, "embeddings")
        if ref_emb is None:
            ref_emb = embeddings
        else:
            check_same_device_dtype(embeddings, ref_emb, "embeddings", "ref_emb")
            ref_emb = check_embeddings(ref_emb, "ref_emb")
            if ref_emb.shape != embeddings.shape:
                raise PairLossError(
                    f"ref_emb: has shape {tuple(ref_emb.shape)} but embeddings have "
                    f"{tuple(embeddings.shape)}; expected the two views of one batch"
                )
        if embeddings.shape[0] < 2:
            raise PairLossError(
                f"embeddings: VICReg's variances need at least 2 rows, got {embeddings.shape[0]}"
            )
        inv = self.invariance_lambda * self.invariance_loss(embeddings, ref_emb)
        var_a, var_b = self.variance_loss(embeddings, ref_emb)
        cov = self.covariance_v * self.covariance_loss(embeddings, ref_emb)
        for term in (inv, var_a, var_b, cov):  # squares of huge inputs leave the dtype's range
            check_result(term.detach(), embeddings)
        rows = torch.arange(embeddings.shape[0], device=embeddings.device)
        feats = torch.arange(embeddings.shape[1], device=embeddings.device)
        loss_dict = {
            "invariance_loss": {"losses": inv, "indices": rows, "reduction_type": "element"},
            "variance_loss1": {
                "losses": self.variance_mu * var_a,
                "indices": feats,
                "reduction_type": "element",
            },
            "variance_loss2": {
                "losses": self.variance_mu * var_b,
                "indices": feats,
                "reduction_type": "element",
            },
            "covariance_loss": {
                "losses": cov,
                "indices": None,
                "reduction_type": "already_reduced",
            },
        }
        return self.finish_listed(loss_dict, embeddings, None)


def vicreg(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    invariance_lambda: float = 25,
    variance_mu: float = 25,
    covariance_v: float = 1,
    eps: float = 1e-4,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`VICRegLoss` (same arguments and defaults)."""
    return VICRegLoss(
        invariance_lambda=invariance_lambda,
        variance_mu=variance_mu,
        covariance_v=covariance_v,
        eps=eps,
        **kwargs,
    )(embeddings, labels, indices_tuple, ref_emb, ref_labels)
