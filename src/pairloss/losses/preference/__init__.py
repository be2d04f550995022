"""Preference optimisation on precomputed sequence log-probabilities (catalogue F): pairs of
chosen and rejected responses (the DPO family, CPO/SimPO, ORPO, KTO, reward models) and lists of
K responses (LiPO-lambda, InfoNCA, NCA, MMPO, SPPO, iREPO)."""

from __future__ import annotations

from .dpo import DPOLoss, dpo
from .listwise import (
    InfoNCALoss,
    IREPOLoss,
    LiPOLambdaLoss,
    MMPOLoss,
    NCAPreferenceLoss,
    SPPOLoss,
    infonca,
    irepo,
    lipo_lambda,
    mmpo,
    nca_preference,
    sppo,
)
from .odds import (
    BradleyTerryLoss,
    CPOLoss,
    KTOLoss,
    ORPOLoss,
    SimPOLoss,
    bradley_terry,
    cpo,
    kto,
    orpo,
    simpo,
)

__all__ = [
    "BradleyTerryLoss",
    "CPOLoss",
    "DPOLoss",
    "IREPOLoss",
    "InfoNCALoss",
    "KTOLoss",
    "LiPOLambdaLoss",
    "MMPOLoss",
    "NCAPreferenceLoss",
    "ORPOLoss",
    "SPPOLoss",
    "SimPOLoss",
    "bradley_terry",
    "cpo",
    "dpo",
    "infonca",
    "irepo",
    "kto",
    "lipo_lambda",
    "mmpo",
    "nca_preference",
    "orpo",
    "simpo",
    "sppo",
]
