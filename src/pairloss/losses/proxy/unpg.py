r"""UNPG: unified negative pair generation on top of a margin-softmax loss.

Jung, Son, Ko, Kim, Ko, Kim, "Unified Negative Pair Generation toward Well-discriminative
Feature Space for Face Recognition", BMVC 2022 (arXiv 2203.11593); official code
github.com/jung-jun-uk/UNPG (``recognition/models/build.py`` and ``head.py``).
"""

from __future__ import annotations

import math

import torch

from ...engine import PairProblem, choose_engine, default_block_size, run
from ...errors import PairLossError
from ...objectives.unpg import kept_negative_pairs, negative_pair_exp_rows, unpg_rows
from ...relations import LabelRelation
from ...similarity import Similarity
from ...validation import check_bool, check_choice, check_labels, check_positive
from .margin_softmax import _MarginSoftmax
from .proxy_base import InitSpec, call_functional

#: Up to this many in-batch negative pairs, the quartiles are read from the gathered pair scores
#: (one float per pair); beyond it, from an exact radix selection that never holds more than one
#: row block of scores (two or four extra passes over the blocks).
GATHER_MAX_PAIRS = 1 << 22

#: How many rounding steps (relative) beyond the box-and-whisker bounds a pair is still kept.
_BOUND_ULPS = 16

_DEFAULT_MARGIN = {"cosface": 0.35, "arcface": 28.6}


def _negative_pair_scores(sim: Similarity, a: torch.Tensor, labels: torch.Tensor, block: int):
    """Yield, block by block, the scores of the negative pairs (j, k), j < k, as 1-D tensors."""
    n = a.shape[0]
    neg_all = labels[:, None] != labels[None, :]
    for start in range(0, n, block):
        end = min(n, start + block)
        s = sim.matrix(a[start:end], a)
        yield s[kept_negative_pairs(s, neg_all[start:end], start, -math.inf, math.inf)]


def _radix_keys(v: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Integer keys (int64) whose unsigned bit patterns sort as the floats ``v`` do."""
    if v.dtype == torch.float64:
        bits = v.view(torch.int64)
        key = torch.where(bits < 0, bits ^ 0x7FFFFFFFFFFFFFFF, bits)
        return key ^ -(1 << 63), 64
    bits = v.to(torch.float32).view(torch.int32).to(torch.int64)
    key = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return key + (1 << 31), 32


def _radix_value(u: int, nbits: int, dtype: torch.dtype) -> torch.Tensor:
    """The float whose key (see :func:`_radix_keys`) is the unsigned ``u``."""
    if nbits == 64:
        key = u ^ (1 << 63)
        key = key - (1 << 64) if key >= 1 << 63 else key
        bits = key ^ 0x7FFFFFFFFFFFFFFF if key < 0 else key
        return torch.tensor(bits, dtype=torch.int64).view(torch.float64)
    key = u - (1 << 31)
    bits = key ^ 0x7FFFFFFF if key < 0 else key
    return torch.tensor(bits, dtype=torch.int32).view(torch.float32).to(dtype)


def _order_statistics(blocks, ks: list[int], dtype: torch.dtype) -> list[torch.Tensor]:
    """The ``ks``-th smallest (0-based) of the values that ``blocks()`` yields, by an exact
    most-significant-digit radix selection (16-bit digits): one pass over the blocks per digit,
    holding only a 65536-bin histogram per statistic."""
    nbits = 64 if dtype == torch.float64 else 32
    prefixes = [0] * len(ks)
    remaining = list(ks)
    for level in range(nbits // 16):
        shift = nbits - 16 * (level + 1)
        hists = None
        for v in blocks():
            u, _ = _radix_keys(v)
            digit = (u >> shift) & 0xFFFF
            high = (u >> (shift + 16)) & ((1 << (nbits - shift - 16)) - 1) if level else None
            counts = []
            for p in prefixes:
                d = digit if high is None else digit[high == p]
                counts.append(torch.bincount(d, minlength=1 << 16))
            hists = counts if hists is None else [h + c for h, c in zip(hists, counts)]
        for j, h in enumerate(hists):
            cum = torch.cumsum(h, 0)
            d = int((cum <= remaining[j]).sum())
            if d:
                remaining[j] -= int(cum[d - 1])
            prefixes[j] = (prefixes[j] << 16) | d
    return [_radix_value(p, nbits, dtype) for p in prefixes]


def box_and_whisker_bounds(
    sim: Similarity, a: torch.Tensor, labels: torch.Tensor, wisk: float | None, block: int
) -> tuple[int, torch.Tensor | float, torch.Tensor | float]:
    """(number of negative pairs L, low, high) of UNPG's noisy-negative filter.

    With the L scores of the negative pairs j < k sorted ascending as ``t``,
    Q1 = t[int(0.25 L)], Q3 = t[int(0.75 L)], IQR = Q3 - Q1, and the kept pairs are those with
    Q1 - wisk IQR <= score <= Q3 + wisk IQR (``box_and_whisker_algorithm`` of the official code),
    each bound widened by 16 rounding steps so that the kept set is the same on every engine.
    ``wisk=None`` keeps every pair. ``a`` are the prepared (normalised) embeddings, no gradient.
    """
    with torch.no_grad():
        counts = torch.unique(labels, return_counts=True)[1]
        b = labels.shape[0]
        n_pairs = (b * b - int((counts * counts).sum())) // 2
        if n_pairs == 0 or wisk is None:
            return n_pairs, -math.inf, math.inf
        ks = [int(0.25 * n_pairs), int(0.75 * n_pairs)]
        if n_pairs <= GATHER_MAX_PAIRS:
            t = torch.cat(list(_negative_pair_scores(sim, a, labels, block)))
            q1, q3 = (torch.kthvalue(t, k + 1).values for k in ks)
        else:
            q1, q3 = (
                q.to(a.device)
                for q in _order_statistics(
                    lambda: _negative_pair_scores(sim, a, labels, block), ks, a.dtype
                )
            )
        iqr = q3 - q1
        # a pair within a few rounding steps of a bound is kept: the scores of the same pair
        # differ in their last bits between the dense product and a row block's, and the kept
        # set must not depend on the engine (it would for a batch of equal embeddings, where
        # every score sits on both bounds)
        slack = _BOUND_ULPS * torch.finfo(a.dtype).eps
        low, high = q1 - wisk * iqr, q3 + wisk * iqr
        return (
            n_pairs,
            low - slack * max(1.0, abs(float(low))),
            high + slack * max(1.0, abs(float(high))),
        )


class UNPGLoss(_MarginSoftmax):
    r"""UNPG (Jung et al., BMVC 2022): CosFace or ArcFace whose softmax denominator also holds
    the in-batch negative pairs.

    .. math:: \ell_i = -\log \frac{e^{s\,\psi(\cos\theta_{i,y_i})}}{e^{s\,\psi(\cos\theta_{i,y_i})}
        + \sum_{c \ne y_i} e^{s \cos\theta_{i,c}} + \sum_{t \in S_n'} e^{s\,t}},
        \qquad L = \frac1B \sum_i \ell_i

    The first two terms are the base loss (CLPG, classification-loss pair generation: the
    embedding against the class weights; ``psi`` is CosFace's ``cos - m`` or ArcFace's
    ``cos(theta + m)``, as :class:`~pairloss.losses.margin_softmax.CosFaceLoss` /
    :class:`~pairloss.losses.margin_softmax.ArcFaceLoss`). The third (MLPG, metric-loss pair
    generation) is the set :math:`S_n'` of cosines :math:`\cos(x_j, x_k)` of the batch's
    negative pairs, j < k and :math:`y_j \ne y_k` (each unordered pair once), after the
    noisy-negative filter, with the same scale s and no margin. The same set enters every
    anchor's denominator (not only the pairs that contain the anchor): this is the official
    code's ``UNPG`` head, which appends the filtered pair scores as extra logit columns to every
    row of the base logits before the cross-entropy.

    Noisy-negative filter (box-and-whisker rule, official ``box_and_whisker_algorithm``): sort
    the L negative-pair cosines ascending as t; Q1 = t[floor(0.25 L)], Q3 = t[floor(0.75 L)],
    IQR = Q3 - Q1; keep the pairs with Q1 - wisk IQR <= t <= Q3 + wisk IQR. The bounds are
    statistics of the batch without gradient (the official code selects with a mask); the
    kept cosines carry gradient to both embeddings of each pair.

    Args:
        num_classes, embedding_size: C and D.
        base: ``"cosface"`` (default) or ``"arcface"``.
        margin: the base's margin: CosFace's m in cosine units (default 0.35) or ArcFace's m in
            degrees (default 28.6 = 0.5 rad), as the base losses.
        scale: s (default 64), shared by both pair generations as in the official code.
        wisk: the whisker factor of the filter (default 1.5, the official configuration's
            ``unpg: wisk: 1.5``, used for its MS1MV2 models; 1.0 for K-FACE). ``None``
            disables the filter (every negative pair is kept).
        mlpg: ``False`` turns the in-batch term off: the loss is then exactly the base loss.
        init, engine, block_size: as :class:`~pairloss.losses.proxy_base.ProxyLossModule`
            (weights N(0, 1), as the base losses; ``W`` is [C, D], one row per class).

    Shapes: embeddings [B, D], labels [B] in [0, C); returns the mean over the batch (or [B]
    with ``reduction="none"``). ``indices_tuple`` weights the rows as the base losses do; the
    in-batch pair set always uses the whole batch.

    Cost: the class term is the base loss's walk (memory O(block x C)); the pair term needs the
    B x B cosines twice (bounds and log-sum shift, without gradient) plus one walk with gradient
    (memory O(block x B)); the quartiles of up to ``GATHER_MAX_PAIRS`` pairs are read from the
    gathered pair scores (one float per pair, no graph), beyond that from an exact radix
    selection over the row blocks. In half precision the cosines are computed in float32.

    Degenerate input: a batch without negative pairs (one class, or one sample) has no MLPG term
    and gives the base loss. Large scales cannot overflow (log-sum-exp with a data shift).
    """

    weight_layout = "CD"
    pml_default_reducer = None

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        base: str = "cosface",
        margin: float | None = None,
        scale: float = 64,
        wisk: float | None = 1.5,
        mlpg: bool = True,
        init: InitSpec = None,
        **kwargs,
    ) -> None:
        check_choice(base, "base", tuple(_DEFAULT_MARGIN))
        m = (
            _DEFAULT_MARGIN[base]
            if margin is None
            else check_positive(margin, "margin", strict=False)
        )
        if base == "arcface" and m >= 180:
            raise PairLossError(f"margin: expected degrees in [0, 180), got {margin!r}")
        if wisk is not None:
            wisk = check_positive(wisk, "wisk", strict=False)
        mlpg = check_bool(mlpg, "mlpg")
        super().__init__(
            num_classes,
            embedding_size,
            math.radians(m) if base == "arcface" else m,
            scale,
            init=init,
            **kwargs,
        )
        self.kind = base
        self.base = base
        self.margin = m
        self.wisk = wisk
        self.mlpg = mlpg
        self._labels = None

    def compute(self, proxies, embeddings, labels=None, indices_tuple=None, ref_emb=None,
                ref_labels=None):  # fmt: skip
        self._labels = labels
        try:
            return super().compute(proxies, embeddings, labels, indices_tuple, ref_emb, ref_labels)
        finally:
            self._labels = None

    def extra_params(self, embeddings: torch.Tensor, w: torch.Tensor) -> tuple:
        """(log of the MLPG sum,) with gradient to the embeddings, or () without MLPG term."""
        if not self.mlpg or self._labels is None:
            return ()
        labels = check_labels(self._labels, embeddings.shape[0]).to(embeddings.device)
        log_sum = self.log_negative_pair_sum(embeddings, labels)
        return () if log_sum is None else (log_sum,)

    def log_negative_pair_sum(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """``log sum_{t in S_n'} exp(scale * t)`` (with gradient), or None when S_n' is empty."""
        b = x.shape[0]
        sim = self.distance
        if choose_engine(b, b, self.engine) == "dense":
            block = b
        else:
            block = self.block_size or default_block_size(b, x.device)
        a = sim.prepare(x.detach())
        n_pairs, low, high = box_and_whisker_bounds(sim, a, labels, self.wisk, block)
        if n_pairs == 0:
            return None
        with torch.no_grad():  # the log of the total, as the shift of the walk with gradient
            neg_all = labels[:, None] != labels[None, :]
            row_lse = []
            for start in range(0, b, block):
                end = min(b, start + block)
                s = sim.matrix(a[start:end], a)
                keep = kept_negative_pairs(s, neg_all[start:end], start, low, high)
                row_lse.append(torch.logsumexp(torch.where(keep, s * self.scale, -math.inf), 1))
            shift = torch.logsumexp(torch.cat(row_lse), 0)
        if not bool(torch.isfinite(shift)):
            return None
        scale = self.scale

        def objective(s, pos, neg, start, end):
            return negative_pair_exp_rows(s, neg, start, low, high, scale, shift)

        problem = PairProblem(
            objective=objective, similarity=sim, relation=LabelRelation(labels), reduction="sum"
        )
        total = run(problem, x, None, engine=self.engine, block_size=self.block_size)
        return shift + torch.log(total)

    def proxy_fused_form(self, weights, extra):
        """The base loss's fused form when there is no in-batch term (``mlpg=False``, or a batch
        without negative pairs); None otherwise: the fused form knows only the class term."""
        return None if extra else super().proxy_fused_form(weights, extra)

    def proxy_objective(self, s, pos, neg, start, end, weights, extra):
        if not extra:
            return super().proxy_objective(s, pos, neg, start, end, weights, extra)
        return unpg_rows(
            s,
            pos,
            self.kind,
            self.margin_value,
            self.scale,
            extra[0],
            weights=None if weights is None else weights[start:end],
        )

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, base={self.base!r}, margin={self.margin}, "
            f"scale={self.scale}, wisk={self.wisk}, mlpg={self.mlpg}"
        )


def unpg(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    proxies: torch.Tensor,
    base: str = "cosface",
    margin: float | None = None,
    scale: float = 64,
    wisk: float | None = 1.5,
    mlpg: bool = True,
    **kwargs,
) -> torch.Tensor:
    """Functional :class:`UNPGLoss` with class weights ``proxies`` [C, D]."""
    return call_functional(
        UNPGLoss, proxies, embeddings, labels, indices_tuple, ref_emb, ref_labels,
        base=base, margin=margin, scale=scale, wisk=wisk, mlpg=mlpg, **kwargs,
    )  # fmt: skip
