"""Evaluation of embeddings, and the baselines a trained model is judged by.

Retrieval protocol: leave-one-out retrieval within an evaluation set (Recall@1/2/4/8, MAP@R,
R-Precision; :func:`pairloss.metrics.retrieval`).

Face protocol (seeded by ``seed``), on an evaluation set of identities:

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
from ..errors import PairLossError

PROTOCOLS = ("retrieval", "face")
RETRIEVAL_K = (1, 2, 4, 8)
HISTOGRAM_ROWS = 2000
VERIFICATION_ROWS = 3000  # all pairs of at most this many (seeded) test samples
EVAL_MEMORY = 2**30
"""Default memory budget of one evaluation, in bytes (``--eval-memory``)."""


@torch.no_grad()
def embed(
    model: nn.Module,
    x: object,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    backbone: bool = False,
) -> torch.Tensor:
    """``model`` applied to ``x`` (a tensor, or anything that slices into batches, such as
    :class:`pairloss.data.images.ImageFiles`) in batches on ``device``, in eval mode:
    float32 ``[N, E]`` on the CPU. With ``backbone=True`` the representation before the
    model's projection head (``model.backbone``)."""
    fn = model.backbone if backbone else model
    was_training = model.training
    model.eval()
    try:
        out = [
            fn(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 0)


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Set every BatchNorm layer's running statistics to the plain average over ``batches``
    (forward passes in training mode, no gradient), so that an untrained model is evaluated
    with statistics of the data rather than its initial mean 0 and variance 1; returns the
    number of BatchNorm layers."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.train()
    try:
        for batch in batches:
            model(batch)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    return len(norms)


def _chunk_rows(width: int, memory: int) -> int:
    """Query rows per block so that a block of ``width`` scores or neighbours per row, with
    its float64 re-scoring (about 24 bytes per entry), stays within ``memory``."""
    return max(1, memory // (24 * max(1, width)))


def retrieval_metrics(
    emb: torch.Tensor, labels: torch.Tensor, memory: int = EVAL_MEMORY
) -> dict[str, float]:
    """Recall@K, MAP@R and R-Precision of leave-one-out retrieval, in blocks of query rows
    that fit ``memory`` bytes: a k-NN pass of depth ``max R`` on FAISS when it is installed
    (blocks of at most 2,048 queries), else the torch pass over whole score rows; the values
    are the same."""
    k = tuple(v for v in RETRIEVAL_K if v < len(labels)) or (1,)
    faiss = metrics.faiss_available()
    if faiss:
        depth = max(int(torch.unique(labels, return_counts=True)[1].max()), max(k))
        chunk = min(2048, _chunk_rows(depth, memory))
    else:
        chunk = _chunk_rows(len(labels), memory)
    res = metrics.retrieval(
        emb,
        labels,
        k=k,
        metrics=("recall", "map@r", "r_precision"),
        backend="faiss" if faiss else "torch",  # the k-NN pass is the faster one here
        chunk_size=chunk,
    ).to_dict()
    return {key: float(v) for key, v in res.items() if isinstance(v, float)}


def _all_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    i, j = torch.triu_indices(len(labels), len(labels), offset=1)
    return torch.stack([i, j], dim=1), labels[i] == labels[j]


def face_metrics(
    emb: torch.Tensor, labels: torch.Tensor, seed: int, memory: int = EVAL_MEMORY
) -> dict[str, float]:
    """Identification (CMC), verification and open-set metrics of the face protocol, each
    within ``memory`` bytes."""
    out: dict[str, float] = {}
    ids = labels.unique()
    gallery, probe = data.enrol(labels, ids.tolist(), seed=seed)
    ranks = tuple(r for r in (1, 5) if r <= ids.numel())
    cmc = metrics.cmc(emb[probe], labels[probe], emb[gallery], labels[gallery], ranks)
    out.update({f"rank{r}": float(v) for r, v in cmc.rates.items()})
    rows = subset(len(labels), VERIFICATION_ROWS, seed)
    rows = torch.arange(len(labels)) if rows is None else rows
    pairs, same = _all_pairs(labels[rows])
    if bool(same.any()) and bool((~same).any()) and len(same) >= 2:
        scores = metrics.pair_scores(emb[rows], pairs=pairs, max_bytes=max(1, memory // 4))
        folds = min(10, len(same))  # the 10-fold accuracy is not reported; tiny sets get fewer
        ver = metrics.verification(scores, same, far=(0.1, 0.01), n_folds=folds)
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
    emb: torch.Tensor,
    labels: torch.Tensor,
    protocol: str = "retrieval",
    seed: int = 0,
    memory: int = EVAL_MEMORY,
) -> dict[str, float]:
    """All metrics of ``protocol`` (``"retrieval"`` or ``"face"``) for evaluation embeddings,
    within ``memory`` bytes beyond the embeddings themselves."""
    if protocol not in PROTOCOLS:
        raise PairLossError(f"protocol: expected one of {PROTOCOLS}, got {protocol!r}")
    out = retrieval_metrics(emb, labels, memory)
    if protocol == "face":
        out.update(face_metrics(emb, labels, seed, memory))
    return out


def flat(x: object) -> torch.Tensor:
    """Inputs as float vectors ``[N, features]`` (the raw-input baseline); images keep their
    stored scale (0-255 for uint8 pixels)."""
    values = x if isinstance(x, torch.Tensor) else x[:]
    return values.reshape(len(values), -1).float()


class PCA:
    """The top ``dim`` principal axes of (up to ``fit_rows`` seeded rows of) training inputs.

    ``PCA(train_x, dim)(x)`` projects inputs ``x`` (flattened) on them: ``[N, dim]``.
    """

    def __init__(self, train_x: object, dim: int, seed: int = 0, fit_rows: int = 10000) -> None:
        gen = torch.Generator().manual_seed(seed)
        rows = torch.randperm(len(train_x), generator=gen)[:fit_rows].sort().values
        fit = flat(train_x[rows]).double()
        self.mean = fit.mean(dim=0)
        self.dim = min(dim, *fit.shape)
        _, _, v = torch.linalg.svd(fit - self.mean, full_matrices=False)
        self.axes = v[: self.dim].T.contiguous()

    def __call__(self, x: object) -> torch.Tensor:
        return ((flat(x).double() - self.mean) @ self.axes).float()


def similarity_sample(
    emb: torch.Tensor, labels: torch.Tensor, seed: int = 0, rows: int = HISTOGRAM_ROWS
) -> dict[str, object]:
    """Cosine similarities of all positive and negative pairs among up to ``rows`` seeded
    samples, and their S+ vs S- ROC AUC (for the report's histograms)."""
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(labels), generator=gen)[:rows]
    x = nn.functional.normalize(emb[pick].double(), dim=1)
    y = labels[pick]
    upper = torch.ones(len(y), len(y), dtype=torch.bool).triu(diagonal=1)
    s = (x @ x.T)[upper]
    same = (y[:, None] == y[None, :])[upper]
    auc = metrics.roc_auc(s, same) if bool(same.any()) and bool((~same).any()) else None
    return {"pos": s[same].numpy(), "neg": s[~same].numpy(), "auc": auc}


def subset(n: int, limit: int, seed: int) -> torch.Tensor | None:
    """Seeded ``limit`` of ``n`` indices (sorted), or None when ``limit`` is 0 or >= n."""
    if limit <= 0 or limit >= n:
        return None
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[:limit].sort().values


def headline(result: dict[str, float], keys: Iterable[str] = ("map@r", "recall@1")) -> str:
    """``map@r 0.512  recall@1 0.803 ...`` for the keys present."""
    return "  ".join(f"{k} {result[k]:.4f}" for k in keys if k in result)
