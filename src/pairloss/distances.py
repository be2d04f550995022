"""pytorch-metric-learning-compatible names for similarities (``pairloss.distances.LpDistance``).

The classes live in :mod:`pairloss.similarity`.
"""

from .similarity import (
    CosineSimilarity,
    DotProductSimilarity,
    EuclideanDistance,
    LpDistance,
    ScaledSimilarity,
    Similarity,
)

__all__ = [
    "CosineSimilarity",
    "DotProductSimilarity",
    "EuclideanDistance",
    "LpDistance",
    "ScaledSimilarity",
    "Similarity",
]
