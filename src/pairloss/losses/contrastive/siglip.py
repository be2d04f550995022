"""SigLIP: pairwise sigmoid loss with a learnable scale and bias (Zhai, Mustafa, Kolesnikov &
Beyer, "Sigmoid Loss for Language Image Pre-Training", ICCV 2023)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ...objectives.tower_sigmoid import SigmoidTowers
from ...validation import check_bool, check_real
from .clip import as_scale, check_logit_scale
from .towers import TowerLoss, check_params_device, check_towers


class SigLIPLoss(TowerLoss):
    r"""Pairwise sigmoid loss of paired towers (SigLIP).

    .. math::
        L = -\frac{1}{B} \sum_{i} \sum_{j} \log \sigma\big(y_{ij} (t\, s(x_i, y_j) + b)\big),
        \qquad y_{ij} = \begin{cases} +1 & i = j \\ -1 & i \ne j \end{cases}

    with ``t = exp(t')`` and the bias ``b`` learned. Paper: Zhai et al., ICCV 2023, algorithm 1
    (``t'`` initialised to ``log 10``, ``b`` to ``-10``). Every pair is an independent binary
    problem, so each row's terms are a sum and the blocked engine walks the rows once (three
    matrix products). Checked against open_clip's ``SigLipLoss`` (values and gradients of both
    towers, the scale and the bias, float64).

    Args:
        logit_scale: initial ``t`` (default 10).
        logit_bias: initial ``b`` (default -10).
        learn_logit_scale, learn_logit_bias: whether ``t'`` and ``b`` are learned.
        distance, engine, block_size: see :class:`~pairloss.losses.contrastive.towers.TowerLoss`
            (cosine by default: SigLIP normalises both towers).

    Shapes: ``image_features`` [B, D]; ``text_features`` [N, D] with N >= B, row i the pair of
    image i (rows beyond B are negatives of every image). Returns a scalar.
    """

    def __init__(
        self,
        logit_scale: float = 10.0,
        logit_bias: float = -10.0,
        learn_logit_scale: bool = True,
        learn_logit_bias: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        scale = check_logit_scale(logit_scale)
        bias = check_real(logit_bias, "logit_bias")
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(scale)),
            requires_grad=check_bool(learn_logit_scale, "learn_logit_scale"),
        )
        self.logit_bias = nn.Parameter(
            torch.tensor(bias), requires_grad=check_bool(learn_logit_bias, "learn_logit_bias")
        )

    def scale(self) -> torch.Tensor:
        """The current multiplier ``exp(t')``."""
        return self.logit_scale.exp()

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """SigLIP loss of ``image_features`` [B, D] against ``text_features`` [N >= B, D]."""
        x, y = check_towers(
            image_features, text_features, "image_features", "text_features", extra_rows=True
        )
        check_params_device(self, x, "image_features")
        objective = SigmoidTowers(
            x.shape[0], self.scale, lambda: self.logit_bias, (self.logit_scale, self.logit_bias)
        )
        return self.run(objective, [x, y], ["image_features", "text_features"])


def siglip(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: float | torch.Tensor = 10.0,
    logit_bias: float | torch.Tensor = -10.0,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`SigLIPLoss` with the scale ``t`` and bias ``b`` passed in
    (numbers, or 0-d tensors that receive their gradients, e.g. ``model.logit_scale.exp()``
    and ``model.logit_bias``); ``kwargs`` as the class."""
    loss = TowerLoss(**kwargs)
    x, y = check_towers(
        image_features, text_features, "image_features", "text_features", extra_rows=True
    )
    scale = as_scale(logit_scale, x)
    check_logit_scale(float(scale.detach()))
    bias = as_scale(logit_bias, x, "logit_bias")
    objective = SigmoidTowers(x.shape[0], lambda: scale, lambda: bias, (scale, bias))
    return loss.run(objective, [x, y], ["image_features", "text_features"])
