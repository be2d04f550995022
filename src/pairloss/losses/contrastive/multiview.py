"""Multi-view contrastive losses with one term per sample: MV-InfoNCE and MV-DHEL (Koromilas,
Georgiou, Bouritsas, Giannakopoulos, Nicolaou & Panagakis, "A Principled Framework for
Multi-View Contrastive Learning", 2025)."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from ...objectives.tower_softmax import finite_logsumexp
from ...similarity import CosineSimilarity, unit_vectors
from ...two_towers import TowerObjective, run_towers
from ...validation import check_choice, check_positive
from .views import check_views


class _MVInfoNCE(TowerObjective):
    """Panels (view v, all VB rows); a sample's row loss is ``LSE_v R_v - LSE_v P_v``."""

    linear = True
    n_stats = 1

    def __init__(self, n_views: int, n: int, temperature: float) -> None:
        self.panels = tuple((1 + v, 0) for v in range(n_views))
        self.n_views, self.n, self.temperature = n_views, n, temperature

    def block(self, s, start, end):
        b = end - start
        rows = torch.arange(start, end, device=s[0].device)
        everything, positives = [], []
        for v, sv in enumerate(s):
            z = sv / self.temperature
            self_cols = rows + v * self.n
            z = z.index_put(
                (torch.arange(b, device=z.device), self_cols), z.new_tensor(float("-inf"))
            )
            everything.append(finite_logsumexp(z, dim=1))
            others = [w for w in range(self.n_views) if w != v]
            cols = torch.stack([rows + w * self.n for w in others], dim=1)
            positives.append(torch.gather(z, 1, cols))
        denominator = torch.logsumexp(torch.stack(everything, dim=1), dim=1)
        numerator = torch.logsumexp(torch.cat(positives, dim=1), dim=1)
        return (denominator - numerator)[:, None], [None] * len(s)

    def combine(self, rows, cols):
        return rows[:, 0].mean()


class MultiViewInfoNCELoss(nn.Module):
    r"""MV-InfoNCE: one InfoNCE term per sample over all its views.

    For V views :math:`x^{(v)}_i` of B samples and :math:`z = \cos / \tau`:

    .. math::
        \ell_i = -\log \frac{\sum_{v \ne w} e^{z(x^{(v)}_i, x^{(w)}_i)}}
            {\sum_v \sum_{(w, j) \ne (v, i)} e^{z(x^{(v)}_i, x^{(w)}_j)}}

    averaged over the samples: every interaction of every view with every other row of the VB
    views is in one term per sample. Paper: Koromilas et al. 2025, MV-InfoNCE (checked against
    the formula of the authors' ``MVINFONCE`` module, which sums the positives over the ordered
    pairs as ``2 sum_{v < w}``). Runs on the two-tower engine, one panel per view (each view's
    rows against all VB rows), one walk; the blocked engine holds no VB x VB matrix.

    Args:
        temperature: tau (default 0.2).
        engine, block_size: see :mod:`pairloss.two_towers`.

    Shapes: ``views`` [V, B, D] or a list of V [B, D] tensors, V >= 2. Returns a scalar.
    """

    def __init__(self, temperature: float = 0.2, engine: str = "auto", block_size=None) -> None:
        super().__init__()
        self.temperature = check_positive(temperature, "temperature")
        self.engine = check_choice(engine, "engine", ("auto", "dense", "blocked"))
        self.block_size = block_size

    def forward(self, views) -> torch.Tensor:
        """The loss of V views of B samples."""
        z = check_views(views)
        n_views, n, _ = z.shape
        tensors = [z.reshape(n_views * n, -1), *z.unbind(0)]
        names = ["views (all rows)"] + [f"views[{v}]" for v in range(n_views)]
        objective = _MVInfoNCE(n_views, n, self.temperature)
        return run_towers(
            objective,
            tensors,
            CosineSimilarity(),
            names=names,
            engine=self.engine,
            block_size=self.block_size,
        )


class _MVDHEL(TowerObjective):
    """Panels (view v, view v); a sample's row loss is ``sum_v U_v - LSE_{v<w} z_vw``, the
    positive logits given as a [B, pairs] tensor."""

    linear = True
    n_stats = 1

    def __init__(self, n_views: int, positives: torch.Tensor, temperature: float) -> None:
        self.panels = tuple((v, v) for v in range(n_views))
        self.positives, self.temperature = positives, temperature

    def params(self):
        return (self.positives,)

    def block(self, s, start, end):
        b = end - start
        idx = torch.arange(b, device=s[0].device)
        uniformity = 0
        for sv in s:
            z = sv / self.temperature
            z = z.index_put((idx, idx + start), z.new_tensor(float("-inf")))
            uniformity = uniformity + finite_logsumexp(z, dim=1)
        alignment = torch.logsumexp(self.positives[start:end], dim=1)
        return (uniformity - alignment)[:, None], [None] * len(s)

    def combine(self, rows, cols):
        return rows[:, 0].mean()


class MVDHELLoss(nn.Module):
    r"""MV-DHEL: multi-view decoupled hyperspherical energy loss.

    .. math::
        \ell_i = -\log \frac{\sum_{v < w} e^{z(x^{(v)}_i, x^{(w)}_i)}}
            {\prod_v \sum_{j \ne i} e^{z(x^{(v)}_i, x^{(v)}_j)}}

    with :math:`z = \cos / \tau`, averaged over the samples: the alignment of all pairs of views
    is decoupled from the uniformity, which is taken within each view. Paper: Koromilas et al.
    2025, MV-DHEL (checked against the formula of the authors' ``MVDHEL`` module; for two views
    it is DHEL). The uniformity runs on the two-tower engine, one panel per view (each B x B,
    one walk); the alignment is paired, O(V^2 B D).

    Args:
        temperature: tau (default 0.2, the authors' default).
        engine, block_size: see :mod:`pairloss.two_towers`.

    Shapes: ``views`` [V, B, D] or a list of V [B, D] tensors, V >= 2. Returns a scalar.
    """

    def __init__(self, temperature: float = 0.2, engine: str = "auto", block_size=None) -> None:
        super().__init__()
        self.temperature = check_positive(temperature, "temperature")
        self.engine = check_choice(engine, "engine", ("auto", "dense", "blocked"))
        self.block_size = block_size

    def forward(self, views) -> torch.Tensor:
        """The loss of V views of B samples."""
        z = check_views(views)
        n_views = z.shape[0]
        unit = unit_vectors(z.float() if z.dtype in (torch.float16, torch.bfloat16) else z)
        pairs = list(itertools.combinations(range(n_views), 2))
        positives = torch.stack(
            [(unit[v] * unit[w]).sum(dim=1) / self.temperature for v, w in pairs], dim=1
        )
        objective = _MVDHEL(n_views, positives, self.temperature)
        return run_towers(
            objective,
            list(z.unbind(0)),
            CosineSimilarity(),
            names=[f"views[{v}]" for v in range(n_views)],
            engine=self.engine,
            block_size=self.block_size,
        ).to(z.dtype)


def multiview_infonce(views, temperature: float = 0.2, **kwargs) -> torch.Tensor:
    """Functional form of :class:`MultiViewInfoNCELoss`."""
    return MultiViewInfoNCELoss(temperature, **kwargs)(views)


def mv_dhel(views, temperature: float = 0.2, **kwargs) -> torch.Tensor:
    """Functional form of :class:`MVDHELLoss`."""
    return MVDHELLoss(temperature, **kwargs)(views)
