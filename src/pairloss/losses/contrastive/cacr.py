"""CACR: contrastive attraction and contrastive repulsion (Zheng et al., "Contrastive
Attraction and Contrastive Repulsion for Representation Learning", TMLR 2023)."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from ...similarity import CosineSimilarity, unit_vectors
from ...two_towers import TowerObjective, run_towers
from ...validation import check_choice, check_real
from .views import check_views


def attraction(views: torch.Tensor, alpha: float, tau_pos: float) -> torch.Tensor:
    r"""CACR's attraction of V views [V, B, D] (unit rows): for each view v as the query, its
    positives are the other views of the sample, weighted by a softmax over their distances
    (the farther, the more):

    .. math::
        \frac{1}{V}\sum_v \frac{1}{B}\sum_i \sum_{w \ne v}
            \pi^+_{w}\, \alpha \|x^{(v)}_i - x^{(w)}_i\|^2, \qquad
        \pi^+ = \mathrm{softmax}_w\big(\tau^+ \|x^{(v)}_i - x^{(w)}_i\|^2\big)"""
    n_views = views.shape[0]
    total = 0
    for v in range(n_views):
        others = torch.stack([views[w] for w in range(n_views) if w != v], dim=1)
        d2 = (views[v][:, None, :] - others).pow(2).sum(dim=2)
        weights = torch.softmax(tau_pos * d2, dim=1)
        total = total + (alpha * d2 * weights).sum(dim=1).mean()
    return total / n_views


class _Repulsion(TowerObjective):
    """Panels (view v, view w) for v < w; row i: ``sum_{j != i} softmax_j(-tau- d^2_ij) (-beta
    d^2_ij)`` with ``d^2 = 2 - 2 cos``, averaged over the panels."""

    linear = True
    n_stats = 1

    def __init__(self, n_views: int, beta: float, tau_neg: float) -> None:
        self.panels = tuple(itertools.combinations(range(n_views), 2))
        self.beta, self.tau_neg = beta, tau_neg

    def block(self, s, start, end):
        idx = torch.arange(end - start, device=s[0].device)
        total = 0
        for sp in s:
            d2 = (2 - 2 * sp).clamp_min(0)
            logits = (-self.tau_neg * d2).index_put(
                (idx, idx + start), d2.new_tensor(float("-inf"))
            )
            weights = torch.softmax(logits, dim=1)
            total = total + (weights * (-self.beta) * d2).sum(dim=1)
        return (total / len(s))[:, None], [None] * len(s)

    def combine(self, rows, cols):
        return rows[:, 0].mean()


class CACRLoss(nn.Module):
    r"""CACR: contrastive attraction plus contrastive repulsion.

    The attraction (:func:`attraction`) pulls each sample's views together, distant views
    first; the repulsion pushes each sample from the other samples of another view, closest
    first:

    .. math::
        L_{rep} = \frac{1}{\binom{V}{2}}\sum_{v < w} \frac{1}{B}\sum_i \sum_{j \ne i}
            \pi^-_{ij} \big(-\beta \|x^{(v)}_i - x^{(w)}_j\|^2\big), \qquad
        \pi^-_{i\cdot} = \mathrm{softmax}_j\big(-\tau^- \|x^{(v)}_i - x^{(w)}_j\|^2\big)

    and the loss is :math:`L_{att} + L_{rep}`, on L2-normalised features. Paper: Zheng et al.,
    TMLR 2023 (checked against the authors' ``our_loss1`` / ``our_loss2`` with the
    Euclidean cost, reproduced in the tests; defaults ``alpha = beta = tau_pos = tau_neg = 1``
    as their functions). The weights are not detached (as in the authors' code). The
    repulsion runs on the two-tower engine (one panel per pair of views, one walk).

    Shapes: ``views`` [V, B, D] or a list of V [B, D] tensors, V >= 2. Returns a scalar.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 1.0,
        tau_pos: float = 1.0,
        tau_neg: float = 1.0,
        engine: str = "auto",
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        self.alpha = check_real(alpha, "alpha", low=0.0)
        self.beta = check_real(beta, "beta", low=0.0)
        self.tau_pos = check_real(tau_pos, "tau_pos")
        self.tau_neg = check_real(tau_neg, "tau_neg")
        self.engine = check_choice(engine, "engine", ("auto", "dense", "blocked"))
        self.block_size = block_size

    def forward(self, views) -> torch.Tensor:
        """The loss of V views of B samples."""
        z = check_views(views)
        unit = unit_vectors(z)
        pull = attraction(unit, self.alpha, self.tau_pos)
        if z.shape[1] < 2:
            return pull
        push = run_towers(
            _Repulsion(z.shape[0], self.beta, self.tau_neg),
            list(z.unbind(0)),
            CosineSimilarity(),
            names=[f"views[{v}]" for v in range(z.shape[0])],
            engine=self.engine,
            block_size=self.block_size,
        )
        return pull + push


def cacr(views, alpha=1.0, beta=1.0, tau_pos=1.0, tau_neg=1.0, **kwargs) -> torch.Tensor:
    """Functional form of :class:`CACRLoss`."""
    return CACRLoss(alpha, beta, tau_pos, tau_neg, **kwargs)(views)
