"""Evaluation metrics for embeddings: retrieval, clustering, verification, identification and
embedding-space diagnostics, on exact, memory-bounded neighbour search (torch or FAISS); and
for scores: ranking metrics of slates and preference metrics of log-probabilities."""

from .clustering import ClusteringResult, cluster_scores, clustering, kmeans_labels
from .diagnostics import (
    IcnnResult,
    SimilarityStats,
    alignment,
    icnn_score,
    similarity_stats,
    tolerance,
    uniformity,
)
from .identification import CmcResult, DirResult, cmc, dir_at_far
from .neighbors import Neighbors, faiss_available, knn
from .preference import list_reward_accuracy, preference_metrics
from .ranking import (
    RANKING_METRICS,
    RankingResult,
    dcg_at_k,
    kendall_tau,
    map_at_k,
    mrr,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
)
from .retrieval import RETRIEVAL_METRICS, RetrievalResult, retrieval
from .verification import (
    RocCurve,
    VerificationResult,
    pair_scores,
    roc_auc,
    roc_curve,
    verification,
    verification_from_pairs,
)

__all__ = [
    "RANKING_METRICS",
    "RETRIEVAL_METRICS",
    "RankingResult",
    "dcg_at_k",
    "kendall_tau",
    "list_reward_accuracy",
    "map_at_k",
    "mrr",
    "ndcg_at_k",
    "precision_at_k",
    "preference_metrics",
    "ranking_metrics",
    "recall_at_k",
    "ClusteringResult",
    "CmcResult",
    "DirResult",
    "IcnnResult",
    "Neighbors",
    "RetrievalResult",
    "RocCurve",
    "SimilarityStats",
    "VerificationResult",
    "alignment",
    "cluster_scores",
    "clustering",
    "cmc",
    "dir_at_far",
    "faiss_available",
    "icnn_score",
    "kmeans_labels",
    "knn",
    "pair_scores",
    "retrieval",
    "roc_auc",
    "roc_curve",
    "similarity_stats",
    "tolerance",
    "uniformity",
    "verification",
    "verification_from_pairs",
]
