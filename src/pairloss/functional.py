"""Functional forms of the losses: ``pairloss.functional.multi_similarity(embeddings, labels)``.

Each takes the same arguments and defaults as its module class.
"""

from .losses.multi_similarity import multi_similarity

__all__ = ["multi_similarity"]
