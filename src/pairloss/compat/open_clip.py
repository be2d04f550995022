"""open_clip's ``ClipLoss`` and ``SigLipLoss`` under their own names and call convention,
computed by pairloss's two-tower engine.

open_clip's model normalises the features and hands the loss the exponentiated scale (and the
bias)::

    image_features, text_features, logit_scale = model(images, texts)
    loss = ClipLoss()(image_features, text_features, logit_scale)

so these classes score with the plain dot product and take ``logit_scale`` / ``logit_bias`` as
tensors that receive their gradients. The results are open_clip's (checked in float64, values and
gradients of both towers, the scale and the bias); the blocked engine never holds the B x B
logits. Training on several processes (``world_size > 1``) is refused with an error: gathering
is not part of these adapters.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import PairLossError
from ..losses.contrastive.clip import as_scale, check_logit_scale
from ..losses.contrastive.towers import TowerLoss, check_towers
from ..objectives.tower_sigmoid import SigmoidTowers
from ..objectives.tower_softmax import SoftmaxTowers


def _single_process(world_size: int) -> None:
    if world_size != 1:
        raise PairLossError(
            f"world_size: is {world_size}; the pairloss open_clip adapters compute one "
            "process's loss only, expected world_size=1"
        )


def _inputs(image_features, text_features, logit_scale, logit_bias):
    x, y = check_towers(
        image_features, text_features, "image_features", "text_features", extra_rows=True
    )
    scale = as_scale(logit_scale, x)
    check_logit_scale(float(scale.detach()))
    bias = None if logit_bias is None else as_scale(logit_bias, x, "logit_bias")
    return x, y, scale, bias


class ClipLoss(nn.Module):
    """open_clip's ``ClipLoss``: ``(CE(logits_per_image) + CE(logits_per_text)) / 2`` with
    ``logits = logit_scale * image_features @ text_features.T (+ logit_bias)``.

    Same constructor (the distributed options are accepted for one process) and forward:
    ``forward(image_features, text_features, logit_scale, logit_bias=None, output_dict=False)``.
    """

    def __init__(
        self,
        local_loss: bool = False,
        gather_with_grad: bool = False,
        cache_labels: bool = False,
        rank: int = 0,
        world_size: int = 1,
        use_horovod: bool = False,
        engine: str = "auto",
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        _single_process(world_size)
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad
        self.cache_labels = cache_labels
        self.rank, self.world_size, self.use_horovod = rank, world_size, use_horovod
        self._loss = TowerLoss("dot", engine=engine, block_size=block_size)

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | float,
        logit_bias: torch.Tensor | float | None = None,
        output_dict: bool = False,
    ):
        """The loss (or ``{"contrastive_loss": loss}`` with ``output_dict``)."""
        x, y, scale, bias = _inputs(image_features, text_features, logit_scale, logit_bias)
        params = (scale,) if bias is None else (scale, bias)
        objective = SoftmaxTowers(
            ((0, 1),),
            x.shape[0],
            lambda: scale,
            None if bias is None else (lambda: bias),
            params,
            row_weight=0.5,
            column_weight=0.5,
        )
        loss = self._loss.run(objective, [x, y], ["image_features", "text_features"])
        return {"contrastive_loss": loss} if output_dict else loss


class SigLipLoss(nn.Module):
    """open_clip's ``SigLipLoss``: ``-sum log sigmoid(labels * logits) / B`` with labels +1 on
    the diagonal and -1 elsewhere. Same constructor and forward:
    ``forward(image_features, text_features, logit_scale, logit_bias, output_dict=False)``.
    """

    def __init__(
        self,
        cache_labels: bool = False,
        rank: int = 0,
        world_size: int = 1,
        dist_impl: str | None = None,
        engine: str = "auto",
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        _single_process(world_size)
        self.cache_labels, self.rank, self.world_size = cache_labels, rank, world_size
        self.dist_impl = dist_impl or "bidir"
        self._loss = TowerLoss("dot", engine=engine, block_size=block_size)

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | float,
        logit_bias: torch.Tensor | float | None,
        output_dict: bool = False,
    ):
        """The loss (or ``{"contrastive_loss": loss}`` with ``output_dict``)."""
        x, y, scale, bias = _inputs(image_features, text_features, logit_scale, logit_bias)
        if bias is None:
            bias = torch.zeros((), dtype=x.dtype, device=x.device)
        objective = SigmoidTowers(x.shape[0], lambda: scale, lambda: bias, (scale, bias))
        loss = self._loss.run(objective, [x, y], ["image_features", "text_features"])
        return {"contrastive_loss": loss} if output_dict else loss
