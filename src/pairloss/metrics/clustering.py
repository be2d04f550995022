"""Clustering quality: NMI and AMI of k-means clusters against the class labels.

k-means runs on the embeddings as given (Euclidean), with as many clusters as classes, using
FAISS when it is installed and scikit-learn otherwise, with a fixed seed. NMI and AMI are
scikit-learn's ``normalized_mutual_info_score`` and ``adjusted_mutual_info_score`` (arithmetic
normalisation), as in the clustering evaluation of Musgrave et al., "A Metric Learning Reality
Check" (ECCV 2020). scikit-learn is an optional dependency, imported only here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import PairLossError
from ..similarity import power_of_two_scale
from ..validation import check_embeddings, check_int, check_labels
from ._format import format_table
from .neighbors import faiss_available

CLUSTER_BACKENDS = ("auto", "faiss", "sklearn")


@dataclass(frozen=True)
class ClusteringResult:
    """NMI and AMI of a clustering against the class labels.

    Attributes:
        nmi: normalised mutual information (arithmetic mean normalisation), in [0, 1].
        ami: adjusted mutual information (0 for chance, 1 for identical partitions).
        n_clusters: number of clusters.
        backend: ``"faiss"``, ``"sklearn"`` or ``"given"`` (cluster labels supplied).
        cluster_labels: ``[N]`` int64 cluster of each sample.
    """

    nmi: float
    ami: float
    n_clusters: int
    backend: str
    cluster_labels: torch.Tensor

    def to_dict(self) -> dict[str, float | int | str]:
        """``nmi``, ``ami``, ``n_clusters`` and ``backend``."""
        return {
            "nmi": self.nmi,
            "ami": self.ami,
            "n_clusters": self.n_clusters,
            "backend": self.backend,
        }

    def table(self) -> str:
        """A readable table of NMI and AMI."""
        title = f"clustering: k-means with {self.n_clusters} clusters ({self.backend})"
        return format_table(title, [("nmi", self.nmi), ("ami", self.ami)])

    def __str__(self) -> str:
        return self.table()


def kmeans_labels(
    embeddings: torch.Tensor,
    n_clusters: int,
    backend: str = "auto",
    seed: int = 0,
    niter: int = 20,
    n_init: int = 1,
) -> torch.Tensor:
    """Cluster index ``[N]`` (int64) of each row of ``embeddings [N, D]`` from k-means.

    Args:
        embeddings: ``[N, D]`` floating-point embeddings (clustered as float32).
        n_clusters: number of clusters, ``1 <= n_clusters <= N``.
        backend: ``"faiss"`` (``faiss.Kmeans`` from random points, ``niter`` iterations,
            then nearest centroid), ``"sklearn"`` (``KMeans`` with k-means++ initialisation) or
            ``"auto"`` (FAISS when installed).
        seed: random seed of the initialisation (default 0).
        niter: iterations for FAISS (default 20, as in PML); scikit-learn runs to convergence.
        n_init: restarts, keeping the lowest k-means objective (default 1, as in PML).
    """
    x = check_embeddings(embeddings, "embeddings").detach().cpu()
    # k-means is invariant to the scale of the data: bring it to max-abs about 1 (a power of
    # two, so exactly) before the float32 clustering, whose squared distances would overflow
    # (FAISS aborts the process) or vanish at extreme magnitudes
    x = (x.double() / power_of_two_scale(x)).to(torch.float32).contiguous()
    n_clusters = check_int(n_clusters, "n_clusters")
    n_init = check_int(n_init, "n_init", minimum=1)
    niter = check_int(niter, "niter", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    if not 1 <= n_clusters <= x.shape[0]:
        raise PairLossError(
            f"n_clusters: got {n_clusters}; expected 1 <= n_clusters <= {x.shape[0]} (samples)"
        )
    backend = _resolve(backend)
    if backend == "faiss":
        import faiss

        km = faiss.Kmeans(
            x.shape[1],
            n_clusters,
            niter=niter,
            nredo=n_init,
            seed=seed,
            verbose=False,
            min_points_per_centroid=1,
        )
        km.train(x.numpy())
        _, assignment = km.index.search(x.numpy(), 1)
        return torch.from_numpy(assignment[:, 0]).long()
    cluster = _sklearn("cluster")
    km = cluster.KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed)
    return torch.from_numpy(km.fit_predict(x.numpy())).long()


def cluster_scores(labels: torch.Tensor, cluster_labels: torch.Tensor) -> tuple[float, float]:
    """(NMI, AMI) of ``cluster_labels [N]`` against the class ``labels [N]`` (scikit-learn)."""
    labels = _check_labels_1d(labels, None, "labels")
    cluster_labels = _check_labels_1d(cluster_labels, labels.shape[0], "cluster_labels")
    metrics = _sklearn("metrics")
    y, c = labels.cpu().numpy(), cluster_labels.cpu().numpy()
    return (
        float(metrics.normalized_mutual_info_score(y, c)),
        float(metrics.adjusted_mutual_info_score(y, c)),
    )


def clustering(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    backend: str = "auto",
    seed: int = 0,
    niter: int = 20,
    n_init: int = 1,
    cluster_labels: torch.Tensor | None = None,
) -> ClusteringResult:
    """NMI and AMI of k-means on ``embeddings [N, D]`` with ``n_clusters`` = number of classes.

    Args:
        embeddings: ``[N, D]`` embeddings (normalise them first for a cosine geometry).
        labels: ``[N]`` integer class labels.
        backend, seed, niter, n_init: as in :func:`kmeans_labels`.
        cluster_labels: optional ``[N]`` precomputed clusters; k-means is then skipped.
    """
    x = check_embeddings(embeddings, "embeddings")
    labels = check_labels(labels, x.shape[0], "labels")
    n_clusters = int(torch.unique(labels).numel())
    if cluster_labels is None:
        used = _resolve(backend)
        cluster_labels = kmeans_labels(x, n_clusters, used, seed, niter, n_init)
    else:
        used = "given"
        cluster_labels = _check_labels_1d(cluster_labels, x.shape[0], "cluster_labels")
    nmi, ami = cluster_scores(labels, cluster_labels)
    return ClusteringResult(nmi, ami, n_clusters, used, cluster_labels)


def _check_labels_1d(labels: object, n: int | None, name: str) -> torch.Tensor:
    """1-D integer labels, of length ``n`` when given."""
    if n is None:
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.numel() == 0:
            raise PairLossError(f"{name}: expected a non-empty 1-D tensor of integer labels")
        n = labels.shape[0]
    return check_labels(labels, n, name)


def _resolve(backend: object) -> str:
    if backend not in CLUSTER_BACKENDS:
        raise PairLossError(
            f"backend: got {backend!r}; expected one of {', '.join(CLUSTER_BACKENDS)}"
        )
    if backend == "faiss" and not faiss_available():
        raise PairLossError(
            "backend: 'faiss' was requested but faiss is not installed; "
            "install it with `pip install faiss-cpu` or use backend='sklearn'"
        )
    if backend == "auto":
        return "faiss" if faiss_available() else "sklearn"
    return str(backend)


def _sklearn(module: str):
    try:
        if module == "cluster":
            import sklearn.cluster as found
        else:
            import sklearn.metrics as found
    except ImportError:
        raise PairLossError(
            "scikit-learn: is required for the clustering metrics but is not installed; "
            "install it with `pip install scikit-learn`"
        ) from None
    return found
