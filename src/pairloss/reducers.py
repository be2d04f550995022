"""Reducers: how a loss's terms become one number, with pytorch-metric-learning's names and
semantics (``pairloss.reducers.MeanReducer``, ...).

A reducer is called like pytorch-metric-learning's, ``reducer(loss_dict, embeddings, labels)``,
on a dictionary ``{sub_loss_name: {"losses": tensor, "indices": ..., "reduction_type": kind}}``
where ``kind`` is ``"element"`` (one term per sample, ``indices`` [n]), ``"pos_pair"`` /
``"neg_pair"`` (one term per pair, ``indices`` = (anchors, others)), ``"triplet"`` (one term
per triplet, ``indices`` = (anchors, positives, negatives)) or ``"already_reduced"`` (a scalar,
passed through). A dictionary with one entry goes to :class:`BaseReducer`; several entries to
:class:`MultipleReducers`, which reduces each and adds them.

Passed to a pairloss loss as ``reducer=``, a reducer is applied inside the pair engine where its
rule is a count or a weight per term (:meth:`BaseReducer.engine_rule`): Mean, Sum,
AvgNonZero (``ThresholdReducer(low=0)``), Divisor and ClassWeighted then run on the blocked and
fused paths like the loss's own reduction. Every other rule (thresholds, per-anchor averages,
``DoNothingReducer``, a user's reducer) is applied to the loss's terms as a dictionary, built on
the dense score matrix, exactly as pytorch-metric-learning does.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from .errors import PairLossError
from .validation import check_bool, check_callable, check_real

REDUCTION_TYPES = ("element", "pos_pair", "neg_pair", "triplet", "already_reduced")

# engine rules (see BaseReducer.engine_rule)
MEAN, SUM, NONZERO, DIVISOR, CLASS_WEIGHTED = "mean", "sum", "nonzero", "divisor", "weighted"


def _zero_like(embeddings: torch.Tensor) -> torch.Tensor:
    """pytorch-metric-learning's zero loss: 0, attached to the embeddings' graph."""
    return torch.sum(embeddings * 0)


def _is_zero_loss(losses) -> bool:
    return not torch.is_tensor(losses) and losses == 0


def check_loss_entry(name: str, info: object) -> tuple:
    """``(losses, indices, reduction_type)`` of one entry of a loss dictionary; a
    :class:`PairLossError` naming what is missing or malformed."""
    if not isinstance(info, dict) or not {"losses", "indices", "reduction_type"} <= set(info):
        raise PairLossError(
            f"loss_dict[{name!r}]: expected a dict with 'losses', 'indices' and 'reduction_type'"
        )
    kind = info["reduction_type"]
    if kind not in REDUCTION_TYPES:
        raise PairLossError(
            f"loss_dict[{name!r}]['reduction_type']: expected one of {REDUCTION_TYPES}, "
            f"got {kind!r}"
        )
    losses, indices = info["losses"], info["indices"]
    if _is_zero_loss(losses) or kind == "already_reduced":
        return losses, indices, kind
    if not torch.is_tensor(losses) or losses.dim() != 1:
        raise PairLossError(f"loss_dict[{name!r}]['losses']: expected a 1-D tensor of terms")
    n = losses.shape[0]
    if kind == "element":
        if not torch.is_tensor(indices) or indices.shape[0] != n:
            raise PairLossError(
                f"loss_dict[{name!r}]['indices']: expected {n} element indices, one per term"
            )
    else:
        parts = 3 if kind == "triplet" else 2
        if (
            not isinstance(indices, (tuple, list))
            or len(indices) != parts
            or any(not torch.is_tensor(x) or x.shape[0] != n for x in indices)
        ):
            raise PairLossError(
                f"loss_dict[{name!r}]['indices']: expected {parts} index tensors of length {n} "
                f"for reduction_type {kind!r}"
            )
    return losses, indices, kind


class BaseReducer(nn.Module):
    """Base class: ``forward(loss_dict, embeddings, labels)`` reduces the one entry of
    ``loss_dict`` by its ``reduction_type`` (``<type>_reduction``); an entry whose losses are the
    number 0 gives pytorch-metric-learning's zero loss (0 attached to the embeddings' graph), an
    ``"already_reduced"`` one is returned as it is.

    Args:
        collect_stats: accepted for pytorch-metric-learning's signature; no statistics are
            recorded.
    """

    def __init__(self, collect_stats: bool | None = None) -> None:
        super().__init__()
        self.collect_stats = (
            None if collect_stats is None else check_bool(collect_stats, "collect_stats")
        )

    def forward(self, loss_dict: dict, embeddings: torch.Tensor, labels) -> torch.Tensor:
        if not isinstance(loss_dict, dict) or len(loss_dict) != 1:
            raise PairLossError(
                "loss_dict: a single reducer takes a dict with one sub-loss; expected "
                "MultipleReducers for several"
            )
        ((name, info),) = loss_dict.items()
        losses, indices, kind = check_loss_entry(name, info)
        kwargs = self.entry_kwargs(name, info, kind)
        return self.reduce_the_loss(losses, indices, kind, kwargs, embeddings, labels)

    def entry_kwargs(self, name: str, info: dict, kind: str) -> dict:
        """Extra arguments a reduction reads from an entry (the divisor of
        :class:`DivisorReducer`)."""
        return {}

    def reduce_the_loss(self, losses, loss_indices, reduction_type, kwargs, embeddings, labels):
        """Reduce one entry (pytorch-metric-learning's method name)."""
        if _is_zero_loss(losses):
            return self.zero_loss(embeddings)
        reduce = getattr(self, f"{reduction_type}_reduction")
        return reduce(losses, loss_indices, embeddings, labels, **kwargs)

    def already_reduced_reduction(self, losses, loss_indices, embeddings, labels, **_):
        if torch.is_tensor(losses) and losses.numel() != 1:
            raise PairLossError(
                f"losses: an 'already_reduced' entry must hold one number, got {losses.numel()}"
            )
        return losses

    def element_reduction(self, losses, loss_indices, embeddings, labels, **kwargs):
        raise NotImplementedError

    def pos_pair_reduction(self, losses, loss_indices, embeddings, labels, **kwargs):
        return self.element_reduction(losses, loss_indices, embeddings, labels, **kwargs)

    def neg_pair_reduction(self, losses, loss_indices, embeddings, labels, **kwargs):
        return self.element_reduction(losses, loss_indices, embeddings, labels, **kwargs)

    def triplet_reduction(self, losses, loss_indices, embeddings, labels, **kwargs):
        return self.element_reduction(losses, loss_indices, embeddings, labels, **kwargs)

    def zero_loss(self, embeddings: torch.Tensor) -> torch.Tensor:
        """0, attached to ``embeddings``' graph."""
        return _zero_like(embeddings)

    def engine_rule(self) -> str | None:
        """How the pair engine applies this reducer to a component of a loss without listing
        its terms: ``"mean"`` (sum / number of terms), ``"sum"``, ``"nonzero"`` (sum / number of
        terms > 0; the terms of every pairloss loss are >= 0), ``"divisor"`` (sum / the loss's
        own divisor), ``"weighted"`` (terms weighted by :meth:`row_weights`, then the mean);
        None when it needs the terms themselves (they are then listed on the dense matrix)."""
        return None

    def row_weights(self, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Per-row weights for the ``"weighted"`` rule."""
        raise NotImplementedError


class MeanReducer(BaseReducer):
    """The mean of the terms (of every reduction type)."""

    def element_reduction(self, losses, *args, **kwargs):
        return torch.mean(losses)

    def engine_rule(self) -> str | None:
        return MEAN


class SumReducer(MeanReducer):
    """The sum of the terms."""

    def element_reduction(self, losses, *args, **kwargs):
        return torch.sum(losses)

    def engine_rule(self) -> str | None:
        return SUM


class ThresholdReducer(BaseReducer):
    """The mean of the terms strictly between ``low`` and ``high`` (either may be None, not
    both); 0 (attached to the graph) when no term passes.

    Args:
        low: terms must be > low.
        high: terms must be < high.
    """

    def __init__(self, low: float | None = None, high: float | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if low is None and high is None:
            raise PairLossError("low, high: expected at least one of them, got both None")
        self.low = None if low is None else check_real(low, "low")
        self.high = None if high is None else check_real(high, "high")

    def element_reduction(self, losses, loss_indices, embeddings, labels, **kwargs):
        if self.low is not None:
            losses = losses[losses > self.low]
        if self.high is not None:
            losses = losses[losses < self.high]
        return torch.mean(losses) if losses.numel() else self.zero_loss(embeddings)

    def engine_rule(self) -> str | None:
        return NONZERO if self.low == 0 and self.high is None else None


class AvgNonZeroReducer(ThresholdReducer):
    """The mean of the terms > 0 (``ThresholdReducer(low=0)``)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(low=0, **kwargs)


class DivisorReducer(BaseReducer):
    """The sum of the terms divided by the entry's ``"divisor"`` (given by the loss); 0 when
    the divisor is 0. Losses whose terms carry no divisor cannot use it."""

    def entry_kwargs(self, name: str, info: dict, kind: str) -> dict:
        if kind == "already_reduced" or _is_zero_loss(info["losses"]):
            return {}
        if "divisor" not in info:
            raise PairLossError(
                f"reducer: DivisorReducer needs the loss to give a divisor for {name!r}, and "
                "this loss gives none; expected another reducer"
            )
        return {"divisor": info["divisor"]}

    def element_reduction(self, losses, loss_indices, embeddings, labels, divisor=1, **kwargs):
        if divisor != 0:
            return torch.sum(losses) / divisor
        return self.zero_loss(embeddings)

    def engine_rule(self) -> str | None:
        return DIVISOR


class ClassWeightedReducer(BaseReducer):
    """The mean of the terms, each weighted by ``weights[label of its anchor]`` (the first
    index of a pair or triplet).

    Args:
        weights: [num_classes] weights (a tensor or a sequence of numbers).
    """

    def __init__(self, weights, **kwargs) -> None:
        super().__init__(**kwargs)
        w = torch.as_tensor(weights)
        if w.dim() != 1 or w.is_complex() or w.dtype == torch.bool:
            raise PairLossError("weights: expected a 1-D tensor of real per-class weights")
        if w.numel() and not bool(torch.isfinite(w.float()).all()):
            raise PairLossError("weights: expected finite per-class weights")
        self.weights = w

    def _helper(self, losses, indices, labels):
        weights = self.weights.to(device=losses.device, dtype=losses.dtype)
        return torch.mean(losses * weights[labels[indices]])

    def element_reduction(self, losses, loss_indices, embeddings, labels, **kwargs):
        return self._helper(losses, loss_indices, labels)

    def pos_pair_reduction(self, losses, loss_indices, embeddings, labels, **kwargs):
        return self._helper(losses, loss_indices[0], labels)

    def neg_pair_reduction(self, losses, loss_indices, embeddings, labels, **kwargs):
        return self._helper(losses, loss_indices[0], labels)

    def triplet_reduction(self, losses, loss_indices, embeddings, labels, **kwargs):
        return self._helper(losses, loss_indices[0], labels)

    def engine_rule(self) -> str | None:
        return CLASS_WEIGHTED

    def row_weights(self, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if labels.numel() and int(labels.max()) >= self.weights.numel():
            raise PairLossError(
                f"weights: has {self.weights.numel()} classes but a label is "
                f"{int(labels.max())}; expected one weight per class"
            )
        return self.weights.to(device=labels.device, dtype=dtype)[labels]


def mean_per_row(x: torch.Tensor, num_per_row: torch.Tensor) -> torch.Tensor:
    """PerAnchorReducer's default aggregation: the row sums of ``x`` [B, N] divided by
    ``num_per_row`` [B], 0 on rows without terms."""
    out = torch.sum(x, dim=1) / num_per_row
    return torch.where(num_per_row == 0, torch.zeros_like(out), out)


class PerAnchorReducer(BaseReducer):
    """Pair terms are first aggregated per anchor (by default their mean, over the anchor's
    terms; 0 for an anchor without terms), then ``reducer`` reduces the per-anchor values of all
    the samples. Element terms go to ``reducer`` directly; triplet terms are refused.

    Args:
        reducer: the inner reducer (default :class:`MeanReducer`).
        aggregation_func: ``f(x, num_per_row) -> [B]`` with ``x`` [B, N] holding each anchor's
            terms (0 elsewhere) and ``num_per_row`` [B] their number.
    """

    def __init__(
        self,
        reducer: BaseReducer | None = None,
        aggregation_func: Callable = mean_per_row,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.reducer = MeanReducer() if reducer is None else reducer_from(reducer)
        self.aggregation_func = check_callable(aggregation_func, "aggregation_func")

    def element_reduction(self, losses, loss_indices, embeddings, labels, **kwargs):
        entry = {"losses": losses, "indices": loss_indices, "reduction_type": "element"}
        return self.reducer({"loss": entry}, embeddings, labels)

    def _per_anchor(self, losses, loss_indices, embeddings, labels):
        n = embeddings.shape[0]
        anchors, others = loss_indices
        cols = int(others.max()) + 1 if others.numel() else 1
        table = losses.new_zeros((n, max(n, cols)))
        present = torch.zeros_like(table, dtype=torch.bool)
        table[anchors, others] = losses
        present[anchors, others] = True
        counts = present.sum(dim=1).to(losses.dtype)
        entry = {
            "losses": self.aggregation_func(table, counts),
            "indices": torch.arange(n, device=embeddings.device),
            "reduction_type": "element",
        }
        return self.reducer({"loss": entry}, embeddings, labels)

    def pos_pair_reduction(self, losses, loss_indices, embeddings, labels, **kwargs):
        return self._per_anchor(losses, loss_indices, embeddings, labels)

    def neg_pair_reduction(self, losses, loss_indices, embeddings, labels, **kwargs):
        return self._per_anchor(losses, loss_indices, embeddings, labels)

    def triplet_reduction(self, losses, loss_indices, embeddings, labels, **kwargs):
        raise NotImplementedError("PerAnchorReducer: triplet terms are not supported")


class DoNothingReducer(BaseReducer):
    """Returns the loss dictionary itself (the terms, their indices and reduction types)."""

    def forward(self, loss_dict: dict, embeddings: torch.Tensor, labels) -> dict:
        return loss_dict


class MultipleReducers(BaseReducer):
    """One reducer per sub-loss name (``default_reducer``, a :class:`MeanReducer` unless given,
    for the others); the reduced sub-losses are added.

    Args:
        reducers: ``{sub_loss_name: reducer}``.
        default_reducer: for sub-losses not in ``reducers``.
    """

    def __init__(self, reducers: dict, default_reducer: BaseReducer | None = None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(reducers, dict):
            raise PairLossError("reducers: expected a dict {sub_loss_name: reducer}")
        self.reducers = nn.ModuleDict({k: reducer_from(v) for k, v in reducers.items()})
        self.default_reducer = (
            MeanReducer() if default_reducer is None else reducer_from(default_reducer)
        )

    def reducer_for(self, name: str) -> nn.Module:
        """The reducer of sub-loss ``name``."""
        if name in self.reducers:  # an nn.ModuleDict, which has no .get
            return self.reducers[name]
        return self.default_reducer

    def forward(self, loss_dict: dict, embeddings: torch.Tensor, labels) -> torch.Tensor:
        if not isinstance(loss_dict, dict):
            raise PairLossError("loss_dict: expected a dict {sub_loss_name: entry}")
        values = [
            self.reducer_for(name)({name: info}, embeddings, labels)
            for name, info in loss_dict.items()
        ]
        out = torch.zeros(len(values), dtype=embeddings.dtype, device=embeddings.device)
        for i, v in enumerate(values):
            out[i] = v
        return self.sub_loss_reduction(out, embeddings, labels)

    def sub_loss_reduction(self, sub_losses, embeddings=None, labels=None):
        return torch.sum(sub_losses)


def reducer_from(obj: object) -> nn.Module:
    """A pairloss reducer from ``obj``: a pairloss reducer as it is, a pytorch-metric-learning
    reducer translated (:func:`pairloss.compat.pml.reducer_from_pml`; a user's own subclass is
    kept and called as it is); anything else is a :class:`PairLossError`."""
    if isinstance(obj, BaseReducer):
        return obj
    from .compat.pml import reducer_from_pml

    out = reducer_from_pml(obj)
    if out is None:
        raise PairLossError(
            f"reducer: expected a pairloss or pytorch-metric-learning reducer, got {obj!r}"
        )
    return out


def for_sub_losses(reducer: object, names: list[str]) -> nn.Module:
    """pytorch-metric-learning's rule for a loss's ``reducer``: a :class:`MultipleReducers` or
    :class:`DoNothingReducer` as it is; for a loss with one sub-loss a copy of ``reducer``;
    otherwise a :class:`MultipleReducers` with a copy for each sub-loss name."""
    reducer = reducer_from(reducer)
    if isinstance(reducer, (MultipleReducers, DoNothingReducer)):
        return reducer
    if len(names) == 1:
        return copy.deepcopy(reducer)
    return MultipleReducers({k: copy.deepcopy(reducer) for k in names})


__all__ = [
    "AvgNonZeroReducer",
    "BaseReducer",
    "ClassWeightedReducer",
    "DivisorReducer",
    "DoNothingReducer",
    "MeanReducer",
    "MultipleReducers",
    "PerAnchorReducer",
    "SumReducer",
    "ThresholdReducer",
]
