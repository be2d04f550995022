"""The embedding losses: one module per loss (class + functional form)."""

from __future__ import annotations

from .binomial_deviance import BinomialDevianceLoss, binomial_deviance
from .circle import CircleLoss, circle
from .contrastive import ContrastiveLoss, contrastive
from .dcl import DCLLoss, DCLWLoss, dcl, dclw
from .lifted_structure import GeneralizedLiftedStructureLoss, generalized_lifted_structure
from .margin import MarginLoss, margin_loss
from .multi_similarity import MultiSimilarityLoss, multi_similarity
from .npairs import NPairsLoss, npairs
from .ntxent import InfoNCELoss, NTXentLoss, ntxent
from .supcon import SupConLoss, supcon
from .triplet import (
    BatchHardSoftMarginTripletLoss,
    BatchHardTripletLoss,
    SemiHardTripletLoss,
    TripletMarginLoss,
    batch_hard_soft_margin_triplet,
    batch_hard_triplet,
    semi_hard_triplet,
    triplet_margin,
)

__all__ = [
    "BatchHardSoftMarginTripletLoss",
    "BatchHardTripletLoss",
    "BinomialDevianceLoss",
    "CircleLoss",
    "ContrastiveLoss",
    "DCLLoss",
    "DCLWLoss",
    "GeneralizedLiftedStructureLoss",
    "InfoNCELoss",
    "MarginLoss",
    "MultiSimilarityLoss",
    "NPairsLoss",
    "NTXentLoss",
    "SemiHardTripletLoss",
    "SupConLoss",
    "TripletMarginLoss",
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
