"""Evaluation of an embedding model on a task's test split, and the baselines it is judged by.

Zero-shot protocol: leave-one-out retrieval on the unseen classes (Recall@1/2/4/8, MAP@R,
R-Precision; :func:`pairloss.metrics.retrieval`).

Face protocol, on the held-out identities (seeded by ``seed``):

- retrieval as above;
- closed-set identification: one random gallery image per identity, the others are probes;
  CMC rank 1 and 5 (:func:`pairloss.metrics.cmc`);
- verification over every pair of test images (of a seeded subset of 3,000 when there are more),
  cosine score: ROC AUC, EER, TAR@FAR=0.1/0.01 (:func:`pairloss.metrics.verification`);
- open-set identification: half the identities enrolled (one gallery image each), the other
  half unknown; DIR@FAR=0.1/0.01 at rank 1 (:func:`pairloss.metrics.dir_at_far`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from .. import data, metrics

RETRIEVAL_K = (1, 2, 4, 8)
HISTOGRAM_ROWS = 2000
VERIFICATION_ROWS = 3000  # all pairs of at most this many (seeded) test samples


@torch.no_grad()
def embed(
    model: nn.Module, x: torch.Tensor, batch_size: int = 512, backbone: bool = False
) -> torch.Tensor:
    """``model`` applied to ``x`` in batches, in eval mode, float32 on the CPU: ``[N, E]``;
    with ``backbone=True`` the representation before the model's projection head
    (``model.backbone``)."""
    fn = model.backbone if backbone else model
    was_training = model.training
    model.eval()
    try:
        out = [fn(x[i : i + batch_size]).float() for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 0)


def retrieval_metrics(emb: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Recall@K, MAP@R and R-Precision of leave-one-out retrieval."""
    k = tuple(v for v in RETRIEVAL_K if v < len(labels)) or (1,)
    res = metrics.retrieval(emb, labels, k=k, metrics=("recall", "map@r", "r_precision")).to_dict()
    return {key: float(v) for key, v in res.items() if isinstance(v, float)}


def _all_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    i, j = torch.triu_indices(len(labels), len(labels), offset=1)
    return torch.stack([i, j], dim=1), labels[i] == labels[j]


def face_metrics(emb: torch.Tensor, labels: torch.Tensor, seed: int) -> dict[str, float]:
    """Identification (CMC), verification and open-set metrics of the face protocol."""
    out: dict[str, float] = {}
    ids = labels.unique()
    gallery, probe = data.enrol(labels, ids.tolist(), seed=seed)
    ranks = tuple(r for r in (1, 5) if r <= ids.numel())
    cmc = metrics.cmc(emb[probe], labels[probe], emb[gallery], labels[gallery], ranks)
    out.update({f"rank{r}": float(v) for r, v in cmc.rates.items()})
    rows = subset(len(labels), VERIFICATION_ROWS, seed)
    rows = torch.arange(len(labels)) if rows is None else rows
    pairs, same = _all_pairs(labels[rows])
    if bool(same.any()) and bool((~same).any()):
        scores = metrics.pair_scores(emb[rows], pairs=pairs)
        ver = metrics.verification(scores, same, far=(0.1, 0.01))
        out.update(auc=ver.auc, eer=ver.eer)
        out.update({f"tar@far={f:g}": v for f, v in ver.tar_at_far.items() if v is not None})
    if ids.numel() >= 2:
        order = torch.randperm(ids.numel(), generator=torch.Generator().manual_seed(seed))
        enrolled, unknown = ids[order[: ids.numel() // 2]], ids[order[ids.numel() // 2 :]]
        gallery, known = data.enrol(labels, enrolled.tolist(), seed=seed)
        probes = torch.cat([known, torch.isin(labels, unknown).nonzero().flatten()])
        n_unknown = int(torch.isin(labels, unknown).sum())
        fars = [f for f in (0.1, 0.01) if n_unknown >= math.ceil(1 / f)]
        if fars:
            dir_ = metrics.dir_at_far(
                emb[probes], labels[probes], emb[gallery], labels[gallery], fars
            )
            out.update({f"dir@far={f:g}": v for f, v in dir_.dir.items() if v is not None})
    return out


def evaluate_embeddings(
    emb: torch.Tensor, labels: torch.Tensor, protocol: str, seed: int = 0
) -> dict[str, float]:
    """All metrics of ``protocol`` (``zero-shot`` or ``face``) for test embeddings."""
    out = retrieval_metrics(emb, labels)
    if protocol == "face":
        out.update(face_metrics(emb, labels, seed))
    return out


def flat(x: torch.Tensor) -> torch.Tensor:
    """Inputs as float vectors ``[N, features]`` (the raw-pixel baseline)."""
    return x.reshape(len(x), -1).float()


def pca_baseline(
    train_x: torch.Tensor, test_x: torch.Tensor, dim: int, seed: int = 0, fit_rows: int = 10000
) -> torch.Tensor:
    """Test inputs projected on the top ``dim`` principal axes of (up to ``fit_rows``) training
    inputs: ``[N_test, dim]``."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(train_x), generator=gen)[:fit_rows]
    fit = flat(train_x[rows]).double()
    mean = fit.mean(dim=0)
    dim = min(dim, *fit.shape)
    _, _, v = torch.linalg.svd(fit - mean, full_matrices=False)
    return ((flat(test_x).double() - mean) @ v[:dim].T).float()


def similarity_sample(
    emb: torch.Tensor, labels: torch.Tensor, seed: int = 0, rows: int = HISTOGRAM_ROWS
) -> dict[str, object]:
    """Cosine similarities of all positive and negative pairs among up to ``rows`` seeded test
    samples, plus the exact S+ vs S- AUC over all test pairs (for the report's histograms)."""
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(labels), generator=gen)[:rows]
    x = nn.functional.normalize(emb[pick].double(), dim=1)
    y = labels[pick]
    upper = torch.ones(len(y), len(y), dtype=torch.bool).triu(diagonal=1)
    s = (x @ x.T)[upper]
    same = (y[:, None] == y[None, :])[upper]
    stats = metrics.similarity_stats(emb, labels, seed=seed)
    return {"pos": s[same].numpy(), "neg": s[~same].numpy(), "auc": stats.auc}


def subset(n: int, limit: int, seed: int) -> torch.Tensor | None:
    """Seeded ``limit`` of ``n`` indices (sorted), or None when ``limit`` is 0 or >= n."""
    if limit <= 0 or limit >= n:
        return None
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[:limit].sort().values


def headline(result: dict[str, float], keys: Iterable[str] = ("map@r", "recall@1")) -> str:
    """``map@r 0.512  recall@1 0.803 ...`` for the keys present."""
    return "  ".join(f"{k} {result[k]:.4f}" for k in keys if k in result)
