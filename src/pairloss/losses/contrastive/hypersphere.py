"""Alignment and uniformity on the hypersphere as losses (Wang & Isola, "Understanding
Contrastive Representation Learning through Alignment and Uniformity on the Hypersphere", ICML
2020)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ...objectives.tower_softmax import finite_logsumexp
from ...similarity import CosineSimilarity, normalize_rows
from ...two_towers import TowerObjective, run_towers
from ...validation import check_choice, check_embeddings, check_real
from .views import check_two_views


class AlignmentLoss(nn.Module):
    r"""Alignment of positive pairs: :math:`\frac{1}{B}\sum_i \| \hat x_i - \hat y_i \|_2^\alpha`
    on L2-normalised features (Wang & Isola 2020, ``alpha = 2``). A paired loss: O(B D).
    Checked against lightly's ``HypersphereLoss`` (its alignment term).

    Shapes: ``x``, ``y`` [B, D] (row i of each is a positive pair). Returns a scalar.
    """

    def __init__(self, alpha: float = 2.0) -> None:
        super().__init__()
        self.alpha = check_real(alpha, "alpha", low=0.0, low_open=True)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The alignment of B positive pairs."""
        a, b = check_two_views(x, y, names=("x", "y"))
        diff = normalize_rows(a) - normalize_rows(b)
        return diff.norm(dim=1).pow(self.alpha).mean()


class _Uniformity(TowerObjective):
    """Row statistic ``LSE_{j != i} -t |x_i - x_j|^2`` (unit vectors: ``|x_i - x_j|^2 = 2 - 2
    s_ij``); ``combine`` is the log of the mean over all ordered pairs."""

    panels = ((0, 0),)

    def __init__(self, n: int, t: float) -> None:
        self.n, self.t = n, t

    def block(self, s, start, end):
        (sb,) = s
        z = -self.t * (2 - 2 * sb)
        idx = torch.arange(end - start, device=sb.device)
        z = z.index_put((idx, idx + start), z.new_tensor(float("-inf")))
        return finite_logsumexp(z, dim=1)[:, None], [None]

    def combine(self, rows, cols):
        return torch.logsumexp(rows[:, 0], dim=0) - math.log(self.n * (self.n - 1))


class UniformityLoss(nn.Module):
    r"""Uniformity of a batch on the hypersphere:

    .. math::
        L = \log \frac{1}{B (B - 1)} \sum_{i \ne j} e^{-t \|\hat x_i - \hat x_j\|_2^2}

    (Wang & Isola 2020, ``t = 2``). The log couples every pair, so it runs on the
    two-tower engine's two walks: each row's log-sum-exp, then the log of their sum (no B x B
    matrix in the blocked engine). Checked against lightly's ``HypersphereLoss`` (its
    uniformity term, ``torch.pdist`` over the pairs i < j) and against its definition.

    Shapes: ``x`` [B, D]. Returns a scalar; a batch of one has no pair and gives 0.
    """

    def __init__(self, t: float = 2.0, engine: str = "auto", block_size: int | None = None):
        super().__init__()
        self.t = check_real(t, "t", low=0.0, low_open=True)
        self.engine = check_choice(engine, "engine", ("auto", "dense", "blocked"))
        self.block_size = block_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The uniformity of the rows of ``x``."""
        x = check_embeddings(x, "x")
        if x.shape[0] < 2:
            return x.sum() * 0.0
        return run_towers(
            _Uniformity(x.shape[0], self.t),
            [x],
            CosineSimilarity(),
            names=["x"],
            engine=self.engine,
            block_size=self.block_size,
        )


def alignment(x, y, alpha: float = 2.0) -> torch.Tensor:
    """Functional form of :class:`AlignmentLoss`."""
    return AlignmentLoss(alpha)(x, y)


def uniformity(x, t: float = 2.0, **kwargs) -> torch.Tensor:
    """Functional form of :class:`UniformityLoss`."""
    return UniformityLoss(t, **kwargs)(x)
