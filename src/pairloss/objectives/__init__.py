"""Row objectives: pure functions of a block of scores and its masks -> per-row terms."""

from .terms import RowTerms, masked_logsumexp, masked_max, masked_min

__all__ = ["RowTerms", "masked_logsumexp", "masked_max", "masked_min"]
