"""Embedding-space diagnostics: alignment, uniformity, tolerance, positive/negative similarity
statistics and an ICNN (inter/intra-class nearest-neighbour) score.

Every function works on row blocks of ``O(chunk x N)`` memory (``chunk = 2**24 // N`` rows by
default), never on a full ``N x N`` matrix; same-class quantities are computed class by class.
Scores are computed in the dtype of the embeddings (float32 or float64) and accumulated in
float64. Pairs are *distinct unordered* pairs ``i < j``; *positive* pairs share a label.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..errors import PairLossError
from ..validation import check_embeddings, check_labels, check_positive
from ._format import format_table
from .neighbors import check_chunk_size
from .verification import roc_auc

_BLOCK_ENTRIES = 2**24
_DEFAULT_AUC_PAIRS = 2**22


@dataclass(frozen=True)
class SimilarityStats:
    """Cosine similarities of positive (same-class) and negative pairs.

    Attributes:
        pos_mean, pos_std, neg_mean, neg_std: mean and population std over all such pairs.
        bin_edges: ``[bins + 1]`` equal-width edges over ``[-1, 1]``.
        pos_hist, neg_hist: ``[bins]`` normalised histograms (each sums to 1).
        overlap: ``sum_b min(pos_hist[b], neg_hist[b])``, 1 for identical, 0 for disjoint.
        auc: ``P(s+ > s-) + 0.5 P(s+ = s-)`` (the ROC AUC of separating them by similarity).
        auc_pairs: number of pairs the AUC was computed on (all pairs unless sampled).
        n_pos, n_neg: numbers of positive and negative pairs.
    """

    pos_mean: float
    pos_std: float
    neg_mean: float
    neg_std: float
    bin_edges: torch.Tensor
    pos_hist: torch.Tensor
    neg_hist: torch.Tensor
    overlap: float
    auc: float
    auc_pairs: int
    n_pos: int
    n_neg: int

    def to_dict(self) -> dict[str, float | int]:
        """The scalar statistics (histograms stay attributes)."""
        return {
            "pos_mean": self.pos_mean,
            "pos_std": self.pos_std,
            "neg_mean": self.neg_mean,
            "neg_std": self.neg_std,
            "overlap": self.overlap,
            "auc": self.auc,
            "auc_pairs": self.auc_pairs,
            "n_pos": self.n_pos,
            "n_neg": self.n_neg,
        }

    def table(self) -> str:
        """A readable table of the scalar statistics."""
        return format_table("positive vs negative cosine similarity", list(self.to_dict().items()))

    def __str__(self) -> str:
        return self.table()


@dataclass(frozen=True)
class IcnnResult:
    """ICNN score (see :func:`icnn_score`).

    Attributes:
        score: mean over anchors of ``inter / (intra + inter)``, in [0, 1].
        intra: mean over anchors of the mean distance to the nearest same-class neighbours.
        inter: mean over anchors of the mean distance to the nearest other-class neighbours.
        k: neighbours per side.
        n_anchors: anchors evaluated; ``n_excluded`` anchors had no same-class or no
            other-class neighbour.
    """

    score: float
    intra: float
    inter: float
    k: int
    n_anchors: int
    n_excluded: int

    def to_dict(self) -> dict[str, float | int]:
        """All fields."""
        return {
            "icnn": self.score,
            "icnn_intra": self.intra,
            "icnn_inter": self.inter,
            "k": self.k,
            "n_anchors": self.n_anchors,
            "n_excluded": self.n_excluded,
        }

    def table(self) -> str:
        """A readable table of the fields."""
        return format_table(f"ICNN score (k={self.k})", list(self.to_dict().items()))

    def __str__(self) -> str:
        return self.table()


def alignment(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 2.0,
    normalize: bool = True,
    chunk_size: int | None = None,
) -> float:
    """Alignment of Wang and Isola (ICML 2020, "Understanding Contrastive Representation Learning
    through Alignment and Uniformity on the Hypersphere"): ``E ||f(x) - f(y)||^alpha`` over the
    positive pairs.

    Args:
        embeddings: ``[N, D]`` embeddings.
        labels: ``[N]`` integer labels; positive pairs are distinct same-class pairs.
        alpha: exponent (default 2).
        normalize: L2-normalise the embeddings first (default True, as in the paper).
        chunk_size: rows per block (default automatic).

    Returns:
        The mean over positive pairs (lower is better aligned); NaN if there is none.
    """
    x, labels, chunk = _setup(embeddings, labels, normalize, chunk_size)
    alpha = check_positive(alpha, "alpha")
    total, count = 0.0, 0
    for a, b, upper in _positive_blocks(x, labels, chunk):
        d = _squared_distances(a, b)[upper].clamp(min=0).to(torch.float64)
        total += float((d ** (alpha / 2)).sum())
        count += int(upper.sum())
    return total / count if count else math.nan


def uniformity(
    embeddings: torch.Tensor,
    t: float = 2.0,
    normalize: bool = True,
    chunk_size: int | None = None,
    sample: int | None = None,
    seed: int = 0,
) -> float:
    """Uniformity of Wang and Isola (ICML 2020): ``log E exp(-t ||f(x) - f(y)||^2)`` over all
    distinct pairs.

    Args:
        embeddings: ``[N, D]`` embeddings, ``N >= 2``.
        t: temperature (default 2).
        normalize: L2-normalise first (default True, as in the paper).
        chunk_size: rows per block (default automatic).
        sample: if given and smaller than ``N``, use all pairs among ``sample`` rows drawn
            uniformly without replacement with ``torch.Generator().manual_seed(seed)``
            (an unbiased estimate of the mean); default None: exact over all pairs.
        seed: seed of that draw (default 0).

    Returns:
        The log-mean (lower is more uniform), accumulated stably with ``logsumexp``.
    """
    x, _, chunk = _setup(embeddings, None, normalize, chunk_size)
    t = check_positive(t, "t")
    x = _subsample(x, sample, seed)
    if x.shape[0] < 2:
        raise PairLossError("embeddings: uniformity needs at least 2 rows")
    acc = torch.tensor(-math.inf, dtype=torch.float64)
    for rows in _row_blocks(x, chunk):
        upper = _upper(rows, x.shape[0])
        d = _squared_distances(x[rows], x).clamp(min=0).to(torch.float64)
        acc = torch.logaddexp(acc, torch.logsumexp((-t * d)[upper], dim=0))
    n = x.shape[0]
    return float(acc) - math.log(n * (n - 1) / 2)


def tolerance(
    embeddings: torch.Tensor, labels: torch.Tensor, chunk_size: int | None = None
) -> float:
    """Tolerance of Wang and Liu (CVPR 2021, "Understanding the Behaviour of Contrastive Loss"):
    the mean cosine similarity of the normalised features over distinct same-class pairs.

    Args:
        embeddings: ``[N, D]`` embeddings (normalised here).
        labels: ``[N]`` integer labels.
        chunk_size: rows per block (default automatic).

    Returns:
        The mean similarity in [-1, 1] (higher = more tolerant to semantically similar
        samples); NaN if there is no positive pair.
    """
    x, labels, chunk = _setup(embeddings, labels, True, chunk_size)
    total, count = 0.0, 0
    for a, b, upper in _positive_blocks(x, labels, chunk):
        total += float((a @ b.T)[upper].to(torch.float64).sum())
        count += int(upper.sum())
    return total / count if count else math.nan


def similarity_stats(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    bins: int = 100,
    chunk_size: int | None = None,
    max_auc_pairs: int = _DEFAULT_AUC_PAIRS,
    seed: int = 0,
) -> SimilarityStats:
    """Statistics of the cosine similarities of positive vs negative pairs.

    Means, population stds and the ``bins``-bin histograms over ``[-1, 1]`` are exact over all
    distinct pairs. The AUC ``P(s+ > s-) + 0.5 P(s+ = s-)`` is exact when there are at most
    ``max_auc_pairs`` pairs; otherwise it is computed on all pairs among
    ``m = floor((1 + sqrt(1 + 8 max_auc_pairs)) / 2)`` rows drawn uniformly without replacement
    with ``torch.Generator().manual_seed(seed)`` (``auc_pairs`` reports the pairs used).

    Args:
        embeddings: ``[N, D]`` embeddings (normalised here).
        labels: ``[N]`` integer labels.
        bins: histogram bins (default 100).
        chunk_size: rows per block (default automatic).
        max_auc_pairs: pair budget of the AUC (default ``2**22``).
        seed: seed of the AUC row sample (default 0).
    """
    x, labels, chunk = _setup(embeddings, labels, True, chunk_size)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise PairLossError(f"bins: expected a positive int, got {bins!r}")
    if isinstance(max_auc_pairs, bool) or not isinstance(max_auc_pairs, int) or max_auc_pairs < 1:
        raise PairLossError(f"max_auc_pairs: expected a positive int, got {max_auc_pairs!r}")
    if x.shape[0] < 2:
        raise PairLossError("embeddings: similarity statistics need at least 2 rows")
    hist = torch.zeros(2, bins, dtype=torch.float64)
    sums = torch.zeros(2, 2, dtype=torch.float64)  # [neg/pos, (sum, sum of squares)]
    for rows in _row_blocks(x, chunk):
        upper = _upper(rows, x.shape[0])
        s = (x[rows] @ x.T)[upper].to(torch.float64)
        pos = (labels[rows, None] == labels[None, :])[upper].long()
        b = ((s + 1) / 2 * bins).floor().long().clamp(0, bins - 1)
        hist.view(-1).index_add_(0, pos * bins + b, torch.ones_like(s))
        sums[:, 0].index_add_(0, pos, s)
        sums[:, 1].index_add_(0, pos, s * s)
    counts = hist.sum(dim=1)
    means = sums[:, 0] / counts
    stds = (sums[:, 1] / counts - means**2).clamp(min=0).sqrt()
    density = hist / counts[:, None]
    auc, auc_pairs = _pair_auc(x, labels, max_auc_pairs, seed)
    return SimilarityStats(
        pos_mean=float(means[1]),
        pos_std=float(stds[1]),
        neg_mean=float(means[0]),
        neg_std=float(stds[0]),
        bin_edges=torch.linspace(-1, 1, bins + 1, dtype=torch.float64),
        pos_hist=density[1],
        neg_hist=density[0],
        overlap=float(torch.minimum(density[0], density[1]).sum()),
        auc=auc,
        auc_pairs=auc_pairs,
        n_pos=int(counts[1]),
        n_neg=int(counts[0]),
    )


def icnn_score(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    k: int = 5,
    normalize: bool = True,
    chunk_size: int | None = None,
) -> IcnnResult:
    """An inter/intra-class nearest-neighbour (ICNN) score of how well classes separate.

    Named after the ICNN loss of "SuSana Distancia is all you need: Enforcing class separability
    in metric learning via two novel distance-based loss functions for few-shot image
    classification" (2023), whose abstract describes it only as "based on an inter and intra
    class nearest neighbors score, which help us to assess the quality of embeddings". This
    function implements the following definition, checked only against that abstract (not
    against the paper's equations or code):

    For each anchor ``i`` (Euclidean distances, after L2 normalisation by default),

    * ``intra_i`` = mean distance to its ``min(k, n_c - 1)`` nearest same-class neighbours,
    * ``inter_i`` = mean distance to its ``min(k, N - n_c)`` nearest other-class neighbours,
    * ``score_i = inter_i / (intra_i + inter_i)`` (0.5 when both are 0),

    and the ICNN score is the mean of ``score_i``: 1 when same-class neighbours are much closer
    than other-class ones, 0.5 when equally close, towards 0 when other classes are closer.
    Anchors without a same-class or an other-class neighbour are excluded and counted.

    Args:
        embeddings: ``[N, D]`` embeddings.
        labels: ``[N]`` integer labels.
        k: neighbours per side (default 5).
        normalize: L2-normalise first (default True).
        chunk_size: rows per block (default automatic).
    """
    x, labels, chunk = _setup(embeddings, labels, normalize, chunk_size)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise PairLossError(f"k: expected a positive int, got {k!r}")
    n = x.shape[0]
    k = min(k, n - 1) if n > 1 else 1
    intra = torch.full((n,), math.nan, dtype=torch.float64)
    inter = torch.full((n,), math.nan, dtype=torch.float64)
    for rows in _row_blocks(x, chunk):
        d = _squared_distances(x[rows], x).clamp(min=0).sqrt().to(torch.float64)
        same = labels[rows, None] == labels[None, :]
        same[torch.arange(rows.numel()), rows] = False
        other = labels[rows, None] != labels[None, :]
        intra[rows] = _mean_smallest(d, same, k)
        inter[rows] = _mean_smallest(d, other, k)
    valid = ~(intra.isnan() | inter.isnan())
    a, e = intra[valid], inter[valid]
    total = a + e
    score = torch.where(total > 0, e / total.where(total > 0, 1.0), 0.5)
    return IcnnResult(_mean(score), _mean(a), _mean(e), k, int(valid.sum()), int((~valid).sum()))


def _mean(values: torch.Tensor) -> float:
    return float(values.mean()) if values.numel() else math.nan


def _mean_smallest(d: torch.Tensor, allowed: torch.Tensor, k: int) -> torch.Tensor:
    """Per row, the mean of the (at most) ``k`` smallest allowed entries (NaN if none)."""
    masked = d.masked_fill(~allowed, math.inf)
    values = masked.topk(min(k, d.shape[1]), dim=1, largest=False).values
    finite = values.isfinite()
    return values.where(finite, 0.0).sum(dim=1) / finite.sum(dim=1)


def _setup(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None,
    normalize: bool,
    chunk_size: int | None,
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    x = check_embeddings(embeddings, "embeddings").detach()
    if labels is not None:
        labels = check_labels(labels, x.shape[0], "labels").to(x.device)
    if not isinstance(normalize, bool):
        raise PairLossError(f"normalize: expected a bool, got {normalize!r}")
    if normalize:
        norms = x.norm(dim=1)
        if bool((norms == 0).any()):
            rows = (norms == 0).nonzero().flatten()[:5].tolist()
            raise PairLossError(
                f"embeddings: row(s) {rows} have zero norm and cannot be normalised; "
                "expected non-zero rows (or normalize=False)"
            )
        x = x / norms[:, None]
    chunk = check_chunk_size(chunk_size) or max(1, _BLOCK_ENTRIES // x.shape[0])
    return x, labels, chunk


def _row_blocks(x: torch.Tensor, chunk: int) -> Iterator[torch.Tensor]:
    for start in range(0, x.shape[0], chunk):
        yield torch.arange(start, min(start + chunk, x.shape[0]), device=x.device)


def _upper(rows: torch.Tensor, n: int) -> torch.Tensor:
    """``[b, n]`` mask of the columns ``j > i`` for each row ``i`` of ``rows``."""
    return torch.arange(n, device=rows.device)[None, :] > rows[:, None]


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[m, n]`` squared Euclidean distances (may be slightly negative from rounding)."""
    return (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * (a @ b.T)


def _positive_blocks(
    x: torch.Tensor, labels: torch.Tensor, chunk: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(a [b, D], members [n_c, D], upper [b, n_c])`` blocks covering every positive pair once."""
    order = labels.argsort(stable=True)
    sizes = torch.unique_consecutive(labels[order], return_counts=True)[1].tolist()
    for members in order.split(sizes):
        n_c = members.numel()
        if n_c < 2:
            continue
        step = max(1, (chunk * x.shape[0]) // n_c)
        for start in range(0, n_c, step):
            pos = torch.arange(start, min(start + step, n_c), device=x.device)
            upper = torch.arange(n_c, device=x.device)[None, :] > pos[:, None]
            yield x[members[pos]], x[members], upper


def _subsample(x: torch.Tensor, sample: int | None, seed: int) -> torch.Tensor:
    if sample is None:
        return x
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 2:
        raise PairLossError(f"sample: expected None or an int >= 2, got {sample!r}")
    if sample >= x.shape[0]:
        return x
    generator = torch.Generator().manual_seed(seed)
    keep = torch.randperm(x.shape[0], generator=generator)[:sample].sort().values
    return x[keep.to(x.device)]


def _pair_auc(
    x: torch.Tensor, labels: torch.Tensor, max_pairs: int, seed: int
) -> tuple[float, int]:
    m = int((1 + math.sqrt(1 + 8 * max_pairs)) // 2)
    if x.shape[0] * (x.shape[0] - 1) // 2 > max_pairs:
        generator = torch.Generator().manual_seed(seed)
        keep = torch.randperm(x.shape[0], generator=generator)[:m].sort().values.to(x.device)
        x, labels = x[keep], labels[keep]
    i, j = torch.triu_indices(x.shape[0], x.shape[0], offset=1, device=x.device)
    scores = torch.cat(
        [_pair_dot(x, a, b) for a, b in zip(i.split(2**20), j.split(2**20), strict=True)]
    )
    same = labels[i] == labels[j]
    if bool(same.all()) or not bool(same.any()):
        return math.nan, int(same.numel())
    return roc_auc(scores, same), int(same.numel())


def _pair_dot(x: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    return (x[i] * x[j]).sum(dim=1).to(torch.float64)
