"""The embedding losses: one module per loss (class + functional form)."""

from __future__ import annotations

# pytorch-metric-learning's other losses, under its names
from .metric.angular import AngularLoss, angular
from .metric.binomial_deviance import BinomialDevianceLoss, binomial_deviance
from .metric.circle import CircleLoss, circle
from .metric.contrastive import ContrastiveLoss, contrastive
from .metric.dcl import DCLLoss, DCLWLoss, dcl, dclw
from .metric.dynamic_soft_margin import DynamicSoftMarginLoss, dynamic_soft_margin
from .metric.fast_ap import FastAPLoss, fast_ap
from .metric.ge2e import GE2ELoss, ge2e
from .metric.histogram import HistogramLoss, histogram
from .metric.instance import InstanceLoss, instance
from .metric.intra_pair_variance import IntraPairVarianceLoss, intra_pair_variance
from .metric.lifted_structure import (
    GeneralizedLiftedStructureLoss,
    LiftedStructureLoss,
    generalized_lifted_structure,
    lifted_structure,
)
from .metric.margin import MarginLoss, margin_loss
from .metric.multi_similarity import MultiSimilarityLoss, multi_similarity
from .metric.nca import NCALoss, nca
from .metric.npairs import NPairsLoss, npairs
from .metric.ntxent import InfoNCELoss, NTXentLoss, ntxent
from .metric.pfid import PFIDLoss, pfid
from .metric.pnp import PNPLoss, pnp
from .metric.prototypes import ICNNLoss, ProtoTripletLoss, icnn, proto_triplet
from .metric.ranked_list import RankedListLoss, ranked_list
from .metric.signal_to_noise import (
    SignalToNoiseRatioContrastiveLoss,
    signal_to_noise_ratio_contrastive,
)
from .metric.smooth_ap import SmoothAPLoss, smooth_ap
from .metric.supcon import SupConLoss, supcon
from .metric.threshold_margin import ThresholdConsistentMarginLoss, threshold_consistent_margin
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
from .metric.tuplet_margin import TupletMarginLoss, tuplet_margin
from .metric.vicreg import VICRegLoss, vicreg
from .metric.wrappers import (
    MultipleLosses,
    SelfSupervisedLoss,
    multiple_losses,
    self_supervised,
)
from .proxy.manifold import ManifoldLoss, manifold
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
from .proxy.p2s_grad import P2SGradLoss, p2s_grad
from .proxy.proxy_anchor import ProxyAnchorLoss, proxy_anchor
from .proxy.proxy_circle import ProxyCircleLoss, proxy_circle
from .proxy.proxy_nca import ProxyNCALoss, proxy_nca
from .proxy.soft_triple import SoftTripleLoss, soft_triple
from .proxy.unpg import UNPGLoss, unpg

__all__ = [
    "AngularLoss",
    "ArcFaceLoss",
    "BatchHardSoftMarginTripletLoss",
    "BatchHardTripletLoss",
    "BinomialDevianceLoss",
    "CircleLoss",
    "ContrastiveLoss",
    "CosFaceLoss",
    "DCLLoss",
    "DCLWLoss",
    "DynamicSoftMarginLoss",
    "FastAPLoss",
    "GE2ELoss",
    "GeneralizedLiftedStructureLoss",
    "HistogramLoss",
    "ICNNLoss",
    "InfoNCELoss",
    "InstanceLoss",
    "IntraPairVarianceLoss",
    "LargeMarginSoftmaxLoss",
    "LiftedStructureLoss",
    "ManifoldLoss",
    "MarginLoss",
    "MeanFieldClassWiseMultiSimilarityLoss",
    "MeanFieldContrastiveLoss",
    "MultiSimilarityLoss",
    "MultipleLosses",
    "NCALoss",
    "NPairsLoss",
    "NTXentLoss",
    "NormalizedSoftmaxLoss",
    "P2SGradLoss",
    "PFIDLoss",
    "PNPLoss",
    "ProtoTripletLoss",
    "ProxyAnchorLoss",
    "ProxyCircleLoss",
    "ProxyNCALoss",
    "RankedListLoss",
    "SelfSupervisedLoss",
    "SemiHardTripletLoss",
    "SignalToNoiseRatioContrastiveLoss",
    "SmoothAPLoss",
    "SoftTripleLoss",
    "SphereFaceLoss",
    "SubCenterArcFaceLoss",
    "SupConLoss",
    "ThresholdConsistentMarginLoss",
    "TripletMarginLoss",
    "TupletMarginLoss",
    "UNPGLoss",
    "VICRegLoss",
    "angular",
    "arcface",
    "batch_hard_soft_margin_triplet",
    "batch_hard_triplet",
    "binomial_deviance",
    "circle",
    "contrastive",
    "cosface",
    "dcl",
    "dclw",
    "dynamic_soft_margin",
    "fast_ap",
    "ge2e",
    "generalized_lifted_structure",
    "histogram",
    "icnn",
    "instance",
    "intra_pair_variance",
    "large_margin_softmax",
    "lifted_structure",
    "manifold",
    "margin_loss",
    "mean_field_class_wise_multi_similarity",
    "mean_field_contrastive",
    "multi_similarity",
    "multiple_losses",
    "nca",
    "normalized_softmax",
    "npairs",
    "ntxent",
    "p2s_grad",
    "pfid",
    "pnp",
    "proto_triplet",
    "proxy_anchor",
    "proxy_circle",
    "proxy_nca",
    "ranked_list",
    "self_supervised",
    "semi_hard_triplet",
    "signal_to_noise_ratio_contrastive",
    "smooth_ap",
    "soft_triple",
    "sphereface",
    "sub_center_arcface",
    "supcon",
    "threshold_consistent_margin",
    "triplet_margin",
    "tuplet_margin",
    "unpg",
    "vicreg",
]
