"""Regularizers: a loss term on a set of vectors alone (embeddings or class weights), with
pytorch-metric-learning's names, arguments and results (``pairloss.regularizers.LpRegularizer``,
...).

A regularizer is called on a matrix ``x`` [N, D] and returns a scalar: it lists one term per row
(or per pair of rows) and reduces them with its ``reducer`` (a :mod:`pairloss.reducers` reducer;
:class:`~pairloss.reducers.MeanReducer` unless the regularizer says otherwise). A loss takes one
as ``embedding_regularizer=`` (on the embeddings) and, for the losses with class weights,
``weight_regularizer=`` (on the weights, one row per class), each scaled by its
``*_reg_weight``.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import PairLossError
from .mining import require_distance
from .reducers import DivisorReducer, MeanReducer, reducer_from
from .similarity import CosineSimilarity, LpDistance, Similarity, get_similarity
from .validation import check_bool, check_embeddings, check_int, check_real


def _element(losses: torch.Tensor, **extra) -> dict:
    entry = {
        "losses": losses,
        "indices": torch.arange(losses.shape[0], device=losses.device),
        "reduction_type": "element",
    }
    entry.update(extra)
    return {"loss": entry}


class BaseRegularizer(nn.Module):
    """Base class: ``forward(x)`` = ``reducer(compute_loss(x), x, arange(len(x)))``.

    Args:
        distance: the similarity the regularizer compares rows with (a pairloss similarity or a
            pytorch-metric-learning distance); each subclass has its default.
        reducer: a :mod:`pairloss.reducers` reducer (default: the subclass's).
        collect_stats: accepted for pytorch-metric-learning's signature; no statistics are
            recorded.
    """

    def __init__(
        self,
        distance: Similarity | None = None,
        reducer=None,
        collect_stats: bool | None = None,
    ) -> None:
        super().__init__()
        self.distance = get_similarity(distance, self.get_default_distance())
        self.reducer = self.get_default_reducer() if reducer is None else reducer_from(reducer)
        self.collect_stats = (
            None if collect_stats is None else check_bool(collect_stats, "collect_stats")
        )

    def get_default_distance(self) -> Similarity:
        return LpDistance(p=2)

    def get_default_reducer(self) -> nn.Module:
        return MeanReducer()

    def compute_loss(self, x: torch.Tensor) -> dict:
        """The loss dictionary of ``x`` (see :mod:`pairloss.reducers`)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The regularizer of ``x`` [N, D] (a scalar)."""
        x = check_embeddings(x, "x")
        labels = torch.arange(x.shape[0], device=x.device)
        return self.reducer(self.compute_loss(x), x, labels)


class LpRegularizer(BaseRegularizer):
    r"""The ``p``-norm of each row, raised to ``power``: :math:`\|x_i\|_p^{power}`, averaged
    (pytorch-metric-learning's ``LpRegularizer``; defaults ``p=2``, ``power=1``)."""

    def __init__(self, p: float = 2, power: float = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.p = check_real(p, "p", low=0.0, low_open=True)
        self.power = check_real(power, "power")

    def compute_loss(self, x: torch.Tensor) -> dict:
        reg = torch.norm(x, p=self.p, dim=1)
        return _element(reg if self.power == 1 else reg**self.power)


class ZeroMeanRegularizer(BaseRegularizer):
    r"""The absolute sum of each row's entries, :math:`|\sum_d x_{id}|`, averaged: pushes every
    vector's mean towards 0 (pytorch-metric-learning's ``ZeroMeanRegularizer``)."""

    def compute_loss(self, x: torch.Tensor) -> dict:
        return _element(torch.abs(torch.sum(x, dim=1)))


class CenterInvariantRegularizer(BaseRegularizer):
    r"""Center-invariant regularization (Wu et al., "Deep Features for Face Recognition under
    Different Poses", 2018): :math:`(\|w_i\|^2 - \overline{\|w\|^2})^2 / 4` per row, averaged:
    all class weights get the same norm. Needs ``LpDistance(power=1,
    normalize_embeddings=False)`` (the default)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        require_distance(
            self, "CenterInvariantRegularizer", LpDistance, power=1, normalize_embeddings=False
        )

    def get_default_distance(self) -> Similarity:
        return LpDistance(power=1, normalize_embeddings=False)

    def compute_loss(self, x: torch.Tensor) -> dict:
        sq = self.distance.get_norm(x) ** 2
        return _element((sq - torch.mean(sq)) ** 2 / 4)


class RegularFaceRegularizer(BaseRegularizer):
    r"""RegularFace (Zhao et al., "RegularFace: Deep Face Recognition via Exclusive
    Regularization", CVPR 2019): for each class weight, its similarity to the closest other
    one, :math:`\max_{j \ne i} \cos(w_i, w_j)`, averaged. Cosine similarity by default (any
    similarity, not a distance). The row maxima come from the pair engine's walk over the
    weights (blocked for many classes: memory O(block x C), not C x C); the gradient goes to
    the closest pair of each row, as in pytorch-metric-learning (ties share it)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.distance.is_distance:
            raise PairLossError(
                f"distance: RegularFaceRegularizer needs a similarity, got {self.distance!r}"
            )

    def get_default_distance(self) -> Similarity:
        return CosineSimilarity()

    def compute_loss(self, x: torch.Tensor) -> dict:
        from .engine import PairProblem, run
        from .objectives.terms import RowTerms, masked_max
        from .relations import LabelRelation

        def closest(s, pos, neg, start, end):
            top = masked_max(s, neg)
            has = neg.any(dim=1)
            return [RowTerms.per_anchor(torch.where(has, top, 0.0), has)]

        classes = torch.arange(x.shape[0], device=x.device)
        problem = PairProblem(closest, self.distance, LabelRelation(classes), reduction="none")
        return _element(run(problem, x))


class SparseCentersRegularizer(BaseRegularizer):
    r"""The SoftTriple paper's regulariser of the centres of each class (Qian et al., ICCV
    2019): over the pairs k < k' of one class's centres,
    :math:`\sqrt{2 + \epsilon - \min(2 \cos(w_{ck}, w_{ck'}), 2)}`, divided by twice the number
    of such pairs (the default :class:`~pairloss.reducers.DivisorReducer`; epsilon the dtype's
    smallest normal number). Rows are centres laid out class by class (class c owns rows
    c*K .. c*K + K - 1, the transpose of ``SoftTripleLoss.fc``). Cosine similarity only.

    Args:
        num_classes: C >= 1.
        centers_per_class: K >= 2.
    """

    def __init__(self, num_classes: int, centers_per_class: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = check_int(num_classes, "num_classes", minimum=1)
        self.centers_per_class = check_int(centers_per_class, "centers_per_class", minimum=2)
        require_distance(self, "SparseCentersRegularizer", CosineSimilarity)

    def get_default_distance(self) -> Similarity:
        return CosineSimilarity()

    def get_default_reducer(self) -> nn.Module:
        return DivisorReducer()

    def compute_loss(self, x: torch.Tensor) -> dict:
        c, k = self.num_classes, self.centers_per_class
        if x.shape[0] != c * k:
            raise PairLossError(
                f"x: has {x.shape[0]} rows; expected num_classes * centers_per_class = {c * k}"
            )
        w = self.distance.prepare(x).view(c, k, -1)
        sims = self.distance.compute_mat(w, w)  # [C, K, K], one class at a time
        rows, cols = torch.triu_indices(k, k, offset=1, device=x.device)
        pairs = torch.clamp(2.0 * sims[:, rows, cols].reshape(-1), max=2)
        reg = torch.sqrt(2.0 + torch.finfo(x.dtype).tiny - pairs)
        return _element(reg, divisor=2 * pairs.shape[0])


__all__ = [
    "BaseRegularizer",
    "CenterInvariantRegularizer",
    "LpRegularizer",
    "RegularFaceRegularizer",
    "SparseCentersRegularizer",
    "ZeroMeanRegularizer",
]
