"""Softmax cross-entropy over the panels of a two-tower batch (CLIP, in-batch negatives, CWCL,
Soft-InfoNCE, hardness weighting, additive margins): a
:class:`~pairloss.two_towers.TowerObjective`.

Logits are ``z = scale * s + bias`` on every panel; the positive of row ``i`` is column ``i`` of
panel 0 (the paired candidate; candidate rows beyond the batch are extra negatives, e.g. hard
negatives). Per row ``i`` and column ``j < B`` of panel 0:

    rows:     l_i = LSE_{all panels' cells} z_ij - sum_j t_ij z_ij / sum_j t_ij    (joint)
              l_i = mean_p LSE_{cells of p} z_ij - sum_j t_ij z_ij / sum_j t_ij    (per direction)
    columns:  c_j = LSE_i z_ij - sum_i t_ij z_ij / sum_i t_ij

with ``t`` the one-hot diagonal or soft targets. The loss is ``row_weight * mean_i l_i +
column_weight * mean_j c_j``; rows (columns) with no target mass give 0.

An ``adjust(panel, z, s, start, end)`` callable may change the logits of a block before the
softmax: a margin on the positive cell, a log-weight or a stop-gradient hardness term on the
negatives, ``-inf`` to drop a cell (a false negative). Row statistics: the log-sum-exp of the
row (one per panel for ``per_direction``), the target-weighted logit sum and (soft targets) the
row's target mass; column statistics of panel 0: the column log-sum-exp and (soft targets) the
target-weighted logit sum and the column's target mass.

The fused form (one panel, one-hot diagonal, no adjustment) computes the same statistics and
writes dL/ds with two exponential passes per block (rows; columns when weighted) and no
temporary beyond one reused scratch buffer.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..two_towers import LOGSUMEXP, SUM, BlockGrads, TowerObjective
from .terms import SAFE_SHIFT, masked_logsumexp

Adjust = Callable[[int, torch.Tensor, torch.Tensor, int, int], torch.Tensor]
Targets = Callable[[int, int], torch.Tensor]


def finite_logsumexp(z: torch.Tensor, dim: int) -> torch.Tensor:
    """log-sum-exp over ``dim`` ignoring ``-inf`` cells; 0 (with zero gradient) where every
    cell is ``-inf``."""
    if bool(torch.isfinite(z).all()):
        return torch.logsumexp(z, dim=dim)
    return masked_logsumexp(z, z > float("-inf"), dim=dim)


def diagonal(z: torch.Tensor, start: int) -> torch.Tensor:
    """The cells (i, start + i) of a block of rows ``start:start + b``."""
    idx = torch.arange(z.shape[0], device=z.device)
    return z[idx, idx + start]


class SoftmaxTowers(TowerObjective):
    """See the module docstring.

    Args:
        panels: ``(anchor, candidate)`` tensor indices; panel 0 holds the positives.
        n_rows: B, the number of examples (rows).
        logit_scale: callable giving the current scale (a 0-d tensor, learnable or not).
        logit_bias: optional callable giving an additive bias.
        params: the learnable tensors the two callables read.
        row_weight, column_weight: weights of the row and column directions.
        partition: ``"joint"`` (one softmax over all panels) or ``"per_direction"``.
        adjust: optional cell adjustment (see the module docstring).
        targets: optional ``f(start, end) -> [b, N_0]`` non-negative soft targets on panel 0;
            None: the one-hot diagonal.
    """

    def __init__(
        self,
        panels: tuple[tuple[int, int], ...],
        n_rows: int,
        logit_scale: Callable[[], torch.Tensor],
        logit_bias: Callable[[], torch.Tensor] | None = None,
        params: tuple[torch.Tensor, ...] = (),
        row_weight: float = 1.0,
        column_weight: float = 0.0,
        partition: str = "joint",
        adjust: Adjust | None = None,
        targets: Targets | None = None,
    ) -> None:
        self.panels = panels
        self.n_rows = n_rows
        self.logit_scale, self.logit_bias = logit_scale, logit_bias
        self._params = params
        self.row_weight, self.column_weight = float(row_weight), float(column_weight)
        self.partition = partition
        self.adjust, self.targets = adjust, targets
        self.soft = targets is not None
        self.n_lse = 1 if partition == "joint" else len(panels)
        self.n_stats = self.n_lse + (2 if self.soft else 1)
        self.linear = column_weight == 0.0
        self.col_merge = (LOGSUMEXP, SUM, SUM) if self.soft else LOGSUMEXP
        self._scratch: dict = {}

    def params(self):
        return self._params

    def _logits(self, s: torch.Tensor) -> torch.Tensor:
        z = s * self.logit_scale().to(s.dtype)
        if self.logit_bias is not None:
            z = z + self.logit_bias().to(s.dtype)
        return z

    def block(self, s, start, end):
        zs = []
        for p, sp in enumerate(s):
            z = self._logits(sp)
            if self.adjust is not None:
                z = self.adjust(p, z, sp, start, end)
            zs.append(z)
        z0 = zs[0]
        if self.partition == "joint":
            lse = [finite_logsumexp(torch.cat(zs, dim=1), dim=1)]
        else:
            lse = [finite_logsumexp(z, dim=1) for z in zs]
        cols: list[torch.Tensor | None] = [None] * len(s)
        n = self.n_rows
        if not self.soft:
            if self.column_weight:
                cols[0] = finite_logsumexp(z0[:, :n], dim=0)[:, None]
            return torch.stack([*lse, diagonal(z0, start)], dim=1), cols
        t = self.targets(start, end).to(z0.dtype)
        tz = t * torch.where(torch.isfinite(z0), z0, 0.0)
        stats = torch.stack([*lse, tz.sum(dim=1), t.sum(dim=1)], dim=1)
        if self.column_weight:
            parts = [finite_logsumexp(z0[:, :n], dim=0), tz[:, :n].sum(dim=0), t[:, :n].sum(dim=0)]
            cols[0] = torch.stack(parts, dim=1)
        return stats, cols

    def combine(self, rows, cols):
        lse = rows[:, : self.n_lse].mean(dim=1)
        pos = rows[:, self.n_lse]
        if self.soft:
            mass = rows[:, self.n_lse + 1]
            row_terms = torch.where(mass > 0, lse - pos / mass.clamp_min(1e-300), 0.0)
        else:
            row_terms = lse - pos
        loss = self.row_weight * row_terms.mean()
        if self.column_weight:
            c = cols[0]
            if self.soft:
                col_terms = torch.where(
                    c[:, 2] > 0, c[:, 0] - c[:, 1] / c[:, 2].clamp_min(1e-300), 0.0
                )
            else:
                col_terms = c[:, 0] - pos
            loss = loss + self.column_weight * col_terms.mean()
        return loss

    # ---------------------------------------------------------------- fused form

    def fusable(self) -> bool:
        """One panel, the one-hot diagonal, no cell adjustment."""
        return len(self.panels) == 1 and self.adjust is None and not self.soft

    def _work(self, like: torch.Tensor, cols: int, slot: int = 0) -> torch.Tensor:
        """A reused scratch buffer of ``like``'s rows and ``cols`` columns."""
        key = (like.device, like.dtype, slot)
        buf = self._scratch.get(key)
        if buf is None or buf.shape[0] < like.shape[0] or buf.shape[1] < cols:
            buf = like.new_empty((like.shape[0], cols))
            self._scratch[key] = buf
        return buf[: like.shape[0], :cols]

    def fused(self, s, start, end, grads):
        (sb,) = s
        scale = float(self.logit_scale())
        bias = 0.0 if self.logit_bias is None else float(self.logit_bias())
        z_pos = diagonal(sb, start) * scale + bias
        if grads is None:
            return self._fused_stats(sb, scale, bias, z_pos)
        return self._fused_grad(sb, start, scale, bias, z_pos, grads)

    def _shifted_exp(self, sb, scale, shift, out):
        """``out = e^{scale * s + shift}`` (``shift`` broadcast: [b, 1] per row, [1, n] per
        column)."""
        return torch.add(shift, sb, alpha=scale, out=out).exp_()

    def _row_lse(self, sb, scale, bias, work):
        """``work = e^{z - m}`` (m the row's max logit); returns the row log-sum-exp, m and the
        row sums of ``work``."""
        m = (sb.amax(dim=1) if scale >= 0 else sb.amin(dim=1)) * scale + bias
        self._shifted_exp(sb, scale, (bias - m)[:, None], work)
        total = work.sum(dim=1)
        return total.log().add_(m), m, total

    def _fused_stats(self, sb, scale, bias, z_pos):
        work = self._work(sb, sb.shape[1])
        lse, m, _ = self._row_lse(sb, scale, bias, work)
        cols: list[torch.Tensor | None] = [None]
        if self.column_weight:
            cols[0] = self._column_lse(sb, scale, bias, work, m)[:, None]
        return torch.stack([lse, z_pos], dim=1), cols, [], []

    def _column_lse(self, sb, scale, bias, work, m):
        """The block's column log-sum-exp of the first B columns from the row-shifted
        exponentials: sum_i e^{z_ij} = e^R sum_i e^{m_i - R} work_ij (R = max_i m_i), one
        matrix-vector product. Columns whose sum would lose its terms to underflow (below
        e^-SAFE) are computed exactly with their own maximum."""
        n = self.n_rows
        big = m.max()
        weights = torch.exp(m - big)
        total = torch.mv(work[:, :n].T, weights)
        floor = math.exp(-SAFE_SHIFT.get(sb.dtype, 60.0))
        lse = total.log().add_(big)
        low = (total < floor).nonzero().flatten()
        if low.numel():
            z = sb[:, low] * scale + bias
            lse[low] = torch.logsumexp(z, dim=0)
        return lse

    def _fused_grad(self, sb, start, scale, bias, z_pos, grads: BlockGrads):
        # dL/ds = scale (g_lse softmax_row + g_col softmax_col + g_pos on the diagonal); the
        # positive weights scale * g enter the exponents as log(scale * g)
        g_lse, g_pos = grads.grad_rows[:, 0], grads.grad_rows[:, 1]
        work = self._work(sb, sb.shape[1])
        if grads.rows is not None:
            lse = grads.rows[:, 0]
            self._weighted_exp(sb, scale, bias - lse, scale * g_lse, work, dim=1)
        else:
            lse, _, total = self._row_lse(sb, scale, bias, work)
            work.mul_((scale * g_lse / total)[:, None])
        if self.column_weight and grads.grad_cols[0] is not None:
            n = self.n_rows
            part = self._work(sb, n, slot=1)
            col_lse, g_col = grads.cols[0][:, 0], grads.grad_cols[0][:, 0]
            self._weighted_exp(sb[:, :n], scale, bias - col_lse, scale * g_col, part, dim=0)
            work[:, :n] += part
        idx = torch.arange(sb.shape[0], device=sb.device)
        work[idx, idx + start] += scale * g_pos
        pgrads = self._param_grads(work, sb, scale)
        return torch.stack([lse, z_pos], dim=1), [], [work], pgrads

    def _weighted_exp(self, sb, scale, shift, weight, out, dim):
        """``out = weight * e^{scale * s + shift}`` with ``shift`` and ``weight`` per row
        (``dim=1``) or per column (``dim=0``); a positive weight joins the exponent."""

        def along(v):
            return v[:, None] if dim == 1 else v[None, :]

        if bool((weight > 0).all()):
            return self._shifted_exp(sb, scale, along(shift + weight.log()), out)
        self._shifted_exp(sb, scale, along(shift), out)
        return out.mul_(along(weight))

    def _param_grads(self, g_s: torch.Tensor, s: torch.Tensor, scale: float) -> list:
        """dL/d(params) through the scale and bias from ``g_s = dL/ds = scale * dL/dz``:
        dL/dscale = sum dL/dz * s, dL/dbias = sum dL/dz."""
        wanted = [p for p in self._params if p.requires_grad]
        if not wanted:
            return [None] * len(self._params)
        with torch.enable_grad():
            out = self.logit_scale() * (torch.dot(g_s.reshape(-1), s.reshape(-1)) / scale)
            if self.logit_bias is not None:
                out = out + self.logit_bias() * (g_s.sum() / scale)
            got = iter(torch.autograd.grad(out, wanted, allow_unused=True))
        return [next(got) if p.requires_grad else None for p in self._params]
