"""In-batch negatives with explicit hard-negative columns (the sentence-embedding InfoNCE of
Henderson et al. 2017, "Efficient Natural Language Response Suggestion for Smart Reply", and
van den Oord et al. 2018; sentence-transformers' MultipleNegativesRankingLoss), its directions
and partitions, hardness weighting and false-negative filters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ...errors import PairLossError
from ...objectives.tower_softmax import SoftmaxTowers
from ...validation import check_choice, check_real
from .clip import as_scale
from .false_negatives import DuplicateIds, GuideFilter
from .towers import TowerLoss, check_towers

DIRECTIONS = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")
HARDNESS_MODES = ("in_batch_negatives", "hard_negatives", "all_negatives")

# tensors of a batch: 0 queries [B, D], 1 all documents [N, D], 2 the positives [B, D]
QUERIES, DOCS, POSITIVES = 0, 1, 2


@dataclass(frozen=True)
class Panel:
    """One block of scores of a batch: anchor rows of one tensor against all rows of another.

    Attributes:
        anchor, candidate: tensor indices (:data:`QUERIES`, :data:`DOCS`, :data:`POSITIVES`).
        drop: cells removed from the softmax: ``"self"`` (cell (i, i)), ``"own_docs"`` (the
            documents of row i: columns i, B + i, 2B + i, ...) or None.
    """

    anchor: int
    candidate: int
    drop: str | None = None

    def roles(self) -> tuple[str, str]:
        """The anchor's and the candidate's role (``"query"`` or ``"doc"``)."""
        role = {QUERIES: "query", DOCS: "doc", POSITIVES: "doc"}
        return role[self.anchor], role[self.candidate]


PANELS = {
    "query_to_doc": Panel(QUERIES, DOCS),
    "query_to_query": Panel(QUERIES, QUERIES, "self"),
    "doc_to_query": Panel(POSITIVES, QUERIES),
    "doc_to_doc": Panel(POSITIVES, DOCS, "own_docs"),
}


class CellRules:
    """The cell adjustments of a batch's panels: structural drops, false-negative filters and
    the hardness term, applied to a block of logits (the ``adjust`` of
    :class:`~pairloss.objectives.tower_softmax.SoftmaxTowers`).

    Args:
        panels: the panels in the objective's order (panel 0 holds the positives).
        n_rows: B.
        duplicates: optional :class:`DuplicateIds`.
        guide: optional :class:`GuideFilter` (its guide tensors aligned with the batch's).
        hardness: ``(mode, strength)`` or None: adds ``strength * sg(s)`` to the negative
            logits of panel 0 selected by the mode (sentence-transformers' ``hardness_mode``).
    """

    def __init__(
        self,
        panels: Sequence[Panel],
        n_rows: int,
        duplicates: DuplicateIds | None = None,
        guide: GuideFilter | None = None,
        hardness: tuple[str, float] | None = None,
    ) -> None:
        self.panels, self.n_rows = list(panels), n_rows
        self.duplicates, self.guide, self.hardness = duplicates, guide, hardness

    def __call__(self, p: int, z: torch.Tensor, s: torch.Tensor, start: int, end: int):
        panel = self.panels[p]
        b, n_cols = z.shape
        drop = self._structural(panel, b, n_cols, start, z.device)
        if self.duplicates is not None:
            dup = self.duplicates.block(*panel.roles(), start, end, n_cols)
            drop = _or(drop, dup)
        if self.guide is not None:
            drop = _or(drop, self.guide.block(panel.anchor, panel.candidate, start, end))
        anchor_role, candidate_role = panel.roles()
        if drop is not None and anchor_role != candidate_role:
            drop = self._keep_positive(drop, start)  # a query's own document, a document's query
        if p == 0 and self.hardness is not None:
            z = z + self._hardness(s, start)
        if drop is not None:
            z = z.masked_fill(drop, float("-inf"))
        return z

    def _structural(self, panel, b, n_cols, start, device):
        if panel.drop is None:
            return None
        rows = torch.arange(start, start + b, device=device)[:, None]
        cols = torch.arange(n_cols, device=device)[None, :]
        if panel.drop == "self":
            return rows == cols
        return (cols % self.n_rows) == rows

    def _keep_positive(self, drop, start):
        idx = torch.arange(drop.shape[0], device=drop.device)
        drop = drop.clone()
        drop[idx, idx + start] = False
        return drop

    def _hardness(self, s, start):
        mode, strength = self.hardness
        b, n_cols = s.shape
        rows = torch.arange(start, start + b, device=s.device)[:, None]
        cols = torch.arange(n_cols, device=s.device)[None, :]
        own = (cols % self.n_rows) == rows
        if mode == "in_batch_negatives":
            keep = ~own
        elif mode == "hard_negatives":
            keep = own & (cols >= self.n_rows)
        else:
            keep = cols != rows
        return torch.where(keep, strength * s.detach(), 0.0)


def _or(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a | b


def check_directions(directions: object, partition: str) -> tuple[str, ...]:
    """A non-empty tuple of :data:`DIRECTIONS` that contains ``"query_to_doc"``; the
    per-direction partition cannot take the same-type directions (they hold no positive)."""
    if isinstance(directions, str) or not isinstance(directions, (tuple, list)) or not directions:
        raise PairLossError(
            f"directions: expected a non-empty tuple of {DIRECTIONS}, got {directions!r}"
        )
    for d in directions:
        check_choice(d, "directions", DIRECTIONS)
    if "query_to_doc" not in directions:
        raise PairLossError(
            "directions: 'query_to_doc' is required (it holds the positive pair); got "
            f"{tuple(directions)!r}"
        )
    if partition == "per_direction" and set(directions) & {"query_to_query", "doc_to_doc"}:
        raise PairLossError(
            "directions: the per-direction partition needs the positive in every direction; "
            "'query_to_query' and 'doc_to_doc' hold none, expected partition='joint'"
        )
    return tuple(dict.fromkeys(directions))


class InBatchNegativesLoss(TowerLoss):
    r"""InfoNCE with in-batch negatives and explicit hard-negative columns.

    For query ``q_i``, its positive ``d_i`` and all documents ``D`` of the batch (the B
    positives, then any hard negatives), with logits ``z = scale * s``:

    .. math::
        \ell_i = \mathrm{LSE}\big(\{z(q_i, d) : d \in D\} \cup \ldots\big) - z(q_i, d_i)

    averaged over the queries, where the softmax runs over the cells of the chosen
    ``directions``: ``query_to_doc`` (always), ``query_to_query`` (the other queries),
    ``doc_to_query`` (``d_i`` against all queries) and ``doc_to_doc`` (``d_i`` against the
    documents of the other rows). ``partition="joint"`` takes one softmax over all of them;
    ``"per_direction"`` averages one log-sum-exp per direction (``("query_to_doc",
    "doc_to_query")`` per direction is the symmetric loss, CLIP with hard negatives).

    ``hardness_mode`` adds ``hardness_strength * sg(s)`` to selected negative logits of
    ``query_to_doc`` (Lan et al. 2025): ``"in_batch_negatives"`` (the other rows' documents),
    ``"hard_negatives"`` (the row's own hard negatives) or ``"all_negatives"`` (every
    negative), i.e. each such negative is weighted by ``e^{strength * s}`` in the softmax.

    False negatives: ``query_ids`` / ``doc_ids`` drop candidates that repeat the row's own
    query or positive (:class:`~pairloss.losses.contrastive.false_negatives.DuplicateIds`);
    ``guide_queries`` / ``guide_docs`` (a guide model's embeddings) drop candidates the guide
    scores above the positive (:class:`~pairloss.losses.contrastive.false_negatives.GuideFilter`,
    margins ``guide_margin`` and ``guide_margin_strategy``).

    Defaults as sentence-transformers' ``MultipleNegativesRankingLoss``: ``scale=20`` (a
    temperature of 0.05), cosine similarity, ``("query_to_doc",)``, joint partition. Checked
    against it (every direction, both partitions, hard negatives, the three hardness modes;
    values and gradients, float64). With one panel and no adjustment the blocked engine runs the
    fused single walk (three matrix products).

    Shapes: ``queries`` [B, D]; ``docs`` [N, D] with N = B (1 + k): the B positives first, then
    k blocks of B hard negatives (row ``j B + i`` is a hard negative of query i, and a negative
    of every other query). Ids [B] and [N]; guide embeddings aligned with ``queries`` and
    ``docs``. Returns a scalar.
    """

    def __init__(
        self,
        scale: float = 20.0,
        directions: Sequence[str] = ("query_to_doc",),
        partition: str = "joint",
        hardness_mode: str | None = None,
        hardness_strength: float = 0.0,
        guide_margin: float = 0.0,
        guide_margin_strategy: str = "absolute",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.scale = check_real(scale, "scale", low=0.0, low_open=True)
        self.partition = check_choice(partition, "partition", ("joint", "per_direction"))
        self.directions = check_directions(directions, self.partition)
        if hardness_mode is not None:
            check_choice(hardness_mode, "hardness_mode", HARDNESS_MODES)
        self.hardness_mode = hardness_mode
        self.hardness_strength = check_real(hardness_strength, "hardness_strength", low=0.0)
        self.guide_margin = check_real(guide_margin, "guide_margin")
        self.guide_margin_strategy = check_choice(
            guide_margin_strategy, "guide_margin_strategy", ("absolute", "relative")
        )

    @property
    def temperature(self) -> float:
        """``1 / scale``."""
        return 1.0 / self.scale

    def forward(
        self,
        queries: torch.Tensor,
        docs: torch.Tensor,
        *,
        query_ids: torch.Tensor | None = None,
        doc_ids: torch.Tensor | None = None,
        guide_queries: torch.Tensor | None = None,
        guide_docs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of ``queries`` [B, D] against ``docs`` [B (1 + k), D] (see the class)."""
        q, d = check_docs(queries, docs)
        panels = [PANELS[name] for name in self.directions]
        hardness = None
        if self.hardness_mode is not None and self.hardness_strength > 0:
            hardness = (self.hardness_mode, self.hardness_strength)
        duplicates = None
        if query_ids is not None or doc_ids is not None:
            duplicates = DuplicateIds(query_ids, doc_ids, q.shape[0], d.shape[0], q.device)
        guide = None
        if (guide_queries is None) != (guide_docs is None):
            raise PairLossError("guide_queries, guide_docs: expected both or neither")
        if guide_queries is not None:
            gq, gd = check_docs(guide_queries, guide_docs, "guide_queries", "guide_docs")
            if gq.shape[0] != q.shape[0] or gd.shape[0] != d.shape[0]:
                raise PairLossError(
                    f"guide_queries, guide_docs: have {gq.shape[0]} and {gd.shape[0]} rows but "
                    f"the batch has {q.shape[0]} queries and {d.shape[0]} docs; expected the same"
                )
            guide = GuideFilter(
                [gq, gd, gd[: q.shape[0]]], self.guide_margin, self.guide_margin_strategy
            )
        return in_batch_negatives_loss(
            self, q, d, panels, self.scale, self.partition, duplicates, guide, hardness
        )


def check_docs(
    queries: object, docs: object, q_name: str = "queries", d_name: str = "docs"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``queries`` [B, D] and ``docs`` [B (1 + k), D]."""
    q, d = check_towers(queries, docs, q_name, d_name, extra_rows=True)
    if d.shape[0] % q.shape[0]:
        raise PairLossError(
            f"{d_name}: has {d.shape[0]} rows, not a multiple of the {q.shape[0]} {q_name}; "
            "expected the positives and then whole blocks of hard negatives"
        )
    return q, d


def in_batch_negatives_loss(
    loss: TowerLoss,
    q: torch.Tensor,
    d: torch.Tensor,
    panels: Sequence[Panel],
    scale: float | torch.Tensor,
    partition: str,
    duplicates: DuplicateIds | None = None,
    guide: GuideFilter | None = None,
    hardness: tuple[str, float] | None = None,
    row_weight: float = 1.0,
) -> torch.Tensor:
    """Run the softmax over ``panels`` of the batch (queries, all docs, the positives) with
    ``loss``'s similarity and engine."""
    n = q.shape[0]
    rules = None
    plain = all(p.drop is None for p in panels)
    if not plain or duplicates is not None or guide is not None or hardness is not None:
        rules = CellRules(panels, n, duplicates, guide, hardness)
    t = as_scale(scale, q, "scale")
    objective = SoftmaxTowers(
        tuple((p.anchor, p.candidate) for p in panels),
        n,
        lambda: t,
        params=(t,),
        row_weight=row_weight,
        partition=partition,
        adjust=rules,
    )
    tensors, names = [q, d], ["queries", "docs"]
    if any(POSITIVES in (p.anchor, p.candidate) for p in panels):
        tensors.append(d[:n])
        names.append("docs[:B]")
    return loss.run(objective, tensors, names)


def in_batch_negatives(queries, docs, scale: float = 20.0, **kwargs) -> torch.Tensor:
    """Functional form of :class:`InBatchNegativesLoss` (``kwargs``: the constructor's options
    and the forward's ids and guide embeddings)."""
    names = ("query_ids", "doc_ids", "guide_queries", "guide_docs")
    call = {k: kwargs.pop(k) for k in names if k in kwargs}
    return InBatchNegativesLoss(scale, **kwargs)(queries, docs, **call)
