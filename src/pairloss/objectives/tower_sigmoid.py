"""Pairwise sigmoid over a two-tower batch (SigLIP): a
:class:`~pairloss.two_towers.TowerObjective`.

With logits ``z = scale * s + bias`` and labels ``y_ij = +1`` on the diagonal (the paired
candidate), ``-1`` elsewhere (candidate rows beyond the batch are negatives of every row):

    row i:   r_i = sum_j softplus(-y_ij z_ij) = sum_j softplus(z_ij) - z_ii
    loss:    sum_i r_i / B

One row statistic, linear in the loss: the blocked engine runs a single walk (three matrix
products). The fused form computes ``sigma(z)`` once per cell; the row's softplus sum is
``sum_j z_ij - sum_j log sigma(z_ij)``, where ``sum_j z_ij = scale * x_i . sum_j y_j + N bias``
comes from one matrix-vector product per block, and dL/dz = (sigma(z) - [i = j]) / B.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..two_towers import BlockGrads, TowerObjective
from .tower_softmax import diagonal

# below this logit, sigma(z) = e^z falls into float32's denormals and log(sigma) loses digits
_LOW_LOGIT = -80.0


class SigmoidTowers(TowerObjective):
    """See the module docstring.

    Args:
        n_rows: B, the number of rows.
        logit_scale, logit_bias: callables giving the current scale and bias (0-d tensors).
        params: the learnable tensors the two callables read.
    """

    linear = True
    n_stats = 1

    def __init__(
        self,
        n_rows: int,
        logit_scale: Callable[[], torch.Tensor],
        logit_bias: Callable[[], torch.Tensor],
        params: tuple[torch.Tensor, ...] = (),
    ) -> None:
        self.panels = ((0, 1),)
        self.n_rows = n_rows
        self.logit_scale, self.logit_bias = logit_scale, logit_bias
        self._params = params
        self._row_sums = None
        self._scratch: dict = {}

    def params(self):
        return self._params

    def block(self, s, start, end):
        (sb,) = s
        z = sb * self.logit_scale().to(sb.dtype) + self.logit_bias().to(sb.dtype)
        rows = F.softplus(z).sum(dim=1) - diagonal(z, start)
        return rows[:, None], [None]

    def combine(self, rows, cols):
        return rows.sum() / self.n_rows

    def fusable(self) -> bool:
        return True

    def bind(self, tensors):
        """Keep the prepared towers: a block's ``sum_j s_ij`` is ``x_i . sum_j y_j``."""
        x, y = tensors
        self._row_sums = (x, y.sum(dim=0))

    def _work(self, like):
        key = (like.device, like.dtype)
        buf = self._scratch.get(key)
        if buf is None or buf.shape[0] < like.shape[0] or buf.shape[1] != like.shape[1]:
            buf = torch.empty_like(like)
            self._scratch[key] = buf
        return buf[: like.shape[0]]

    def fused(self, s, start, end, grads: BlockGrads | None):
        (sb,) = s
        scale = float(self.logit_scale())
        bias = float(self.logit_bias())
        b, n = sb.shape
        idx = torch.arange(b, device=sb.device)
        s_pos = sb[idx, idx + start]
        z_pos = s_pos * scale + bias
        sig = self._work(sb)
        torch.mul(sb, scale, out=sig).add_(bias)
        if float(sig.amin()) < _LOW_LOGIT:
            rows = F.softplus(sig).sum(dim=1) - z_pos
            sig.sigmoid_()
        else:
            if self._row_sums is not None:
                x, y_sum = self._row_sums
                z_sum = torch.mv(x[start:end], y_sum) * scale + n * bias
            else:
                z_sum = sig.sum(dim=1)
            sig.sigmoid_()
            rows = z_sum - torch.log(sig).sum(dim=1) - z_pos
        if grads is None:
            return rows[:, None], [None], [], []
        g = grads.grad_rows[:, 0]
        # dL/ds = scale * g_i * (sigma(z_ij) - [j = start + i])
        sig.mul_((scale * g)[:, None])
        sig[idx, idx + start] -= scale * g
        return rows[:, None], [], [sig], self._param_grads(sig, sb, scale)

    def _param_grads(self, g_s, sb, scale) -> list:
        """dL/dscale = sum dL/dz * s and dL/dbias = sum dL/dz (``g_s = scale * dL/dz``),
        chained through the callables to the learnable tensors."""
        wanted = [p for p in self._params if p.requires_grad]
        if not wanted:
            return [None] * len(self._params)
        d_scale = torch.dot(g_s.reshape(-1), sb.reshape(-1)) / scale
        d_bias = g_s.sum() / scale
        with torch.enable_grad():
            out = self.logit_scale() * d_scale + self.logit_bias() * d_bias
            got = iter(torch.autograd.grad(out, wanted, allow_unused=True))
        return [next(got) if p.requires_grad else None for p in self._params]
