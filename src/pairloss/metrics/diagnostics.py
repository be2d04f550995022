"""Embedding-space diagnostics: alignment, uniformity, tolerance, positive/negative similarity
statistics and the ICNN (inter/intra-class nearest-neighbour) score of Mendez-Ruiz et al.

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

from ..engine import compute_dtype
from ..errors import PairLossError
from ..similarity import normalize_rows
from ..validation import check_bool, check_embeddings, check_int, check_labels, check_positive
from ._format import format_table
from .neighbors import check_chunk_size
from .verification import roc_auc

_BLOCK_ENTRIES = 2**24
_DEFAULT_AUC_PAIRS = 2**22
_ICNN_DIST_EPS = 1e-6  # d = sqrt(||a - b||^2 + 1e-6), as in the authors' code


@dataclass(frozen=True)
class SimilarityStats:
    """Cosine similarities of positive (same-class) and negative pairs.

    Attributes:
        pos_mean, pos_std, neg_mean, neg_std: mean and population std over all such pairs;
            None (undefined) when there is no such pair.
        bin_edges: ``[bins + 1]`` equal-width edges over ``[-1, 1]``.
        pos_hist, neg_hist: ``[bins]`` normalised histograms (each sums to 1; all zero when
            there is no such pair).
        overlap: ``sum_b min(pos_hist[b], neg_hist[b])``, 1 for identical, 0 for disjoint;
            None without positive or without negative pairs.
        auc: ``P(s+ > s-) + 0.5 P(s+ = s-)`` (the ROC AUC of separating them by similarity);
            None without positive or without negative pairs.
        auc_pairs: number of pairs the AUC was computed on (all pairs unless sampled; 0 when
            it is None).
        n_pos, n_neg: numbers of positive and negative pairs.
    """

    pos_mean: float | None
    pos_std: float | None
    neg_mean: float | None
    neg_std: float | None
    bin_edges: torch.Tensor
    pos_hist: torch.Tensor
    neg_hist: torch.Tensor
    overlap: float | None
    auc: float | None
    auc_pairs: int
    n_pos: int
    n_neg: int

    def to_dict(self) -> dict[str, float | int | None]:
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
        score: ``((intra + inter) / 2 + gamma) / 2``, in [0, 1] (higher = better separated).
        intra: ``lambda_intra``, 1 minus the mean normalised distance of the same-class
            neighbours relative to the nearest other-class one, in [0, 1].
        inter: ``lambda_inter``, the mean distance to the other-class neighbours over the
            largest such distance, in [0, 1].
        gamma: the neighbourhood purity, mean fraction of same-class neighbours, in [0, 1].
        k: neighbours scored per sample (after clipping to ``N - 1``).
        n_neighbors: neighbours searched per sample for the nearest other-class one, ``L``
            (after clipping to ``N - 1``).
    """

    score: float
    intra: float
    inter: float
    gamma: float
    k: int
    n_neighbors: int

    def to_dict(self) -> dict[str, float | int]:
        """All fields."""
        return {
            "icnn": self.score,
            "icnn_intra": self.intra,
            "icnn_inter": self.inter,
            "icnn_gamma": self.gamma,
            "k": self.k,
            "n_neighbors": self.n_neighbors,
        }

    def table(self) -> str:
        """A readable table of the fields."""
        title = f"ICNN score (k={self.k}, n_neighbors={self.n_neighbors})"
        return format_table(title, list(self.to_dict().items()))

    def __str__(self) -> str:
        return self.table()


def alignment(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 2.0,
    normalize: bool = True,
    chunk_size: int | None = None,
) -> float | None:
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
        The mean over positive pairs (lower is better aligned); None (undefined) if there is
        no positive pair.
    """
    x, labels, chunk = _setup(embeddings, labels, normalize, chunk_size)
    alpha = check_positive(alpha, "alpha")
    total, count = 0.0, 0
    for a, b, upper in _positive_blocks(x, labels, chunk):
        d = _finite(_squared_distances(a, b)[upper].clamp(min=0).to(torch.float64))
        total += float((d ** (alpha / 2)).sum())
        count += int(upper.sum())
    return total / count if count else None


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
    seed = check_int(seed, "seed", minimum=0)
    x = _subsample(x, sample, seed)
    if x.shape[0] < 2:
        raise PairLossError("embeddings: uniformity needs at least 2 rows")
    acc = torch.tensor(-math.inf, dtype=torch.float64)
    for rows in _row_blocks(x, chunk):
        upper = _upper(rows, x.shape[0])
        d = _finite(_squared_distances(x[rows], x).clamp(min=0).to(torch.float64))
        acc = torch.logaddexp(acc, torch.logsumexp((-t * d)[upper], dim=0))
    n = x.shape[0]
    return float(acc) - math.log(n * (n - 1) / 2)


def tolerance(
    embeddings: torch.Tensor, labels: torch.Tensor, chunk_size: int | None = None
) -> float | None:
    """Tolerance of Wang and Liu (CVPR 2021, "Understanding the Behaviour of Contrastive Loss"):
    the mean cosine similarity of the normalised features over distinct same-class pairs.

    Args:
        embeddings: ``[N, D]`` embeddings (normalised here).
        labels: ``[N]`` integer labels.
        chunk_size: rows per block (default automatic).

    Returns:
        The mean similarity in [-1, 1] (higher = more tolerant to semantically similar
        samples); None (undefined) if there is no positive pair.
    """
    x, labels, chunk = _setup(embeddings, labels, True, chunk_size)
    total, count = 0.0, 0
    for a, b, upper in _positive_blocks(x, labels, chunk):
        total += float((a @ b.T)[upper].to(torch.float64).sum())
        count += int(upper.sum())
    return total / count if count else None


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
    bins = check_int(bins, "bins", minimum=1)
    max_auc_pairs = check_int(max_auc_pairs, "max_auc_pairs", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
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
    present = counts > 0
    means = sums[:, 0] / counts.clamp(min=1)
    stds = (sums[:, 1] / counts.clamp(min=1) - means**2).clamp(min=0).sqrt()
    density = hist / counts.clamp(min=1)[:, None]
    both = bool(present.all())
    auc, auc_pairs = _pair_auc(x, labels, max_auc_pairs, seed) if both else (None, 0)

    def defined(values: torch.Tensor, kind: int) -> float | None:
        return float(values[kind]) if bool(present[kind]) else None

    return SimilarityStats(
        pos_mean=defined(means, 1),
        pos_std=defined(stds, 1),
        neg_mean=defined(means, 0),
        neg_std=defined(stds, 0),
        bin_edges=torch.linspace(-1, 1, bins + 1, dtype=torch.float64),
        pos_hist=density[1],
        neg_hist=density[0],
        overlap=float(torch.minimum(density[0], density[1]).sum()) if both else None,
        auc=auc,
        auc_pairs=auc_pairs,
        n_pos=int(counts[1]),
        n_neg=int(counts[0]),
    )


def icnn_score(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    k: int = 4,
    normalize: bool = False,
    chunk_size: int | None = None,
    *,
    n_neighbors: int | None = None,
    eps: float = 1e-7,
) -> IcnnResult:
    r"""The ICNN (inter/intra-class nearest-neighbour) score of Mendez-Ruiz et al. (2023,
    "SuSana Distancia is all you need: Enforcing class separability in metric learning via two
    novel distance-based loss functions for few-shot image classification", arXiv:2305.09062),
    as defined by the authors' public code (their ``modified_score``); the score of which
    :class:`pairloss.losses.metric.prototypes.ICNNLoss` is ``-log``.

    Leave-one-out over the ``N`` samples: for each sample ``i``, take its ``L`` nearest other
    samples (``n_neighbors``, default ``k + 1``) regardless of class, in ascending Euclidean
    distance ``d_i1 <= ... <= d_iL`` with ``d(a, b) = sqrt(||a - b||^2 + 1e-6)``, and
    ``s_ij = 1`` when neighbour ``j`` shares the label of ``i``. With ``nu_i`` the distance to
    the nearest other-class neighbour among the ``L``, and over the first ``k``:

    * ``r_ij = d_ij / (nu_i + eps)`` (0 when none of the ``L`` is of another class), then
      ``r^_ij = r_ij / max(1, max_{j<=k} r_ij)``;
    * ``P_i = sum_{j<=k} s_ij`` and ``Q_i = k - P_i``;
    * ``lambda_intra = 1 - [sum_i (sum_{j<=k} s_ij r^_ij) / (P_i + eps)] / (#{i: P_i > 0} + eps)``;
    * ``lambda_inter = [sum_i (sum_{j<=k} (1 - s_ij) d_ij / (Delta + eps)) / (Q_i + eps)]
      / (#{i: Q_i > 0} + eps)``, with ``Delta = max_{i, j<=k} (1 - s_ij) d_ij`` the largest
      other-class distance among all first-``k`` neighbours; 1 when no sample has an
      other-class neighbour among its first ``k``;
    * ``gamma = (1/N) sum_i P_i / k``;

    .. math::
        \mathrm{ICNN} = \frac{1}{2}\left(\frac{\lambda_{intra} + \lambda_{inter}}{2}
            + \gamma\right) \in [0, 1],

    higher meaning better separated classes. Neighbours are found block by block
    (``O(chunk x N)`` memory); per-block sums are accumulated in float64 and ``Delta`` is
    applied at the end.

    Degenerate cases: ``k`` and ``L`` are clipped to the ``N - 1`` available neighbours (so
    ``N <= k`` gives ``k = L = N - 1``; ``gamma`` then divides by the clipped ``k``; the
    result reports the clipped values). ``N = 1`` (no neighbour) is an error. With one class there
    is no other-class neighbour: ``r = 0``, so ``intra = inter = gamma = 1`` and the score is 1.
    When every label is unique, ``P_i = 0`` everywhere: ``intra = 1`` and ``gamma = 0``.

    Args:
        embeddings: ``[N, D]`` embeddings, ``N >= 2``.
        labels: ``[N]`` integer labels.
        k: neighbours scored per sample (default 4, as in the authors' code).
        normalize: L2-normalise first (default False: raw distances, as in the authors' code).
        chunk_size: rows per block (default automatic).
        n_neighbors: ``L``, neighbours searched for the nearest other-class one; None (default)
            for ``k + 1``, else an int ``>= k``.
        eps: the constant added to the denominators (default ``1e-7``, as in the authors' code).
    """
    x, labels, chunk = _setup(embeddings, labels, normalize, chunk_size)
    k = check_int(k, "k", minimum=1)
    if n_neighbors is not None:
        n_neighbors = check_int(n_neighbors, "n_neighbors", minimum=k)
    eps = check_positive(eps, "eps")
    n = x.shape[0]
    if n < 2:
        raise PairLossError("embeddings: icnn_score needs at least 2 rows")
    x = x.to(compute_dtype(x))
    n_nb = min(k + 1 if n_neighbors is None else n_neighbors, n - 1)
    k = min(k, n_nb)
    # [intra row sum, #P>0, inter row sum (before / (Delta + eps)), #Q>0, sum P]
    sums = torch.zeros(5, dtype=torch.float64)
    delta = torch.zeros((), dtype=torch.float64)
    for rows in _row_blocks(x, chunk):
        d = (_finite(_squared_distances(x[rows], x)).clamp(min=0) + _ICNN_DIST_EPS).sqrt()
        d[torch.arange(rows.numel(), device=x.device), rows] = math.inf
        dist, idx = d.topk(n_nb, dim=1, largest=False)
        other = labels[idx] != labels[rows, None]
        has_other = other.any(dim=1)
        nu = dist.masked_fill(~other, math.inf).amin(dim=1).where(has_other, 1.0)
        dk, ok = dist[:, :k], other[:, :k]
        sk = (~ok).to(x.dtype)
        ratio = (dk / (nu + eps)[:, None]).where(has_other[:, None], 0.0)
        ratio = ratio / ratio.amax(dim=1).clamp(min=1.0)[:, None]
        p = sk.sum(dim=1)
        q = k - p
        d_other = dk * ok.to(x.dtype)
        part = torch.stack(
            [
                ((ratio * sk).sum(dim=1) / (p + eps)).sum(),
                (p > 0).sum().to(x.dtype),
                (d_other.sum(dim=1) / (q + eps)).sum(),
                (q > 0).sum().to(x.dtype),
                p.sum(),
            ]
        )
        sums += part.to(torch.float64)
        delta = torch.maximum(delta, d_other.amax().to(torch.float64))
    intra = 1.0 - float(sums[0]) / (float(sums[1]) + eps)
    if float(sums[3]) > 0:
        inter = float(sums[2]) / (float(delta) + eps) / (float(sums[3]) + eps)
    else:
        inter = 1.0
    gamma = float(sums[4]) / (n * k)
    score = ((intra + inter) / 2 + gamma) / 2
    return IcnnResult(score, intra, inter, gamma, k, n_nb)


def _setup(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None,
    normalize: bool,
    chunk_size: int | None,
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    x = check_embeddings(embeddings, "embeddings").detach()
    x = x.to(compute_dtype(x))
    if labels is not None:
        labels = check_labels(labels, x.shape[0], "labels").to(x.device)
    normalize = check_bool(normalize, "normalize")
    if normalize:
        zero = x.abs().amax(dim=1) == 0
        if bool(zero.any()):
            rows = zero.nonzero().flatten()[:5].tolist()
            raise PairLossError(
                f"embeddings: row(s) {rows} have zero norm and cannot be normalised; "
                "expected non-zero rows (or normalize=False)"
            )
        x = normalize_rows(x)
    chunk = check_chunk_size(chunk_size) or max(1, _BLOCK_ENTRIES // x.shape[0])
    return x, labels, chunk


def _finite(d: torch.Tensor) -> torch.Tensor:
    """Squared distances computed from raw (unnormalised) embeddings must fit their dtype."""
    if not bool(torch.isfinite(d).all()):
        raise PairLossError(
            f"embeddings: the squared distances overflow {d.dtype}; expected embeddings of "
            "moderate magnitude (scale them down), float64, or normalize=True"
        )
    return d


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
