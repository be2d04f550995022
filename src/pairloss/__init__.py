"""pairloss: pair-based objectives on one exact, memory-bounded pair engine.

Every loss is a composition of a similarity, a relation (positive / negative cells), an optional
miner, a row objective and a reduction, evaluated by one engine (dense or blocked). See the
README for a tour.
"""

from . import classification, data, distances, functional, metrics, miners
from .errors import PairLossError
from .losses import (
    BatchHardSoftMarginTripletLoss,
    BatchHardTripletLoss,
    BinomialDevianceLoss,
    CircleLoss,
    ContrastiveLoss,
    DCLLoss,
    DCLWLoss,
    GeneralizedLiftedStructureLoss,
    InfoNCELoss,
    MarginLoss,
    MultiSimilarityLoss,
    NPairsLoss,
    NTXentLoss,
    SemiHardTripletLoss,
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
    "CosineSimilarity",
    "DotProductSimilarity",
    "EuclideanDistance",
    "LpDistance",
    "BatchHardSoftMarginTripletLoss",
    "BatchHardTripletLoss",
    "BinomialDevianceLoss",
    "CircleLoss",
    "ContrastiveLoss",
    "DCLLoss",
    "DCLWLoss",
    "GeneralizedLiftedStructureLoss",
    "InfoNCELoss",
    "MarginLoss",
    "MultiSimilarityLoss",
    "NPairsLoss",
    "NTXentLoss",
    "SemiHardTripletLoss",
    "SupConLoss",
    "TripletMarginLoss",
    "PairLossError",
    "PairWeights",
    "ScaledSimilarity",
    "Similarity",
    "classification",
    "data",
    "distances",
    "functional",
    "metrics",
    "miners",
    "pair_weights",
]
__version__ = "0.1.0"
