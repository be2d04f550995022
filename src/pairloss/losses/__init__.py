"""The embedding losses: one module per loss (class + functional form)."""

from __future__ import annotations

from .binomial_deviance import BinomialDevianceLoss, binomial_deviance
from .circle import CircleLoss, circle
from .contrastive import ContrastiveLoss, contrastive
from .dcl import DCLLoss, DCLWLoss, dcl, dclw
from .ge2e import GE2ELoss, ge2e
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
from .mean_field import (
    MeanFieldClassWiseMultiSimilarityLoss,
    MeanFieldContrastiveLoss,
    mean_field_class_wise_multi_similarity,
    mean_field_contrastive,
)
from .multi_similarity import MultiSimilarityLoss, multi_similarity
from .npairs import NPairsLoss, npairs
from .ntxent import InfoNCELoss, NTXentLoss, ntxent
from .pfid import PFIDLoss, pfid
from .prototypes import ICNNLoss, ProtoTripletLoss, icnn, proto_triplet
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
from .unpg import UNPGLoss, unpg

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
    "GE2ELoss",
    "GeneralizedLiftedStructureLoss",
    "ICNNLoss",
    "InfoNCELoss",
    "LargeMarginSoftmaxLoss",
    "MarginLoss",
    "MeanFieldClassWiseMultiSimilarityLoss",
    "MeanFieldContrastiveLoss",
    "MultiSimilarityLoss",
    "NPairsLoss",
    "NTXentLoss",
    "NormalizedSoftmaxLoss",
    "PFIDLoss",
    "ProtoTripletLoss",
    "ProxyAnchorLoss",
    "ProxyCircleLoss",
    "ProxyNCALoss",
    "SemiHardTripletLoss",
    "SoftTripleLoss",
    "SphereFaceLoss",
    "SubCenterArcFaceLoss",
    "SupConLoss",
    "TripletMarginLoss",
    "UNPGLoss",
    "arcface",
    "batch_hard_soft_margin_triplet",
    "batch_hard_triplet",
    "binomial_deviance",
    "circle",
    "contrastive",
    "cosface",
    "dcl",
    "dclw",
    "ge2e",
    "generalized_lifted_structure",
    "icnn",
    "large_margin_softmax",
    "margin_loss",
    "mean_field_class_wise_multi_similarity",
    "mean_field_contrastive",
    "multi_similarity",
    "normalized_softmax",
    "npairs",
    "ntxent",
    "pfid",
    "proto_triplet",
    "proxy_anchor",
    "proxy_circle",
    "proxy_nca",
    "semi_hard_triplet",
    "soft_triple",
    "sphereface",
    "sub_center_arcface",
    "supcon",
    "triplet_margin",
    "unpg",
]
