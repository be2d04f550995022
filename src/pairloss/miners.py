"""pytorch-metric-learning-compatible miner names (``pairloss.miners.BatchHardMiner``, ...).

The classes live in :mod:`pairloss.mining`; see there for what each keeps and returns.
``BaseMiner`` is pytorch-metric-learning's name of the base class.
"""

from .mining import (
    AngularMiner,
    BatchEasyHardMiner,
    BatchHardMiner,
    DistanceWeightedMiner,
    EmbeddingsAlreadyPackagedAsTriplets,
    HDCMiner,
    MinedIndices,
    Miner,
    MultiSimilarityMiner,
    PairMarginMiner,
    TripletMarginMiner,
    UniformHistogramMiner,
)

BaseMiner = Miner

__all__ = [
    "AngularMiner",
    "BaseMiner",
    "BatchEasyHardMiner",
    "BatchHardMiner",
    "DistanceWeightedMiner",
    "EmbeddingsAlreadyPackagedAsTriplets",
    "HDCMiner",
    "MinedIndices",
    "Miner",
    "MultiSimilarityMiner",
    "PairMarginMiner",
    "TripletMarginMiner",
    "UniformHistogramMiner",
]
