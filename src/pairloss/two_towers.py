"""The two-tower engine: losses whose rows are coupled through column or batch statistics.

A :class:`TowerProblem` scores one or more *panels* of a batch: a panel ``p`` compares the rows
of one tensor (its anchors, e.g. the image embeddings X [B, D]) with all rows of another (its
candidates, e.g. the text embeddings Y [N, D]; N > B when Y carries hard-negative rows), and row
``i`` of every panel belongs to example ``i``. Its objective (:class:`TowerObjective`) reads a
block of rows of every panel and returns

- row statistics ``R`` [b, K] (a row's log-sum-exp, its positive logit, ...), and
- per panel, optional column partials ``C_p`` [N_p, M] (a column's log-sum-exp over the
  block's rows, merged over blocks by ``logaddexp``, or a column sum, merged by ``+``),

and a small function ``combine(R, C)`` turns the statistics of the whole batch into the loss.
CLIP is the row statistics ``(LSE_j z_ij, z_ii)`` and the column log-sum-exp of the same
scores; MV-InfoNCE, uniformity and the multiple-direction sentence losses are others.

:func:`run_towers` evaluates it:

- ``engine="dense"`` scores every panel whole and lets autograd differentiate; the reference.
- ``engine="blocked"`` walks the rows in blocks twice: the first walk (no gradient) gathers the
  statistics; ``combine`` is differentiated with respect to them (a [B, K] and [N, M] problem);
  the second walk scores each block again and hands ``dL/dR`` and ``dL/dC`` back to it, so that
  each block adds its share to the gradients of the anchors, the candidates and the objective's
  parameters. Nothing of size B x N is held: memory is O(block x N + (B + N) x D). The work is
  four matrix products (the scores twice, and the two gradient products) where any exact method
  needs three; a loss whose ``combine`` is linear in ``R`` and that has no column statistics
  (:attr:`TowerObjective.linear`) needs one walk and the three products only.

An objective may give a hand-differentiated form of its block (:meth:`TowerObjective.fused`):
the blocked walks then write the scores into one reused buffer per panel with ``torch.mm``, let
the objective write ``dL/ds`` into it in place, and accumulate the two gradient products in
place; no autograd graph is built. The scores must then be the dot products of the prepared
rows (cosine or dot similarity).

Both engines run the same objective and agree to rounding (tests hold them equal). The blocked
engine gives first-order gradients only (a backward with ``create_graph=True``, forward-mode AD
and torch.func transforms are refused with a PairLossError naming ``engine='dense'``; under a
transform ``engine='auto'`` runs dense). A loss that leaves the range of its dtype (raw dot
products of huge vectors in float32) raises a PairLossError naming the first tensor. fp16/bf16 inputs are computed in fp32 and the loss is
returned in the input dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .engine import (
    BLOCK_CELLS_CUDA,
    MIN_BLOCK_ROWS,
    _first_order_only,
    _FirstOrder,
    _transformed,
    choose_engine,
    compute_dtype,
)
from .errors import PairLossError
from .similarity import DotForm, Similarity
from .validation import check_result

LOGSUMEXP, SUM = "logsumexp", "sum"

# scores per block on a CPU: larger than the pair engine's, since a two-tower block runs a few
# passes per panel and each pass is a synchronisation point of the threads (fewer, larger
# blocks are faster when the cores are shared); at most 3 buffers of this size are alive
TOWER_BLOCK_CELLS = 1 << 22


def tower_block_rows(n_cells_per_row: int, device: torch.device | str) -> int:
    """Rows per block: about ``TOWER_BLOCK_CELLS`` scores on a CPU (the pair engine's
    ``BLOCK_CELLS_CUDA`` on a GPU), at least ``MIN_BLOCK_ROWS``."""
    on_gpu = torch.device(device).type == "cuda"
    cells = BLOCK_CELLS_CUDA if on_gpu else TOWER_BLOCK_CELLS
    return max(MIN_BLOCK_ROWS, cells // max(1, n_cells_per_row))


@dataclass
class BlockGrads:
    """What the second walk hands a fused block: dL/dR of the block's rows, the block's row
    statistics from the first walk (None in a single walk), and, per panel, dL/dC and the merged
    column statistics (None where a panel has none)."""

    grad_rows: torch.Tensor
    rows: torch.Tensor | None
    grad_cols: list[torch.Tensor | None]
    cols: list[torch.Tensor | None]


class TowerObjective:
    """What a two-tower loss computes on a block of rows (see the module docstring).

    Attributes:
        panels: ``(anchor tensor, candidate tensor)`` index pairs into the tensors handed to
            :func:`run_towers`; panel ``p``'s block of rows ``start:end`` is
            ``s_p = sim(T[a_p][start:end], T[c_p])`` of shape [b, N_p].
        col_merge: how column partials of successive blocks merge: ``"logsumexp"`` or
            ``"sum"``, one for all columns, or a tuple with one per column statistic.
        linear: True when ``combine`` is linear in the row statistics and no panel has column
            partials: the blocked engine then needs a single walk.
        n_stats: K, the number of row statistics (read for ``linear`` objectives).
    """

    panels: tuple[tuple[int, int], ...] = ((0, 1),)
    col_merge: str | tuple[str, ...] = LOGSUMEXP
    linear: bool = False
    n_stats: int = 1

    def params(self) -> Sequence[torch.Tensor]:
        """Learnable tensors the block or ``combine`` read (they receive gradients)."""
        return ()

    def block(
        self, s: list[torch.Tensor], start: int, end: int
    ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """Row statistics [b, K] and per-panel column partials ([N_p, M] or None) of rows
        ``start:end`` from the panels' scores ``s`` (one [b, N_p] tensor per panel),
        differentiable in ``s`` and in :meth:`params`."""
        raise NotImplementedError

    def combine(self, rows: torch.Tensor, cols: list[torch.Tensor | None]) -> torch.Tensor:
        """The loss (a scalar) from the statistics of all rows [B, K] and columns."""
        raise NotImplementedError

    def fusable(self) -> bool:
        """Whether :meth:`fused` covers this objective's settings."""
        return False

    def bind(self, tensors: list[torch.Tensor]) -> None:
        """Called with the prepared (detached) tensors before a fused walk."""

    def fused(
        self, s: list[torch.Tensor], start: int, end: int, grads: BlockGrads | None
    ) -> tuple[torch.Tensor, list, list, list]:
        """The hand-differentiated block (called only when :meth:`fusable`). ``s`` are reused
        buffers holding the panels' scores, which the method may overwrite. Returns ``(rows,
        col_partials, grad_s, param_grads)``: without ``grads`` the statistics (and empty
        lists); with ``grads`` the row statistics, dL/ds_p per panel (tensors of the shape of
        ``s_p``; they may be ``s_p`` itself) and one gradient (or None) per :meth:`params`
        entry."""
        raise NotImplementedError


def _merge(total, part, how):
    if part is None:
        return total
    if total is None:
        return part.clone()
    modes = (how,) * part.shape[1] if isinstance(how, str) else how
    for k, mode in enumerate(modes):
        if mode == LOGSUMEXP:
            total[:, k] = torch.logaddexp(total[:, k], part[:, k])
        else:
            total[:, k] += part[:, k]
    return total


def _check_tensors(tensors: Sequence[torch.Tensor], names: Sequence[str]) -> None:
    first = tensors[0]
    for t, name in zip(tensors, names):
        if t.device != first.device:
            raise PairLossError(
                f"{name}: is on device {t.device} but {names[0]} is on {first.device}; "
                "expected every input on the same device"
            )
        if t.dtype != first.dtype:
            raise PairLossError(
                f"{name}: has dtype {t.dtype} but {names[0]} has {first.dtype}; "
                "expected the same dtype"
            )


class _Runner:
    """Prepared tensors, their block walks and the gradients they accumulate."""

    def __init__(self, objective, similarity, tensors, n_rows, block, fused):
        self.objective, self.sim = objective, similarity
        self.tensors = [t.detach() for t in tensors]
        self.n_rows, self.block, self.use_fused = n_rows, block, fused
        # the objective's parameters, then the similarity's (a learnable scale): the fused walk
        # runs only without the latter, and hands back one gradient per objective parameter
        self.params = list(objective.params()) + list(similarity.parameters())

    def _blocks(self):
        for start in range(0, self.n_rows, self.block):
            yield start, min(self.n_rows, start + self.block)

    def _score_blocks(self):
        """(start, end, scores of every panel) per block; into reused buffers when fused."""
        data, panels = self.tensors, self.objective.panels
        if not self.use_fused:
            for start, end in self._blocks():
                yield start, end, [self.sim.matrix(data[a][start:end], data[c]) for a, c in panels]
            return
        form = self.sim.dot_form()
        rows = min(self.block, self.n_rows)
        buffers = [data[a].new_empty((rows, data[c].shape[0])) for a, c in panels]
        for start, end in self._blocks():
            s = []
            for (a, c), buf in zip(panels, buffers):
                out = torch.mm(data[a][start:end], data[c].T, out=buf[: end - start])
                s.append(form.scores_(out))
            yield start, end, s

    def stats(self):
        """Walk 1: the row statistics [B, K] and the merged column statistics."""
        rows, cols = [], [None] * len(self.objective.panels)
        how = self.objective.col_merge
        with torch.no_grad():
            for start, end, s in self._score_blocks():
                if self.use_fused:
                    r, c, _, _ = self.objective.fused(s, start, end, None)
                else:
                    r, c = self.objective.block(s, start, end)
                rows.append(r)
                cols = [_merge(t, p, how) for t, p in zip(cols, c)]
        return torch.cat(rows), cols

    def gradients(self, need, grad_rows, rows, grad_cols, cols, rows_out):
        """Walk 2: dL/d(tensor) and dL/d(param) given dL/dR and dL/dC (and the walk-1
        statistics ``rows`` and ``cols``); appends each block's row statistics to
        ``rows_out`` when given."""
        grads = [torch.zeros_like(t) if n else None for t, n in zip(self.tensors, need)]
        pgrads = [None] * len(self.params)
        walk = self._fused_block if self.use_fused else self._autograd_block
        blocks = self._score_blocks() if self.use_fused else self._blocks()
        for item in blocks:
            start, end = item[0], item[1]
            bg = BlockGrads(
                grad_rows[start:end],
                None if rows is None else rows[start:end],
                grad_cols,
                cols,
            )
            r, pg = walk(item, bg, grads)
            if rows_out is not None:
                rows_out.append(r)
            for i, g in enumerate(pg):
                if g is not None:
                    pgrads[i] = g if pgrads[i] is None else pgrads[i] + g
        return grads, pgrads

    def _fused_block(self, item, bg, grads):
        start, end, s = item
        data, form = self.tensors, self.sim.dot_form()
        r, _, gs, pg = self.objective.fused(s, start, end, bg)
        for (a, c), g in zip(self.objective.panels, gs):
            g = form.dot_grad_(g, g)
            if grads[a] is not None:
                grads[a][start:end].addmm_(g, data[c])
            if grads[c] is not None:
                grads[c].addmm_(g.T, data[a][start:end])
        return r, pg

    def _autograd_block(self, item, bg, grads):
        start, end = item
        data, panels = self.tensors, self.objective.panels
        wanted = [p for p in self.params if p.requires_grad]
        with torch.enable_grad():
            anchors = {
                a: data[a][start:end].detach().requires_grad_(grads[a] is not None)
                for a, _ in panels
            }
            cands = {c: data[c].detach().requires_grad_(grads[c] is not None) for _, c in panels}
            s = [self.sim.matrix(anchors[a], cands[c]) for a, c in panels]
            r, c = self.objective.block(s, start, end)
            obj = (r * bg.grad_rows).sum()
            for p, part in enumerate(c):
                if part is not None and bg.grad_cols[p] is not None:
                    w = self._partial_weight(part.detach(), bg.grad_cols[p], bg.cols[p])
                    obj = obj + (part * w).sum()
            leaves = [t for t in (*anchors.values(), *cands.values()) if t.requires_grad]
            got = []
            if obj.requires_grad and leaves + wanted:
                got = list(torch.autograd.grad(obj, leaves + wanted, allow_unused=True))
        pg = [None] * len(self.params)
        if got:
            it = iter(got)
            for a, t in anchors.items():
                if t.requires_grad and (g := next(it)) is not None:
                    grads[a][start:end] += g
            for ci, t in cands.items():
                if t.requires_grad and (g := next(it)) is not None:
                    grads[ci] += g
            for i, p in enumerate(self.params):
                if p.requires_grad:
                    pg[i] = next(it)
        return r.detach(), pg

    def _partial_weight(self, part, grad, total):
        """d loss / d (a block's column partial): dL/dC times dC/d(part) per channel
        (e^{part - total} for a log-sum-exp merge, 1 for a sum)."""
        how = self.objective.col_merge
        modes = (how,) * part.shape[1] if isinstance(how, str) else how
        w = grad.clone()
        for k, mode in enumerate(modes):
            if mode == LOGSUMEXP:
                share = torch.exp(part[:, k] - total[:, k])
                w[:, k] *= torch.where(torch.isfinite(total[:, k]), share, 0.0)
        return w


class _Blocked(_FirstOrder):
    """The blocked walks; gradients are computed in forward and scaled in backward (first
    order only: a backward that asks for a graph, forward-mode AD and torch.func transforms are
    refused naming the dense engine)."""

    @staticmethod
    def forward(ctx, runner: _Runner, *inputs):
        n_t = len(runner.tensors)
        need = tuple(ctx.needs_input_grad[1 : 1 + n_t])
        obj, params = runner.objective, runner.params
        no_cols = [None] * len(obj.panels)
        if obj.linear:
            # one walk: dL/dR does not depend on R; the loss is combined from the walk's rows
            zero = runner.tensors[0].new_zeros((runner.n_rows, obj.n_stats))
            _, grad_rows, grad_p, _ = _combine_grads(obj, zero, no_cols, params)
            rows_out: list[torch.Tensor] = []
            grads, pgrads = runner.gradients(need, grad_rows, None, no_cols, no_cols, rows_out)
            with torch.no_grad():
                loss = obj.combine(torch.cat(rows_out), no_cols)
        else:
            rows, cols = runner.stats()
            loss, grad_rows, grad_p, grad_cols = _combine_grads(obj, rows, cols, params)
            if any(need) or any(p.requires_grad for p in params):
                grads, pgrads = runner.gradients(need, grad_rows, rows, grad_cols, cols, None)
            else:
                grads, pgrads = [None] * n_t, [None] * len(params)
        ctx.grads = (grads, [_add(a, b) for a, b in zip(pgrads, grad_p)])
        return loss.detach().clone()

    @staticmethod
    def backward(ctx, grad_output):
        _first_order_only(torch.is_grad_enabled())
        grads, pgrads = ctx.grads
        if bool(grad_output == 1):
            # the usual loss.backward(): hand the buffers over without a copy
            return (None, *grads, *pgrads)

        def scaled(t):
            return None if t is None else t * grad_output.to(t.dtype)

        return (None, *[scaled(g) for g in grads], *[scaled(g) for g in pgrads])


def _add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _combine_grads(obj, rows, cols, params):
    """The loss and its gradient with respect to the row and column statistics and to the
    parameters that ``combine`` reads directly."""
    with torch.enable_grad():
        r = rows.detach().requires_grad_(True)
        c = [None if t is None else t.detach().requires_grad_(True) for t in cols]
        loss = obj.combine(r, c)
        live_c = [t for t in c if t is not None]
        wanted = [p for p in params if p.requires_grad]
        if loss.requires_grad:
            got = torch.autograd.grad(loss, [r, *live_c, *wanted], allow_unused=True)
        else:
            got = [None] * (1 + len(live_c) + len(wanted))
    grad_rows = torch.zeros_like(r) if got[0] is None else got[0]
    it = iter(got[1 : 1 + len(live_c)])
    grad_cols = [None if t is None else next(it) for t in c]
    it_p = iter(got[1 + len(live_c) :])
    grad_p = [next(it_p) if p.requires_grad else None for p in params]
    return loss.detach(), grad_rows, grad_p, grad_cols


def run_towers(
    objective: TowerObjective,
    tensors: Sequence[torch.Tensor],
    similarity: Similarity,
    *,
    names: Sequence[str] | None = None,
    engine: str = "auto",
    block_size: int | None = None,
) -> torch.Tensor:
    """Evaluate ``objective`` on the raw ``tensors`` (each [n_t, D]; the first
    ``n_rows = tensors[panels[0][0]].shape[0]`` rows of every anchor tensor are the examples).

    ``similarity.prepare`` (e.g. L2 normalisation) is applied to each tensor with autograd;
    the walks run on the prepared tensors. Returns a scalar in the input dtype.
    """
    names = list(names or [f"tensors[{i}]" for i in range(len(tensors))])
    _check_tensors(tensors, names)
    if block_size is not None and (
        isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1
    ):
        raise PairLossError(f"block_size: expected a positive int, got {block_size!r}")
    dtype = compute_dtype(tensors[0])
    prepared = [similarity.prepare(t.to(dtype)) for t in tensors]
    n_rows = prepared[objective.panels[0][0]].shape[0]
    cells = sum(n_rows * prepared[c].shape[0] for _, c in objective.panels)
    chosen = choose_engine(1, cells, engine, transformed=_transformed(*tensors))
    if chosen == "dense":
        s = [similarity.matrix(prepared[a][:n_rows], prepared[c]) for a, c in objective.panels]
        rows, cols = objective.block(s, 0, n_rows)
        out = objective.combine(rows, cols)
        return check_result(out.to(tensors[0].dtype), tensors[0], names[0])
    widest = max(prepared[c].shape[0] for _, c in objective.panels)
    block = block_size or tower_block_rows(widest * len(objective.panels), prepared[0].device)
    fused = (
        type(similarity.dot_form()) is DotForm  # scores are the prepared dot products
        and objective.fusable()
        and not list(similarity.parameters())
    )
    runner = _Runner(objective, similarity, prepared, n_rows, block, fused)
    if fused:
        objective.bind(runner.tensors)
    inputs = (*prepared, *runner.params)
    if torch.is_grad_enabled():
        out = _Blocked.apply(runner, *inputs)
    else:
        out = _Blocked.forward(_NoGrad(len(inputs)), runner, *inputs)
    return check_result(out.to(tensors[0].dtype), tensors[0], names[0])


class _NoGrad:
    def __init__(self, n: int):
        self.needs_input_grad = (False,) * (1 + n)
