"""The one exception type that pairloss raises for bad input."""

from __future__ import annotations


class PairLossError(ValueError):
    """Bad input to a pairloss function or class.

    The message names the argument, says what was wrong with it and what was expected.
    It subclasses :class:`ValueError`, so ``except ValueError`` also catches it.
    """
