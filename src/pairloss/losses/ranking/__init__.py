"""Learning to rank on slates: scores [Q, L] of L items for each of Q queries, graded relevance
[Q, L] and a padding mask (catalogue E)."""

from __future__ import annotations

from .distillation import (
    ADRMSELoss,
    MarginMSELoss,
    PlackettLuceDistillationLoss,
    adr_mse,
    margin_mse,
    plackett_luce_distillation,
)
from .lambda_loss import LambdaLoss, RankNetLoss, lambda_loss, ranknet
from .listwise import (
    ListMLELoss,
    ListNetLoss,
    ListwiseSoftmaxLoss,
    PListMLELoss,
    listmle,
    listnet,
    listwise_softmax,
    plistmle,
)
from .ndcg_surrogates import ApproxNDCGLoss, NeuralNDCGLoss, approx_ndcg, neural_ndcg
from .pairwise import (
    BPRLoss,
    MannWhitneyRankingLoss,
    PairwiseSoftmaxLoss,
    bpr,
    mann_whitney_ranking,
    pairwise_softmax,
)

__all__ = [
    "ADRMSELoss",
    "ApproxNDCGLoss",
    "BPRLoss",
    "LambdaLoss",
    "ListMLELoss",
    "ListNetLoss",
    "ListwiseSoftmaxLoss",
    "MannWhitneyRankingLoss",
    "MarginMSELoss",
    "NeuralNDCGLoss",
    "PListMLELoss",
    "PairwiseSoftmaxLoss",
    "PlackettLuceDistillationLoss",
    "RankNetLoss",
    "adr_mse",
    "approx_ndcg",
    "bpr",
    "lambda_loss",
    "listmle",
    "listnet",
    "listwise_softmax",
    "mann_whitney_ranking",
    "margin_mse",
    "neural_ndcg",
    "pairwise_softmax",
    "plackett_luce_distillation",
    "plistmle",
    "ranknet",
]
