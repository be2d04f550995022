"""Catalogue family D: two towers, views, sentence pairs and self-supervision.

One module per loss (class + functional form); the classes are exported from
:mod:`pairloss.losses` and the top level. Two-tower losses run on
:mod:`pairloss.two_towers`; the in-batch losses on views run on :mod:`pairloss.engine`.
"""

from .amcl import AMCLLoss, amcl
from .bootstrap import NegativeCosineLoss, cosine_momentum, ema_update_, negative_cosine
from .cacr import CACRLoss, cacr
from .clip import CLIPLoss, clip
from .graded import (
    AnglELoss,
    CoSENTLoss,
    CosineSimilarityLoss,
    angle,
    cosent,
    cosine_similarity_loss,
)
from .groco import GroCoLoss, groco
from .hypersphere import AlignmentLoss, UniformityLoss, alignment, uniformity
from .icon import IConLoss, gaussian_neighbourhood, icon
from .in_batch import InBatchNegativesLoss, in_batch_negatives
from .isogclr import ISogCLRLoss, isogclr
from .multiview import MultiViewInfoNCELoss, MVDHELLoss, multiview_infonce, mv_dhel
from .ntxent_am import NTXentAMLoss, ntxent_am
from .redundancy import BarlowTwinsLoss, ViewVICRegLoss, WMSELoss, barlow_twins, view_vicreg, wmse
from .siglip import SigLIPLoss, siglip
from .weighted import (
    CWCLLoss,
    HardnessWeightedInfoNCELoss,
    SoftInfoNCELoss,
    cwcl,
    hardness_weighted_infonce,
    soft_infonce,
)

__all__ = [
    "AMCLLoss",
    "AlignmentLoss",
    "AnglELoss",
    "BarlowTwinsLoss",
    "CACRLoss",
    "CLIPLoss",
    "CWCLLoss",
    "CoSENTLoss",
    "CosineSimilarityLoss",
    "GroCoLoss",
    "HardnessWeightedInfoNCELoss",
    "IConLoss",
    "ISogCLRLoss",
    "InBatchNegativesLoss",
    "MVDHELLoss",
    "MultiViewInfoNCELoss",
    "NTXentAMLoss",
    "NegativeCosineLoss",
    "SigLIPLoss",
    "SoftInfoNCELoss",
    "UniformityLoss",
    "ViewVICRegLoss",
    "WMSELoss",
    "alignment",
    "amcl",
    "angle",
    "barlow_twins",
    "cacr",
    "clip",
    "cosent",
    "cosine_momentum",
    "cosine_similarity_loss",
    "cwcl",
    "ema_update_",
    "gaussian_neighbourhood",
    "groco",
    "hardness_weighted_infonce",
    "icon",
    "in_batch_negatives",
    "isogclr",
    "multiview_infonce",
    "mv_dhel",
    "negative_cosine",
    "ntxent_am",
    "siglip",
    "soft_infonce",
    "uniformity",
    "view_vicreg",
    "wmse",
]
