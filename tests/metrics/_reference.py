"""Plain reference implementations, written straight from the definitions (python loops over
a fully sorted ranking), and shared test data."""

from __future__ import annotations

import math

import torch

LAYOUTS = ("balanced", "unbalanced", "singletons")


def make_labels(layout: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """balanced: 6 classes of equal size; unbalanced: class sizes 1..; singletons: a third of
    the samples in classes of their own."""
    if layout == "balanced":
        return torch.arange(n) % 6
    if layout == "unbalanced":
        sizes = torch.arange(1, n + 1)
        return torch.repeat_interleave(torch.arange(n), sizes)[:n]
    if layout == "singletons":
        third = n // 3
        return torch.cat([torch.arange(n - third) % 5, 100 + torch.arange(third)])
    raise ValueError(layout)


def clustered(
    n: int, dim: int, layout: str, seed: int, spread: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 embeddings around one random center per class, and the labels (shuffled)."""
    g = torch.Generator().manual_seed(seed)
    labels = make_labels(layout, n, g)[torch.randperm(n, generator=g)]
    centers = torch.randn(int(labels.max()) + 1, dim, generator=g, dtype=torch.float64)
    return centers[labels] + spread * torch.randn(n, dim, generator=g, dtype=torch.float64), labels


def exact_scores(q: torch.Tensor, g: torch.Tensor, metric: str) -> torch.Tensor:
    """float64 scores computed like the library: float32-rounded (normalised) inputs."""
    if metric == "cosine":
        q = q.double() / q.double().norm(dim=1, keepdim=True)
        g = g.double() / g.double().norm(dim=1, keepdim=True)
    q, g = q.float().double(), g.float().double()
    if metric == "euclidean":
        return -((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    return q @ g.T


def ranking(scores_row: list[float], skip: int | None) -> list[int]:
    """Gallery indices by score desc, then index asc (``skip`` left out)."""
    items = [j for j in range(len(scores_row)) if j != skip]
    return sorted(items, key=lambda j: (-scores_row[j], j))


def per_query_reference(rel: list[bool], ks: tuple[int, ...]) -> dict[str, float]:
    """All retrieval metrics of one query from the relevance of its full ranking."""
    r = sum(rel)
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = float(any(rel[:k]))
        out[f"precision@{k}"] = sum(rel[:k]) / k
        dcg = sum(1 / math.log2(j + 2) for j in range(k) if rel[j])
        idcg = sum(1 / math.log2(j + 2) for j in range(min(r, k)))
        out[f"ndcg@{k}"] = dcg / idcg
    hits, ap, ap_r = 0, 0.0, 0.0
    for j, is_rel in enumerate(rel):
        if is_rel:
            hits += 1
            ap += hits / (j + 1)
            if j < r:
                ap_r += hits / (j + 1)
    out["map"] = ap / r
    out["map@r"] = ap_r / r
    out["r_precision"] = sum(rel[:r]) / r
    out["mrr"] = 1 / (rel.index(True) + 1)
    return out


def reference_retrieval(
    query,
    query_labels,
    gallery=None,
    gallery_labels=None,
    ks=(1, 2, 4),
    metric="cosine",
    relevant=None,
    per_class=False,
) -> tuple[dict[str, float], int]:
    """(averaged metrics, number of excluded queries); ``relevant(qi_label, gj_label) -> bool``."""
    loo = gallery is None
    g, gl = (query, query_labels) if loo else (gallery, gallery_labels)
    relevant = relevant or (lambda a, b: bool(torch.equal(a, b)))
    s = exact_scores(query, g, metric).tolist()
    rows, classes = [], []
    for i in range(query.shape[0]):
        order = ranking(s[i], i if loo else None)
        rel = [relevant(query_labels[i], gl[j]) for j in order]
        if any(rel):
            rows.append(per_query_reference(rel, ks))
            classes.append(tuple(query_labels[i].reshape(-1).tolist()))
    names = rows[0].keys() if rows else ()
    if not per_class:
        return {m: sum(r[m] for r in rows) / len(rows) for m in names}, query.shape[0] - len(rows)
    out = {}
    for m in names:
        by_class: dict[tuple, list[float]] = {}
        for c, r in zip(classes, rows, strict=True):
            by_class.setdefault(c, []).append(r[m])
        out[m] = sum(sum(v) / len(v) for v in by_class.values()) / len(by_class)
    return out, query.shape[0] - len(rows)


def same_values(a: dict, b: dict, rel: float = 1e-13) -> bool:
    """Dict equality where NaN equals NaN and floats agree to ``rel`` (the order of a float64
    sum over a padded row depends on the padding width, i.e. on the chunk size)."""

    def same(x, y):
        if isinstance(x, float) and isinstance(y, float):
            return (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=rel, abs_tol=rel)
        if isinstance(x, dict) and isinstance(y, dict):
            return same_values(x, y, rel)
        return x == y

    return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
