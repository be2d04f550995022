"""GroCo: contrastive learning by sorting with group ordering constraints (Shvetsova, Petersen,
Kukleva, Schiele & Kuehne, "Learning by Sorting: Self-supervised Learning with Group Ordering
Constraints", ICCV 2023)."""

from __future__ import annotations

import torch
from torch import nn

from ...objectives.sorting import cauchy_sort
from ...similarity import CosineSimilarity, unit_vectors
from ...two_towers import TowerObjective, run_towers
from ...validation import check_bool, check_choice, check_int, check_real
from .views import check_views

# torch's BCELoss clamps its logarithms at -100
_LOG_FLOOR = -100.0


def group_ordering_bce(sims: torch.Tensor, n_neg: int, steepness: float) -> torch.Tensor:
    """Per row of ``sims`` [R, n] (the ``n_neg`` negatives' similarities first, then the
    positives', each group ascending): the relaxed sort's probability of each item landing in
    the positives' group of positions (the top ``n - n_neg``), its binary cross-entropy with
    the item's group, and the same for the negatives' group; the mean of the two, averaged over
    the row's items. Returns [R]."""
    _, perm = cauchy_sort(sims, steepness)
    n = sims.shape[1]
    in_neg = perm[:, :, :n_neg].sum(dim=2).clamp(0, 1)
    in_pos = perm[:, :, n_neg:].sum(dim=2).clamp(0, 1)
    target_pos = torch.zeros(n, dtype=sims.dtype, device=sims.device)
    target_pos[n_neg:] = 1

    def bce(p, t):
        log_p = torch.log(p).clamp_min(_LOG_FLOOR)
        log_q = torch.log(1 - p).clamp_min(_LOG_FLOOR)
        return -(t * log_p + (1 - t) * log_q)

    return 0.5 * (bce(in_pos, target_pos) + bce(in_neg, 1 - target_pos)).mean(dim=1)


class _GroCo(TowerObjective):
    """Panels (view v, negatives of view v); a row's statistic is its BCE averaged over the
    anchor views."""

    linear = True
    n_stats = 1

    def __init__(self, n_views, positives, topk, steepness):
        self.panels = tuple((v, n_views + v) for v in range(n_views))
        self.positives, self.topk, self.steepness = positives, topk, steepness

    def params(self):
        return (self.positives,)

    def block(self, s, start, end):
        idx = torch.arange(end - start, device=s[0].device)
        total = 0
        for v, sv in enumerate(s):
            k = min(self.topk, sv.shape[1] - 1)
            masked = sv.index_put((idx, idx + start), sv.new_tensor(float("-inf")))
            negatives = torch.topk(masked, k, dim=1).values.flip(1)
            positives = torch.sort(self.positives[v, start:end], dim=1).values
            sims = torch.cat([negatives, positives], dim=1)
            total = total + group_ordering_bce(sims, k, self.steepness)
        return (total / len(s))[:, None], [None] * len(s)

    def combine(self, rows, cols):
        return rows[:, 0].mean()


class GroCoLoss(nn.Module):
    r"""GroCo: sort each anchor's similarities and penalise positives not ranked above the
    negatives.

    For anchor view ``v`` of sample i, its positives are its other views (cosine similarities,
    ascending) and its negatives the ``topk_neg`` most similar other samples of the same view;
    the concatenation [negatives, positives] is sorted by a differentiable sorting network
    (odd-even transpositions, Cauchy relaxation, :func:`~pairloss.objectives.sorting.
    cauchy_sort`) into a soft permutation P, and

    .. math::
        \ell_i = \mathrm{BCE}\Big(\sum_{p \ge k} P_{\cdot p},\ [\text{positive}]\Big)

    averaged with the same for the negatives' group of positions, over the items, the anchors
    and the anchor views. Paper: Shvetsova et al., ICCV 2023; defaults as the authors' ``GroCo``
    module (``topk_neg = 10``, ``steepness = 1``, stop-gradient on the positives and the
    negatives), checked against it with the authors' sorting library (``diffsort``).
    Row-decomposable: the negatives' top-k runs on the two-tower engine (one walk).

    Shapes: ``views`` [V, B, D] or a list of V [B, D] tensors, V >= 2. Returns a scalar.
    """

    def __init__(
        self,
        topk_neg: int = 10,
        steepness: float = 1.0,
        stop_gradient: bool = True,
        engine: str = "auto",
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        self.topk_neg = check_int(topk_neg, "topk_neg", minimum=1)
        self.steepness = check_real(steepness, "steepness", low=0.0, low_open=True)
        self.stop_gradient = check_bool(stop_gradient, "stop_gradient")
        self.engine = check_choice(engine, "engine", ("auto", "dense", "blocked"))
        self.block_size = block_size

    def forward(self, views) -> torch.Tensor:
        """The loss of V views of B samples."""
        z = check_views(views)
        n_views = z.shape[0]
        unit = unit_vectors(z)
        target = unit.detach() if self.stop_gradient else unit
        positives = torch.stack(
            [
                torch.stack(
                    [(unit[v] * target[w]).sum(dim=1) for w in range(n_views) if w != v], dim=1
                )
                for v in range(n_views)
            ]
        )
        negatives = [t.detach() if self.stop_gradient else t for t in z.unbind(0)]
        return run_towers(
            _GroCo(n_views, positives, self.topk_neg, self.steepness),
            [*z.unbind(0), *negatives],
            CosineSimilarity(),
            names=[f"views[{v}]" for v in range(n_views)] * 2,
            engine=self.engine,
            block_size=self.block_size,
        )


def groco(views, topk_neg: int = 10, steepness: float = 1.0, **kwargs) -> torch.Tensor:
    """Functional form of :class:`GroCoLoss`."""
    return GroCoLoss(topk_neg, steepness, **kwargs)(views)
