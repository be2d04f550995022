"""Classification losses on logits: each as a function and as an ``nn.Module``.

Multi-class losses take logits [B, C] (C >= 2) and integer class targets [B]; the asymmetric
loss takes multi-hot targets [B, C]; AnyLoss and the Mann-Whitney surrogate take binary scores
[B] with 0/1 targets [B]. Bad input raises :class:`pairloss.PairLossError` naming the argument.
Half-precision inputs are computed in float32 and returned in the input dtype.
"""

from .anyloss import METRICS, AnyLoss, any_loss
from .asymmetric import AsymmetricLoss, asymmetric_loss
from .auc import MannWhitneyLoss, mann_whitney_loss
from .comp_sum import CompSumLoss, comp_sum_loss
from .cross_entropy import LabelSmoothingCrossEntropyLoss, label_smoothing_cross_entropy
from .focal import FocalLoss, focal_loss
from .ldr import (
    AdaptiveLDRKLLoss,
    LDRKLLoss,
    adaptive_ldr_kl_loss,
    adaptive_ldr_lambdas,
    ldr_kl_loss,
)
from .poly import Poly1Loss, poly1_loss
from .spherical import SphericalZLoss, spherical_z_loss
from .squentropy import SquentropyLoss, squentropy_loss

__all__ = [
    "METRICS",
    "AdaptiveLDRKLLoss",
    "AnyLoss",
    "AsymmetricLoss",
    "CompSumLoss",
    "FocalLoss",
    "LDRKLLoss",
    "LabelSmoothingCrossEntropyLoss",
    "MannWhitneyLoss",
    "Poly1Loss",
    "SphericalZLoss",
    "SquentropyLoss",
    "adaptive_ldr_kl_loss",
    "adaptive_ldr_lambdas",
    "any_loss",
    "asymmetric_loss",
    "comp_sum_loss",
    "focal_loss",
    "label_smoothing_cross_entropy",
    "ldr_kl_loss",
    "mann_whitney_loss",
    "poly1_loss",
    "spherical_z_loss",
    "squentropy_loss",
]
