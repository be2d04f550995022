"""Identification metrics: closed-set CMC and open-set DIR at FAR.

A probe is compared with every gallery sample; an identity's score is the best score of its
samples, and identities are ranked by that score (descending; ties by the gallery index of the
identity's first best-scoring sample, i.e. the order in which identities first appear in the
sample ranking). The *rank* of a probe is the position of its own identity in that list.
Scores are float64 (see :mod:`pairloss.metrics.neighbors`), computed in blocks of
``O(chunk x N)`` memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import PairLossError
from ..validation import check_labels
from ._checks import check_cutoffs, check_rates
from ._format import format_table
from .neighbors import ExactSearch

DEFAULT_RANKS = (1, 5, 10)
DEFAULT_DIR_FAR = (1e-1, 1e-2, 1e-3)


@dataclass(frozen=True)
class CmcResult:
    """Closed-set identification rates.

    Attributes:
        rates: ``{k: fraction of evaluated probes whose identity is at rank <= k}``; None
            (undefined) when no probe's identity is enrolled.
        curve: ``[n_identities]`` float64, ``curve[k - 1]`` the rank-k identification rate;
            None when no probe's identity is enrolled.
        n_probes: probes given.
        n_excluded: probes whose identity is not in the gallery (left out of the rates).
        excluded: ``{reason: count}``.
    """

    rates: dict[int, float | None]
    curve: torch.Tensor | None
    n_probes: int
    n_excluded: int
    excluded: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, float | int | dict[str, int]]:
        """``cmc@k`` values plus ``n_probes``, ``n_excluded`` and ``excluded``."""
        out: dict[str, float | int | dict[str, int]] = {
            f"cmc@{k}": v for k, v in self.rates.items()
        }
        out.update(n_probes=self.n_probes, n_excluded=self.n_excluded)
        out["excluded"] = dict(self.excluded)
        return out

    def table(self) -> str:
        """A readable table of the rates and counts."""
        title = (
            f"closed-set identification: {self.n_probes - self.n_excluded} of "
            f"{self.n_probes} probes evaluated ({self.n_excluded} not enrolled)"
        )
        return format_table(title, [(f"cmc@{k}", v) for k, v in self.rates.items()])

    def __str__(self) -> str:
        return self.table()


@dataclass(frozen=True)
class DirResult:
    """Open-set detection and identification rates.

    Attributes:
        dir: ``{far: DIR}``; None where there are fewer than ``ceil(1/far)`` unknown probes.
        thresholds: ``{far: threshold}`` (None alongside a None DIR).
        rank: the rank cut-off.
        n_known, n_unknown: enrolled (mated) and unknown (non-mated) probes.
        notes: human-readable remarks.
    """

    dir: dict[float, float | None]
    thresholds: dict[float, float | None]
    rank: int
    n_known: int
    n_unknown: int
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, float | int | None | list[str]]:
        """``dir@far=0.01`` values, ``threshold@far=0.01``, counts and notes."""
        out: dict[str, float | int | None | list[str]] = {
            f"dir@far={far:g}": v for far, v in self.dir.items()
        }
        out.update({f"threshold@far={far:g}": t for far, t in self.thresholds.items()})
        out.update(rank=self.rank, n_known=self.n_known, n_unknown=self.n_unknown)
        out["notes"] = list(self.notes)
        return out

    def table(self) -> str:
        """A readable table of the rates, thresholds and notes."""
        rows = [(k, v) for k, v in self.to_dict().items() if k != "notes"]
        title = f"open-set identification (rank <= {self.rank})"
        return "\n".join([format_table(title, rows), *(f"note: {n}" for n in self.notes)])

    def __str__(self) -> str:
        return self.table()


def cmc(
    probe: torch.Tensor,
    probe_labels: torch.Tensor,
    gallery: torch.Tensor,
    gallery_labels: torch.Tensor,
    ranks: int | Sequence[int] = DEFAULT_RANKS,
    metric: str = "cosine",
    chunk_size: int | None = None,
) -> CmcResult:
    """Closed-set cumulative match characteristic (CMC).

    ``CMC(k)`` is the fraction of probes whose identity is at rank ``<= k`` among the gallery
    identities, each identity scored by its best sample (identities deduplicated, so a gallery
    may hold several samples per identity). Probes whose identity is not enrolled in the
    gallery are excluded and counted (reason ``identity_not_enrolled``).

    Args:
        probe: ``[P, D]`` embeddings.
        probe_labels: ``[P]`` integer identities.
        gallery: ``[N, D]`` embeddings.
        gallery_labels: ``[N]`` integer identities.
        ranks: cut-offs (default ``(1, 5, 10)``), each at most the number of gallery identities.
        metric: ``"cosine"`` (default), ``"euclidean"`` or ``"dot"``.
        chunk_size: probe rows per block (default ``2**24 // N``).
    """
    search, p_labels, g_labels = _setup(
        probe, probe_labels, gallery, gallery_labels, metric, chunk_size
    )
    ranks = check_cutoffs(ranks, "ranks")
    rank, _, _, known = _identity_ranks(search, p_labels, g_labels)
    n_identities = int(torch.unique(g_labels).numel())
    if ranks[-1] > n_identities:
        raise PairLossError(
            f"ranks: {ranks[-1]} exceeds the {n_identities} gallery identities; "
            f"expected every rank <= {n_identities}"
        )
    n_excluded = int((~known).sum())
    curve = None
    if bool(known.any()):
        hist = torch.bincount(rank[known] - 1, minlength=n_identities).to(torch.float64)
        curve = hist.cumsum(0) / int(known.sum())
    return CmcResult(
        rates={k: None if curve is None else float(curve[k - 1]) for k in ranks},
        curve=curve,
        n_probes=search.n_queries,
        n_excluded=n_excluded,
        excluded={"identity_not_enrolled": n_excluded} if n_excluded else {},
    )


def dir_at_far(
    probe: torch.Tensor,
    probe_labels: torch.Tensor,
    gallery: torch.Tensor,
    gallery_labels: torch.Tensor,
    far: float | Sequence[float] = DEFAULT_DIR_FAR,
    rank: int = 1,
    metric: str = "cosine",
    chunk_size: int | None = None,
) -> DirResult:
    """Open-set detection and identification rate (DIR) at given false alarm rates.

    Probes whose identity is not enrolled are *unknown* (non-mated). For each ``far``, the
    threshold ``t`` is the smallest value such that the fraction of unknown probes whose top
    gallery score exceeds it (``> t``) is at most ``far``: with the unknown top scores sorted
    descending ``u_1 >= u_2 >= ...`` and ``m = floor(far * n_unknown)``, ``t = u_{m+1}``.
    ``DIR = fraction of known probes whose identity is at rank <= rank and whose identity
    score exceeds t``. None (with a note) when there are fewer than ``ceil(1/far)`` unknown
    probes.

    Args:
        probe, probe_labels, gallery, gallery_labels, metric, chunk_size: as in :func:`cmc`;
            there must be at least one known and one unknown probe.
        far: target false alarm rates in (0, 1) (default ``(0.1, 0.01, 0.001)``).
        rank: the rank cut-off (default 1).
    """
    search, p_labels, g_labels = _setup(
        probe, probe_labels, gallery, gallery_labels, metric, chunk_size
    )
    fars = check_rates(far, "far")
    (rank,) = check_cutoffs(rank, "rank")
    ranks, own, top, known = _identity_ranks(search, p_labels, g_labels)
    n_known, n_unknown = int(known.sum()), int((~known).sum())
    if n_known == 0 or n_unknown == 0:
        raise PairLossError(
            f"probe_labels: {n_known} probes are enrolled and {n_unknown} are not; open-set "
            "evaluation expects at least one of each"
        )
    unknown_top = top[~known].sort(descending=True).values
    hit_at_rank = ranks[known] <= rank
    rates: dict[float, float | None] = {}
    thresholds: dict[float, float | None] = {}
    notes = []
    for f in fars:
        needed = math.ceil(1 / f - 1e-9)
        if n_unknown < needed:
            rates[f] = thresholds[f] = None
            notes.append(f"dir@far={f:g}: needs at least {needed} unknown probes, got {n_unknown}")
            continue
        m = math.floor(f * n_unknown + 1e-9)
        t = float(unknown_top[m])  # m < n_unknown since far < 1
        thresholds[f] = t * search.score_scale
        rates[f] = float((hit_at_rank & (own[known] > t)).to(torch.float64).mean())
    return DirResult(rates, thresholds, rank, n_known, n_unknown, tuple(notes))


def _setup(
    probe: torch.Tensor,
    probe_labels: torch.Tensor,
    gallery: torch.Tensor,
    gallery_labels: torch.Tensor,
    metric: str,
    chunk_size: int | None,
) -> tuple[ExactSearch, torch.Tensor, torch.Tensor]:
    if gallery is None:
        raise PairLossError("gallery: missing; expected [N, D] gallery embeddings")
    search = ExactSearch(probe, gallery, metric, "torch", chunk_size, names=("probe", "gallery"))
    p_labels = check_labels(probe_labels, search.n_queries, "probe_labels").to(search.q.device)
    g_labels = check_labels(gallery_labels, search.n_gallery, "gallery_labels").to(search.q.device)
    return search, p_labels, g_labels


def _identity_ranks(
    search: ExactSearch, probe_labels: torch.Tensor, gallery_labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per probe: rank of its identity (0 if not enrolled), its identity score, top score, known."""
    identities, sample_identity = torch.unique(gallery_labels, return_inverse=True)
    n_ids, n = identities.numel(), search.n_gallery
    pos = torch.searchsorted(identities, probe_labels).clamp(max=n_ids - 1)
    known = identities[pos] == probe_labels
    rank = torch.zeros(search.n_queries, dtype=torch.long)
    own = torch.full((search.n_queries,), torch.nan, dtype=torch.float64)
    top = torch.empty(search.n_queries, dtype=torch.float64)
    cols = torch.arange(n, device=search.q.device)
    for rows in search.full_blocks(torch.arange(search.n_queries, device=search.q.device)):
        scores = search.full_scores(rows)
        b = rows.numel()
        ids = sample_identity.expand(b, n)
        best = scores.new_full((b, n_ids), -torch.inf).scatter_reduce(1, ids, scores, "amax")
        is_best = scores == best.gather(1, ids)
        candidate = torch.where(is_best, cols, n)
        first = candidate.new_full((b, n_ids), n).scatter_reduce(1, ids, candidate, "amin")
        own_best = best.gather(1, pos[rows, None])
        own_first = first.gather(1, pos[rows, None])
        ahead = (best > own_best) | ((best == own_best) & (first < own_first))
        rank[rows.cpu()] = (ahead.sum(dim=1) + 1).cpu()
        own[rows.cpu()] = own_best[:, 0].cpu()
        top[rows.cpu()] = best.max(dim=1).values.cpu()
    known = known.cpu()
    rank[~known] = 0
    own[~known] = torch.nan
    return rank, own, top, known
