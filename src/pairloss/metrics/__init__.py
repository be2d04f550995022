"""Evaluation metrics for embeddings: retrieval, clustering, verification, identification and
embedding-space diagnostics, on exact, memory-bounded neighbour search (torch or FAISS)."""

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
    "RETRIEVAL_METRICS",
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
