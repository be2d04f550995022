"""BYOL and SimSiam: a predictor's output against a stop-gradient target, and the momentum
(exponential moving average) target network of BYOL."""

from __future__ import annotations

import math

import torch
from torch import nn

from ...errors import PairLossError
from ...similarity import cosine_rows
from ...validation import check_bool, check_real
from .views import check_two_views


class NegativeCosineLoss(nn.Module):
    r"""Negative cosine similarity of predictions and stop-gradient targets (BYOL, SimSiam).

    .. math::
        L = -\frac{1}{B} \sum_i \cos\big(p_i, \mathrm{sg}(z_i)\big), \qquad
        L_{sym} = \frac{1}{2}\big(L(p_1, z_2) + L(p_2, z_1)\big)

    Papers: Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021 (the
    symmetric form with the stop-gradient); Grill et al., "Bootstrap Your Own Latent",
    NeurIPS 2020 (``2 - 2 cos``, the same gradient up to a factor 2; the target comes
    from a momentum network, see :func:`ema_update_`). The cosine uses ``eps`` as
    ``torch.nn.functional.cosine_similarity`` does. With ``stop_gradient=False`` this is
    lightly's ``NegativeCosineSimilarity`` (checked against it, values and gradients).

    Args:
        stop_gradient: detach the targets (default True).
        eps: the cosine's guard against zero norms (default 1e-8).

    Shapes: ``predictions``, ``targets`` [B, D]; for the symmetric form also
    ``predictions_2``, ``targets_2`` [B, D] (the other view's prediction and target). Returns a
    scalar.
    """

    def __init__(self, stop_gradient: bool = True, eps: float = 1e-8) -> None:
        super().__init__()
        self.stop_gradient = check_bool(stop_gradient, "stop_gradient")
        self.eps = check_real(eps, "eps", low=0.0, low_open=True)

    def _one(self, p: torch.Tensor, z: torch.Tensor, names) -> torch.Tensor:
        p, z = check_two_views(p, z, names=names)
        if self.stop_gradient:
            z = z.detach()
        return -cosine_rows(p, z, eps=self.eps).mean()

    def forward(
        self,
        predictions: torch.Tensor,
        targets: torch.Tensor,
        predictions_2: torch.Tensor | None = None,
        targets_2: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``L(p, z)``, or the symmetric loss when the second view's pair is given."""
        loss = self._one(predictions, targets, ("predictions", "targets"))
        if (predictions_2 is None) != (targets_2 is None):
            raise PairLossError("predictions_2, targets_2: expected both or neither")
        if predictions_2 is None:
            return loss
        other = self._one(predictions_2, targets_2, ("predictions_2", "targets_2"))
        return 0.5 * (loss + other)


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    r"""BYOL's target update, in place: :math:`\xi \leftarrow m\, \xi + (1 - m)\, \theta` for
    every parameter (and floating buffer) of ``target`` from the matching one of ``online``.
    ``momentum`` in [0, 1] (1 keeps the target, 0 copies the online network)."""
    m = check_real(momentum, "momentum", low=0.0, high=1.0)
    t_params, o_params = list(target.parameters()), list(online.parameters())
    t_buffers = [b for b in target.buffers() if b.is_floating_point()]
    o_buffers = [b for b in online.buffers() if b.is_floating_point()]
    if len(t_params) != len(o_params) or len(t_buffers) != len(o_buffers):
        raise PairLossError(
            "target: has a different set of parameters than online; expected two copies of "
            "one architecture"
        )
    for t, o in zip(t_params + t_buffers, o_params + o_buffers):
        if t.shape != o.shape:
            raise PairLossError(
                f"target: a tensor of shape {tuple(t.shape)} faces one of shape "
                f"{tuple(o.shape)}; expected two copies of one architecture"
            )
        t.mul_(m).add_(o.detach(), alpha=1 - m)


def cosine_momentum(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    r"""BYOL's momentum schedule: :math:`m_k = 1 - (1 - m_{base}) \frac{\cos(\pi k / K) +
    1}{2}` from ``base`` (0.996 in the paper) at step 0 to ``final`` (1) at step ``K``."""
    if total_steps < 1 or not 0 <= step <= total_steps:
        raise PairLossError(
            f"step: expected 0 <= step <= total_steps with total_steps >= 1, got {step} of "
            f"{total_steps}"
        )
    return final - (final - base) * (math.cos(math.pi * step / total_steps) + 1) / 2


def negative_cosine(predictions, targets, predictions_2=None, targets_2=None, stop_gradient=True):
    """Functional form of :class:`NegativeCosineLoss`."""
    return NegativeCosineLoss(stop_gradient)(predictions, targets, predictions_2, targets_2)
