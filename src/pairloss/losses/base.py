"""The shared front end of every embedding loss: input checks, relation, miner, reducer,
regularizers, engine.

Each loss is a pure row objective (in :mod:`pairloss.objectives`) plus this front end. The module
classes keep pytorch-metric-learning's call signature
``loss(embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None)`` and its
common constructor arguments (``distance``, ``reducer``, ``embedding_regularizer``,
``embedding_reg_weight``, ``collect_stats``), plus pairloss's own (``reduction``, ``miner``,
``engine``, ``block_size``).

A loss's terms form one or more sub-losses (:class:`Component`, with pytorch-metric-learning's
sub-loss names and reduction types), which is what a reducer reads: see
:mod:`pairloss.reducers` and :meth:`PairLossModule.reduce_with`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..engine import (
    ENGINES,
    FusedObjective,
    Objective,
    PairProblem,
    compute_dtype,
    engine_for,
    run,
)
from ..errors import PairLossError
from ..mining import MinedIndices, MinedRelation, Miner, miner_from
from ..objectives.terms import RowTerms
from ..reducers import (
    CLASS_WEIGHTED,
    DIVISOR,
    MEAN,
    NONZERO,
    BaseReducer,
    DoNothingReducer,
    MultipleReducers,
    for_sub_losses,
)
from ..reduction import check_reduction, reduce_terms
from ..relations import (
    LabelRelation,
    PairListRelation,
    Relation,
    _check_index,
    cells_of_both_kinds,
    listed_cells,
)
from ..scale.distributed import set_gather
from ..similarity import BatchedDistance, Similarity, get_similarity
from ..validation import (
    check_block_size,
    check_bool,
    check_choice,
    check_embeddings,
    check_labels,
    check_real,
    check_result,
    check_same_device_dtype,
)


@dataclass(frozen=True)
class Component:
    """One sub-loss of a loss, as a reducer sees it.

    Attributes:
        name: pytorch-metric-learning's sub-loss name (``"loss"``, ``"pos_loss"``, ...).
        reduction_type: ``"element"``, ``"pos_pair"``, ``"neg_pair"``, ``"triplet"`` or
            ``"already_reduced"``.
        terms: how the row objective gives the terms: ``"rows"`` (one term per row; ``n_terms``
            says whether the row has one), ``"cells"`` (one term per counted cell, listed in
            :attr:`RowTerms.cells`), ``"counted"`` (the row's terms summed and counted only).
        every_row: for ``"rows"``, every row is a term (pytorch-metric-learning lists all of
            them, zeros included).
    """

    name: str = "loss"
    reduction_type: str = "element"
    terms: str = "rows"
    every_row: bool = False


def check_reference(embeddings: torch.Tensor, ref_emb: object) -> torch.Tensor:
    """``ref_emb``: a finite [N, D] matrix on the embeddings' device, dtype and size D."""
    if isinstance(ref_emb, torch.Tensor):
        check_same_device_dtype(embeddings, ref_emb, "embeddings", "ref_emb")
    ref_emb = check_embeddings(ref_emb, "ref_emb")
    if ref_emb.shape[1] != embeddings.shape[1]:
        raise PairLossError(
            f"ref_emb: has {ref_emb.shape[1]} features but embeddings have "
            f"{embeddings.shape[1]}; expected the same embedding size"
        )
    return ref_emb


def check_relation_shape(relation: Relation, n_anchors: int, n_candidates: int) -> None:
    """A :class:`~pairloss.relations.Relation` given as ``indices_tuple`` must cover the
    anchors and candidates of the call."""
    shape = (relation.n_anchors, relation.n_candidates)
    if shape != (n_anchors, n_candidates):
        raise PairLossError(
            f"indices_tuple: the relation covers {shape[0]} anchors x {shape[1]} candidates but "
            f"the call has {n_anchors} x {n_candidates}; expected the same"
        )


def miner_in(indices_tuple, embeddings, labels, ref_emb, ref_labels) -> Miner | None:
    """The miner to apply inside the engine for ``indices_tuple``: the miner itself when a
    :class:`~pairloss.mining.Miner` was passed, or the miner of a
    :class:`~pairloss.mining.MinedIndices` that has a row-wise rule and was mined on exactly
    these inputs; None otherwise (the indices are used)."""
    if isinstance(indices_tuple, Miner):
        return indices_tuple
    if (
        isinstance(indices_tuple, MinedIndices)
        and indices_tuple.miner.has_transform
        and indices_tuple.mined_on(embeddings, labels, ref_emb, ref_labels)
    ):
        return indices_tuple.miner
    return None


@dataclass(frozen=True)
class ListedPairs:
    """The pairs of an explicit ``indices_tuple`` as listed, ``(a1, p, a2, n)``, for a loss
    that counts a pair once per listing (see :func:`read_listings`); ``triplets``: the tuple
    listed triplets ``(a, p, n)``, read as ``(a, p, a, n)``."""

    a1: torch.Tensor
    p: torch.Tensor
    a2: torch.Tensor
    n: torch.Tensor
    triplets: bool = False


def read_listings(
    indices_tuple, n_anchors: int, n_candidates: int, device, every_triplet: bool = False
) -> ListedPairs | PairListRelation:
    """An explicit ``indices_tuple`` for a loss that, as pytorch-metric-learning's pair-based
    losses (``GenericPairLoss`` with ``mat_based_loss=False``, ``MarginLoss``), counts a pair
    once per listing and takes a pair listed both as positive and as negative as both.

    When no pair is listed twice and none as both kinds (pytorch-metric-learning's pair miners
    never do), counting the listings is counting the cells: the tuple's
    :class:`~pairloss.relations.PairListRelation` is returned, for the pair engine. Otherwise
    (a triplet miner's output: each positive pair repeats once per negative) the
    :class:`ListedPairs`, which the loss evaluates pair by pair. One sort of the listed cells
    tells which; the relation is built from it. ``every_triplet``: a triplet tuple is always
    :class:`ListedPairs` (for a loss whose terms are the listed triplets)."""
    a1, p, a2, n = listed_pairs(indices_tuple, n_anchors, n_candidates, device)
    triplets = len(indices_tuple) == 3
    if every_triplet and triplets:
        return ListedPairs(a1, p, a2, n, triplets)
    pos = torch.unique(listed_cells(a1, p, n_candidates))
    neg = torch.unique(listed_cells(a2, n, n_candidates))
    repeats = pos.numel() < a1.numel() or neg.numel() < a2.numel()
    if repeats or cells_of_both_kinds(pos, neg).numel():
        return ListedPairs(a1, p, a2, n, triplets)
    return PairListRelation.of_cells(pos, neg, n_anchors, n_candidates)


def build_relation(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None,
    indices_tuple,
    ref_emb: torch.Tensor | None,
    ref_labels: torch.Tensor | None,
    *,
    listings: bool = False,
    every_triplet: bool = False,
) -> tuple[Relation | ListedPairs, Miner | None, torch.Tensor | None, torch.Tensor | None]:
    """Validate the PML-style arguments; return (relation, miner, labels, ref_labels). As in
    pytorch-metric-learning, the self pairs are left out when there is no reference set or
    when ``ref_labels`` is the very ``labels`` tensor.

    ``indices_tuple`` may also be a pairloss :class:`~pairloss.relations.Relation` (used as
    given) or a :class:`~pairloss.mining.MinedRelation` (a relation and/or a miner to apply
    inside the engine, as memory banks pass them). With ``listings``, an explicit tuple is read
    by :func:`read_listings` (with ``every_triplet``; the relation may then be
    :class:`ListedPairs`)."""
    raw = (embeddings, labels, ref_emb, ref_labels)
    same_labels = ref_labels is not None and ref_labels is labels
    embeddings = check_embeddings(embeddings, "embeddings")
    n = embeddings.shape[0]
    if ref_emb is not None:
        ref_emb = check_reference(embeddings, ref_emb)
    n_cand = n if ref_emb is None else ref_emb.shape[0]
    if labels is not None:
        labels = check_labels(labels, n, "labels")
        if labels.device != embeddings.device:
            labels = labels.to(embeddings.device)
    if ref_labels is not None:
        if ref_emb is None:
            raise PairLossError("ref_labels: given without ref_emb; expected both or neither")
        ref_labels = check_labels(ref_labels, n_cand, "ref_labels").to(embeddings.device)
    if isinstance(indices_tuple, MinedRelation):
        miner, indices_tuple = indices_tuple.miner, indices_tuple.relation
    else:
        miner = miner_in(indices_tuple, *raw)
        if miner is not None:
            indices_tuple = None
    if isinstance(indices_tuple, Relation):
        check_relation_shape(indices_tuple, n, n_cand)
        return indices_tuple, miner, labels, ref_labels
    if indices_tuple is not None:
        if listings:
            relation = read_listings(indices_tuple, n, n_cand, embeddings.device, every_triplet)
        else:
            relation = PairListRelation(indices_tuple, n, n_cand, device=embeddings.device)
        return relation, miner, labels, ref_labels
    if labels is None:
        raise PairLossError(
            "labels: required unless indices_tuple gives the pairs; expected a [batch] tensor"
        )
    if ref_emb is not None and ref_labels is None:
        raise PairLossError(
            "ref_labels: ref_emb was given without ref_labels; expected one label per ref_emb row"
        )
    relation = LabelRelation(labels, ref_labels, exclude_self=ref_labels is None or same_labels)
    return relation, miner, labels, ref_labels


def pair_loss(
    objective: Objective,
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    similarity: Similarity,
    reduction: str,
    miner: Miner | None = None,
    params: Sequence[torch.Tensor] = (),
    engine: str = "auto",
    block_size: int | None = None,
    fused: FusedObjective | None = None,
) -> torch.Tensor:
    """Run ``objective`` (and its hand-differentiated form ``fused``, if any) on the pairs that
    the PML-style arguments describe."""
    check_reduction(reduction)
    if miner is not None and not miner.has_transform and indices_tuple is None:
        indices_tuple = miner(embeddings.detach(), labels, _detached(ref_emb), ref_labels)
        miner = None
    relation, mined, _, _ = build_relation(embeddings, labels, indices_tuple, ref_emb, ref_labels)
    for p in params:
        if isinstance(p, torch.Tensor) and p.device != embeddings.device:
            raise PairLossError(
                f"embeddings: are on device {embeddings.device} but the loss's parameters are "
                f"on {p.device}; expected the same device (move the loss with .to())"
            )
    if miner is None and mined is not None:
        fused = None  # the fused form was chosen for no miner; a miner came as indices_tuple
    problem = PairProblem(
        objective=objective,
        similarity=similarity,
        relation=relation,
        reduction=reduction,
        miner=miner if miner is not None else mined,
        params=tuple(p for p in params if isinstance(p, torch.Tensor)),
        fused=fused,
    )
    return run(problem, embeddings, ref_emb, engine=engine, block_size=block_size)


def _owner(cls: type, name: str) -> type:
    """The class of ``cls``'s MRO that defines attribute ``name``."""
    return next((k for k in cls.__mro__ if name in vars(k)), object)


def fused_form_applies(module: nn.Module, forms: Sequence[str], reads: Sequence[str]) -> bool:
    """Whether ``module``'s hand-differentiated objective is the twin of the objective it runs.

    A fused form (given by the methods or attributes ``forms``) is written for one objective. It
    applies only when the class that gives it also gives, or inherits unchanged, every method in
    ``reads`` (the objective and the hooks the objective reads): a subclass that changes the
    objective without giving its own fused form runs the generic walk, never its base's fused
    form (which would silently compute the base's loss on the blocked engine)."""
    cls = type(module)
    mro = cls.__mro__
    owner = min((_owner(cls, f) for f in forms), key=mro.index)
    return all(issubclass(owner, _owner(cls, r)) for r in reads)


def listed_pairs(indices_tuple, n_anchors: int, n_candidates: int, device):
    """pytorch-metric-learning's ``convert_to_pairs`` of an explicit ``indices_tuple``, checked:
    pairs ``(a1, p, a2, n)`` as they are, triplets ``(a, p, n)`` as ``(a, p, a, n)`` (a pair
    listed twice counts twice). A :class:`~pairloss.relations.Relation` (or a
    :class:`~pairloss.mining.MinedRelation` without a miner, as memory banks pass) gives every
    pair it marks, row-major."""
    if isinstance(indices_tuple, MinedRelation):
        if indices_tuple.miner is not None:
            raise PairLossError(
                "miner: this loss lists its pairs and cannot apply a miner inside the engine; "
                "expected the miner's index tuple as indices_tuple"
            )
        indices_tuple = indices_tuple.relation
    if isinstance(indices_tuple, Relation):
        check_relation_shape(indices_tuple, n_anchors, n_candidates)
        pos, neg = indices_tuple.block(0, n_anchors)
        a1, p = torch.where(pos.to(device))
        a2, n = torch.where(neg.to(device))
        return a1, p, a2, n
    if not isinstance(indices_tuple, (tuple, list)) or len(indices_tuple) not in (3, 4):
        raise PairLossError(
            "indices_tuple: expected (anchors, positives, negatives) or "
            "(anchors1, positives, anchors2, negatives) index tensors"
        )
    if len(indices_tuple) == 3:
        a, p, n = indices_tuple
        indices_tuple = (a, p, a, n)
    sizes = (n_anchors, n_candidates, n_anchors, n_candidates)
    names = ("anchors", "positives", "anchors", "negatives")
    a1, p, a2, n = (
        _check_index(t, size, f"indices_tuple[{name}]").to(device)
        for t, size, name in zip(indices_tuple, sizes, names)
    )
    if a1.shape != p.shape or a2.shape != n.shape:
        raise PairLossError("indices_tuple: anchor and partner index tensors differ in length")
    return a1, p, a2, n


def paired_scores(
    similarity: Similarity,
    embeddings: torch.Tensor,
    ref_emb: torch.Tensor | None,
    rows: torch.Tensor,
    cols: torch.Tensor,
) -> torch.Tensor:
    """The scores of the listed (row, column) pairs, with autograd, without the full matrix."""
    dtype = compute_dtype(embeddings)
    a = similarity.prepare(embeddings.to(dtype))
    c = a if ref_emb is None else similarity.prepare(ref_emb.to(dtype))
    return similarity.paired(a[rows], c[cols])


def listed_scores(
    similarity: Similarity,
    embeddings: torch.Tensor,
    ref_emb: torch.Tensor | None,
    rows: torch.Tensor,
    cols: torch.Tensor,
) -> torch.Tensor:
    """The scores of L listed (row, column) pairs, with autograd: from the two rows of each
    pair (:func:`paired_scores`, O(L x D)), or, where that would hold more than the [B, N] score
    matrix (L x D > B x N, as when a triplet miner's output repeats its pairs), read from the
    matrix, as pytorch-metric-learning reads them. Memory O(min(L x D, B x N) + L)."""
    n_cand = embeddings.shape[0] if ref_emb is None else ref_emb.shape[0]
    if rows.numel() * embeddings.shape[1] <= embeddings.shape[0] * n_cand:
        return paired_scores(similarity, embeddings, ref_emb, rows, cols)
    dtype = compute_dtype(embeddings)
    a = similarity.prepare(embeddings.to(dtype))
    c = a if ref_emb is None else similarity.prepare(ref_emb.to(dtype))
    return similarity.matrix(a, c)[rows, cols]


def _detached(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach()


def has_negative_pair(embeddings, labels, indices_tuple, ref_emb, ref_labels) -> bool:
    """Whether the inputs hold at least one negative pair (before any mining inside the
    engine): a listed one, or two different labels between anchors and candidates."""
    relation, _, labels, ref_labels = build_relation(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )
    if isinstance(relation, PairListRelation):
        return relation.neg_cells.numel() > 0
    ref = labels if ref_labels is None else ref_labels
    return bool((labels.min() != ref.max()) | (labels.max() != ref.min()))


def dense_terms(
    objective: Objective,
    similarity: Similarity,
    relation: Relation,
    anchors: torch.Tensor,
    candidates: torch.Tensor | None,
    miner: Miner | None = None,
) -> list:
    """The row objective's terms on the whole [B, N] score matrix, with autograd (the dense
    engine's evaluation, before any reduction): what a reducer that reads single terms needs."""
    dtype = compute_dtype(anchors)
    a = similarity.prepare(anchors.to(dtype))
    c = a if candidates is None else similarity.prepare(candidates.to(dtype))
    s = similarity.matrix(a, c)
    pos, neg = relation.block(0, anchors.shape[0])
    pos, neg = pos.to(s.device), neg.to(s.device)
    if miner is not None:
        with torch.no_grad():
            msim = miner.similarity
            if msim.same_scores(similarity):
                s_m = s.detach()
            else:
                ma = msim.prepare(anchors.detach().to(dtype))
                mc = ma if candidates is None else msim.prepare(candidates.detach().to(dtype))
                s_m = msim.matrix(ma, mc)
            pos, neg = miner.transform(s_m, pos, neg)
    return objective(s, pos, neg, 0, anchors.shape[0])


def regularizer_from(obj: object, name: str):
    """A regularizer for ``embedding_regularizer`` / ``weight_regularizer``: None, a pairloss
    regularizer, or a pytorch-metric-learning one (translated; a user's own is called as it
    is)."""
    if obj is None:
        return None
    from ..regularizers import BaseRegularizer

    if isinstance(obj, BaseRegularizer):
        return obj
    from ..compat.pml import regularizer_from_pml

    out = regularizer_from_pml(obj)
    if out is None:
        raise PairLossError(
            f"{name}: expected a pairloss or pytorch-metric-learning regularizer, got {obj!r}"
        )
    return out


class PairLossModule(nn.Module):
    """Base class of the embedding losses.

    Subclasses set ``default_similarity`` / ``default_reduction`` and implement
    :meth:`objective`; they may set ``fused`` to a hand-differentiated form of it (see
    :class:`pairloss.engine.PairProblem`), which the blocked engine then runs.

    Args:
        distance: a :class:`~pairloss.similarity.Similarity`, a name, a
            pytorch-metric-learning distance (translated), or a
            :class:`~pairloss.similarity.BatchedDistance` (its distance, on the blocked engine
            with its ``batch_size`` rows per block).
        reduction: pairloss's reduction of the terms (see :mod:`pairloss.reduction`); the
            loss's own default (pytorch-metric-learning's default reducer) unless given.
        miner: a miner applied on every call (inside the engine when it has a row-wise rule).
        engine, block_size: ``"auto"``, ``"dense"`` or ``"blocked"``, and rows per block.
        reducer: a :mod:`pairloss.reducers` (or pytorch-metric-learning) reducer, used instead
            of ``reduction``; stored as pytorch-metric-learning stores it (``self.reducer``: a
            copy, or a :class:`~pairloss.reducers.MultipleReducers` of copies for a loss with
            several sub-losses).
        embedding_regularizer: a regularizer of the embeddings, added times
            ``embedding_reg_weight``.
        collect_stats: accepted for pytorch-metric-learning's signature; no statistics are
            recorded.
        gather: None, or ``"exact"`` for the loss of the global batch of a torch.distributed
            group (see :func:`pairloss.scale.set_gather`).
    """

    default_reduction = "mean"
    components: tuple[Component, ...] = (Component(),)
    pml_default_reducer: type | None = None

    def __init__(
        self,
        distance: Similarity | str | None = None,
        reduction: str | None = None,
        miner: Miner | None = None,
        engine: str = "auto",
        block_size: int | None = None,
        gather: str | None = None,
        *,
        reducer=None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ) -> None:
        super().__init__()
        if distance is not None and not isinstance(distance, (Similarity, str)):
            from ..compat.pml import similarity_from_pml

            distance = similarity_from_pml(distance) or distance
        if isinstance(distance, BatchedDistance):
            engine, block_size = "blocked", distance.batch_size
        if gather is not None:
            set_gather(self, gather)
        self.distance = get_similarity(distance, self.default_similarity())
        self.reduction = check_reduction(self.default_reduction if reduction is None else reduction)
        self.miner = miner_from(miner)
        self.engine = check_choice(engine, "engine", ENGINES)
        self.block_size = check_block_size(block_size)
        self.collect_stats = (
            None if collect_stats is None else check_bool(collect_stats, "collect_stats")
        )
        self.embedding_regularizer = regularizer_from(
            embedding_regularizer, "embedding_regularizer"
        )
        self.embedding_reg_weight = check_real(embedding_reg_weight, "embedding_reg_weight")
        # the reducer pytorch-metric-learning would hold by default stands for
        # ``self.reduction``; a reducer given (or assigned later) replaces it
        default = None
        if reducer is None and self.pml_default_reducer is not None:
            reducer = default = for_sub_losses(self.pml_default_reducer(), self.sub_loss_names())
        elif reducer is not None:
            reducer = for_sub_losses(reducer, self.sub_loss_names())
        object.__setattr__(self, "_default_reducer", default)
        self.reducer = reducer

    @staticmethod
    def default_similarity() -> Similarity:
        from ..similarity import CosineSimilarity

        return CosineSimilarity()

    fused: FusedObjective | None = None

    def sub_loss_names(self) -> list[str]:
        """pytorch-metric-learning's names of the sub-losses (regularizers included)."""
        names = [c.name for c in self.components]
        if self.embedding_regularizer is not None:
            names.append("embedding_reg_loss")
        return names

    def active_components(self) -> tuple[Component, ...]:
        """The sub-losses this configuration produces (one per row objective component)."""
        return self.components

    def set_reducer(self, reducer) -> None:
        """Use ``reducer`` from now on (pytorch-metric-learning's method)."""
        self.reducer = for_sub_losses(reducer, self.sub_loss_names())

    def objective(self, s, pos, neg, start, end):
        raise NotImplementedError

    # ------------------------------------------------------------------ reducers

    def uses_reducer(self) -> bool:
        """Whether the terms go through ``self.reducer`` (it was given or replaced) rather than
        ``self.reduction``."""
        return self.reducer is not None and self.reducer is not self._default_reducer

    def _reducer_of(self, name: str):
        r = self.reducer
        if isinstance(r, MultipleReducers):
            return r.reducer_for(name)
        return r

    def engine_rules(self) -> list[str] | None:
        """Per component, the rule the engine applies the reducer with (see
        :meth:`pairloss.reducers.BaseReducer.engine_rule`), or None when some component needs its
        terms listed."""
        if isinstance(self.reducer, DoNothingReducer):
            return None
        rules = []
        for comp in self.active_components():
            r = self._reducer_of(comp.name)
            rule = r.engine_rule() if isinstance(r, BaseReducer) else None
            if comp.reduction_type == "already_reduced":
                rule = MEAN  # its terms' values over their count are the scalar itself
            if rule is None:
                return None
            rules.append(rule)
        return rules

    def divisor_counts(self, k: int, terms: RowTerms, start: int, end: int) -> torch.Tensor:
        """Per row, its share of component ``k``'s divisor (for a
        :class:`~pairloss.reducers.DivisorReducer`); a loss that gives a divisor overrides
        this."""
        raise PairLossError(
            f"reducer: DivisorReducer needs a divisor, which {type(self).__name__} does not "
            "give; expected another reducer"
        )

    def term_counts(self, k: int, terms: RowTerms) -> torch.Tensor:
        """Per row, how many of component ``k``'s terms pytorch-metric-learning lists."""
        comp = self.active_components()[k]
        if comp.terms == "rows" and comp.every_row and comp.reduction_type != "already_reduced":
            return torch.ones_like(terms.values)
        return terms.n_terms

    def _ruled(self, rules: list[str], row_labels) -> Callable:
        """Wrap a list of RowTerms so that the engine's 'mean_terms' gives each component its
        reducer's value."""

        def wrap(terms: list[RowTerms], start: int, end: int) -> list[RowTerms]:
            out = []
            for k, (t, rule) in enumerate(zip(terms, rules)):
                values = t.values
                if rule == MEAN:
                    count = self.term_counts(k, t)
                elif rule == NONZERO:
                    count = t.n_nonzero
                elif rule == DIVISOR:
                    count = self.divisor_counts(k, t, start, end)
                elif rule == CLASS_WEIGHTED:
                    r = self._reducer_of(self.active_components()[k].name)
                    values = values * r.row_weights(row_labels[start:end], values.dtype)
                    count = self.term_counts(k, t)
                else:  # SUM: the whole component counts once
                    count = torch.zeros_like(values)
                    if start == 0 and count.numel():
                        count[0] = 1
                out.append(RowTerms(values, count, t._n_nonzero))
            return out

        return wrap

    def reduce_with(
        self,
        objective: Objective,
        fused: FusedObjective | None,
        row_labels: torch.Tensor | None,
    ) -> tuple[Objective, FusedObjective | None, str] | None:
        """``(objective, fused, reduction)`` that apply ``self.reducer`` inside the engine, or
        None when it needs the terms listed (:meth:`reduce_listed`)."""
        rules = self.engine_rules()
        if rules is None:
            return None
        wrap = self._ruled(rules, row_labels)

        def ruled(s, pos, neg, start, end):
            return wrap(objective(s, pos, neg, start, end), start, end)

        ruled_fused = None
        if fused is not None and CLASS_WEIGHTED not in rules:

            def ruled_fused(s, pairs, grad, scale):
                return wrap(fused(s, pairs, grad, scale), pairs.start, pairs.start + s.shape[0])

        return ruled, ruled_fused, "mean_terms"

    def listed_terms(self, terms: list[RowTerms], n_rows: int, device, row_index=None) -> dict:
        """pytorch-metric-learning's loss dictionary of the components' terms (from a dense
        evaluation); ``row_index`` names the rows when they are not the anchors 0..n-1 (e.g.
        the (anchor, positive) pairs of a loss whose rows are positive pairs)."""
        out = {}
        for k, (comp, t) in enumerate(zip(self.active_components(), terms)):
            if comp.reduction_type == "already_reduced":
                # the component's terms over their count is its value; parts of one sub-loss add
                total = t.n_terms.sum()
                value = t.values.sum() / total if total > 0 else t.values.sum() * 0
                if comp.name in out:
                    value = out[comp.name]["losses"] + value
                out[comp.name] = {
                    "losses": value,
                    "indices": None,
                    "reduction_type": "already_reduced",
                }
                continue
            if comp.terms == "rows":
                listed = self.term_counts(k, t) > 0
                losses = t.values[listed]
                indices = torch.arange(n_rows, device=device) if row_index is None else row_index
                indices = (
                    indices[listed]
                    if torch.is_tensor(indices)
                    else tuple(x[listed] for x in indices)
                )
            elif comp.terms == "cells" and t.cells is not None:
                cell_terms, mask = t.cells
                losses = cell_terms[mask]
                indices = tuple(torch.where(mask))
            else:
                raise PairLossError(
                    f"reducer: {type(self.reducer).__name__} needs the single terms of "
                    f"{type(self).__name__}'s {comp.name!r}, which it does not list; expected "
                    "MeanReducer, SumReducer, AvgNonZeroReducer, DivisorReducer or "
                    "ClassWeightedReducer"
                )
            out[comp.name] = {
                "losses": losses if losses.numel() else 0,
                "indices": indices,
                "reduction_type": comp.reduction_type,
            }
        return out

    def runs_dense(self, embeddings: torch.Tensor, ref_emb: torch.Tensor | None = None) -> bool:
        """Whether this loss's walks over ``embeddings`` (and ``ref_emb``) take the dense
        engine (see :func:`pairloss.engine.engine_for`): a loss whose blocked form holds
        statistics constant uses its plain differentiable form there, exact to every order."""
        return engine_for(self.engine, embeddings, ref_emb) == "dense"

    def run_problem(
        self,
        objective: Objective,
        anchors: torch.Tensor,
        candidates: torch.Tensor | None,
        relation: Relation,
        *,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None,
        similarity: Similarity | None = None,
        params: Sequence[torch.Tensor] = (),
        fused: FusedObjective | None = None,
        row_labels: torch.Tensor | None = None,
        row_index=None,
        counts: Callable[[], list[float]] | None = None,
    ) -> torch.Tensor:
        """Run a pair problem this loss builds itself (rows that are not the embeddings, e.g.
        positive pairs, or a relation of its own) with its reduction or reducer, engine and
        regularizers. ``row_labels`` [rows] are the labels a class-weighted reducer reads;
        ``row_index`` the indices the rows get in a listed loss dictionary; ``counts`` the
        components' normalisers when the loss knows them (:attr:`PairProblem.counts`)."""
        similarity = self.distance if similarity is None else similarity
        reduction = self.reduction
        if self.uses_reducer():
            ruled = self.reduce_with(objective, fused, row_labels)
            if ruled is None:
                terms = dense_terms(objective, similarity, relation, anchors, candidates)
                loss_dict = self.listed_terms(
                    terms, anchors.shape[0], anchors.device, row_index=row_index
                )
                return self.finish_listed(loss_dict, embeddings, labels)
            objective, fused, reduction = ruled
        problem = PairProblem(
            objective=objective,
            similarity=similarity,
            relation=relation,
            reduction=reduction,
            params=tuple(p for p in params if isinstance(p, torch.Tensor)),
            fused=fused,
            counts=counts,
        )
        out = run(problem, anchors, candidates, engine=self.engine, block_size=self.block_size)
        return self.add_regularizers(out.to(embeddings.dtype), embeddings)

    def reduce_listed(
        self,
        objective: Objective,
        embeddings: torch.Tensor,
        labels,
        indices_tuple,
        ref_emb,
        ref_labels,
        miner,
    ):
        """Evaluate ``objective`` on the dense matrix, list its terms and hand them to
        ``self.reducer`` (pytorch-metric-learning's way)."""
        relation, mined, labels, ref_labels = build_relation(
            embeddings, labels, indices_tuple, ref_emb, ref_labels
        )
        miner = miner if miner is not None else mined
        terms = dense_terms(objective, self.distance, relation, embeddings, ref_emb, miner)
        loss_dict = self.listed_terms(terms, embeddings.shape[0], embeddings.device)
        return self.finish_listed(loss_dict, embeddings, labels)

    def finish_listed(self, loss_dict: dict, embeddings: torch.Tensor, labels):
        """Add the regularizer entries and apply the reducer to a loss dictionary."""
        if self.embedding_regularizer is not None:
            loss_dict["embedding_reg_loss"] = {
                "losses": self.embedding_regularizer(embeddings) * self.embedding_reg_weight,
                "indices": None,
                "reduction_type": "already_reduced",
            }
        out = self.reducer(loss_dict, embeddings, labels)
        return out if isinstance(out, dict) else out.to(embeddings.dtype)

    def reduce_pair_list(
        self,
        parts: Sequence[tuple[torch.Tensor, tuple]],
        embeddings: torch.Tensor,
        labels,
    ) -> torch.Tensor:
        """Reduce terms listed per pair (one ``(losses, indices)`` per component, indices a
        tuple whose first entry is the anchor) as pytorch-metric-learning's pair-based losses
        do: with ``self.reducer`` when one was given, else with ``self.reduction`` (per anchor
        row). Adds the regularizers. Terms that left the range of the dtype (squared distances
        of huge inputs) are refused, naming the embeddings."""
        for losses, _ in parts:
            check_result(losses.detach(), embeddings)
        if self.uses_reducer():
            loss_dict = {}
            for comp, (losses, indices) in zip(self.active_components(), parts):
                loss_dict[comp.name] = {
                    "losses": losses if losses.numel() else 0,
                    "indices": indices,
                    "reduction_type": comp.reduction_type,
                }
            return self.finish_listed(loss_dict, embeddings, labels)
        n = embeddings.shape[0]
        terms = []
        for losses, indices in parts:
            rows = indices[0]
            ones = torch.ones_like(losses.detach())
            terms.append(
                RowTerms(
                    losses.new_zeros(n).index_add(0, rows, losses),
                    ones.new_zeros(n).index_add(0, rows, ones),
                    ones.new_zeros(n).index_add(0, rows, (losses.detach() > 0).to(ones.dtype)),
                )
            )
        return self.reduce_rows(terms, embeddings)

    def reduce_rows(self, terms: list[RowTerms], embeddings: torch.Tensor) -> torch.Tensor:
        """Reduce per-anchor components (computed outside the engine) with ``self.reduction``
        and add the regularizers; a loss without terms is 0 on the embeddings' graph."""
        out = reduce_terms(terms, self.reduction, embeddings.shape[0])
        if out.requires_grad is False and embeddings.requires_grad:
            out = out + (embeddings * 0).sum()
        return self.add_regularizers(out.to(embeddings.dtype), embeddings)

    def add_regularizers(self, loss: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """``loss`` plus the embedding regularizer (times its weight)."""
        if self.embedding_regularizer is None:
            return loss
        if loss.dim() != 0:
            raise PairLossError(
                "embedding_regularizer: needs a scalar loss, got reduction='none'; expected "
                "another reduction"
            )
        reg = self.embedding_regularizer(embeddings) * self.embedding_reg_weight
        return loss + reg.to(loss.dtype)

    # ------------------------------------------------------------------ running

    def run_objective(
        self,
        objective: Objective,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
        *,
        miner: Miner | None | str = "own",
        extra_params: Sequence[torch.Tensor] = (),
        fused: FusedObjective | None = None,
    ) -> torch.Tensor:
        """Run ``objective`` with this module's similarity, reduction (or reducer), engine,
        parameters (plus ``extra_params``) and regularizers; ``miner`` is the module's own
        unless given (None: no miner). ``fused`` is dropped unless it is the twin of this
        class's objective (:func:`fused_form_applies`)."""
        if fused is not None and not fused_form_applies(
            self, ("fused", "fused_form"), ("objective",)
        ):
            fused = None
        miner = self.miner if miner == "own" else miner
        reduction = self.reduction
        if self.uses_reducer():
            labels_t = None
            if labels is not None:
                labels_t = check_labels(labels, check_embeddings(embeddings).shape[0])
                labels_t = labels_t.to(embeddings.device)
            ruled = self.reduce_with(objective, fused, labels_t)
            if ruled is None:
                if miner is not None and not miner.has_transform and indices_tuple is None:
                    indices_tuple = miner(
                        embeddings.detach(), labels, _detached(ref_emb), ref_labels
                    )
                    miner = None
                return self.reduce_listed(
                    objective, embeddings, labels, indices_tuple, ref_emb, ref_labels, miner
                )
            objective, fused, reduction = ruled
        loss = pair_loss(
            objective,
            embeddings,
            labels,
            indices_tuple,
            ref_emb,
            ref_labels,
            similarity=self.distance,
            reduction=reduction,
            miner=miner,
            params=[*extra_params, *self.parameters()],
            engine=self.engine,
            block_size=self.block_size,
            fused=fused,
        )
        return self.add_regularizers(loss, embeddings)

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of ``embeddings`` [B, D] with ``labels`` [B] (or explicit pairs/triplets in
        ``indices_tuple``, or a miner's output), optionally against ``ref_emb`` [N, D] with
        ``ref_labels`` [N]. Returns a scalar (or [B] with reduction 'none'; a dict with a
        :class:`~pairloss.reducers.DoNothingReducer`)."""
        miner = self.miner
        if self.counts_listings():
            listed, labels, indices_tuple, miner = self.explicit_listings(
                embeddings, labels, indices_tuple, ref_emb, ref_labels
            )
            if listed is not None:
                return self.listed_loss(embeddings, labels, listed, ref_emb)
        return self.run_objective(
            self.objective,
            embeddings,
            labels,
            indices_tuple,
            ref_emb,
            ref_labels,
            miner=miner,
            fused=self.fused_form(miner),
        )

    listed_loss: Callable | None = None
    """``listed_loss(embeddings, labels, listed, ref_emb)``: the loss of :class:`ListedPairs`,
    for a loss that counts a pair once per listing as pytorch-metric-learning's pair-based
    losses do (see :func:`read_listings`); None: every explicit tuple is a set of cells."""

    lists_triplets = False
    """Whether a triplet tuple is always evaluated as listed (a loss whose terms are the
    triplets themselves: see :func:`read_listings`'s ``every_triplet``)."""

    def counts_listings(self) -> bool:
        """Whether :meth:`forward` reads an explicit tuple's listings: the class gives
        :attr:`listed_loss` for the objective it runs (a subclass that changes the objective
        without giving its own listed form reads the tuple as a set of cells)."""
        return self.listed_loss is not None and fused_form_applies(
            self, ("listed_loss",), ("objective",)
        )

    def explicit_listings(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None,
        indices_tuple,
        ref_emb: torch.Tensor | None,
        ref_labels: torch.Tensor | None,
    ) -> tuple[ListedPairs | None, torch.Tensor | None, object, Miner | None]:
        """The inputs of a loss that counts a pair once per listing (see :func:`read_listings`)
        read: ``(listed, labels, indices_tuple, miner)``.

        The module's own miner without a row-wise rule gives its index tuple first, as on the
        engine path. An explicit tuple (not one whose miner applies inside the engine) that lists
        a pair more than once or as both kinds gives ``listed`` (:class:`ListedPairs`) and the
        checked ``labels``; otherwise ``listed`` is None and ``indices_tuple`` (the tuple's
        relation, read once) and ``miner`` go to :meth:`run_objective` unchanged."""
        miner = self.miner
        if miner is not None and not miner.has_transform and indices_tuple is None:
            indices_tuple = miner(embeddings.detach(), labels, _detached(ref_emb), ref_labels)
            miner = None
        explicit = isinstance(indices_tuple, (tuple, list))
        if explicit and miner_in(indices_tuple, embeddings, labels, ref_emb, ref_labels) is None:
            relation, _, checked, _ = build_relation(
                embeddings, labels, indices_tuple, ref_emb, ref_labels,
                listings=True, every_triplet=self.lists_triplets,
            )  # fmt: skip
            if isinstance(relation, ListedPairs):
                return relation, checked, indices_tuple, miner
            indices_tuple = relation
        return None, labels, indices_tuple, miner

    def fused_form(self, miner: Miner | None) -> FusedObjective | None:
        """The hand-differentiated objective for the blocked engine in this setting, or None.
        By default ``fused`` when there is no miner (a subclass whose fused form applies its
        miner overrides this)."""
        return self.fused if miner is None else None
