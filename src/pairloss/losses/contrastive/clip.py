"""CLIP: symmetric InfoNCE with a learnable logit scale (Radford et al., "Learning Transferable
Visual Models From Natural Language Supervision", ICML 2021)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ...errors import PairLossError
from ...objectives.tower_softmax import SoftmaxTowers
from ...validation import check_bool, check_real
from .towers import TowerLoss, check_params_device, check_towers


def check_logit_scale(value: object, name: str = "logit_scale") -> float:
    """A finite number > 0 (the multiplier of the similarities, not its log)."""
    return check_real(value, name, low=0.0, low_open=True)


class CLIPLoss(TowerLoss):
    r"""Symmetric InfoNCE of paired towers (CLIP).

    With logits :math:`z_{ij} = t\, s(x_i, y_j)` (``t`` the logit scale, ``s`` cosine
    similarity by default):

    .. math::
        L = \frac{1}{2}\Big[\frac{1}{B}\sum_i \big(\mathrm{LSE}_j z_{ij} - z_{ii}\big)
          + \frac{1}{B}\sum_{j<B} \big(\mathrm{LSE}_i z_{ij} - z_{jj}\big)\Big]

    the mean of the image-to-text and text-to-image cross-entropies with the paired item as the
    target. Paper: Radford et al., ICML 2021 (fig. 3's pseudo-code). The scale is learned as
    ``t = exp(w)``, ``w`` initialised to ``log(1 / 0.07)`` as in the paper and open_clip, and
    clamped at ``max_logit_scale = 100`` (the paper clips it at 100; open_clip clamps ``w`` to
    ``[0, log 100]`` after each optimiser step, which :meth:`clamp_logit_scale_` does too).

    The row pass and the column pass share one walk over row blocks: the blocked engine gathers
    each row's log-sum-exp and each column's (merged over blocks) without gradient, then scores
    the blocks again and writes both softmaxes into one gradient buffer (four matrix products;
    no B x B matrix). Checked against open_clip's ``ClipLoss`` (values and gradients of both
    towers and of the scale, float64).

    Args:
        logit_scale: initial scale ``t`` (default ``1 / 0.07``).
        max_logit_scale: clamp of ``t`` in the forward pass (default 100; None: no clamp).
        learn_logit_scale: whether ``w = log t`` is an ``nn.Parameter`` with gradient.
        distance, engine, block_size: see :class:`~pairloss.losses.contrastive.towers.TowerLoss`.

    Shapes: ``image_features`` [B, D]; ``text_features`` [N, D] with N >= B, row i the pair of
    image i (rows beyond B are extra negatives of the image-to-text direction). Returns a scalar.
    """

    def __init__(
        self,
        logit_scale: float = 1 / 0.07,
        max_logit_scale: float | None = 100.0,
        learn_logit_scale: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        scale = check_logit_scale(logit_scale)
        self.max_logit_scale = (
            None
            if max_logit_scale is None
            else check_logit_scale(max_logit_scale, "max_logit_scale")
        )
        learn = check_bool(learn_logit_scale, "learn_logit_scale")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(scale)), requires_grad=learn)

    def scale(self) -> torch.Tensor:
        """The current multiplier ``exp(w)``, clamped at ``max_logit_scale``."""
        w = self.logit_scale
        if self.max_logit_scale is not None:
            w = w.clamp(max=math.log(self.max_logit_scale))
        return w.exp()

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp ``w = log t`` to ``[0, log(max_logit_scale)]`` in place, as open_clip's
        training loop does after each optimiser step."""
        if self.max_logit_scale is not None:
            self.logit_scale.clamp_(0, math.log(self.max_logit_scale))

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """CLIP loss of ``image_features`` [B, D] against ``text_features`` [N >= B, D]."""
        x, y = check_towers(
            image_features, text_features, "image_features", "text_features", extra_rows=True
        )
        check_params_device(self, x, "image_features")
        objective = SoftmaxTowers(
            ((0, 1),),
            x.shape[0],
            self.scale,
            params=(self.logit_scale,),
            row_weight=0.5,
            column_weight=0.5,
        )
        return self.run(objective, [x, y], ["image_features", "text_features"])


def clip(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: float | torch.Tensor = 1 / 0.07,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`CLIPLoss` with a given scale ``t`` (a number, or a 0-d tensor
    that receives its gradient, e.g. ``model.logit_scale.exp()``); ``kwargs``: distance,
    engine, block_size."""
    loss = TowerLoss(**kwargs)
    x, y = check_towers(
        image_features, text_features, "image_features", "text_features", extra_rows=True
    )
    scale = as_scale(logit_scale, x)
    check_logit_scale(float(scale.detach()))
    objective = SoftmaxTowers(
        ((0, 1),),
        x.shape[0],
        lambda: scale,
        params=(scale,),
        row_weight=0.5,
        column_weight=0.5,
    )
    return loss.run(objective, [x, y], ["image_features", "text_features"])


def as_scale(value: object, like: torch.Tensor, name: str = "logit_scale") -> torch.Tensor:
    """A 0-d (or one-element) tensor on ``like``'s device from a number or a tensor; tensors
    keep their graph. Refuses non-finite values (the callers check the sign)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise PairLossError(f"{name}: expected a scalar, got shape {tuple(value.shape)}")
        if value.device != like.device:
            raise PairLossError(
                f"{name}: is on device {value.device} but the features are on {like.device}; "
                "expected the same device"
            )
        if not bool(torch.isfinite(value).all()):
            raise PairLossError(f"{name}: expected a finite number, got {value.item()!r}")
        return value.reshape(()).to(like.dtype) if value.dtype != like.dtype else value.reshape(())
    check_real(value, name)
    return torch.tensor(float(value), dtype=like.dtype, device=like.device)
