"""Soft ranks: sigmoid-smoothed counts of the candidates scored above a chosen one, the
building block of the AP surrogates (Smooth-AP, Brown et al., ECCV 2020; PNP, Li et al., AAAI
2022). Computed per block of anchor rows a few chosen columns at a time, never as a
[b, chosen, N] tensor held for the backward pass."""

from __future__ import annotations

import torch

from .terms import RowTerms, composable

# at most this many elements in one [b, chunk, N] slab of sigmoids
SLAB_ELEMENTS = 1 << 22


def chosen_columns(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The columns of each row's True cells, packed left: ``(idx, valid)``, both [b, J] with J
    the largest count (``valid`` marks the real entries; padding repeats column 0)."""
    counts = mask.sum(dim=1)
    width = max(1, int(counts.max())) if mask.numel() else 1
    order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)[:, :width]
    valid = torch.arange(width, device=mask.device)[None, :] < counts[:, None]
    return torch.where(valid, order, 0), valid


def _sigmoid(x: torch.Tensor, clamp: float | None) -> torch.Tensor:
    if clamp is None:
        return torch.sigmoid(x)
    return 1.0 / (1.0 + torch.exp(torch.clamp(-x, -clamp, clamp)))


def _slab_step(s: torch.Tensor) -> int:
    """Chosen columns per slab, so that one [b, chunk, N] slab holds about SLAB_ELEMENTS."""
    return max(1, SLAB_ELEMENTS // max(1, s.shape[0] * s.shape[1]))


def _ranks(s, idx, valid, over, tau, clamp, skip_own, step) -> torch.Tensor:
    """The soft ranks [b, J] from differentiable operations, ``step`` chosen columns at a
    time."""
    cols = torch.arange(s.shape[1], device=s.device)
    parts = []
    for j0 in range(0, idx.shape[1], step):
        jc = idx[:, j0 : j0 + step]
        sj = s.gather(1, jc)
        sig = _sigmoid((s[:, None, :] - sj[:, :, None]) / tau, clamp)
        keep = over[:, None, :].expand_as(sig)
        if skip_own:
            keep = keep & (cols[None, None, :] != jc[:, :, None])
        parts.append(torch.where(keep, sig, 0.0).sum(dim=2))
    out = torch.cat(parts, dim=1) if parts else s.new_zeros(idx.shape)
    return torch.where(valid, out, 0.0)


class _SoftRanks(torch.autograd.Function):
    """Soft ranks with a backward that recomputes the sigmoids a slab at a time (nothing of
    size [b, J, N] is saved). The backward is made of differentiable operations of the saved
    ``s``, so a backward that builds a graph gives exact higher derivatives."""

    @staticmethod
    def forward(ctx, s, idx, valid, over, tau, clamp, skip_own):
        step = _slab_step(s)
        out = _ranks(s, idx, valid, over, tau, clamp, skip_own, step)
        ctx.save_for_backward(s, idx, valid, over)
        ctx.args = (tau, clamp, skip_own, step)
        return out

    @staticmethod
    def backward(ctx, grad):
        s, idx, valid, over = ctx.saved_tensors
        tau, clamp, skip_own, step = ctx.args
        n = s.shape[1]
        grad = torch.where(valid, grad, 0.0)
        ds = torch.zeros_like(s)
        cols = torch.arange(n, device=s.device)
        for j0 in range(0, idx.shape[1], step):
            jc = idx[:, j0 : j0 + step]
            sj = s.gather(1, jc)
            x = (s[:, None, :] - sj[:, :, None]) / tau
            sig = _sigmoid(x, clamp)
            slope = sig * (1 - sig) / tau
            if clamp is not None:
                slope = torch.where(x.abs() > clamp, 0.0, slope)
            keep = over[:, None, :].expand_as(sig)
            if skip_own:
                keep = keep & (cols[None, None, :] != jc[:, :, None])
            w = torch.where(keep, slope, 0.0) * grad[:, j0 : j0 + step, None]
            ds += w.sum(dim=1)
            ds.scatter_add_(1, jc, -w.sum(dim=2))
        return ds, None, None, None, None, None, None


def soft_ranks(
    s: torch.Tensor,
    idx: torch.Tensor,
    valid: torch.Tensor,
    over: torch.Tensor,
    tau: float,
    clamp: float | None = None,
    skip_own: bool = False,
) -> torch.Tensor:
    """``rk[i, j] = sum_{k: over[i, k]} sigmoid((s_ik - s_{i, idx[i, j]}) / tau)`` [b, J] (0 on
    padding), leaving out k = idx[i, j] itself when ``skip_own``. ``clamp`` clamps the
    sigmoid's exponent to [-clamp, clamp] (zero slope beyond), PNP's rule. Gradients of any
    order with respect to ``s``, also under ``torch.func`` transforms and forward-mode AD."""
    if composable(s):
        # under torch.func transforms and forward-mode AD: the plain differentiable form
        return _ranks(s, idx, valid, over, float(tau), clamp, skip_own, _slab_step(s))
    return _SoftRanks.apply(s, idx, valid, over, float(tau), clamp, skip_own)


def _with_self(pos: torch.Tensor, start: int, only_if_positive: bool) -> torch.Tensor:
    """``pos`` plus each row's own column (anchor ``start + r``), on every row or only on rows
    that have a positive."""
    rows = torch.arange(pos.shape[0], device=pos.device)
    out = pos.clone()
    cols = rows + start
    inside = cols < pos.shape[1]
    if only_if_positive:
        inside = inside & pos.any(dim=1)
    out[rows[inside], cols[inside]] = True
    return out


PNP_VARIANTS = ("Ds", "Dq", "Iu", "Ib", "O")


def pnp_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    start: int,
    b: float,
    alpha: float,
    anneal: float,
    variant: str,
) -> list[RowTerms]:
    """Per anchor i with a positive: (1 / |G_i|) sum_{j in G_i} f(rk_ij), G_i = P(i) + {i},
    rk_ij = sum_{n in N(i)} sigmoid((s_in - s_ij) / anneal) (exponent clamped to +-50), with
    f by ``variant``: "O" rk, "Ds" log(1 + rk), "Dq" 1 / (1 + rk)^alpha, "Iu"
    (1 + rk) log(1 + rk), "Ib" (b rk - log(1 + b rk)) / b^2. One term per such anchor."""
    group = _with_self(pos, start, only_if_positive=True)
    idx, valid = chosen_columns(group)
    rk = soft_ranks(s, idx, valid, neg, anneal, clamp=50.0)
    if variant == "Ds":
        f = torch.log1p(rk)
    elif variant == "Dq":
        f = 1 / (1 + rk) ** alpha
    elif variant == "Iu":
        f = (1 + rk) * torch.log1p(rk)
    elif variant == "Ib":
        f = (b * rk - torch.log1p(b * rk)) / b**2
    else:
        f = rk
    count = valid.sum(dim=1).to(s.dtype)
    has = pos.any(dim=1)
    values = torch.where(valid, f, 0.0).sum(dim=1) / count.clamp_min(1)
    return [RowTerms.per_anchor(values, has)]


def smooth_ap_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    start: int,
    temperature: float,
    weights: torch.Tensor | None = None,
) -> list[RowTerms]:
    """Per anchor i: 1 - AP_i (times its weight), with G_i = P(i) + {i} and

        AP_i = (1 / |G_i|) sum_{j in G_i} (1 + sum_{k in G_i, k != j} sig_ijk)
                                          / (1 + sum_{k != j} sig_ijk),
        sig_ijk = sigmoid((s_ik - s_ij) / temperature)

    (the ranks of j among the group and among every candidate, the anchor's own column
    included, as the official code and pytorch-metric-learning). One term per anchor."""
    group = _with_self(pos, start, only_if_positive=False)
    idx, valid = chosen_columns(group)
    every = torch.ones_like(group)
    all_rank = 1 + soft_ranks(s, idx, valid, every, temperature, skip_own=True)
    pos_rank = 1 + soft_ranks(s, idx, valid, group, temperature, skip_own=True)
    count = valid.sum(dim=1).to(s.dtype)
    ap = torch.where(valid, pos_rank / all_rank, 0.0).sum(dim=1) / count
    loss = 1 - ap
    if weights is not None:
        loss = loss * weights
    return [RowTerms.per_anchor(loss, torch.ones_like(loss, dtype=torch.bool))]
