"""pairloss: pair-based objectives on one exact, memory-bounded pair engine."""

from .errors import PairLossError

__all__ = ["PairLossError"]
__version__ = "0.1.0"
