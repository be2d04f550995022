"""Row objectives of the margin-softmax proxy losses (anchors = embeddings, candidates = the class
weights): softmax cross-entropy over the classes with a margin applied to the true class.

Every objective here reads one block of rows: ``s`` [b, C * k] cosines (k proxies per class laid
out class by class, so class c owns columns c*k .. c*k + k - 1), ``pos`` [b, C * k] marking the
anchor's own class. Rows without a positive (cannot happen with in-range labels) give 0 and no
term.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..relations import BlockPairs
from .terms import RowScale, RowTerms, shifted_exp_, stable_shift


def group_max(s: torch.Tensor, pos: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Max over each class's ``k`` adjacent columns (sub-centres): [b, C*k] -> [b, C]."""
    if k == 1:
        return s, pos
    b = s.shape[0]
    return s.view(b, -1, k).amax(dim=2), pos.view(b, -1, k).any(dim=2)


def target_column(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[b, 1]`` column of each row's target (the first when several, 0 when none) and ``[b]``
    whether the row has one: the target is read with a gather instead of a pass over the row."""
    column = target.to(torch.uint8).argmax(dim=1, keepdim=True)
    return column, target.gather(1, column).squeeze(1)


def target_value(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The entry of each row at its (single) target column; 0 for rows without one."""
    column, has = target_column(target)
    return torch.where(has, x.gather(1, column).squeeze(1), 0.0)


def softmax_ce_rows(
    logits: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor | None = None,
    target_logit: torch.Tensor | None = None,
) -> list[RowTerms]:
    """Per row: ``logsumexp(logits) - logits[target]`` (cross-entropy against one target
    column), times the row weight when ``weights`` [b] is given. Max-shifted: no overflow for
    large scales. ``target_logit`` [b] gives the target's logit when the caller has it."""
    if target_logit is None:
        target_logit = target_value(logits, target)
    loss = torch.logsumexp(logits, dim=1) - target_logit
    if weights is not None:
        loss = loss * weights
    return [RowTerms.per_anchor(loss, target.any(dim=1))]


def _safe_acos(cos: torch.Tensor) -> torch.Tensor:
    """acos(clamp(cos, -1, 1)) with the value of the exact formula and a finite gradient at
    |cos| = 1 (the gradient is taken at cos clamped one step inside the interval)."""
    exact = torch.acos(cos.clamp(-1, 1))
    eps = 10 * torch.finfo(cos.dtype).eps
    inner = torch.acos(cos.clamp(-1 + eps, 1 - eps))
    return inner + (exact - inner).detach()


def arcface_target(cos: torch.Tensor, margin: float, easy_margin: bool = False) -> torch.Tensor:
    """cos(theta + m) for the true class, theta = acos(cos) (as pytorch-metric-learning).

    Where theta + m would pass pi (theta > pi - m) cos(theta + m) stops decreasing; there the
    logit is ``cos(theta) - m sin(m)`` instead (pytorch-metric-learning's rule, the same as the
    InsightFace code's ``cos - sin(pi - m) m`` beyond ``cos(pi - m)``). ``easy_margin=True``
    uses the InsightFace alternative: the margin only where cos > 0, plain cos elsewhere.
    """
    theta = _safe_acos(cos)
    with_margin = torch.cos(theta + margin)
    if easy_margin:
        return torch.where(cos > 0, with_margin, cos)
    return torch.where(
        theta <= math.pi - margin, with_margin, torch.cos(theta) - margin * math.sin(margin)
    )


def multiplicative_target(cos: torch.Tensor, margin: int) -> torch.Tensor:
    """psi(theta) = (-1)^k cos(m theta) - 2k for theta in [k pi / m, (k + 1) pi / m] (Liu et al.
    2016, eq. 6-7): cos(m theta) by the multiple-angle expansion
    sum_n (-1)^n C(m, 2n) cos^{m-2n} (1 - cos^2)^n, and k = floor(theta m / pi) held constant."""
    sin2 = 1 - cos * cos
    total = torch.zeros_like(cos)
    for n in range(margin // 2 + 1):
        coef = (-1) ** n * math.comb(margin, 2 * n)
        total = total + coef * cos ** (margin - 2 * n) * sin2**n
    with torch.no_grad():
        k = torch.floor(torch.acos(cos.clamp(-1, 1)) / (math.pi / margin))
        sign = 1 - 2 * torch.remainder(k, 2)
    return sign * total - 2 * k


def margin_softmax_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    kind: str,
    margin: float,
    scale: float,
    sub_centers: int = 1,
    weights: torch.Tensor | None = None,
    row_scale: torch.Tensor | None = None,
    col_scale: torch.Tensor | None = None,
    easy_margin: bool = False,
) -> list[RowTerms]:
    """Cross-entropy over the classes of ``scale * [cos_c, with cos_y -> psi(cos_y)]``.

    ``kind``: "none" (psi = cos; normalised softmax), "cosface" (cos - m), "arcface"
    (cos(theta + m), see :func:`arcface_target`), "multiplicative" (:func:`multiplicative_target`,
    large-margin softmax / SphereFace). With ``sub_centers`` k > 1 each class's cosine is the max
    over its k adjacent columns first. ``row_scale`` [b] / ``col_scale`` [C] multiply the logits
    (the feature and weight norms of the large-margin softmax). ``weights`` [b] weight the rows.
    """
    cos, target = group_max(s, pos, sub_centers)
    factor: float | torch.Tensor = scale
    if row_scale is not None:
        factor = factor * row_scale[:, None]
    if col_scale is not None:
        factor = factor * col_scale[None, :]
    logits = cos * factor
    if kind == "none":
        return softmax_ce_rows(logits, target, weights)
    column, has = target_column(target)
    cos_t = cos.gather(1, column).squeeze(1)
    if kind == "cosface":
        psi = cos_t - margin
    elif kind == "arcface":
        psi = arcface_target(cos_t, margin, easy_margin)
    elif kind == "multiplicative":
        psi = multiplicative_target(cos_t, int(margin))
    else:
        raise ValueError(kind)
    target_factor = factor if not isinstance(factor, torch.Tensor) else factor.expand_as(cos)
    if isinstance(target_factor, torch.Tensor):
        target_factor = target_factor.gather(1, column).squeeze(1)
    psi_logit = torch.where(has, psi * target_factor, logits.gather(1, column).squeeze(1))
    logits = logits.scatter(1, column, psi_logit[:, None])
    return softmax_ce_rows(logits, target, weights, target_logit=psi_logit)


def softmax_ce_fused(
    s: torch.Tensor,
    pairs: BlockPairs,
    grad: torch.Tensor | None,
    scale: RowScale | None,
    coef: float,
    target_logit: Callable[[torch.Tensor], torch.Tensor],
    weights: torch.Tensor | None = None,
) -> list[RowTerms]:
    """Cross-entropy of each row against its one target cell, on the sparse form of a block:

        loss_i = log(e^{psi_i} + sum_{c != y_i} e^{coef * s_ic}) - psi_i,
        psi_i = target_logit(s_{i y_i})

    (times ``weights`` [b] when given), with dL/ds written into ``grad`` (see
    :class:`pairloss.engine.PairProblem`). The target is read and replaced through its flat
    index; the rest of the row is one exponential pass. ``target_logit`` acts elementwise on the
    targets' scores (a few values per block), so its derivative is taken by autograd there.
    The same terms as :func:`softmax_ce_rows` on ``coef * s`` with the target logit replaced.
    """
    b = s.shape[0]
    rows = pairs.pos_rows
    work = grad if grad is not None else torch.empty_like(s)
    with torch.enable_grad():
        st = s.view(-1)[pairs.pos_flat].detach().requires_grad_(grad is not None)
        logit = target_logit(st)
        d_logit = torch.autograd.grad(logit.sum(), st)[0] if grad is not None else None
    logit = logit.detach()
    has_target = pairs.n_pos > 0
    floor = torch.full((b,), float("-inf"), dtype=s.dtype, device=s.device)
    floor.index_copy_(0, rows, logit)
    m = stable_shift(s, pairs, coef, 0.0, work, floor)
    m = torch.where(torch.isfinite(m), m, 0.0)
    e = shifted_exp_(s, coef, m, work)
    e_target = torch.exp(logit - m[rows])
    flat = e.view(-1)
    flat.index_copy_(0, pairs.pos_flat, e_target).index_fill_(0, pairs.void_flat, 0.0)
    z = e.sum(dim=1)
    row_logit = torch.zeros_like(m).index_copy_(0, rows, logit)
    loss = torch.where(has_target, z.log() + m - row_logit, 0.0)
    if weights is not None:
        loss = loss * weights
    if grad is not None:
        c = torch.where(has_target, scale(0), 0.0)
        if weights is not None:
            c = c * weights
        safe_z = torch.where(has_target, z, 1.0)
        work.mul_((c * coef / safe_z)[:, None])
        grad_target = c[rows] * (e_target / safe_z[rows] - 1.0) * d_logit
        flat.index_copy_(0, pairs.pos_flat, grad_target)
    return [RowTerms.per_anchor(loss, has_target)]
