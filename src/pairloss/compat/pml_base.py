"""pytorch-metric-learning's (PML's) loss base classes, for writing one's own loss.

A PML user writes a loss by subclassing ``BaseMetricLossFunction`` (implementing
``compute_loss``) or ``GenericPairLoss`` (implementing ``_compute_loss``), optionally with
``WeightRegularizerMixin`` for a loss with class weights, and wraps losses with a
``BaseLossWrapper``. The classes here have PML 2.9's constructor arguments, methods, attribute
names, call flow and loss dictionaries, so such a loss runs unchanged when
``from pytorch_metric_learning import losses`` becomes ``from pairloss import losses``, and gives
PML's values and gradients (tested in float64 against PML with its base classes). They use
pairloss's reducers, distances and regularizers, and accept PML's (translated by
:mod:`pairloss.compat.pml`).

The user's code runs as written (these classes evaluate the whole distance matrix, as PML does);
pairloss's own losses do not derive from these classes: they run on the pair engine
(:mod:`pairloss.engine`). They are registered as virtual subclasses (:class:`abc.ABCMeta`), so
that ``isinstance(pairloss.ContrastiveLoss(), pairloss.losses.GenericPairLoss)`` and the other
checks are true exactly where they are true in PML (:data:`PML_SUBCLASSES`), without changing how
they compute; they do not gain the base classes' methods.

Departures from PML, each a :class:`~pairloss.errors.PairLossError` naming the argument where PML
fails later, asserts or silently ignores: bad embeddings, labels, reference sets and index
tuples are refused (PML checks the label shape only); ``ref_labels`` without ``ref_emb`` is
refused (PML ignores it); ``GenericPairLoss`` with ``ref_emb``, ``labels`` and no ``ref_labels``
or ``indices_tuple`` is refused (PML pairs the reference set by the batch's labels); a base
method left unimplemented, a ``compute_loss`` that returns no dictionary and an unknown keyword
argument are refused by name. ``collect_stats`` defaults to False (PML's global default).
"""

from __future__ import annotations

from abc import ABCMeta
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from ..errors import PairLossError
from ..losses.base import check_reference, listed_pairs, regularizer_from
from ..mining import all_pairs
from ..reducers import MeanReducer, for_sub_losses
from ..similarity import BatchedDistance, LpDistance, Similarity, get_similarity
from ..validation import check_bool, check_callable, check_embeddings, check_labels, check_real
from .pml import similarity_from_pml

LossDict = dict[str, dict]


def _entry(losses, reduction_type: str = "already_reduced", indices=None) -> dict:
    """One entry of a loss dictionary, in PML's format."""
    return {"losses": losses, "indices": indices, "reduction_type": reduction_type}


def _regularization(regularizer, weight: float, tensor: torch.Tensor) -> dict:
    """The loss-dictionary entry of ``regularizer(tensor) * weight`` (losses 0 without a
    regularizer), already reduced."""
    return _entry(0 if regularizer is None else regularizer(tensor) * weight)


def _is_set(value: object) -> bool:
    """Whether a ``*_regularizer`` attribute holds a regularizer (or, during construction, the
    flag True that announces one)."""
    return value is not None and value is not False


class _KeywordsChecked(nn.Module):
    """The last class of a base-class chain before :class:`torch.nn.Module`: a keyword argument
    that reaches it was taken by no class of the chain."""

    def __init__(self, **kwargs) -> None:
        if kwargs:
            name = next(iter(kwargs))
            raise PairLossError(
                f"{name}: {type(self).__name__} takes no argument {name!r}; expected the "
                "arguments of its own constructor and of pytorch-metric-learning's base classes"
            )
        super().__init__()


class ModuleWithRecords(_KeywordsChecked):
    """PML's ``ModuleWithRecords``: a module that lists attributes for PML's record keeping.

    ``add_to_recordable_attributes`` lists names in ``_record_these`` (settings) or, when
    ``collect_stats`` is True, ``_record_these_stats`` (statistics, set to 0 by
    :meth:`reset_stats` at the start of each call), creating each attribute with the value 0
    when it does not exist.

    Args:
        collect_stats: whether statistics are recorded (default False).
    """

    def __init__(self, collect_stats: bool | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.collect_stats = (
            False if collect_stats is None else check_bool(collect_stats, "collect_stats")
        )

    def add_to_recordable_attributes(
        self,
        name: str | None = None,
        list_of_names: Iterable[str] | None = None,
        is_stat: bool = False,
    ) -> None:
        """List ``name`` and each of ``list_of_names`` as recordable (a statistic when
        ``is_stat``; statistics are skipped unless ``collect_stats``), creating the attribute
        with the value 0 where it is missing."""
        if is_stat and not self.collect_stats:
            return
        names = [] if name is None else [name]
        if isinstance(list_of_names, (list, tuple)):
            names += list(list_of_names)
        listed = "_record_these_stats" if is_stat else "_record_these"
        if listed not in self.__dict__:
            setattr(self, listed, [])
        record = getattr(self, listed)
        for n in names:
            if not isinstance(n, str) or not n.isidentifier():
                raise PairLossError(f"name: expected an attribute name, got {n!r}")
            if n not in record:
                record.append(n)
            if not hasattr(self, n):
                setattr(self, n, 0)

    def reset_stats(self) -> None:
        """Set every recorded statistic to 0."""
        for n in getattr(self, "_record_these_stats", []):
            setattr(self, n, 0)


class EmbeddingRegularizerMixin(metaclass=ABCMeta):  # noqa: B024 - ABCMeta for register()
    """PML's ``EmbeddingRegularizerMixin``: a regularizer of the embeddings, added to the loss
    dictionary as ``"embedding_reg_loss"`` (``reduction_type`` ``"already_reduced"``).

    Args:
        embedding_regularizer: a :mod:`pairloss.regularizers` regularizer or a PML one
            (translated; a user's own is called as it is), or None.
        embedding_reg_weight: the regularizer's factor (default 1).

    Attributes ``embedding_regularizer`` and ``embedding_reg_weight``; while the chain of base
    classes is constructed, ``embedding_regularizer`` holds a flag (whether one was given), so
    that :meth:`BaseMetricLossFunction.sub_loss_names` knows the sub-loss, as in PML.
    """

    def __init__(self, embedding_regularizer=None, embedding_reg_weight: float = 1, **kwargs):
        regularizer = regularizer_from(embedding_regularizer, "embedding_regularizer")
        weight = check_real(embedding_reg_weight, "embedding_reg_weight")
        self.embedding_regularizer = regularizer is not None
        super().__init__(**kwargs)
        self.embedding_regularizer = regularizer
        self.embedding_reg_weight = weight
        if regularizer is not None:
            self.add_to_recordable_attributes(list_of_names=["embedding_reg_weight"])

    def embedding_regularization_loss(self, embeddings: torch.Tensor) -> dict:
        """The entry ``{"losses": regularizer(embeddings) * embedding_reg_weight, "indices":
        None, "reduction_type": "already_reduced"}`` (losses 0 without a regularizer)."""
        return _regularization(self.embedding_regularizer, self.embedding_reg_weight, embeddings)

    def add_embedding_regularization_to_loss_dict(
        self, loss_dict: LossDict, embeddings: torch.Tensor
    ) -> None:
        """Add ``"embedding_reg_loss"`` to ``loss_dict`` when there is a regularizer."""
        if self.embedding_regularizer is not None:
            loss_dict["embedding_reg_loss"] = self.embedding_regularization_loss(embeddings)

    def regularization_loss_names(self) -> list[str]:
        """The sub-loss this mixin adds: ``["embedding_reg_loss"]``."""
        return ["embedding_reg_loss"]


class WeightMixin:
    """PML's ``WeightMixin``: ``weight_init_func``, a callable that initialises a weight tensor
    in place (default :func:`torch.nn.init.normal_`, as PML's ``TorchInitWrapper(normal_)``).
    The subclass creates its weights and calls it."""

    def __init__(self, weight_init_func: Callable | None = None, **kwargs) -> None:
        init = (
            None
            if weight_init_func is None
            else check_callable(weight_init_func, "weight_init_func")
        )
        super().__init__(**kwargs)
        self.weight_init_func = self.get_default_weight_init_func() if init is None else init

    def get_default_weight_init_func(self) -> Callable:
        """The initialiser used when none is given: ``torch.nn.init.normal_``."""
        return torch.nn.init.normal_


class WeightRegularizerMixin(WeightMixin, metaclass=ABCMeta):
    """PML's ``WeightRegularizerMixin``: a regularizer of a loss's own weights (class weights,
    proxies), added to the loss dictionary as ``"weight_reg_loss"`` by
    :meth:`add_weight_regularization_to_loss_dict`, which the subclass calls in its
    ``compute_loss`` with the weights (e.g. ``self.W.t()``, one row per class).

    Put it before the base class: ``class MyLoss(WeightRegularizerMixin,
    BaseMetricLossFunction)``.

    Args:
        weight_regularizer: a :mod:`pairloss.regularizers` regularizer or a PML one, or None.
        weight_reg_weight: the regularizer's factor (default 1).
        weight_init_func: see :class:`WeightMixin`.
    """

    def __init__(self, weight_regularizer=None, weight_reg_weight: float = 1, **kwargs) -> None:
        regularizer = regularizer_from(weight_regularizer, "weight_regularizer")
        weight = check_real(weight_reg_weight, "weight_reg_weight")
        self.weight_regularizer = regularizer is not None
        super().__init__(**kwargs)
        self.weight_regularizer = regularizer
        self.weight_reg_weight = weight
        if regularizer is not None:
            self.add_to_recordable_attributes(list_of_names=["weight_reg_weight"])

    def weight_regularization_loss(self, weights: torch.Tensor) -> dict:
        """The entry ``{"losses": regularizer(weights) * weight_reg_weight, "indices": None,
        "reduction_type": "already_reduced"}`` (losses 0 without a regularizer)."""
        return _regularization(self.weight_regularizer, self.weight_reg_weight, weights)

    def add_weight_regularization_to_loss_dict(
        self, loss_dict: LossDict, weights: torch.Tensor
    ) -> None:
        """Add ``"weight_reg_loss"`` to ``loss_dict`` when there is a regularizer."""
        if self.weight_regularizer is not None:
            loss_dict["weight_reg_loss"] = self.weight_regularization_loss(weights)

    def regularization_loss_names(self) -> list[str]:
        """The sub-loss this mixin adds: ``["weight_reg_loss"]``."""
        return ["weight_reg_loss"]


def _distance(spec: object):
    """The ``distance`` of a base-class loss: a pairloss similarity or a PML distance
    (translated), or a :class:`~pairloss.similarity.BatchedDistance`, kept as it is (the
    subclass calls it)."""
    if not isinstance(spec, (Similarity, BatchedDistance, str)):
        spec = similarity_from_pml(spec) or spec
    if isinstance(spec, BatchedDistance):
        return spec
    return get_similarity(spec, None)


class BaseMetricLossFunction(EmbeddingRegularizerMixin, ModuleWithRecords):
    """PML's ``BaseMetricLossFunction``: the base class of a loss on embeddings, for
    subclassing. A subclass implements :meth:`compute_loss`, which returns a loss dictionary;
    the call adds the embedding regularizer and hands the dictionary to ``self.reducer``.

    ``forward(embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None)``:
    embeddings [B, D] (floating point, finite), labels [B] (moved to the embeddings' device),
    indices_tuple PML's ``(a, p, n)`` triplets or ``(a1, p, a2, n)`` pairs (passed to
    :meth:`compute_loss` as given), ref_emb [N, D] with ref_labels [N] (default: the batch and
    its labels, the very same tensors). Returns what the reducer returns (a scalar; the
    dictionary with a ``DoNothingReducer``).

    A loss dictionary is ``{sub_loss_name: {"losses": tensor or 0, "indices": ...,
    "reduction_type": "element" | "pos_pair" | "neg_pair" | "triplet" | "already_reduced"}}``
    (see :mod:`pairloss.reducers`); its names are :meth:`sub_loss_names`.

    Args:
        reducer: a :mod:`pairloss.reducers` or PML reducer (default
            :meth:`get_default_reducer`); stored as PML does (a copy; a ``MultipleReducers`` of
            copies for several sub-losses; a ``MultipleReducers`` or ``DoNothingReducer`` as it
            is).
        distance: a :mod:`pairloss.distances` similarity, a PML distance (translated) or a name
            (default :meth:`get_default_distance`); a ``BatchedDistance`` is kept as it is,
            for the subclass to call (:class:`GenericPairLoss` needs the whole matrix and
            refuses it).
        embedding_regularizer, embedding_reg_weight: see :class:`EmbeddingRegularizerMixin`.
        collect_stats: see :class:`ModuleWithRecords`.

    pairloss's own losses are registered as virtual subclasses (``isinstance`` is true for
    those whose PML class derives from this one) but run on the pair engine.
    """

    def __init__(self, reducer=None, distance=None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.distance = _distance(self.get_default_distance() if distance is None else distance)
        self.set_reducer(reducer)

    def get_default_reducer(self) -> nn.Module:
        """The reducer used when none is given (PML's: :class:`~pairloss.reducers.MeanReducer`);
        a subclass overrides it."""
        return MeanReducer()

    def get_default_distance(self) -> Similarity:
        """The distance used when none is given (PML's: ``LpDistance(p=2)``, on normalised
        embeddings); a subclass overrides it."""
        return LpDistance(p=2)

    def set_reducer(self, reducer=None) -> None:
        """Use ``reducer`` (None: :meth:`get_default_reducer`), stored by PML's rule for
        :meth:`sub_loss_names` (see the class docstring)."""
        chosen = self.get_default_reducer() if reducer is None else reducer
        self.reducer = for_sub_losses(chosen, self.sub_loss_names())

    def compute_loss(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None,
        indices_tuple,
        ref_emb: torch.Tensor,
        ref_labels: torch.Tensor | None,
    ) -> LossDict:
        """The loss dictionary of a call (to be implemented by the subclass); its arguments are
        the checked inputs, ``ref_emb`` / ``ref_labels`` already defaulted to the batch."""
        raise PairLossError(
            f"compute_loss: {type(self).__name__} does not implement compute_loss(embeddings, "
            "labels, indices_tuple, ref_emb, ref_labels); expected a subclass that overrides it "
            "and returns a loss dictionary"
        )

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor | LossDict:
        """PML's call: reset the statistics, check the inputs, default the reference set to
        the batch, :meth:`compute_loss`, add the embedding regularizer, reduce."""
        self.reset_stats()
        same_labels = ref_labels is not None and ref_labels is labels
        embeddings = check_embeddings(embeddings, "embeddings")
        if labels is not None:
            labels = check_labels(labels, embeddings.shape[0], "labels").to(embeddings.device)
        if ref_emb is None:
            if ref_labels is not None:
                raise PairLossError("ref_labels: given without ref_emb; expected both or neither")
            ref_emb, ref_labels = embeddings, labels
        else:
            ref_emb = check_reference(embeddings, ref_emb)
            if same_labels:
                ref_labels = labels  # the identity marks a set compared with itself
            elif ref_labels is not None:
                ref_labels = check_labels(ref_labels, ref_emb.shape[0], "ref_labels")
                ref_labels = ref_labels.to(embeddings.device)
        loss_dict = self.compute_loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        if not isinstance(loss_dict, dict):
            raise PairLossError(
                f"compute_loss: {type(self).__name__}.compute_loss returned "
                f"{type(loss_dict).__name__}; expected a loss dictionary {{sub_loss_name: "
                "{'losses': ..., 'indices': ..., 'reduction_type': ...}}"
            )
        self.add_embedding_regularization_to_loss_dict(loss_dict, embeddings)
        return self.reducer(loss_dict, embeddings, labels)

    def zero_loss(self) -> dict:
        """PML's zero entry: ``{"losses": 0, "indices": None, "reduction_type":
        "already_reduced"}`` (a reducer turns it into 0 attached to the embeddings' graph)."""
        return _entry(0)

    def zero_losses(self) -> LossDict:
        """A zero entry for every name of :meth:`sub_loss_names`."""
        return {name: self.zero_loss() for name in self.sub_loss_names()}

    def _sub_loss_names(self) -> list[str]:
        """The loss's own sub-loss names (default ``["loss"]``); a subclass with several
        sub-losses overrides it."""
        return ["loss"]

    def sub_loss_names(self) -> list[str]:
        """:meth:`_sub_loss_names` followed by :meth:`all_regularization_loss_names`."""
        return self._sub_loss_names() + self.all_regularization_loss_names()

    def all_regularization_loss_names(self) -> list[str]:
        """The sub-losses of the regularizers this loss holds, by PML's rule: each class of the
        MRO named ``<Kind>RegularizerMixin`` whose ``<kind>_regularizer`` is set adds its
        ``regularization_loss_names``."""
        names = []
        suffix = "RegularizerMixin"
        for klass in type(self).__mro__:
            if klass.__name__.endswith(suffix):
                kind = klass.__name__[: -len(suffix)].lower()
                if _is_set(getattr(self, f"{kind}_regularizer", None)):
                    names.extend(klass.regularization_loss_names(self))
        return names


class GenericPairLoss(BaseMetricLossFunction):
    """PML's ``GenericPairLoss``: a loss on positive and negative pairs, for subclassing. A
    subclass calls ``super().__init__(mat_based_loss=..., **kwargs)`` and implements
    ``_compute_loss``:

    - ``mat_based_loss=False``: ``_compute_loss(pos_pair, neg_pair, indices_tuple)`` with the
      distances of the listed positive pairs [P] and negative pairs [Q] (an empty list ``[]``
      when there are none, as in PML) and the pairs ``(a1, p, a2, n)``;
    - ``mat_based_loss=True``: ``_compute_loss(mat, pos_mask, neg_mask)`` with the distance
      matrix [B, N] and 0/1 masks of its dtype.

    Either returns a loss dictionary (see :class:`BaseMetricLossFunction`).

    :meth:`compute_loss` takes the pairs from ``indices_tuple`` (pairs as given, triplets
    ``(a, p, n)`` as ``(a, p, a, n)``) or else from the labels (every pair with equal / different
    labels, a sample's pair with itself left out when the reference set is the batch), as PML's
    ``convert_to_pairs``; when each of the four index lists holds at most one entry it returns
    :meth:`zero_losses` (PML's rule, which gives 0 for a single positive and a single negative
    pair too); else it computes ``self.distance(embeddings, ref_emb)`` and calls
    ``self.loss_method`` (:meth:`mat_based_loss` or :meth:`pair_based_loss`).

    Args:
        mat_based_loss: which form ``_compute_loss`` takes (see above).
        **kwargs: the arguments of :class:`BaseMetricLossFunction`.
    """

    def __init__(self, mat_based_loss: bool, **kwargs) -> None:
        mat_based = check_bool(mat_based_loss, "mat_based_loss")
        super().__init__(**kwargs)
        self.loss_method = self.mat_based_loss if mat_based else self.pair_based_loss

    def compute_loss(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None,
        indices_tuple,
        ref_emb: torch.Tensor,
        ref_labels: torch.Tensor | None,
    ) -> LossDict:
        """The pairs, then ``self.loss_method`` on the distance matrix (see the class
        docstring)."""
        if indices_tuple is None:
            if labels is None:
                raise PairLossError(
                    "labels: required unless indices_tuple lists the pairs; expected a [batch] "
                    "tensor"
                )
            if ref_labels is None:
                raise PairLossError(
                    "ref_labels: required with ref_emb when the pairs come from the labels; "
                    "expected a tensor with one label per row of ref_emb"
                )
            pairs = all_pairs(labels, ref_labels)
        else:
            pairs = listed_pairs(
                indices_tuple, embeddings.shape[0], ref_emb.shape[0], embeddings.device
            )
        if all(len(x) <= 1 for x in pairs):
            return self.zero_losses()
        if isinstance(self.distance, BatchedDistance):
            raise PairLossError(
                "distance: GenericPairLoss needs the whole distance matrix, which a "
                "BatchedDistance hands out block by block; expected its inner distance"
            )
        mat = self.distance(embeddings, ref_emb)
        return self.loss_method(mat, pairs)

    def _compute_loss(self, *args) -> LossDict:
        """The loss dictionary from the pairs' distances or the masked matrix (to be
        implemented by the subclass; see the class docstring)."""
        raise PairLossError(
            f"_compute_loss: {type(self).__name__} does not implement _compute_loss; expected "
            "_compute_loss(pos_pair, neg_pair, indices_tuple) (mat_based_loss=False) or "
            "_compute_loss(mat, pos_mask, neg_mask) (mat_based_loss=True) returning a loss "
            "dictionary"
        )

    def mat_based_loss(self, mat: torch.Tensor, indices_tuple: tuple) -> LossDict:
        """``_compute_loss(mat, pos_mask, neg_mask)``: masks [B, N] of ``mat``'s dtype, 1 at
        the listed positive / negative pairs."""
        a1, p, a2, n = indices_tuple
        pos_mask, neg_mask = torch.zeros_like(mat), torch.zeros_like(mat)
        pos_mask[a1, p] = 1
        neg_mask[a2, n] = 1
        self._assert_either_pos_or_neg(pos_mask, neg_mask)
        return self._compute_loss(mat, pos_mask, neg_mask)

    def pair_based_loss(self, mat: torch.Tensor, indices_tuple: tuple) -> LossDict:
        """``_compute_loss(pos_pair, neg_pair, indices_tuple)``: the listed pairs' entries of
        ``mat`` ([] for an empty list)."""
        a1, p, a2, n = indices_tuple
        pos_pair = mat[a1, p] if len(a1) > 0 else []
        neg_pair = mat[a2, n] if len(a2) > 0 else []
        return self._compute_loss(pos_pair, neg_pair, indices_tuple)

    @staticmethod
    def _assert_either_pos_or_neg(pos_mask: torch.Tensor, neg_mask: torch.Tensor) -> None:
        """A :class:`PairLossError` when a pair is marked both positive and negative."""
        if bool(((pos_mask != 0) & (neg_mask != 0)).any()):
            raise PairLossError(
                "indices_tuple: a pair is listed both as positive and as negative; expected "
                "each pair in one of the two lists"
            )


class BaseLossWrapper(_KeywordsChecked, metaclass=ABCMeta):
    """PML's ``BaseLossWrapper``: a module that wraps a loss, for subclassing. The constructor
    checks ``check_loss_support(type(loss).__name__)``; a subclass implements
    :meth:`supported_losses` (the class names it wraps) and :meth:`check_loss_support`, stores
    the loss and implements ``forward``. pairloss's ``CrossBatchMemory`` and
    ``SelfSupervisedLoss`` are registered as virtual subclasses, as PML's derive from it.

    Args:
        loss: the loss module to wrap.
        **kwargs: for the next class of the subclass's bases.
    """

    def __init__(self, loss: nn.Module, **kwargs) -> None:
        check_callable(loss, "loss")
        super().__init__(**kwargs)
        self.check_loss_support(type(loss).__name__)

    @classmethod
    def supported_losses(cls) -> list[str]:
        """The names of the loss classes this wrapper supports (to be implemented)."""
        raise PairLossError(
            f"supported_losses: {cls.__name__} does not implement it; expected a subclass "
            "that lists the loss classes it wraps"
        )

    @classmethod
    def check_loss_support(cls, loss_name: str) -> None:
        """Refuse a loss class name this wrapper does not support (to be implemented)."""
        raise PairLossError(
            f"check_loss_support: {cls.__name__} does not implement it; expected a subclass "
            "that refuses the losses it cannot wrap"
        )


# PML 2.9's class hierarchy of its losses: for each base class, every loss of
# ``pytorch_metric_learning.losses`` that derives from it (tests check it against PML)
_GENERIC_PAIR = (
    "CircleLoss",
    "ContrastiveLoss",
    "GeneralizedLiftedStructureLoss",
    "IntraPairVarianceLoss",
    "LiftedStructureLoss",
    "MultiSimilarityLoss",
    "NTXentLoss",
    "SignalToNoiseRatioContrastiveLoss",
    "SupConLoss",
    "TupletMarginLoss",
)
_WEIGHT_REGULARIZED = (
    "ArcFaceLoss",
    "CosFaceLoss",
    "LargeMarginSoftmaxLoss",
    "NormalizedSoftmaxLoss",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "SoftTripleLoss",
    "SphereFaceLoss",
    "SubCenterArcFaceLoss",
)
_OTHER_METRIC = (
    "AngularLoss",
    "DynamicSoftMarginLoss",
    "FastAPLoss",
    "HistogramLoss",
    "InstanceLoss",
    "ManifoldLoss",
    "MarginLoss",
    "NCALoss",
    "NPairsLoss",
    "P2SGradLoss",
    "PNPLoss",
    "RankedListLoss",
    "SmoothAPLoss",
    "ThresholdConsistentMarginLoss",
    "TripletMarginLoss",
    "VICRegLoss",
)
_METRIC = tuple(sorted(_GENERIC_PAIR + _WEIGHT_REGULARIZED + _OTHER_METRIC))
PML_SUBCLASSES: dict[str, tuple[str, ...]] = {
    "BaseMetricLossFunction": _METRIC,
    "EmbeddingRegularizerMixin": _METRIC,
    "GenericPairLoss": _GENERIC_PAIR,
    "WeightRegularizerMixin": _WEIGHT_REGULARIZED,
    "BaseLossWrapper": ("CrossBatchMemory", "SelfSupervisedLoss"),
}

_BASES = {
    "BaseMetricLossFunction": BaseMetricLossFunction,
    "EmbeddingRegularizerMixin": EmbeddingRegularizerMixin,
    "GenericPairLoss": GenericPairLoss,
    "WeightRegularizerMixin": WeightRegularizerMixin,
    "BaseLossWrapper": BaseLossWrapper,
}


def register_pml_subclasses(namespace: Mapping[str, type]) -> None:
    """Register the classes of ``namespace`` (a module's names, e.g. :mod:`pairloss.losses`)
    named in :data:`PML_SUBCLASSES` as virtual subclasses of their PML base classes, so that
    ``isinstance`` answers as for PML's classes of those names; nothing else about them
    changes."""
    for base, names in PML_SUBCLASSES.items():
        for name in names:
            _BASES[base].register(namespace[name])


__all__ = [
    "PML_SUBCLASSES",
    "BaseLossWrapper",
    "BaseMetricLossFunction",
    "EmbeddingRegularizerMixin",
    "GenericPairLoss",
    "ModuleWithRecords",
    "WeightMixin",
    "WeightRegularizerMixin",
    "register_pml_subclasses",
]
