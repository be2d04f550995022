"""The embedding losses: one module per loss (class + functional form)."""

from __future__ import annotations

from .binomial_deviance import BinomialDevianceLoss, binomial_deviance
from .circle import CircleLoss, circle
from .contrastive import ContrastiveLoss, contrastive
from .dcl import DCLLoss, DCLWLoss, dcl, dclw
from .lifted_structure import GeneralizedLiftedStructureLoss, generalized_lifted_structure
from .margin import MarginLoss, margin_loss
from .margin_softmax import (
    ArcFaceLoss,
    CosFaceLoss,
    LargeMarginSoftmaxLoss,
    NormalizedSoftmaxLoss,
    SphereFaceLoss,
    SubCenterArcFaceLoss,
    arcface,
    cosface,
    large_margin_softmax,
    normalized_softmax,
    sphereface,
    sub_center_arcface,
)
from .multi_similarity import MultiSimilarityLoss, multi_similarity
from .npairs import NPairsLoss, npairs
from .ntxent import InfoNCELoss, NTXentLoss, ntxent
from .proxy_anchor import ProxyAnchorLoss, proxy_anchor
from .proxy_circle import ProxyCircleLoss, proxy_circle
from .proxy_nca import ProxyNCALoss, proxy_nca
from .soft_triple import SoftTripleLoss, soft_triple
from .supcon import SupConLoss, supcon
from .triplet import (
    BatchHardSoftMarginTripletLoss,
    BatchHardTripletLoss,
    SemiHardTripletLoss,
    TripletMarginLoss,
    batch_hard_soft_margin_triplet,
    batch_hard_triplet,
    semi_hard_triplet,
    triplet_margin,
)

__all__ = [
    "ArcFaceLoss",
    "BatchHardSoftMarginTripletLoss",
    "BatchHardTripletLoss",
    "BinomialDevianceLoss",
    "CircleLoss",
    "ContrastiveLoss",
    "CosFaceLoss",
    "DCLLoss",
    "DCLWLoss",
    "GeneralizedLiftedStructureLoss",
    "InfoNCELoss",
    "LargeMarginSoftmaxLoss",
    "MarginLoss",
    "MultiSimilarityLoss",
    "NPairsLoss",
    "NTXentLoss",
    "NormalizedSoftmaxLoss",
    "ProxyAnchorLoss",
    "ProxyCircleLoss",
    "ProxyNCALoss",
    "SemiHardTripletLoss",
    "SoftTripleLoss",
    "SphereFaceLoss",
    "SubCenterArcFaceLoss",
    "SupConLoss",
    "TripletMarginLoss",
    "arcface",
    "batch_hard_soft_margin_triplet",
    "batch_hard_triplet",
    "binomial_deviance",
    "circle",
    "contrastive",
    "cosface",
    "dcl",
    "dclw",
    "generalized_lifted_structure",
    "large_margin_softmax",
    "margin_loss",
    "multi_similarity",
    "normalized_softmax",
    "npairs",
    "ntxent",
    "proxy_anchor",
    "proxy_circle",
    "proxy_nca",
    "semi_hard_triplet",
    "soft_triple",
    "sphereface",
    "sub_center_arcface",
    "supcon",
    "triplet_margin",
]
