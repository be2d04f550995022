"""What a row objective returns, and the masked reductions that row objectives share."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..relations import BlockPairs


class RowTerms:
    """One component of a loss, per anchor row.

    Attributes:
        values: [b] sum of the component's terms in each row.
        n_terms: [b] how many terms (pairs, triplets, or 1 for a per-anchor loss) each row has.
        n_nonzero: [b] how many of those terms are > 0 (for 'mean over non-zero terms').

        cells: optional ``(terms, mask)``, both [b, N], for a component whose terms are pair
            cells: each masked cell's term (a reducer that reads single terms lists them).

    The counts may be given as tensors or as zero-argument callables; a callable is evaluated
    only if the reduction asks for that count, so no pass over the block is spent on a count
    that is not used.
    """

    __slots__ = ("values", "_n_terms", "_n_nonzero", "cells")

    def __init__(
        self,
        values: torch.Tensor,
        n_terms: torch.Tensor | Callable[[], torch.Tensor],
        n_nonzero: torch.Tensor | Callable[[], torch.Tensor],
        cells: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        self.values = values
        self._n_terms = n_terms
        self._n_nonzero = n_nonzero
        self.cells = cells

    @property
    def n_terms(self) -> torch.Tensor:
        if callable(self._n_terms):
            self._n_terms = self._n_terms()
        return self._n_terms

    @property
    def n_nonzero(self) -> torch.Tensor:
        if callable(self._n_nonzero):
            self._n_nonzero = self._n_nonzero()
        return self._n_nonzero

    @staticmethod
    def per_anchor(loss: torch.Tensor, valid: torch.Tensor) -> RowTerms:
        """A loss of one term per anchor; rows that are not ``valid`` contribute 0 and no term."""
        loss = torch.where(valid, loss, torch.zeros_like(loss))
        return RowTerms(
            loss, lambda: valid.to(loss.dtype), lambda: (loss.detach() > 0).to(loss.dtype)
        )

    @staticmethod
    def per_pair(pair_loss: torch.Tensor, mask: torch.Tensor) -> RowTerms:
        """A loss of one term per masked cell of the row."""
        pair_loss = torch.where(mask, pair_loss, 0.0)
        dtype = pair_loss.dtype
        return RowTerms(
            pair_loss.sum(dim=1),
            lambda: torch.count_nonzero(mask, dim=1).to(dtype),
            lambda: torch.count_nonzero(pair_loss.detach() > 0, dim=1).to(dtype),
            cells=(pair_loss, mask),
        )


class RowScale:
    """How much each row of each component counts in the gradient a fused objective writes:
    ``scale(k)`` is the [b] multiplier of component ``k`` (its weight in the loss times the
    upstream gradient of each row).

    A component whose gradient lives on the positive cells only may be handed over apart with
    :meth:`put_sparse`; the engine then keeps it in its own accumulators and can weight it by a
    normaliser known only at the end of the walk (no counting walk first). A gradient with a
    few cells per row may be handed over whole with :meth:`put_cells`."""

    def __init__(
        self,
        n_rows: int,
        weights: list[float] | None,
        row_weights: torch.Tensor | None,
        like: torch.Tensor,
        collect_sparse: bool = False,
    ) -> None:
        self.n_rows, self.weights, self.row_weights, self.like = n_rows, weights, row_weights, like
        self.sparse: dict[int, torch.Tensor] | None = {} if collect_sparse else None
        self.cells: tuple[torch.Tensor, torch.Tensor] | None = None

    def put_cells(self, flat: torch.Tensor, grad_at_cells: torch.Tensor) -> None:
        """Hand over the block's whole dL/ds (every component, already scaled) as its non-zero
        cells: ``flat`` [P] indices into the [b, N] block and ``grad_at_cells`` [P] values. The
        engine then adds their gradient products by index (``O(P x D)``) instead of two
        products with a dense ``grad``, which the objective may leave holding anything."""
        self.cells = (flat, grad_at_cells)

    def put_sparse(self, k: int, grad_at_positives: torch.Tensor) -> bool:
        """Offer component ``k``'s dL/ds on the positive cells ([P], in the order of
        ``pairs.pos_flat``; zero on every other cell). True: the engine took it, and the
        objective leaves those cells of ``grad`` at 0 for this component. False: the objective
        writes it into ``grad`` itself."""
        if self.sparse is None:
            return False
        self.sparse[k] = grad_at_positives
        return True

    def __call__(self, k: int) -> torch.Tensor:
        w = 1.0 if self.weights is None else self.weights[k]
        if self.row_weights is not None:
            return self.row_weights.to(self.like.dtype) * w
        return self.like.new_full((self.n_rows,), w)


def segment_max(
    values: torch.Tensor, rows: torch.Tensor, n_rows: int, floor: float
) -> torch.Tensor:
    """Per row, the max of ``values`` whose row index is ``rows`` (``floor`` for empty rows and
    as a lower bound)."""
    out = values.new_full((n_rows,), floor)
    return out.scatter_reduce_(0, rows, values, reduce="amax", include_self=True)


def segment_sum(values: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Per row, the sum of ``values`` whose row index is ``rows``."""
    return values.new_zeros(n_rows).index_add_(0, rows, values)


def segment_logsumexp(values: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Per row, log sum_k e^{values_k} over the entries whose row index is ``rows`` (a list may
    repeat an entry: each occurrence counts); ``-inf`` for rows without entries. Max-shifted,
    with autograd."""
    with torch.no_grad():
        top = segment_max(values.detach(), rows, n_rows, float("-inf"))
        safe = torch.where(torch.isfinite(top), top, 0.0)
    total = segment_sum(torch.exp(values - safe[rows]), rows, n_rows)
    has = total > 0
    return torch.where(has, torch.log(torch.where(has, total, 1.0)) + safe, float("-inf"))


def hide_non_negatives_(work: torch.Tensor, pairs: BlockPairs, fill: float) -> torch.Tensor:
    """Write ``fill`` into the positive and self cells of a [b, N] block (in place)."""
    flat = work.view(-1)
    flat.index_fill_(0, pairs.pos_flat, fill).index_fill_(0, pairs.void_flat, fill)
    return work


def member_extreme_(
    work: torch.Tensor, pairs: BlockPairs, coef: float, with_positives: bool = False
) -> torch.Tensor:
    """Per row, ``max coef * w`` over the negative cells (and the positive cells if
    ``with_positives``) of the values ``w`` in ``work`` [b, N]; ``-inf`` on rows without such a
    cell. The other cells of ``work`` are overwritten (in place)."""
    hidden = float("-inf") if coef > 0 else float("inf")
    if with_positives:
        work.view(-1).index_fill_(0, pairs.void_flat, hidden)
    else:
        hide_non_negatives_(work, pairs, hidden)
    return coef * (work.amax(dim=1) if coef > 0 else work.amin(dim=1))


def shifted_exp_(
    s: torch.Tensor, coef: float, shift: torch.Tensor, out: torch.Tensor, bias: float = 0.0
) -> torch.Tensor:
    """``out = e^{coef * s + bias - shift}`` with ``shift`` [b] one value per row, in place.

    A shift computed as ``coef * max s + bias`` (:func:`stable_shift`,
    :func:`member_extreme_`) must give exactly 0 at the row's maximum. One fused multiply-add
    rounds ``coef * s`` differently from that product; at ordinary magnitudes the difference is
    far below 1, but where one rounding step of the shift exceeds 2^-10 (float32 beyond about
    1e4) it moves the maximum's exponent away from 0 and its exponential to 0 or inf. There
    the product and the bias are rounded first, as the shift was."""
    step = float(shift.abs().amax()) * torch.finfo(s.dtype).eps if shift.numel() else 0.0
    if step < 2.0**-10:
        return torch.add((bias - shift)[:, None], s, alpha=coef, out=out).exp_()
    torch.mul(s, coef, out=out)
    if bias:
        out.add_(bias)
    return out.sub_(shift[:, None]).exp_()


# a log-sum-exp shift at most this far above the true maximum keeps every term that matters out
# of underflow (e^-60 is above float32's smallest normal, e^-87, by far more than its precision)
SAFE_SHIFT = {torch.float32: 60.0, torch.float64: 600.0}


def stable_shift(
    s: torch.Tensor,
    pairs: BlockPairs,
    coef: float,
    bias: float,
    work: torch.Tensor,
    floor: torch.Tensor | float,
) -> torch.Tensor:
    """Per row, a shift m >= max(floor, max over the negative cells of coef * s + bias) for a
    stable log-sum-exp whose true maximum is known to be at least ``floor`` [b] (0 for
    log(1 + ...), the target logit for a softmax).

    The row's extreme over all cells bounds the negatives' maximum from above at the cost of one
    reduction; where that bound lies more than :data:`SAFE_SHIFT` above ``floor`` (terms that
    matter could underflow) the exact extreme over the negatives is taken instead, on the
    scratch buffer ``work`` [b, N] (positive and void cells hidden by ``index_fill_``)."""
    extreme = s.amax(dim=1) if coef > 0 else s.amin(dim=1)
    floor_t = torch.as_tensor(floor, dtype=s.dtype, device=s.device).expand(s.shape[0])
    shift = torch.maximum(coef * extreme + bias, floor_t)
    if bool((shift - floor_t > SAFE_SHIFT.get(s.dtype, 60.0)).any()):
        exact = member_extreme_(work.copy_(s), pairs, coef) + bias
        shift = torch.where(torch.isfinite(exact), torch.maximum(exact, floor_t), floor_t)
    return shift


class FusedDualLSE:
    """The sparse-positive form of :func:`dual_masked_logsumexp` for one block:

        lp = log(1 + sum_{pos} e^{kp s + bp}),  ln = log(1 + sum_{neg} e^{kn s + bn})

    The positives come from their list (a gather); the negatives are one exponential pass over
    the row held in ``work`` [b, N], with the positive and void cells zeroed. :meth:`write_grad`
    turns ``work`` into dL/ds given dL/dlp and dL/dln per row. Rows with an empty set give 0.

    A miner's choice enters as ``pos_keep`` [P] (which listed positives count) and ``neg_keep``
    [b, N] with ``has_neg`` [b] (which negatives count, and whether a row keeps any).
    """

    def __init__(
        self,
        s: torch.Tensor,
        pairs: BlockPairs,
        kp: float,
        bp: float,
        kn: float,
        bn: float,
        work: torch.Tensor,
        pos_keep: torch.Tensor | None = None,
        neg_keep: torch.Tensor | None = None,
        has_neg: torch.Tensor | None = None,
    ) -> None:
        b = s.shape[0]
        self.kp, self.kn, self.work = kp, kn, work
        mn = stable_shift(s, pairs, kn, bn, work, 0.0)
        e = hide_non_negatives_(shifted_exp_(s, kn, mn, work, bn), pairs, 0.0)
        if neg_keep is not None:
            e.mul_(neg_keep)
        self.sn = e.sum(dim=1) + torch.exp(-mn)
        self.has_neg = pairs.n_neg > 0 if has_neg is None else has_neg
        self.ln = torch.where(self.has_neg, self.sn.log() + mn, 0.0)
        self.pos_flat, rows = pairs.pos_flat, pairs.pos_rows
        if pos_keep is not None:
            self.pos_flat, rows = self.pos_flat[pos_keep], rows[pos_keep]
        self.pos_rows = rows
        xp = s.view(-1)[self.pos_flat] * kp + bp
        mp = segment_max(xp, rows, b, 0.0)
        self.ep = torch.exp(xp - mp[rows])
        self.sp = segment_sum(self.ep, rows, b) + torch.exp(-mp)
        if pos_keep is None:
            self.has_pos = pairs.n_pos > 0
        else:
            self.has_pos = torch.zeros(b, dtype=torch.bool, device=s.device)
            self.has_pos[rows] = True
        self.lp = torch.where(self.has_pos, self.sp.log() + mp, 0.0)

    def write_grad(self, d_lp: torch.Tensor, d_ln: torch.Tensor) -> torch.Tensor:
        """dL/ds into ``work`` for per-row dL/dlp ``d_lp`` [b] and dL/dln ``d_ln`` [b]."""
        self.work.mul_((d_ln * self.kn / self.sn)[:, None])
        grad_pos = self.ep * (d_lp * self.kp / self.sp)[self.pos_rows]
        self.work.view(-1).index_copy_(0, self.pos_flat, grad_pos)
        return self.work


def masked_logsumexp(
    x: torch.Tensor, mask: torch.Tensor, add_one: bool = False, dim: int = -1
) -> torch.Tensor:
    """log(sum_{mask} e^x) over ``dim`` (plus e^0 inside the sum when ``add_one``).

    Rows with an empty mask give 0 with a zero gradient (log(1 + 0) = 0 when ``add_one``; by
    convention 0 otherwise), never -inf or NaN.
    """
    x = x.masked_fill(~mask, float("-inf"))
    m = x.amax(dim=dim, keepdim=True)
    if add_one:
        m = m.clamp_min(0)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).detach()
    total = torch.exp(x - m).sum(dim=dim, keepdim=True)
    if add_one:
        total = total + torch.exp(-m)
    empty = total <= 0
    out = torch.log(torch.where(empty, torch.ones_like(total), total)) + m
    out = torch.where(empty, torch.zeros_like(out), out)
    return out.squeeze(dim)


def masked_max(x: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Max over masked entries; -inf for empty rows."""
    return x.masked_fill(~mask, float("-inf")).amax(dim=dim)


def masked_min(x: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Min over masked entries; +inf for empty rows."""
    return x.masked_fill(~mask, float("inf")).amin(dim=dim)


def _masked_extreme(s: torch.Tensor, mask: torch.Tensor, largest: bool) -> torch.Tensor:
    """Row max (or min) of ``s`` over ``mask``; -inf (+inf) for empty rows."""
    if largest:
        return torch.where(mask, s, float("-inf")).amax(dim=1)
    return torch.where(mask, s, float("inf")).amin(dim=1)


def _dual_shifts(s, pos, neg, kp, bp, kn, bn, add_one):
    """Row shifts ``mp``, ``mn`` [b] (the masked maxima of the exponents, 0 for an empty mask,
    at least 0 with ``add_one``) and whether each mask is non-empty, of
    :class:`_DualMaskedLSE`."""
    mp = kp * _masked_extreme(s, pos, kp > 0) + bp
    mn = kn * _masked_extreme(s, neg, kn > 0) + bn
    has_p, has_n = torch.isfinite(mp), torch.isfinite(mn)
    mp = torch.where(has_p, mp, 0.0)
    mn = torch.where(has_n, mn, 0.0)
    if add_one:
        mp, mn = mp.clamp_min(0), mn.clamp_min(0)
    return mp, mn, has_p, has_n


def _dual_exponentials(s, pos, neg, kp, bp, kn, bn, add_one, mp, mn, has_p, has_n):
    """The shifted exponentials ``e`` [b, N] of :class:`_DualMaskedLSE` (``-inf`` exponent
    outside both masks) and their per-mask row sums ``sp``, ``sn`` [b] (1 for an empty mask),
    for the row shifts ``mp``, ``mn``; differentiable in ``s``."""
    k = torch.where(pos, kp, kn).to(s.dtype)
    shift = torch.where(
        pos, (bp - mp)[:, None], torch.where(neg, (bn - mn)[:, None], float("-inf"))
    )
    e = torch.addcmul(shift, k, s)
    e = e.exp() if torch.is_grad_enabled() else e.exp_()
    sp = torch.where(pos, e, 0.0).sum(dim=1)
    sn = e.sum(dim=1) - sp
    if add_one:
        sp, sn = sp + torch.exp(-mp), sn + torch.exp(-mn)
    sp = torch.where(has_p | add_one, sp, 1.0)
    sn = torch.where(has_n | add_one, sn, 1.0)
    return e, sp, sn


class _DualMaskedLSE(torch.autograd.Function):
    """Fused forward/backward of :func:`dual_masked_logsumexp`.

    The per-mask row maxima of the exponent come from the masked extremes of ``s`` (the exponent
    is affine in s), so the shifted exponent k * s + (b - max) is built in one addcmul and
    exponentiated; cells outside both masks get -inf. The backward is one scaled copy of the
    saved exponentials. A backward that builds a graph (``create_graph=True``: gradient
    penalties, second-order methods) recomputes the exponentials from ``s`` with differentiable
    operations, so higher derivatives are exact (the row shifts are constants: the log-sum-exp
    does not depend on them).
    """

    @staticmethod
    def forward(ctx, s, pos, neg, kp, bp, kn, bn, add_one):
        mp, mn, has_p, has_n = _dual_shifts(s, pos, neg, kp, bp, kn, bn, add_one)
        e, sp, sn = _dual_exponentials(s, pos, neg, kp, bp, kn, bn, add_one, mp, mn, has_p, has_n)
        lp = torch.where(has_p, sp.log() + mp, 0.0)
        ln = torch.where(has_n, sn.log() + mn, 0.0)
        ctx.save_for_backward(e, pos, neg, sp, sn, s, mp, mn, has_p, has_n)
        ctx.coefs = (kp, bp, kn, bn, add_one)
        ctx.mark_non_differentiable(has_p, has_n)
        return lp, ln, has_p, has_n

    @staticmethod
    def backward(ctx, gp, gn, _hp, _hn):
        e, pos, neg, sp, sn, s, mp, mn, has_p, has_n = ctx.saved_tensors
        kp, bp, kn, bn, add_one = ctx.coefs
        if torch.is_grad_enabled():
            e, sp, sn = _dual_exponentials(
                s, pos, neg, kp, bp, kn, bn, add_one, mp, mn, has_p, has_n
            )
        cp = (gp * kp / sp)[:, None]
        cn = (gn * kn / sn)[:, None]
        return e * torch.where(pos, cp, cn), None, None, None, None, None, None, None


def dual_masked_logsumexp(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    pos_coef: float,
    pos_bias: float,
    neg_coef: float,
    neg_bias: float,
    add_one: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row, over two disjoint masks of the same block, in one fused pass:

        lse_pos = log([1 +] sum_{pos} e^{pos_coef * s + pos_bias})
        lse_neg = log([1 +] sum_{neg} e^{neg_coef * s + neg_bias})

    Returns ``(lse_pos, lse_neg, has_pos, has_neg)``; rows with an empty mask give 0 (as
    :func:`masked_logsumexp`). Gradients with respect to ``s`` (of every order). Used by
    objectives whose exponent is linear in the score (Multi-Similarity, Proxy-Anchor).
    """
    coefs = (float(pos_coef), float(pos_bias), float(neg_coef), float(neg_bias), add_one)
    if composable(s):
        return _dual_lse_composed(s, pos, neg, *coefs)
    return _DualMaskedLSE.apply(s, pos, neg, *coefs)


def composable(s: torch.Tensor) -> bool:
    """Whether ``s`` is seen by a functorch transform (``torch.func.grad``, ``vmap``, ...) or
    carries a forward-mode tangent: then objectives use plain differentiable operations, which
    every autograd mode composes with, instead of a custom Function."""
    if torch._C._functorch.peek_interpreter_stack() is not None:
        return True
    return torch.autograd.forward_ad.unpack_dual(s).tangent is not None


def _dual_lse_composed(s, pos, neg, kp, bp, kn, bn, add_one):
    """:func:`dual_masked_logsumexp` from differentiable operations (the row shifts are
    constants)."""
    mp, mn, has_p, has_n = _dual_shifts(s.detach(), pos, neg, kp, bp, kn, bn, add_one)
    _, sp, sn = _dual_exponentials(s, pos, neg, kp, bp, kn, bn, add_one, mp, mn, has_p, has_n)
    lp = torch.where(has_p, sp.log() + mp, 0.0)
    ln = torch.where(has_n, sn.log() + mn, 0.0)
    return lp, ln, has_p, has_n
