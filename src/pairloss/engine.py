"""The pair engine: one row objective, two ways to run it.

A :class:`PairProblem` bundles a similarity, a relation (which cells are positive/negative), an
optional miner (a transform of the relation from row statistics), a row objective (scores and
masks of a block of anchor rows -> per-row :class:`~pairloss.objectives.RowTerms`) and a
reduction. :func:`run` evaluates it:

- ``engine="dense"`` builds the whole [B, N] score matrix once and lets autograd differentiate
  it. Simple; the reference.
- ``engine="blocked"`` walks the anchors in row blocks. Each block's scores, masks, objective
  and the gradient of the block's loss with respect to the block's anchors, the candidates and
  any learnable parameters are computed at once and accumulated; the backward pass only scales
  them by ``grad_output``. Nothing of size B x N is held: memory is O(block x N + (B + N) x D),
  and the work is the three matrix products any exact method needs (S = X Y^T, G Y, G^T X) plus
  elementwise math. Normalisers of the reduction (counts of valid anchors, of terms, of non-zero
  terms) are gathered during the walk and applied at the end; when a loss has several components
  with data-dependent normalisers, one extra walk without gradients counts them first.
- ``engine="auto"`` picks dense when B x N is small (at most ``DENSE_MAX_CELLS``), else blocked.

The blocked engine has two walks. The generic one differentiates each block's objective with
autograd. The fused one runs when the loss gives a hand-differentiated form of its objective
(:attr:`PairProblem.fused`), the scores are a function of dot products
(:meth:`~pairloss.similarity.Similarity.dot_form`) and the relation has a sparse form
(:meth:`~pairloss.relations.Relation.pairs`: the positives as a list, every other cell negative
but the self cells). Per block it does one product into a reused buffer, the objective's
elementwise passes in place (positives by index, never a [b, N] mask) and the two gradient
products accumulated in place, so its cost is the three products plus a few passes over each
block. Components with their own data-dependent normalisers are weighted at the end of the same
walk when all but one hand their gradient over on the positive cells (compressed sparse
products), or through normalisers known from the labels (:attr:`PairProblem.counts`); otherwise
one walk without gradients counts them first.

Under :func:`sharded_rows` (the distributed losses of :mod:`pairloss.scale.distributed`) the
inputs are the same on every process of a group and each process walks only its own rows
(:class:`RowShard`): the per-component values and normaliser counts are summed over the
processes, so every process returns the loss of all rows, and the gradients it hands back are
its share counted ``parts`` times (the convention under which DistributedDataParallel's mean is
exact; an upstream gradient that arrives in parts is summed first).

Both engines run the same objective, so they agree to rounding. The blocked engine gives
first-order gradients only: a backward with ``create_graph=True`` (double backward, gradient
penalties), forward-mode AD and ``torch.func`` transforms with a forced ``engine="blocked"``
raise :class:`~pairloss.errors.PairLossError` (``engine="auto"`` picks dense under a
``torch.func`` transform or forward-mode AD); the dense engine differentiates to any order.
The blocked engine runs under ``torch.no_grad()`` without building any graph. fp16/bf16 inputs are computed in
fp32 and the result is returned in the input dtype.
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch

from .errors import PairLossError
from .objectives.terms import RowScale, RowTerms
from .reduction import (
    DATA_DEPENDENT,
    check_reduction,
    normalizer,
    reduce_terms,
    row_counts,
    safe_divide,
)
from .relations import BlockPairs, Relation
from .similarity import Similarity
from .validation import check_block_size, check_choice, check_result

ENGINES = ("auto", "dense", "blocked")
DENSE_MAX_CELLS = 1 << 21
BLOCK_CELLS = 1 << 21
BLOCK_CELLS_CUDA = 1 << 24  # a GPU runs a block's elementwise passes as kernel launches
MIN_BLOCK_ROWS = 256

Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, int], list[RowTerms]]
FusedObjective = Callable[
    [torch.Tensor, BlockPairs, torch.Tensor | None, RowScale | None], list[RowTerms]
]


@dataclass
class PairProblem:
    """Everything the engine needs besides the embeddings.

    Attributes:
        objective: ``f(s, pos, neg, start, end) -> list[RowTerms]`` for anchor rows
            ``start:end``; ``s`` is [b, N] in the similarity's own units (distances stay
            distances), ``pos`` / ``neg`` are boolean [b, N].
        similarity: scores anchors against candidates.
        relation: positive / negative masks per block.
        reduction: one of :data:`pairloss.reduction.REDUCTIONS`.
        miner: optional relation transform ``miner.transform(s_miner, pos, neg)``.
        params: learnable tensors that the objective reads (they receive gradients from the
            blocked engine too); the similarity's own parameters are added by :func:`run`.
        fused: optional hand-differentiated form of ``objective`` for the blocked engine:
            ``fused(s, pairs, grad, scale) -> list[RowTerms]`` reads the block's scores ``s``
            [b, N] and its :class:`~pairloss.relations.BlockPairs`, and, when ``grad`` (a [b, N]
            buffer) is given, writes into it dL/ds of ``sum_k sum_i scale(k)[i] * values_k[i]``.
            It must give the same terms as ``objective``.
        counts: optional ``f() -> list[float]``, the reduction's normaliser of each component
            when it is known without the scores (it then saves the blocked engine its counting
            walk for several components with data-dependent normalisers).
    """

    objective: Objective
    similarity: Similarity
    relation: Relation
    reduction: str = "mean"
    miner: object | None = None
    params: Sequence[torch.Tensor] = field(default_factory=tuple)
    fused: FusedObjective | None = None
    counts: Callable[[], list[float]] | None = None


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype losses compute in: fp32 for fp16/bf16 inputs, the input's dtype otherwise."""
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


class RowShard(Protocol):
    """A split of the anchor rows among the ``parts`` processes of a group, for inputs that are
    the same on every process (see :mod:`pairloss.scale.distributed`, which implements it).

    Under :func:`sharded_rows` every engine call walks only this process's rows
    (:meth:`rows`), sums the per-component values and normaliser counts over the processes
    (:meth:`all_sum_`), and returns the loss of all rows; the gradients it hands back are
    ``parts`` times this process's share, so that a mean over the processes (what
    DistributedDataParallel does) gives the gradient of the loss of all rows. Reduction 'none'
    returns all rows' values (:meth:`all_rows`).
    """

    parts: int

    def rows(self, n_rows: int) -> tuple[int, int]:
        """The range ``[lo, hi)`` of the ``n_rows`` anchor rows that this process walks."""
        ...

    def all_sum_(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over the processes, in place; returns ``t``."""
        ...

    def all_rows(self, local: torch.Tensor, n_rows: int) -> torch.Tensor:
        """The [n_rows] concatenation, over the processes, of their ``local`` row values."""
        ...


_ROW_SHARD: contextvars.ContextVar[RowShard | None] = contextvars.ContextVar(
    "pairloss_row_shard", default=None
)


@contextlib.contextmanager
def sharded_rows(shard: RowShard | None) -> Iterator[None]:
    """Within this block every engine call walks only ``shard``'s rows (None: all rows)."""
    token = _ROW_SHARD.set(shard)
    try:
        yield
    finally:
        _ROW_SHARD.reset(token)


def active_shard() -> RowShard | None:
    """The :class:`RowShard` of the enclosing :func:`sharded_rows`, or None (also for a single
    process)."""
    shard = _ROW_SHARD.get()
    return shard if shard is not None and shard.parts > 1 else None


class _Prepared:
    """Prepared (e.g. normalised) anchors and candidates, for the loss and for the miner."""

    def __init__(
        self,
        problem: PairProblem,
        anchors: torch.Tensor,
        candidates: torch.Tensor | None,
        inside: bool = False,
    ):
        dtype = compute_dtype(anchors)
        sim = problem.similarity
        # ``inside``: prepare without autograd; the engine's Function takes the raw (cast)
        # tensors and maps the gradients back itself (Similarity.prepare_grad_, in place)
        self.inside = inside
        self.raw_anchors = anchors.to(dtype)
        self.raw_candidates = None if candidates is None else candidates.to(dtype)
        with torch.no_grad() if inside else contextlib.nullcontext():
            self.anchors = sim.prepare(self.raw_anchors)
            self.candidates = (
                self.anchors if candidates is None else sim.prepare(self.raw_candidates)
            )
        miner_sim = getattr(problem.miner, "similarity", None)
        self.miner_sim = None
        if problem.miner is not None and miner_sim is not None and not miner_sim.same_scores(sim):
            with torch.no_grad():
                self.miner_sim = miner_sim
                self.miner_anchors = miner_sim.prepare(anchors.detach().to(dtype))
                self.miner_candidates = (
                    self.miner_anchors
                    if candidates is None
                    else miner_sim.prepare(candidates.detach().to(dtype))
                )


def _block_masks(problem: PairProblem, prep: _Prepared, s: torch.Tensor, start: int, end: int):
    pos, neg = problem.relation.block(start, end)
    pos, neg = pos.to(s.device), neg.to(s.device)
    if problem.miner is not None:
        with torch.no_grad():
            if prep.miner_sim is None:
                s_m = s.detach()
            else:
                s_m = prep.miner_sim.matrix(prep.miner_anchors[start:end], prep.miner_candidates)
            pos, neg = problem.miner.transform(s_m, pos, neg)
    return pos, neg


def _block_terms(problem, prep, a_block, c, start, end) -> list[RowTerms]:
    s = problem.similarity.matrix(a_block, c)
    if not problem.similarity.bounded:
        _check_scores(s, a_block, c)
    pos, neg = _block_masks(problem, prep, s, start, end)
    return problem.objective(s, pos, neg, start, end)


def _check_scores(s: torch.Tensor, a: torch.Tensor, c: torch.Tensor) -> None:
    """Raw (unnormalised) scores must fit their dtype: a raw dot product or squared distance of
    large vectors overflows (float32 holds up to about 3.4e38)."""
    if not bool(torch.isfinite(s).all()):
        top = max(float(t.detach().abs().amax()) for t in (a, c) if t.numel())
        raise PairLossError(
            f"embeddings: the scores overflow {s.dtype} (raw dot products or distances of "
            f"vectors with entries up to {top:.3g}); expected inputs of moderate magnitude "
            "(scale them down), float64, or a normalised similarity such as cosine"
        )


def _dense(problem: PairProblem, prep: _Prepared) -> torch.Tensor:
    b = prep.anchors.shape[0]
    terms = _block_terms(problem, prep, prep.anchors, prep.candidates, 0, b)
    return reduce_terms(terms, problem.reduction, b)


def _dense_sharded(problem: PairProblem, prep: _Prepared, shard: RowShard) -> torch.Tensor:
    """The dense engine on this process's rows: the normalisers are summed over the processes
    and the result is the loss of all rows (gradient: ``parts`` times this process's share)."""
    b = prep.anchors.shape[0]
    lo, hi = shard.rows(b)
    k = _components(problem, prep)
    if hi > lo:
        terms = _block_terms(problem, prep, prep.anchors[lo:hi], prep.candidates, lo, hi)
    else:
        terms = []
    # every process's part must need a gradient when the inputs do (the backward of the sum
    # is a collective), also with no rows or rows whose terms are constant
    link = sum(t.reshape(-1)[:1].sum() for t in (prep.anchors, prep.candidates, *problem.params))
    link = link * 0.0
    if problem.reduction == "none":
        local = sum(t.values for t in terms) if terms else prep.anchors.new_zeros((0,))
        return _ShardRows.apply(shard, local + link, b)
    sums = [t.values.sum() for t in terms] or [prep.anchors.new_zeros(())] * k
    counts = None
    if problem.reduction in DATA_DEPENDENT:
        counts = [row_counts(t, problem.reduction).detach() for t in terms]
    _, counts = _all_sum(shard, [s.detach() for s in sums], counts, k, counts is not None)
    local = sum(
        safe_divide(v, normalizer(counts[i] if counts else 0.0, problem.reduction, b))
        for i, v in enumerate(sums)
    )
    return _ShardSum.apply(shard, local + link)


def _all_sum(shard: RowShard | None, values: list, counts: list | None, k: int, counted: bool):
    """Per-component ``values`` and ``counts`` (lists of length ``k``, or empty / None where
    this process walked no row) summed over the processes of ``shard``; unchanged without one.
    ``counted``: whether the reduction counts (the result then has counts, else None)."""
    if shard is None:
        return values, counts
    ref = next((v for v in values if isinstance(v, torch.Tensor)), None)
    device = ref.device if ref is not None else None
    dtype = ref.dtype if ref is not None else torch.float64
    packed = torch.zeros(2 * k, dtype=torch.float64, device=device)
    for i, v in enumerate(values):
        packed[i] = v
    for i, c in enumerate(counts or []):
        packed[k + i] = c
    shard.all_sum_(packed)
    summed = [packed[i].to(dtype) for i in range(k)]
    return summed, [float(packed[k + i]) for i in range(k)] if counted else None


def _upstream(shard: RowShard, grad_output: torch.Tensor) -> torch.Tensor:
    """The gradient of the loss with respect to a sharded output, from the processes' parts.

    Gradients flow between processes as parts: what each process holds sums, over the
    processes, to ``parts`` times the gradient (the convention that makes DDP's mean exact).
    A sharded output's upstream gradient may come from another sharded computation (a loss
    that feeds one engine result into another), so it is summed first and divided by
    ``parts``; when every process holds the same gradient this changes nothing."""
    return shard.all_sum_(grad_output.detach().clone()) / shard.parts


class _ShardSum(torch.autograd.Function):
    """A scalar summed over the processes; each process's part gets ``parts`` times the
    upstream gradient (see :func:`_upstream`)."""

    @staticmethod
    def forward(ctx, shard: RowShard, local: torch.Tensor):
        ctx.shard = shard
        return shard.all_sum_(local.detach().clone())

    @staticmethod
    def backward(ctx, grad_output):
        return None, _upstream(ctx.shard, grad_output) * ctx.shard.parts


class _ShardRows(torch.autograd.Function):
    """Per-row values of all processes; each process's rows get ``parts`` times their upstream
    gradient (see :func:`_upstream`)."""

    @staticmethod
    def forward(ctx, shard: RowShard, local: torch.Tensor, n_rows: int):
        ctx.shard, ctx.rows = shard, shard.rows(n_rows)
        return shard.all_rows(local.detach(), n_rows)

    @staticmethod
    def backward(ctx, grad_output):
        lo, hi = ctx.rows
        grad = _upstream(ctx.shard, grad_output)[lo:hi]
        return None, grad * ctx.shard.parts, None


def _blocks(n: int, block: int, start: int = 0):
    for lo in range(start, n, block):
        yield lo, min(n, lo + block)


class _Walk:
    """One pass over the row blocks, optionally accumulating gradients."""

    def __init__(
        self,
        problem: PairProblem,
        prep: _Prepared,
        block: int,
        shared: bool,
        shard: RowShard | None = None,
    ):
        self.problem, self.prep, self.block = problem, prep, block
        # candidates are the anchors themselves: one gradient buffer serves both roles
        self.shared = shared
        # the rows this process walks (all of them without a shard)
        self.shard = shard
        n = prep.anchors.shape[0]
        self.lo, self.hi = (0, n) if shard is None else shard.rows(n)
        self.parts = 1 if shard is None else shard.parts
        self.n_components: int | None = None

    def blocks(self):
        """The row blocks ``(start, end)`` of this process's rows."""
        return _blocks(self.hi, self.block, self.lo)

    def combine(self, values: list, counts: list | None):
        """Per-component values and counts summed over the shard's processes."""
        counted = self.problem.reduction in DATA_DEPENDENT
        k = _n_components(self) if self.shard else 0
        return _all_sum(self.shard, values, counts, k, counted)

    def need(self, needs_input_grad: Sequence[bool]) -> tuple[bool, ...]:
        """(anchors, candidates, *params) flags from a Function's ``needs_input_grad``."""
        flags = tuple(needs_input_grad[1:])
        return (flags[0], *flags) if self.shared else flags

    def inputs(self, params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The tensors handed to the autograd Function, in the layout :meth:`need` reads."""
        prep = self.prep
        if prep.inside:
            a, c = prep.raw_anchors, prep.raw_candidates
        else:
            a, c = prep.anchors, prep.candidates
        head = (a,) if self.shared else (a, c)
        return (*head, *params)

    def to_raw_(self, grads):
        """Map (grad_a, grad_c, grad_p) from the prepared tensors to the raw ones, in place,
        when the preparation happened outside autograd."""
        prep = self.prep
        if not prep.inside:
            return grads
        grad_a, grad_c, grad_p = grads
        sim = self.problem.similarity
        if grad_a is not None:
            sim.prepare_grad_(grad_a, prep.raw_anchors, prep.anchors)
        if grad_c is not None and not self.shared:
            sim.prepare_grad_(grad_c, prep.raw_candidates, prep.candidates)
        return grads

    def outputs(self, grad_a, grad_c, grad_p) -> tuple:
        """Gradients in the layout of :meth:`inputs` (None for the walker)."""
        head = (grad_a,) if self.shared else (grad_a, grad_c)
        return (None, *head, *grad_p)

    def counts(self) -> list[float]:
        """Normaliser counts of every component, from a pass without gradients."""
        totals = None
        a, c = self.prep.anchors.detach(), self.prep.candidates.detach()
        with torch.no_grad():
            for start, end in self.blocks():
                terms = _block_terms(self.problem, self.prep, a[start:end], c, start, end)
                counts = [float(row_counts(t, self.problem.reduction)) for t in terms]
                totals = counts if totals is None else [x + y for x, y in zip(totals, counts)]
        return self.combine_counts(totals)

    def combine_counts(self, totals: list | None) -> list[float]:
        """A counting walk's totals summed over the shard's processes."""
        if self.shard is None:
            return totals or []
        k = _n_components(self)
        _, summed = _all_sum(self.shard, [], totals or [0.0] * k, k, True)
        return summed

    def run(self, need: tuple[bool, ...], weights: Sequence[float] | None, row_weights=None):
        """Walk all blocks.

        ``need`` says which of (anchors, candidates, *params) want gradients. ``weights`` (one
        per component, or None for 1) multiply each component; ``row_weights`` [B] multiply
        each row (used for reduction 'none'). Returns the per-component value sums, the
        per-component counts, the per-row values (for 'none') and the gradients.
        """
        problem, prep = self.problem, self.prep
        a = prep.anchors.detach()
        c = prep.candidates.detach().requires_grad_(need[1])
        params = list(problem.params)
        grad_a = torch.zeros_like(a) if need[0] else None
        grad_c = grad_a if self.shared else (torch.zeros_like(c) if need[1] else None)
        grad_p = [torch.zeros_like(p) if n else None for p, n in zip(params, need[2:])]
        wanted_params = [p for p, n in zip(params, need[2:]) if n]
        values, counts, rows = None, None, []
        for start, end in self.blocks():
            xb = a[start:end].detach().requires_grad_(need[0])
            with torch.enable_grad() if any(need) else torch.no_grad():
                terms = _block_terms(problem, prep, xb, c, start, end)
                block_values = [t.values.sum().detach() for t in terms]
                if problem.reduction == "none":
                    rows.append(sum(t.values for t in terms).detach())
                elif problem.reduction in DATA_DEPENDENT:
                    block_counts = [row_counts(t, problem.reduction).detach() for t in terms]
                    counts = (
                        block_counts
                        if counts is None
                        else [x + y for x, y in zip(counts, block_counts)]
                    )
                values = (
                    block_values
                    if values is None
                    else [x + y for x, y in zip(values, block_values)]
                )
                if any(need):
                    if row_weights is not None:
                        obj = (sum(t.values for t in terms) * row_weights[start:end]).sum()
                    else:
                        w = weights or [1.0] * len(terms)
                        obj = sum(wk * t.values.sum() for wk, t in zip(w, terms))
                    inputs = ([xb] if need[0] else []) + ([c] if need[1] else []) + wanted_params
                    if obj.requires_grad:
                        grads = torch.autograd.grad(obj, inputs, allow_unused=True)
                    else:
                        grads = [None] * len(inputs)
                    k = 0
                    if need[0]:
                        if grads[0] is not None:
                            grad_a[start:end] += grads[0]
                        k = 1
                    if need[1]:
                        if grads[k] is not None:
                            grad_c += grads[k]
                        k += 1
                    j = 0
                    for i, n in enumerate(need[2:]):
                        if n:
                            if grads[k + j] is not None:
                                grad_p[i] += grads[k + j]
                            j += 1
        return values or [], counts, rows, (grad_a, grad_c, grad_p)


def _accumulate(total: list | None, new: list) -> list:
    return new if total is None else [x + y for x, y in zip(total, new)]


class _FusedWalk(_Walk):
    """The walk for objectives with a hand-written gradient (:attr:`PairProblem.fused`).

    Per block: one matrix product into a reused buffer gives the dot products, the similarity's
    :class:`~pairloss.similarity.DotForm` turns them into scores in place, the fused objective
    writes dL/ds into a second reused buffer, and the two gradient products are accumulated in
    place (``G Y`` into the block's anchor rows, ``G^T X`` into the candidates). No autograd
    graph is built and no temporary of the block's size is allocated by the engine.
    """

    def _blocks_of_scores(self):
        a, c = self.prep.anchors.detach(), self.prep.candidates.detach()
        form = self.problem.similarity.dot_form().bind(a, c)
        height = min(self.block, self.hi - self.lo)
        buffer = a.new_empty((height, c.shape[0]))
        for start, end in self.blocks():
            s = torch.mm(a[start:end], c.T, out=buffer[: end - start])
            yield start, end, form.block_scores_(s, start), form

    def counts(self) -> list[float]:
        totals = None
        for start, end, s, _ in self._blocks_of_scores():
            terms = self.problem.fused(s, self.problem.relation.pairs(start, end), None, None)
            totals = _accumulate(
                totals, [float(row_counts(t, self.problem.reduction)) for t in terms]
            )
        return self.combine_counts(totals)

    def _grad_buffers(self, need):
        a, c = self.prep.anchors, self.prep.candidates
        grad_a = torch.zeros_like(a) if need[0] else None
        grad_c = grad_a if self.shared else (torch.zeros_like(c) if need[1] else None)
        return grad_a, grad_c

    def run(
        self,
        need: tuple[bool, ...],
        weights: Sequence[float] | None,
        row_weights=None,
        split: bool = False,
    ):
        """As :meth:`_Walk.run`. With ``split`` the components whose gradient the objective
        hands over sparsely (:meth:`RowScale.put_sparse`) are accumulated apart, unweighted:
        the gradients come back as a dict component -> (grad_a, grad_c, grad_p), the one dense
        component under its index; :class:`_SplitRefused` if more than one is dense."""
        problem = self.problem
        a, c = self.prep.anchors.detach(), self.prep.candidates.detach()
        want = need[0] or need[1]
        grad_a, grad_c = self._grad_buffers(need)
        apart: dict[int, list] = {}
        dense_k = None
        height = min(self.block, self.hi - self.lo)
        grad_buffer = a.new_empty((height, c.shape[0])) if want else None
        values, counts, rows = None, None, []
        for start, end, s, form in self._blocks_of_scores():
            b = end - start
            grad = grad_buffer[:b] if want else None
            scale = None
            if want:
                rw = None if row_weights is None else row_weights[start:end]
                scale = RowScale(b, None if weights is None else list(weights), rw, s, split)
            pairs = problem.relation.pairs(start, end)
            terms = problem.fused(s, pairs, grad, scale)
            values = _accumulate(values, [t.values.sum() for t in terms])
            if problem.reduction == "none":
                rows.append(sum(t.values for t in terms))
            elif problem.reduction in DATA_DEPENDENT:
                counts = _accumulate(counts, [row_counts(t, problem.reduction) for t in terms])
            if not want:
                continue
            if split:
                dense = [k for k in range(len(terms)) if k not in scale.sparse]
                if len(dense) > 1:
                    raise _SplitRefused
                dense_k = dense[0] if dense else dense_k
                n = s.shape[1]
                for k, g_pos in scale.sparse.items():
                    g_dot = form.dot_grad_(g_pos.clone(), s.view(-1)[pairs.pos_flat])
                    cols = (pairs.pos_flat - pairs.pos_rows * n).to(torch.int32)
                    cells = ((pairs.pos_rows + start).to(torch.int32), cols, g_dot)
                    apart.setdefault(k, []).append(cells)
            if scale.cells is not None:
                self._add_cells_(need, grad_a, grad_c, start, s, form, *scale.cells)
                continue
            g = form.dot_grad_(grad, s)
            if need[0]:
                if self.shared:
                    grad_a[start:end].addmm_(g, c)
                else:
                    torch.mm(g, c, out=grad_a[start:end])
            if need[1]:
                grad_c.addmm_(g.T, a[start:end])
        grad_p = [None] * len(problem.params)
        if split:
            return values or [], counts, rows, (dense_k, (grad_a, grad_c, grad_p), apart)
        return values or [], counts, rows, (grad_a, grad_c, grad_p)

    def _add_cells_(self, need, grad_a, grad_c, start, s, form, flat, grad_at_cells) -> None:
        """Add the gradient products of a block's dL/ds given on its cells (:meth:`RowScale.
        put_cells`) by index: ``O(cells x D)`` instead of two ``[b, N] x [N, D]`` products."""
        a, c = self.prep.anchors.detach(), self.prep.candidates.detach()
        rows = torch.div(flat, s.shape[1], rounding_mode="floor")
        cols = flat - rows * s.shape[1]
        g = form.dot_grad_(grad_at_cells.clone(), s.view(-1)[flat])[:, None]
        if need[0]:
            grad_a.index_add_(0, rows + start, g * c[cols])
        if need[1]:
            grad_c.index_add_(0, cols, g * a[rows + start])

    def add_sparse_(self, need, grad_a, grad_c, cells: list, alpha: float) -> None:
        """Add ``alpha`` times the gradient of a dL/ds given on a list of cells (row, col,
        value) into ``grad_a`` / ``grad_c``: S Y and S^T X with S sparse (compressed rows),
        never a dense [B, N] and no temporary of the inputs' size."""
        a, c = self.prep.anchors.detach(), self.prep.candidates.detach()
        rows = torch.cat([r for r, _, _ in cells])
        cols = torch.cat([k for _, k, _ in cells])
        vals = torch.cat([v for _, _, v in cells])
        cells.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sparse compressed tensors are marked beta
            if need[0]:
                grad_a.addmm_(_compressed(rows, cols, vals, a.shape[0], c.shape[0]), c, alpha=alpha)
            if need[1]:
                order = torch.argsort(cols, stable=True)
                rows, cols, vals = cols[order], rows[order], vals[order]
                del order
                grad_c.addmm_(_compressed(rows, cols, vals, c.shape[0], a.shape[0]), a, alpha=alpha)


def _compressed(rows, cols, vals, n_rows: int, n_cols: int) -> torch.Tensor:
    """A sparse [n_rows, n_cols] matrix in compressed-row form from cells sorted by row."""
    ptr = torch.zeros(n_rows + 1, dtype=rows.dtype, device=rows.device)
    torch.cumsum(torch.bincount(rows, minlength=n_rows), 0, out=ptr[1:])
    return torch.sparse_csr_tensor(ptr, cols, vals, (n_rows, n_cols))


class _SplitRefused(Exception):
    """A fused objective gave more than one component densely: a split walk cannot weight them."""


def _split_walk(walker: _FusedWalk, need, reduction: str, n_rows: int):
    """One walk for several components with data-dependent normalisers, every component but one
    handed over sparsely: the dense component's gradient is accumulated as usual, the sparse
    ones are kept as cell lists, and each is weighted by its normaliser at the end. Returns
    ``(values, counts, grads)`` or None if the objective refuses."""
    try:
        values, counts, _, (dense_k, grads, apart) = walker.run(need, None, split=True)
        refused = False
    except _SplitRefused:
        refused = True
    if walker.shard is not None:
        # every process must take the same path: one refusal sends all to the counting walk
        refused = bool(walker.shard.all_sum_(torch.tensor([float(refused)])) > 0)
    if refused:
        return None
    values, counts = walker.combine(values, counts)
    divisors = [
        normalizer(counts[k] if counts is not None else 0.0, reduction, n_rows)
        for k in range(len(values))
    ]
    grad_a, grad_c, _ = grads
    inv_dense = _inv(divisors[dense_k]) if dense_k is not None else 0.0
    for t in {id(t): t for t in (grad_a, grad_c) if t is not None}.values():
        t.mul_(inv_dense)
    for k, cells in apart.items():
        walker.add_sparse_(need, grad_a, grad_c, cells, _inv(divisors[k]))
    return values, counts, grads


def _first_order_only(create_graph: bool) -> None:
    """The blocked engine's gradients are numbers computed in the forward pass, not a graph:
    refuse a backward that asks for one (``create_graph=True``: double backward, gradient
    penalties, second-order methods) instead of returning gradients of the gradient that are
    silently zero."""
    if create_graph:
        raise PairLossError(
            "engine: the blocked engine gives first-order gradients only, but the backward was "
            "asked for a graph (create_graph=True, double backward or higher derivatives); "
            "expected engine='dense', which differentiates to any order"
        )


class _FirstOrder(torch.autograd.Function):
    """Base of the blocked engine's Functions: no forward-mode AD (``jvp``) and no functorch
    transforms (``torch.func.grad``, ``vmap``, ...); both are refused with a
    :class:`PairLossError` that names the dense engine."""

    @staticmethod
    def jvp(ctx, *grad_inputs):
        raise PairLossError(
            "engine: the blocked engine has no forward-mode gradients (torch.func.jvp, "
            "torch.autograd.forward_ad); expected engine='dense'"
        )


class _BlockedScalar(_FirstOrder):
    """Scalar-reduced blocked loss: gradients are computed in forward, scaled in backward."""

    @staticmethod
    def forward(ctx, walker: _Walk, anchors, *rest):
        problem = walker.problem
        need = walker.need(ctx.needs_input_grad)
        n_rows = anchors.shape[0]
        reduction = problem.reduction
        weights = None
        done = None
        if reduction in DATA_DEPENDENT and any(need) and _n_components(walker) > 1:
            # several components with their own data-dependent normalisers: weight their
            # gradients apart in one walk, or count them first so that one walk combines them
            if problem.counts is None and isinstance(walker, _FusedWalk):
                done = _split_walk(walker, need, reduction, n_rows)
            if done is None:
                known = problem.counts() if problem.counts is not None else walker.counts()
                weights = [_inv(normalizer(ct, reduction, n_rows)) for ct in known]
            else:
                weights = []  # already weighted
        if done is not None:
            values, counts, grads = done
        else:
            values, counts, _, grads = walker.run(need, weights)
            values, counts = walker.combine(values, counts)
        divisors = [
            normalizer(counts[k] if counts is not None else 0.0, reduction, n_rows)
            for k in range(len(values))
        ]
        loss = sum(_div(v, d) for v, d in zip(values, divisors))
        if not isinstance(loss, torch.Tensor):
            loss = anchors.new_zeros(())
        # one common divisor (single component, or mean/sum) is applied to the gradients here;
        # under a row shard they are this process's share, counted ``parts`` times
        scale = walker.parts
        if weights is None:
            scale *= _inv(divisors[0]) if divisors else 0.0
        if scale != 1:
            grad_a, grad_c, grad_p = grads
            for t in {id(t): t for t in (grad_a, grad_c, *grad_p) if t is not None}.values():
                t.mul_(scale)
        ctx.walker, ctx.grads = walker, walker.to_raw_(grads) if any(need) else grads
        return loss.detach().clone()

    @staticmethod
    def backward(ctx, grad_output):
        _first_order_only(torch.is_grad_enabled())
        grad_a, grad_c, grad_p = ctx.grads
        if ctx.walker.shard is not None:
            grad_output = _upstream(ctx.walker.shard, grad_output)
        if bool(grad_output == 1):
            # the usual loss.backward(): hand the buffers over without a copy (autograd copies
            # them if it needs to, since this context still holds them)
            return ctx.walker.outputs(grad_a, grad_c, grad_p)

        def scaled(t):
            return None if t is None else t * grad_output.to(t.dtype)

        return ctx.walker.outputs(scaled(grad_a), scaled(grad_c), [scaled(t) for t in grad_p])


class _BlockedRows(_FirstOrder):
    """Per-row (reduction 'none') blocked loss: the backward walks the blocks again."""

    @staticmethod
    def forward(ctx, walker: _Walk, anchors, *rest):
        _, _, rows, _ = walker.run((False,) * (2 + len(walker.problem.params)), None)
        ctx.walker = walker
        ctx.need = walker.need(ctx.needs_input_grad)
        local = torch.cat(rows) if rows else anchors.new_zeros((0,))
        if walker.shard is not None:
            return walker.shard.all_rows(local, anchors.shape[0])
        return local

    @staticmethod
    def backward(ctx, grad_output):
        _first_order_only(torch.is_grad_enabled())
        walker = ctx.walker
        if walker.shard is not None:
            grad_output = _upstream(walker.shard, grad_output)
        _, _, _, grads = walker.run(ctx.need, None, row_weights=grad_output)
        if walker.parts != 1:
            grad_a, grad_c, grad_p = grads
            for t in {id(t): t for t in (grad_a, grad_c, *grad_p) if t is not None}.values():
                t.mul_(walker.parts)
        return walker.outputs(*walker.to_raw_(grads))


def _components(problem: PairProblem, prep: _Prepared) -> int:
    """How many components (:class:`RowTerms`) the objective returns, from its first row."""
    a, c = prep.anchors.detach(), prep.candidates.detach()
    end = min(a.shape[0], 1)
    with torch.no_grad():
        return len(_block_terms(problem, prep, a[:end], c, 0, end))


def _n_components(walker: _Walk) -> int:
    if walker.n_components is None:
        walker.n_components = _components(walker.problem, walker.prep)
    return walker.n_components


def _inv(d: float) -> float:
    return 1.0 / d if d > 0 else 0.0


def _div(v: torch.Tensor, d: float) -> torch.Tensor:
    return v / d if d > 0 else v * 0.0


def choose_engine(n_anchors: int, n_candidates: int, engine: str, transformed: bool = False) -> str:
    """'dense' or 'blocked' for ``engine='auto'`` by size (always 'dense' under a functorch
    transform or forward-mode AD, ``transformed``); a forced choice is returned as is
    ('blocked' there is refused)."""
    check_choice(engine, "engine", ENGINES)
    if transformed:
        if engine == "blocked":
            raise PairLossError(
                "engine: the blocked engine does not run under torch.func transforms (grad, "
                "vmap, jvp, ...) or forward-mode AD; expected engine='dense' or 'auto'"
            )
        return "dense"
    if engine != "auto":
        return engine
    return "dense" if n_anchors * n_candidates <= DENSE_MAX_CELLS else "blocked"


def _entangled(params: Sequence[torch.Tensor]) -> bool:
    """Whether a parameter with a history (e.g. DCLW's batch statistic) was computed from
    another parameter that wants a gradient (e.g. a learnable similarity's scale). The blocked
    walk differentiates each block with respect to every parameter as a whole (total
    derivatives), so it would count the path through the first twice; the dense engine
    differentiates the graph once."""
    wanted = {id(p) for p in params if p.grad_fn is None and p.requires_grad}
    if not wanted:
        return False
    stack = [p.grad_fn for p in params if p.grad_fn is not None]
    seen = set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if id(getattr(fn, "variable", None)) in wanted:
            return True
        stack.extend(f for f, _ in fn.next_functions)
    return False


def _transformed(*inputs: torch.Tensor) -> bool:
    """Whether a functorch transform (``torch.func.grad``, ``vmap``, ``jvp``, ...) is active or
    one of ``inputs`` carries a forward-mode tangent (``torch.autograd.forward_ad``)."""
    if torch._C._functorch.peek_interpreter_stack() is not None:
        return True
    return any(torch.autograd.forward_ad.unpack_dual(t).tangent is not None for t in inputs)


def engine_for(engine: str, anchors: torch.Tensor, candidates: torch.Tensor | None = None) -> str:
    """The engine, 'dense' or 'blocked', that :func:`run` takes for ``anchors`` [B, D] and
    ``candidates`` [N, D] (None: the anchors themselves) under ``engine``, transforms and
    forward-mode AD included: for losses whose dense form differs from their blocked one."""
    n_cand = anchors.shape[0] if candidates is None else candidates.shape[0]
    inputs = (anchors,) if candidates is None else (anchors, candidates)
    return choose_engine(anchors.shape[0], n_cand, engine, transformed=_transformed(*inputs))


def default_block_size(n_candidates: int, device: torch.device | str | None = None) -> int:
    """Rows per block so that one block holds about ``BLOCK_CELLS`` scores (``BLOCK_CELLS_CUDA``
    on a GPU, where a thin block costs kernel launches rather than cache misses), and at least
    ``MIN_BLOCK_ROWS``: with very many candidates (e.g. 100,000 class proxies) every block reads
    all candidates and writes a full candidate gradient, so a few hundred thousand cells more per
    block cost less than many thin, memory-bound blocks."""
    on_gpu = device is not None and torch.device(device).type == "cuda"
    cells = BLOCK_CELLS_CUDA if on_gpu else BLOCK_CELLS
    return max(MIN_BLOCK_ROWS, cells // max(1, n_candidates))


def run(
    problem: PairProblem,
    anchors: torch.Tensor,
    candidates: torch.Tensor | None = None,
    engine: str = "auto",
    block_size: int | None = None,
) -> torch.Tensor:
    """Evaluate ``problem`` on raw ``anchors`` [B, D] and ``candidates`` [N, D].

    ``candidates=None`` compares the anchors with themselves (the relation should then drop
    self-pairs). Returns a scalar, or [B] for reduction 'none', in the anchors' dtype.
    """
    check_reduction(problem.reduction)
    block_size = check_block_size(block_size)
    problem = _with_similarity_params(problem)
    n_cand = anchors.shape[0] if candidates is None else candidates.shape[0]
    transformed = _transformed(anchors, *([] if candidates is None else [candidates]))
    chosen = choose_engine(anchors.shape[0], n_cand, engine, transformed=transformed)
    if chosen == "blocked" and torch.is_grad_enabled() and _entangled(problem.params):
        if engine == "blocked":
            raise PairLossError(
                "engine: a tensor this loss reads (a batch statistic) was computed from a "
                "learnable parameter that the blocked walk differentiates as well, which it "
                "cannot separate; expected engine='dense' or 'auto'"
            )
        chosen = "dense"
    fused = chosen == "blocked" and _fusable(problem)
    prep = _Prepared(problem, anchors, candidates, inside=fused)
    shard = active_shard()
    if chosen == "dense":
        out = _dense(problem, prep) if shard is None else _dense_sharded(problem, prep, shard)
    else:
        walk = _FusedWalk if fused else _Walk
        walker = walk(
            problem,
            prep,
            block_size or default_block_size(n_cand, anchors.device),
            shared=candidates is None,
            shard=shard,
        )
        fn = _BlockedRows if problem.reduction == "none" else _BlockedScalar
        inputs = walker.inputs(tuple(problem.params))
        if torch.is_grad_enabled():
            out = fn.apply(walker, *inputs)
        else:
            out = fn.forward(_NoGradCtx(len(inputs)), walker, *inputs)
    return check_result(out.to(anchors.dtype), anchors)


def _with_similarity_params(problem: PairProblem) -> PairProblem:
    """``problem`` with the similarity's learnable parameters (e.g. a
    :class:`~pairloss.similarity.ScaledSimilarity`'s scale and bias) among ``params``, once
    each: the blocked walk differentiates only the tensors listed there, so a loss that lists
    none of them would silently give those parameters no gradient (and a loss combining a
    walk with terms outside it a wrong one)."""
    listed = {id(p) for p in problem.params}
    extra = tuple(
        p for p in problem.similarity.parameters() if p.requires_grad and id(p) not in listed
    )
    if not extra:
        return problem
    return replace(problem, params=(*problem.params, *extra))


def _fusable(problem: PairProblem) -> bool:
    """Whether the blocked engine can run ``problem.fused``: a fused form exists (a loss only
    gives one for settings it covers, its miner included: the fused form applies the miner
    itself), scores that are a function of dot products, a sparse relation, and no parameter
    that wants a gradient (the fused objectives differentiate with respect to the scores only)."""
    if problem.fused is None:
        return False
    if problem.similarity.dot_form() is None:
        return False
    if torch.is_grad_enabled() and any(p.requires_grad for p in problem.params):
        return False
    return problem.relation.pairs(0, 0) is not None


class _NoGradCtx:
    """Stands in for autograd's ctx when no gradient is wanted."""

    def __init__(self, n_inputs: int):
        self.needs_input_grad = (False,) * (1 + n_inputs)


# --------------------------------------------------------------------------------------------
# Slates: item pairs within each query
# --------------------------------------------------------------------------------------------
#
# A ranking loss on a slate of scores [Q, L] (Q queries, L items each) compares items of the same
# query in pairs. Its pairwise quantities form [Q, L, L], but the loss is row-decomposable in
# the engine's sense: item i's term depends on row i of its query's pair matrix (a sum over
# j, a log-sum-exp, an approximate rank, ...). So the same two engines serve slates:
#
# - dense: the objective sees all rows at once ([Q, L, L] cells); autograd differentiates it;
# - blocked: the objective sees rows start:end of every query ([Q, b, L] cells); each block's
#   gradient with respect to its rows and to all scores is taken at once and accumulated, and
#   the backward pass only scales it per query. Memory is O(Q x b x L); nothing of size
#   [Q, L, L] is held.
#
# The objective returns, per (query, row), the sum of the row's terms and the number of terms.
# Per-item data (relevance, gains, positions) is held by the objective; it reads the rows
# start:end itself.

SlateObjective = Callable[[torch.Tensor, torch.Tensor, int, int], tuple[torch.Tensor, torch.Tensor]]
"""``f(s_rows, s, start, end) -> (values, counts)``: ``s_rows`` [Q, b] the scores of items
``start:end`` of every query, ``s`` [Q, L] all scores (both differentiable); ``values`` [Q, b]
the per-row sums of the loss terms, ``counts`` [Q, b] the number of terms of each row."""

SlateFused = Callable[
    [torch.Tensor, torch.Tensor, int, int, bool],
    tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None],
]
"""A hand-differentiated form of a :data:`SlateObjective`: ``f(s_rows, s, start, end, grad)
-> (values, g_rows, g_cols)`` on plain tensors; ``values`` [Q, b] as the objective's, and, when
``grad``, the derivatives of ``values.sum()`` with respect to ``s_rows`` ([Q, b]) and ``s``
([Q, L]). It must give the objective's values (it has no counts: a loss that runs a fused form
knows its counts without the scores)."""


def default_slate_block(n_queries: int, n_items: int, device=None) -> int:
    """Rows per block of a slate walk so that a block holds about ``BLOCK_CELLS`` pair cells
    (``BLOCK_CELLS_CUDA`` on a GPU), at least one row."""
    on_gpu = device is not None and torch.device(device).type == "cuda"
    cells = BLOCK_CELLS_CUDA if on_gpu else BLOCK_CELLS
    return max(1, min(n_items, cells // max(1, n_queries * n_items)))


def run_slate(
    objective: SlateObjective,
    scores: torch.Tensor,
    engine: str = "auto",
    block_size: int | None = None,
    fused: SlateFused | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Evaluate a slate objective on ``scores`` [Q, L].

    Returns ``(values, counts)``: ``values`` [Q], the sum of every query's terms
    (differentiable with respect to ``scores``), and ``counts`` [Q], the number of terms of each
    query (no gradient; None when the blocked engine ran ``fused``). ``engine``: "dense" (one
    block of all rows, autograd), "blocked" (row blocks of ``block_size`` items, default
    :func:`default_slate_block`; gradients computed in the forward pass, by ``fused`` when
    given), or "auto" (dense when Q x L x L is at most ``DENSE_MAX_CELLS``, and always under a
    ``torch.func`` transform or forward-mode AD). As everywhere, the blocked engine gives
    first-order gradients only: ``create_graph=True``, forward-mode AD and ``torch.func`` with a
    forced ``engine="blocked"`` raise :class:`~pairloss.errors.PairLossError`.
    """
    if block_size is not None and (
        isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1
    ):
        raise PairLossError(f"block_size: expected a positive int, got {block_size!r}")
    n_queries, n_items = scores.shape
    chosen = choose_engine(n_queries * n_items, n_items, engine, transformed=_transformed(scores))
    if chosen == "dense":
        values, counts = objective(scores, scores, 0, n_items)
        return values.sum(dim=1), counts.detach().sum(dim=1).to(values.dtype)
    block = block_size or default_slate_block(n_queries, n_items, scores.device)
    walk = (objective, fused)
    if torch.is_grad_enabled() and scores.requires_grad:
        return _SlateBlocked.apply(walk, block, scores)
    values, counts, _ = _slate_walk(walk, block, scores.detach(), need=False)
    return values, counts


def _slate_walk(walk, block: int, s: torch.Tensor, need: bool):
    """One pass over the item blocks of every query: per-query sums and counts, and (``need``)
    the gradient of the per-query sums with respect to the scores, [Q, L]."""
    objective, fused = walk
    n_queries, n_items = s.shape
    values = s.new_zeros(n_queries)
    grad = torch.zeros_like(s) if need else None
    if fused is not None:
        for start, end in _blocks(n_items, block):
            v, g_rows, g_cols = fused(s[:, start:end], s, start, end, need)
            values += v.sum(dim=1)
            if need:
                grad += g_cols
                grad[:, start:end] += g_rows
        return values, None, grad
    counts = s.new_zeros(n_queries)
    for start, end in _blocks(n_items, block):
        with torch.enable_grad() if need else torch.no_grad():
            rows = s[:, start:end].detach().requires_grad_(need)
            cols = s.detach().requires_grad_(need)
            v, c = objective(rows, cols, start, end)
            values += v.detach().sum(dim=1)
            counts += c.detach().sum(dim=1).to(s.dtype)
            if need and v.requires_grad:
                g_rows, g_cols = torch.autograd.grad(v.sum(), [rows, cols], allow_unused=True)
                if g_cols is not None:
                    grad += g_cols
                if g_rows is not None:
                    grad[:, start:end] += g_rows
    return values, counts, grad


class _SlateBlocked(_FirstOrder):
    """Per-query sums of a blocked slate walk: the gradient is computed in forward (one walk)
    and only scaled per query in backward (each query's scores reach only its own sum); first
    order only, as every blocked walk."""

    @staticmethod
    def forward(ctx, walk, block: int, scores: torch.Tensor):
        values, counts, grad = _slate_walk(walk, block, scores.detach(), need=True)
        ctx.grad = grad
        if counts is not None:
            ctx.mark_non_differentiable(counts)
        return values, counts

    @staticmethod
    def backward(ctx, grad_values, grad_counts):
        _first_order_only(torch.is_grad_enabled())
        return None, None, ctx.grad * grad_values[:, None].to(ctx.grad.dtype)
