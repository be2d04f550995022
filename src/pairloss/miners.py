"""pytorch-metric-learning-compatible miner names (``pairloss.miners.BatchHardMiner``, ...).

The classes live in :mod:`pairloss.mining`; see there for what each keeps.
"""

from .mining import (
    BatchEasyHardMiner,
    BatchHardMiner,
    MinedRelation,
    Miner,
    MultiSimilarityMiner,
    PairMarginMiner,
    TripletMarginMiner,
)

__all__ = [
    "BatchEasyHardMiner",
    "BatchHardMiner",
    "MinedRelation",
    "Miner",
    "MultiSimilarityMiner",
    "PairMarginMiner",
    "TripletMarginMiner",
]
