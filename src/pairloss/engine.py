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

Both engines run the same objective, so they agree to rounding. The blocked engine supports
first-order gradients only (no double backward, no forward-mode AD); it runs under
``torch.no_grad()`` without building any graph. fp16/bf16 inputs are computed in fp32 and the
result is returned in the input dtype.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .errors import PairLossError
from .objectives.terms import RowScale, RowTerms
from .reduction import DATA_DEPENDENT, check_reduction, normalizer, reduce_terms, row_counts
from .relations import BlockPairs, Relation
from .similarity import Similarity

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
        params: learnable tensors that the objective or the similarity read (they receive
            gradients from the blocked engine too).
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
    pos, neg = _block_masks(problem, prep, s, start, end)
    return problem.objective(s, pos, neg, start, end)


def _dense(problem: PairProblem, prep: _Prepared) -> torch.Tensor:
    b = prep.anchors.shape[0]
    terms = _block_terms(problem, prep, prep.anchors, prep.candidates, 0, b)
    return reduce_terms(terms, problem.reduction, b)


def _blocks(n: int, block: int):
    for start in range(0, n, block):
        yield start, min(n, start + block)


class _Walk:
    """One pass over the row blocks, optionally accumulating gradients."""

    def __init__(self, problem: PairProblem, prep: _Prepared, block: int, shared: bool):
        self.problem, self.prep, self.block = problem, prep, block
        # candidates are the anchors themselves: one gradient buffer serves both roles
        self.shared = shared

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
            for start, end in _blocks(a.shape[0], self.block):
                terms = _block_terms(self.problem, self.prep, a[start:end], c, start, end)
                counts = [float(row_counts(t, self.problem.reduction)) for t in terms]
                totals = counts if totals is None else [x + y for x, y in zip(totals, counts)]
        return totals or []

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
        for start, end in _blocks(a.shape[0], self.block):
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
        rows = min(self.block, a.shape[0])
        buffer = a.new_empty((rows, c.shape[0]))
        for start, end in _blocks(a.shape[0], self.block):
            s = torch.mm(a[start:end], c.T, out=buffer[: end - start])
            yield start, end, form.block_scores_(s, start), form

    def counts(self) -> list[float]:
        totals = None
        for start, end, s, _ in self._blocks_of_scores():
            terms = self.problem.fused(s, self.problem.relation.pairs(start, end), None, None)
            totals = _accumulate(
                totals, [float(row_counts(t, self.problem.reduction)) for t in terms]
            )
        return totals or []

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
        grad_buffer = a.new_empty((min(self.block, a.shape[0]), c.shape[0])) if want else None
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
    except _SplitRefused:
        return None
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


class _BlockedScalar(torch.autograd.Function):
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
        divisors = [
            normalizer(counts[k] if counts is not None else 0.0, reduction, n_rows)
            for k in range(len(values))
        ]
        loss = sum(_div(v, d) for v, d in zip(values, divisors))
        if not isinstance(loss, torch.Tensor):
            loss = anchors.new_zeros(())
        if weights is None:
            # one common divisor (single component, or mean/sum): apply it to the gradients
            scale = _inv(divisors[0]) if divisors else 0.0
            grad_a, grad_c, grad_p = grads
            for t in {id(t): t for t in (grad_a, grad_c, *grad_p) if t is not None}.values():
                t.mul_(scale)
        ctx.walker, ctx.grads = walker, walker.to_raw_(grads) if any(need) else grads
        return loss.detach().clone()

    @staticmethod
    def backward(ctx, grad_output):
        grad_a, grad_c, grad_p = ctx.grads
        if bool(grad_output == 1):
            # the usual loss.backward(): hand the buffers over without a copy (autograd copies
            # them if it needs to, since this context still holds them)
            return ctx.walker.outputs(grad_a, grad_c, grad_p)

        def scaled(t):
            return None if t is None else t * grad_output.to(t.dtype)

        return ctx.walker.outputs(scaled(grad_a), scaled(grad_c), [scaled(t) for t in grad_p])


class _BlockedRows(torch.autograd.Function):
    """Per-row (reduction 'none') blocked loss: the backward walks the blocks again."""

    @staticmethod
    def forward(ctx, walker: _Walk, anchors, *rest):
        _, _, rows, _ = walker.run((False,) * (2 + len(walker.problem.params)), None)
        ctx.walker = walker
        ctx.need = walker.need(ctx.needs_input_grad)
        return torch.cat(rows) if rows else anchors.new_zeros((0,))

    @staticmethod
    def backward(ctx, grad_output):
        _, _, _, grads = ctx.walker.run(ctx.need, None, row_weights=grad_output)
        return ctx.walker.outputs(*ctx.walker.to_raw_(grads))


def _n_components(walker: _Walk) -> int:
    prep = walker.prep
    a, c = prep.anchors.detach(), prep.candidates.detach()
    end = min(a.shape[0], 1)
    with torch.no_grad():
        return len(_block_terms(walker.problem, prep, a[:end], c, 0, end))


def _inv(d: float) -> float:
    return 1.0 / d if d > 0 else 0.0


def _div(v: torch.Tensor, d: float) -> torch.Tensor:
    return v / d if d > 0 else v * 0.0


def choose_engine(n_anchors: int, n_candidates: int, engine: str) -> str:
    """'dense' or 'blocked' for ``engine='auto'`` by size; a forced choice is returned as is."""
    if engine not in ("auto", "dense", "blocked"):
        raise PairLossError(f"engine: expected 'auto', 'dense' or 'blocked', got {engine!r}")
    if engine != "auto":
        return engine
    return "dense" if n_anchors * n_candidates <= DENSE_MAX_CELLS else "blocked"


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
    if block_size is not None and (not isinstance(block_size, int) or block_size < 1):
        raise PairLossError(f"block_size: expected a positive int, got {block_size!r}")
    n_cand = anchors.shape[0] if candidates is None else candidates.shape[0]
    chosen = choose_engine(anchors.shape[0], n_cand, engine)
    fused = chosen == "blocked" and _fusable(problem)
    prep = _Prepared(problem, anchors, candidates, inside=fused)
    if chosen == "dense":
        out = _dense(problem, prep)
    else:
        walk = _FusedWalk if fused else _Walk
        walker = walk(
            problem,
            prep,
            block_size or default_block_size(n_cand, anchors.device),
            shared=candidates is None,
        )
        fn = _BlockedRows if problem.reduction == "none" else _BlockedScalar
        inputs = walker.inputs(tuple(problem.params))
        if torch.is_grad_enabled():
            out = fn.apply(walker, *inputs)
        else:
            out = fn.forward(_NoGradCtx(len(inputs)), walker, *inputs)
    return out.to(anchors.dtype)


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
