"""The embedding losses: one module per loss (class + functional form)."""

from __future__ import annotations

from .metric.binomial_deviance import BinomialDevianceLoss, binomial_deviance
from .metric.circle import CircleLoss, circle
from .metric.contrastive import ContrastiveLoss, contrastive
from .metric.dcl import DCLLoss, DCLWLoss, dcl, dclw
from .metric.ge2e import GE2ELoss, ge2e
from .metric.lifted_structure import GeneralizedLiftedStructureLoss, generalized_lifted_structure
from .metric.margin import MarginLoss, margin_loss
from .metric.multi_similarity import MultiSimilarityLoss, multi_similarity
from .metric.npairs import NPairsLoss, npairs
from .metric.ntxent import InfoNCELoss, NTXentLoss, ntxent
from .metric.pfid import PFIDLoss, pfid
from .metric.prototypes import ICNNLoss, ProtoTripletLoss, icnn, proto_triplet
from .metric.supcon import SupConLoss, supcon
from .metric.triplet import (
    BatchHardSoftMarginTripletLoss,
    BatchHardTripletLoss,
    SemiHardTripletLoss,
    TripletMarginLoss,
    batch_hard_soft_margin_triplet,
    batch_hard_triplet,
    semi_hard_triplet,
    triplet_margin,
)
from .proxy.margin_softmax import (
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
from .proxy.mean_field import (
    MeanFieldClassWiseMultiSimilarityLoss,
    MeanFieldContrastiveLoss,
    mean_field_class_wise_multi_similarity,
    mean_field_contrastive,
)
from .proxy.proxy_anchor import ProxyAnchorLoss, proxy_anchor
from .proxy.proxy_circle import ProxyCircleLoss, proxy_circle
from .proxy.proxy_nca import ProxyNCALoss, proxy_nca
from .proxy.soft_triple import SoftTripleLoss, soft_triple
from .proxy.unpg import UNPGLoss, unpg

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
