"""The shared front end of every embedding loss: input checks, relation, miner, engine.

Each loss is a pure row objective (in :mod:`pairloss.objectives`) plus this front end. The module
classes keep pytorch-metric-learning's call signature
``loss(embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..engine import ENGINES, FusedObjective, Objective, PairProblem, run
from ..errors import PairLossError
from ..mining import MinedRelation, Miner
from ..reduction import check_reduction
from ..relations import LabelRelation, PairListRelation, Relation
from ..scale.distributed import set_gather
from ..similarity import Similarity
from ..validation import (
    check_block_size,
    check_choice,
    check_embeddings,
    check_labels,
    check_miner,
    check_same_device_dtype,
)


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


def build_relation(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None,
    indices_tuple,
    ref_emb: torch.Tensor | None,
    ref_labels: torch.Tensor | None,
) -> tuple[Relation, Miner | None, torch.Tensor | None, torch.Tensor | None]:
    """Validate the PML-style arguments; return (relation, miner, labels, ref_labels).

    ``indices_tuple`` may also be a pairloss :class:`~pairloss.relations.Relation` (used as
    given) or a miner's :class:`~pairloss.mining.MinedRelation` (optionally carrying one)."""
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
    miner = None
    if isinstance(indices_tuple, MinedRelation):
        miner, indices_tuple = indices_tuple.miner, indices_tuple.relation
    elif isinstance(indices_tuple, Miner):
        miner, indices_tuple = indices_tuple, None
    if isinstance(indices_tuple, Relation):
        check_relation_shape(indices_tuple, n, n_cand)
        return indices_tuple, miner, labels, ref_labels
    if indices_tuple is not None:
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
    return LabelRelation(labels, ref_labels), miner, labels, ref_labels


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


class PairLossModule(nn.Module):
    """Base class of the embedding losses.

    Subclasses set ``default_similarity`` / ``default_reduction`` and implement
    :meth:`objective`; they may set ``fused`` to a hand-differentiated form of it (see
    :class:`pairloss.engine.PairProblem`), which the blocked engine then runs. Common arguments: ``distance`` (a :class:`~pairloss.similarity.Similarity`
    or a name), ``reduction``, ``miner`` (applied inside the engine on every call),
    ``engine`` ("auto", "dense", "blocked"), ``block_size`` and ``gather`` (None, or "exact"
    for the loss of the global batch of a torch.distributed group: see
    :func:`pairloss.scale.set_gather`).
    """

    default_reduction = "mean"

    def __init__(
        self,
        distance: Similarity | str | None = None,
        reduction: str | None = None,
        miner: Miner | None = None,
        engine: str = "auto",
        block_size: int | None = None,
        gather: str | None = None,
    ) -> None:
        super().__init__()
        from ..similarity import get_similarity

        if gather is not None:
            set_gather(self, gather)

        self.distance = get_similarity(distance, self.default_similarity())
        self.reduction = check_reduction(self.default_reduction if reduction is None else reduction)
        self.miner = check_miner(miner)
        self.engine = check_choice(engine, "engine", ENGINES)
        self.block_size = check_block_size(block_size)

    @staticmethod
    def default_similarity() -> Similarity:
        from ..similarity import CosineSimilarity

        return CosineSimilarity()

    fused: FusedObjective | None = None

    def objective(self, s, pos, neg, start, end):
        raise NotImplementedError

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
        """Run ``objective`` with this module's similarity, reduction, engine and parameters
        (plus ``extra_params``); ``miner`` is the module's own unless given (None: no miner).
        ``fused`` is dropped unless it is the twin of this class's objective
        (:func:`fused_form_applies`)."""
        if fused is not None and not fused_form_applies(
            self, ("fused", "fused_form"), ("objective",)
        ):
            fused = None
        return pair_loss(
            objective,
            embeddings,
            labels,
            indices_tuple,
            ref_emb,
            ref_labels,
            similarity=self.distance,
            reduction=self.reduction,
            miner=self.miner if miner == "own" else miner,
            params=[*extra_params, *self.parameters()],
            engine=self.engine,
            block_size=self.block_size,
            fused=fused,
        )

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
        ``ref_labels`` [N]. Returns a scalar (or [B] with reduction 'none')."""
        return self.run_objective(
            self.objective,
            embeddings,
            labels,
            indices_tuple,
            ref_emb,
            ref_labels,
            fused=self.fused_form(self.miner),
        )

    def fused_form(self, miner: Miner | None) -> FusedObjective | None:
        """The hand-differentiated objective for the blocked engine in this setting, or None.
        By default ``fused`` when there is no miner (a subclass whose fused form applies its
        miner overrides this)."""
        return self.fused if miner is None else None
