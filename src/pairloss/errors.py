"""The one exception type that pairloss raises for bad input."""

from __future__ import annotations


class PairLossError(ValueError, AssertionError):
    """Bad input to a pairloss function or class.

    The message names the argument, says what was wrong with it and what was expected.
    It subclasses :class:`ValueError`, so ``except ValueError`` also catches it, and
    :class:`AssertionError`, because pytorch-metric-learning refuses bad input with an
    ``assert`` in many places and with a ``ValueError`` in others: code written against it
    (``except AssertionError``, its own tests' ``assertRaises(AssertionError, ...)``) keeps
    catching pairloss's refusals.
    """
