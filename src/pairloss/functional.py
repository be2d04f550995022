"""Functional forms of the losses: ``pairloss.functional.multi_similarity(embeddings, labels)``.

Each takes the same arguments and defaults as its module class.
"""

from .losses import (
    batch_hard_soft_margin_triplet,
    batch_hard_triplet,
    binomial_deviance,
    circle,
    contrastive,
    dcl,
    dclw,
    generalized_lifted_structure,
    margin_loss,
    multi_similarity,
    npairs,
    ntxent,
    semi_hard_triplet,
    supcon,
    triplet_margin,
)

__all__ = [
    "batch_hard_soft_margin_triplet",
    "batch_hard_triplet",
    "binomial_deviance",
    "circle",
    "contrastive",
    "dcl",
    "dclw",
    "generalized_lifted_structure",
    "margin_loss",
    "multi_similarity",
    "npairs",
    "ntxent",
    "semi_hard_triplet",
    "supcon",
    "triplet_margin",
]
