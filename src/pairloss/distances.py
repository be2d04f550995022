"""pytorch-metric-learning-compatible names for similarities (``pairloss.distances.LpDistance``).

The classes live in :mod:`pairloss.similarity`.
"""

from .similarity import (
    BaseDistance,
    BatchedDistance,
    CosineSimilarity,
    DotProductSimilarity,
    EuclideanDistance,
    LpDistance,
    ScaledSimilarity,
    Similarity,
    SNRDistance,
)

__all__ = [
    "BaseDistance",
    "BatchedDistance",
    "CosineSimilarity",
    "DotProductSimilarity",
    "EuclideanDistance",
    "LpDistance",
    "SNRDistance",
    "ScaledSimilarity",
    "Similarity",
]
