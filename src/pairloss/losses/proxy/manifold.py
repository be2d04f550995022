"""Manifold loss (Aziere & Todorovic, "Ensemble Deep Manifold Similarity Learning using Hard
Proxies", CVPR 2019), with pytorch-metric-learning's ``ManifoldLoss`` names, defaults and
results."""

from __future__ import annotations

import math

import torch
from torch import nn

from ...engine import compute_dtype
from ...errors import PairLossError
from ...similarity import CosineSimilarity, Similarity, get_similarity
from ...validation import check_bool, check_embeddings, check_int, check_labels, check_real
from ..base import regularizer_from


def _hinge_lse(f: torch.Tensor, own: torch.Tensor, margin: float) -> torch.Tensor:
    """mean_i log(1 + sum_{c != own_i, f_ic - f_i,own + margin >= 0} e^{f_ic - f_i,own + margin})."""
    rows = torch.arange(f.shape[0], device=f.device)
    x = f - f[rows, own][:, None] + margin
    keep = x >= 0
    keep[rows, own] = False
    return torch.log1p(torch.where(keep, torch.exp(torch.where(keep, x, 0.0)), 0.0).sum(1)).mean()


def _row_cosines(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine of every row of ``a`` [N, M] with every row of ``b`` [K, M], as [N, K]: each row
    divided by its norm clamped at ``eps`` (:func:`torch.nn.functional.cosine_similarity`'s
    rule), then one product; no [K, N, M] broadcast."""
    a = a / torch.linalg.vector_norm(a, dim=1, keepdim=True).clamp_min(eps)
    b = b / torch.linalg.vector_norm(b, dim=1, keepdim=True).clamp_min(eps)
    return a @ b.T


class ManifoldLoss(nn.Module):
    r"""Manifold loss: similarities propagated by a random walk on the graph of the batch and
    K learnable proxies, then a proxy-NCA-like hinge on the walk's affinities.

    With :math:`S = \exp(\max(s, 0) / 0.5)` (zero diagonal) over the batch and the proxies,
    :math:`\bar S = D^{-1/2} S D^{-1/2}` and :math:`F = (1 - \alpha)(I - \alpha \bar S)^{-1}`:
    the intrinsic loss is
    :math:`\mathrm{mean}_i \log(1 + \sum_{c \ne m_i,\, x_{ic} \ge 0} e^{x_{ic}})`,
    :math:`x_{ic} = F_{i,c} - F_{i,m_i} + \text{margin}` over the proxy columns of F, and the
    context loss the same on the cosines between each sample's row of F and each proxy's row;
    :math:`L = L_{int} + \lambda_C L_{ctx}`. Paper: Aziere & Todorovic, CVPR 2019, eq. 3-9.
    Arguments as pytorch-metric-learning's ``ManifoldLoss``: ``l`` (the embedding size),
    ``K=50`` proxies (``proxies`` [K, l], N(0, 1)), ``lambdaC=1.0`` (>= 0; ``inf`` keeps only
    the context loss, with weight 1: pytorch-metric-learning documents that and then fails),
    ``alpha=0.8``, ``margin=5e-4``; cosine similarity by default. Scores whose graph weights
    exp(s / 0.5) overflow (unbounded distances of large inputs) are refused.

    Labels are not used: ``indices_tuple`` is the [B] tensor of each sample's proxy
    (m_i); without it each proxy gets one sample and the rest a random proxy (torch's global
    generator, the calls of pytorch-metric-learning, so the same seed gives the same
    assignment; the batch needs at least K samples). The graph couples every pair of the
    (B + K) nodes through the matrix inverse, so this loss is dense. The inverse is taken in
    the embeddings' precision (pytorch-metric-learning takes it in float32 for every dtype).
    """

    def __init__(
        self,
        l: int,  # noqa: E741 (pytorch-metric-learning's name)
        K: int = 50,
        lambdaC: float = 1.0,
        alpha: float = 0.8,
        margin: float = 5e-4,
        distance: Similarity | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ) -> None:
        super().__init__()
        self.l = check_int(l, "l", minimum=1)
        self.K = check_int(K, "K", minimum=1)
        if lambdaC != math.inf:
            lambdaC = check_real(lambdaC, "lambdaC", low=0.0)
        elif not isinstance(lambdaC, (int, float)):
            raise PairLossError(f"lambdaC: expected a number >= 0, got {lambdaC!r}")
        self.lambdaC = float(lambdaC)
        self.alpha = check_real(alpha, "alpha", 0.0, 1.0, low_open=True, high_open=True)
        self.margin = check_real(margin, "margin")
        self.distance = get_similarity(distance, CosineSimilarity())
        self.embedding_regularizer = regularizer_from(
            embedding_regularizer, "embedding_regularizer"
        )
        self.embedding_reg_weight = check_real(embedding_reg_weight, "embedding_reg_weight")
        self.collect_stats = (
            None if collect_stats is None else check_bool(collect_stats, "collect_stats")
        )
        self.proxies = nn.Parameter(torch.randn(self.K, self.l))

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of ``embeddings`` [B, l]; ``indices_tuple`` the [B] proxy of each sample."""
        embeddings = check_embeddings(embeddings, "embeddings")
        if labels is not None or ref_labels is not None:
            raise PairLossError("labels: not supported by ManifoldLoss; expected None")
        if ref_emb is not None:
            raise PairLossError("ref_emb: not supported by ManifoldLoss; expected None")
        n, k = embeddings.shape[0], self.K
        if embeddings.shape[1] != self.l:
            raise PairLossError(
                f"embeddings: have {embeddings.shape[1]} features; expected l = {self.l}"
            )
        if indices_tuple is not None:
            own = check_labels(indices_tuple, n, "indices_tuple")
            if own.numel() and (int(own.min()) < 0 or int(own.max()) >= k):
                raise PairLossError(
                    f"indices_tuple: expected the [{n}] proxy index (in [0, {k})) of each sample"
                )
            own = own.to(embeddings.device).long()
        else:
            if n < k:
                raise PairLossError(
                    f"embeddings: {n} samples cannot cover the K = {k} proxies; expected at "
                    "least K rows (or pass the proxy of each sample as indices_tuple)"
                )
            own = torch.cat((torch.arange(k), torch.randint(0, k, (n - k,))))
            own = own[torch.randperm(n)].to(embeddings.device)
        dtype = compute_dtype(embeddings)
        nodes = torch.cat([embeddings.to(dtype), self.proxies.to(dtype)], dim=0)
        s = torch.exp(self.distance(nodes, nodes).clamp(0, math.inf) / 0.5)
        if not bool(torch.isfinite(s).all()):
            raise PairLossError(
                f"embeddings: the graph weights exp(s / 0.5) overflow {dtype} with "
                f"{self.distance!r} (scores up to {float(self.distance(nodes, nodes).amax()):.3g});"
                " expected scores below about 40 (float32) or 350 (float64): a bounded "
                "similarity such as cosine, or inputs of moderate magnitude"
            )
        eye = torch.eye(n + k, device=s.device, dtype=s.dtype)
        s = s - s * eye
        d = torch.pow(torch.sum(s, dim=1), -0.5)
        s_bar = d[:, None] * s * d[None, :]
        f = (1 - self.alpha) * torch.inverse(eye - self.alpha * s_bar)
        ctx = _row_cosines(f[:n], f[n:])
        loss = _hinge_lse(ctx, own, self.margin)
        if self.lambdaC != math.inf:
            loss = _hinge_lse(f[:n, n:], own, self.margin) + self.lambdaC * loss
        if self.embedding_regularizer is not None:
            loss = loss + self.embedding_regularizer(embeddings) * self.embedding_reg_weight
        return loss.to(embeddings.dtype)


def manifold(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    proxies: torch.Tensor,
    lambdaC: float = 1.0,
    alpha: float = 0.8,
    margin: float = 5e-4,
    **kwargs,
) -> torch.Tensor:
    """Functional :class:`ManifoldLoss` with the proxies ``proxies`` [K, l]."""
    proxies = check_embeddings(proxies, "proxies")
    loss = ManifoldLoss(
        proxies.shape[1], proxies.shape[0], lambdaC=lambdaC, alpha=alpha, margin=margin, **kwargs
    )
    del loss.proxies
    loss.proxies = proxies
    return loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
