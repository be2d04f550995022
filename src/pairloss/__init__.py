"""pairloss: pair-based objectives on one exact, memory-bounded pair engine.

Every loss is a composition of a similarity, a relation (positive / negative cells), an optional
miner, a row objective and a reduction, evaluated by one engine (dense or blocked). See the
README for a tour.
"""

from . import classification, data, distances, functional, metrics, miners
from .errors import PairLossError
from .losses import (
    ArcFaceLoss,
    BatchHardSoftMarginTripletLoss,
    BatchHardTripletLoss,
    BinomialDevianceLoss,
    CircleLoss,
    ContrastiveLoss,
    CosFaceLoss,
    DCLLoss,
    DCLWLoss,
    GeneralizedLiftedStructureLoss,
    InfoNCELoss,
    LargeMarginSoftmaxLoss,
    MarginLoss,
    MultiSimilarityLoss,
    NormalizedSoftmaxLoss,
    NPairsLoss,
    NTXentLoss,
    ProxyAnchorLoss,
    ProxyCircleLoss,
    ProxyNCALoss,
    SemiHardTripletLoss,
    SoftTripleLoss,
    SphereFaceLoss,
    SubCenterArcFaceLoss,
    SupConLoss,
    TripletMarginLoss,
)
from .similarity import (
    CosineSimilarity,
    DotProductSimilarity,
    EuclideanDistance,
    LpDistance,
    ScaledSimilarity,
    Similarity,
)
from .weights import PairWeights, pair_weights

__all__ = [
    "ArcFaceLoss",
    "BatchHardSoftMarginTripletLoss",
    "BatchHardTripletLoss",
    "BinomialDevianceLoss",
    "CircleLoss",
    "ContrastiveLoss",
    "CosFaceLoss",
    "CosineSimilarity",
    "DCLLoss",
    "DCLWLoss",
    "DotProductSimilarity",
    "EuclideanDistance",
    "GeneralizedLiftedStructureLoss",
    "InfoNCELoss",
    "LargeMarginSoftmaxLoss",
    "LpDistance",
    "MarginLoss",
    "MultiSimilarityLoss",
    "NPairsLoss",
    "NTXentLoss",
    "NormalizedSoftmaxLoss",
    "PairLossError",
    "PairWeights",
    "ProxyAnchorLoss",
    "ProxyCircleLoss",
    "ProxyNCALoss",
    "ScaledSimilarity",
    "SemiHardTripletLoss",
    "Similarity",
    "SoftTripleLoss",
    "SphereFaceLoss",
    "SubCenterArcFaceLoss",
    "SupConLoss",
    "TripletMarginLoss",
    "classification",
    "data",
    "distances",
    "functional",
    "metrics",
    "miners",
    "pair_weights",
]
__version__ = "0.1.0"
