"""Similarities and distances between two sets of embeddings.

A :class:`Similarity` maps anchors ``a`` [A, D] and candidates ``c`` [N, D] to a score matrix
[A, N]. It works in two steps so that the engine can walk the matrix in row blocks:
:meth:`Similarity.prepare` is applied once to each whole set (e.g. L2 normalisation, with
autograd), and :meth:`Similarity.matrix` scores a block of prepared anchors against the prepared
candidates. ``is_distance`` says whether low values mean close (distances) or high values do
(similarities); every loss reads it, so any loss accepts any of these.

Names and defaults follow pytorch-metric-learning's ``distances`` module so that code moving over
keeps its arguments: ``CosineSimilarity()``, ``DotProductSimilarity()``, ``LpDistance(p=2, power=1,
normalize_embeddings=True)``.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from .errors import PairLossError
from .validation import (
    check_bool,
    check_callable,
    check_int,
    check_positive,
    check_real,
    check_whole,
)


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt with a zero (not infinite) gradient where x == 0, e.g. for duplicate embeddings."""
    positive = x > 0
    return torch.where(positive, x, torch.ones_like(x)).sqrt() * positive


def row_scale(x: torch.Tensor) -> torch.Tensor:
    """For each row of ``x`` [B, D], the power of two at or above its largest absolute entry, as
    [B, 1], detached (1 for an all-zero row): dividing by it brings every row to max-abs in
    (1/2, 1] without changing its direction, and exactly (no rounding), so that whatever is
    computed from the scaled rows has the bits it has without scaling wherever that does not
    overflow or underflow."""
    m = x.detach().abs().amax(dim=1, keepdim=True)
    return torch.exp2(torch.ceil(torch.log2(torch.where(m > 0, m, torch.ones_like(m)))))


def power_of_two_scale(x: torch.Tensor) -> torch.Tensor:
    """The power of two at or above the largest |entry| of ``x`` (1 when ``x`` is all zero or
    empty), detached: dividing by it brings ``x`` to max-abs in (1/2, 1] exactly, so scale-free
    computations (rankings, k-means, normalisation) never overflow or underflow."""
    top = x.detach().abs().amax() if x.numel() else x.new_zeros(())
    return torch.exp2(torch.ceil(torch.log2(torch.where(top > 0, top, 1.0))))


def row_norms(x: torch.Tensor) -> torch.Tensor:
    """The Euclidean norm of each row of ``x`` [B, D] -> [B], exact at any magnitude.

    ``torch.linalg.vector_norm`` squares the entries, so in float32 a row with norm above about
    1.8e19 gives inf and one below about 1e-19 gives 0 (1e308 / 1e-154 in float64). Here each
    row is divided by its largest absolute entry first (a constant for autograd: the norm is
    homogeneous, so the gradient x / |x| is exact, at every order)."""
    m = row_scale(x)
    return torch.linalg.vector_norm(x / m, dim=1) * m.squeeze(1)


def normalize_rows(x: torch.Tensor) -> torch.Tensor:
    """``x / |x|`` row by row, exact at any magnitude (see :func:`row_norms`); an all-zero row
    stays zero (with the gradient ``g / 1e-12`` of :func:`torch.nn.functional.normalize`)."""
    return torch.nn.functional.normalize(x / row_scale(x), p=2, dim=1)


def unit_vectors(x: torch.Tensor) -> torch.Tensor:
    """``x / |x|`` along the last dimension of ``x`` [..., D] (views [V, B, D], heads [B, H, D]),
    exact at any magnitude: :func:`normalize_rows` on the flattened rows."""
    return normalize_rows(x.reshape(-1, x.shape[-1])).reshape(x.shape)


def cosine_rows(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``torch.nn.functional.cosine_similarity(a, b, dim=1, eps=eps)`` of paired rows [B, D],
    exact at any magnitude: each row is first divided by its power-of-two scale
    (:func:`row_scale`; exact, and the cosine is invariant to it), so that the norms neither
    overflow nor fall under ``eps``; bit-identical to torch's where those do not happen."""
    return torch.nn.functional.cosine_similarity(a / row_scale(a), b / row_scale(b), dim=1, eps=eps)


class DotForm:
    """A score that is an elementwise function of the dot product of prepared vectors,
    s = f(a . c), applied in place on a block: :meth:`scores_` turns a block of dot products
    into scores and :meth:`dot_grad_` turns dL/ds into dL/d(a . c). The identity here.

    A form may read per-row constants of the whole prepared sets (e.g. their squared norms):
    the engine calls :meth:`bind` once with the prepared anchors and candidates and then
    :meth:`block_scores_` for the block whose first anchor row is ``start``."""

    def scores_(self, dots: torch.Tensor) -> torch.Tensor:
        return dots

    def dot_grad_(self, grad: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return grad

    def bind(self, anchors: torch.Tensor, candidates: torch.Tensor) -> DotForm:
        """This form for the prepared ``anchors`` [B, D] and ``candidates`` [N, D]."""
        return self

    def block_scores_(self, dots: torch.Tensor, start: int) -> torch.Tensor:
        """:meth:`scores_` of the block of dot products whose first anchor row is ``start``."""
        return self.scores_(dots)


def squared_norms(a: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """|a_i|^2 [A] and |c_j|^2 [N] (one tensor when ``c`` is ``a``): the norm terms of
    d^2 = |a|^2 + |c|^2 - 2 a . c, the same numbers on the dense and the fused blocked path."""
    sq_a = torch.linalg.vector_norm(a, dim=1).square()
    return sq_a, sq_a if c is a else torch.linalg.vector_norm(c, dim=1).square()


class _NormalisedLpForm(DotForm):
    """The Euclidean distance of L2-normalised vectors from their dot products, as
    ``torch.cdist`` computes it (and hence pytorch-metric-learning's ``LpDistance``):
    d^2 = |a|^2 + |c|^2 - 2 a . c with the norms of the normalised vectors as they are (1 up to
    rounding), clamped at 0; d = sqrt(d^2) unless ``power=2``. Unbound (no norms), |a| = |c| = 1
    is assumed: d^2 = 2 - 2 a . c.

    The gradient is taken through the dot product only: the norm terms' share lies along a and
    c, which the normalisation's backward removes. At d = 0 it is 0."""

    def __init__(self, power: int, sq_a=None, sq_c=None) -> None:
        self.power, self.sq_a, self.sq_c = power, sq_a, sq_c

    def bind(self, anchors: torch.Tensor, candidates: torch.Tensor) -> DotForm:
        return _NormalisedLpForm(self.power, *squared_norms(anchors, candidates))

    def _finish_(self, sq: torch.Tensor) -> torch.Tensor:
        sq.clamp_min_(0)
        return sq if self.power == 2 else sq.sqrt_()

    def scores_(self, dots: torch.Tensor) -> torch.Tensor:
        return self._finish_(dots.mul_(-2).add_(2))

    def block_scores_(self, dots: torch.Tensor, start: int) -> torch.Tensor:
        if self.sq_a is None:
            return self.scores_(dots)
        rows = self.sq_a[start : start + dots.shape[0], None]
        return self._finish_(dots.mul_(-2).add_(rows).add_(self.sq_c[None, :]))

    def dot_grad_(self, grad: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.power == 2:
            return grad.mul_(-2)
        # dd/d(a.c) = -1/d, and 0 where d = 0
        return grad.div_(scores).neg_().nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)


class Similarity(nn.Module):
    """Base class: ``forward(a, c)`` = ``matrix(prepare(a), prepare(c))``, shape [A, N].

    Subclasses set ``is_distance`` and implement :meth:`matrix` (and :meth:`prepare` if the
    inputs are transformed first).

    pytorch-metric-learning's distance interface is available on every similarity:
    ``is_inverted`` (True for similarities), ``normalize_embeddings``, ``p``, ``power``,
    :meth:`compute_mat`, :meth:`pairwise_distance`, :meth:`margin`, :meth:`smallest_dist`,
    :meth:`largest_dist`, :meth:`normalize`, :meth:`maybe_normalize` and :meth:`get_norm`.
    """

    is_distance: bool = False
    p: float = 2
    power: float = 1

    def __init__(self, normalize_embeddings: bool = False) -> None:
        super().__init__()
        self.normalize_embeddings = check_bool(normalize_embeddings, "normalize_embeddings")

    @property
    def is_inverted(self) -> bool:
        """pytorch-metric-learning's name: True when high values mean close."""
        return not self.is_distance

    @is_inverted.setter
    def is_inverted(self, value: bool) -> None:
        self.is_distance = not check_bool(value, "is_inverted")

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Transform a whole set once (normalisation when ``normalize_embeddings``)."""
        return self.maybe_normalize(x)

    def normalize(self, embeddings: torch.Tensor, dim: int = 1, **kwargs) -> torch.Tensor:
        """``embeddings`` divided by their ``p``-norm along ``dim`` (rows of a matrix in the
        L2 norm: exact at any magnitude, see :func:`normalize_rows`)."""
        if self.p == 2 and embeddings.dim() == 2 and dim in (1, -1) and not kwargs:
            return normalize_rows(embeddings)
        return torch.nn.functional.normalize(embeddings, p=self.p, dim=dim, **kwargs)

    def maybe_normalize(self, embeddings: torch.Tensor, dim: int = 1, **kwargs) -> torch.Tensor:
        """:meth:`normalize` when ``normalize_embeddings``, else ``embeddings``."""
        if self.normalize_embeddings:
            return self.normalize(embeddings, dim=dim, **kwargs)
        return embeddings

    def get_norm(self, embeddings: torch.Tensor, dim: int = 1, **kwargs) -> torch.Tensor:
        """The ``p``-norm of ``embeddings`` along ``dim``."""
        return torch.norm(embeddings, p=self.p, dim=dim, **kwargs)

    def margin(self, x, y):
        """How far ``x`` lies beyond ``y`` towards "far apart": x - y for distances, y - x for
        similarities (pytorch-metric-learning's ``distance.margin``)."""
        return y - x if self.is_inverted else x - y

    def smallest_dist(self, *args, **kwargs):
        """``torch.min`` for distances, ``torch.max`` for similarities (the closest)."""
        return torch.max(*args, **kwargs) if self.is_inverted else torch.min(*args, **kwargs)

    def largest_dist(self, *args, **kwargs):
        """``torch.max`` for distances, ``torch.min`` for similarities (the farthest)."""
        return torch.min(*args, **kwargs) if self.is_inverted else torch.max(*args, **kwargs)

    def prepare_grad_(
        self, grad: torch.Tensor, x: torch.Tensor, prepared: torch.Tensor
    ) -> torch.Tensor:
        """dL/dx from dL/d(prepare(x)), in place on ``grad`` (the fused engine path, which
        prepares outside autograd). For L2 normalisation p = x / |x| (:func:`normalize_rows`):
        dL/dx = (g - p (p . g)) / |x|, and g / 1e-12 for an all-zero row."""
        if not self.normalize_embeddings:
            return grad
        norm = row_norms(x)
        unclamped = norm > 0
        # row dot products without a temporary of the inputs' size
        along = torch.bmm(prepared.unsqueeze(1), grad.unsqueeze(2)).view(-1) * unclamped
        grad.addcmul_(prepared, along[:, None], value=-1.0)
        return grad.div_(torch.where(unclamped, norm, 1e-12)[:, None])

    def matrix(self, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Scores of prepared anchors [A, D] against prepared candidates [N, D] -> [A, N]."""
        raise NotImplementedError

    @property
    def bounded(self) -> bool:
        """Whether the scores lie in a fixed range whatever the inputs' magnitude (normalised
        vectors), so that they cannot overflow; raw dot products and distances can."""
        return self.normalize_embeddings

    def paired(self, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Scores of row i of ``a`` with row i of ``c`` (prepared, both [P, D]) -> [P]."""
        raise NotImplementedError

    def compute_mat(self, query_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        """pytorch-metric-learning's name for the score matrix of prepared sets (before
        ``power``)."""
        return self.matrix(query_emb, ref_emb)

    def pairwise_distance(self, query_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        """Scores of row i of ``query_emb`` with row i of ``ref_emb`` (prepared) -> [P]."""
        return self.paired(query_emb, ref_emb)

    def check_shapes(self, query_emb: torch.Tensor, ref_emb: torch.Tensor | None) -> None:
        """Both inputs [*, D] matrices (PairLossError otherwise)."""
        for name, x in (("query_emb", query_emb), ("ref_emb", ref_emb)):
            if x is not None and (not isinstance(x, torch.Tensor) or x.dim() != 2):
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise PairLossError(
                    f"{name}: expected a 2-D tensor of shape [batch, dim], got {shape}"
                )

    def forward(self, a: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        self.check_shapes(a, c)
        a = self.prepare(a)
        c = a if c is None else self.prepare(c)
        return self.matrix(a, c)

    def dot_form(self) -> DotForm | None:
        """The score as an elementwise function of prepared dot products, when it is one and
        has no learnable parameters (the fused engine path needs it); None otherwise."""
        return None

    def same_scores(self, other: Similarity) -> bool:
        """Whether ``other`` gives exactly this similarity's scores (same kind and settings,
        no learnable parameters), so that one score matrix can serve both."""
        both_dot = isinstance(self, DotProductSimilarity) and isinstance(
            other, DotProductSimilarity
        )  # CosineSimilarity is DotProductSimilarity(normalize_embeddings=True)
        return self is other or (
            (type(self) is type(other) or both_dot)
            and self.normalize_embeddings == other.normalize_embeddings
            and self.p == other.p
            and self.power == other.power
            and not list(self.parameters())
            and not list(other.parameters())
        )

    def closer(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Boolean: ``x`` means a closer pair than ``y``."""
        return x < y if self.is_distance else x > y

    def signed(self, s: torch.Tensor) -> torch.Tensor:
        """Scores turned into 'higher is closer' form: ``-d`` for distances, ``s`` otherwise."""
        return -s if self.is_distance else s


class BaseDistance(Similarity):
    """pytorch-metric-learning's distance base class, with its constructor and defaults:
    ``BaseDistance(normalize_embeddings=True, p=2, power=1, is_inverted=False)``.

    A subclass implements :meth:`compute_mat` (prepared query [A, D] x prepared reference
    [N, D] -> [A, N]) and :meth:`pairwise_distance`; the score matrix is
    ``compute_mat(...) ** power`` of the (``p``-)normalised inputs, as in pytorch-metric-learning,
    and every pairloss loss accepts it (through the engine's generic path).

    Args:
        normalize_embeddings: divide each vector by its ``p``-norm first.
        p: the norm's order (> 0).
        power: the exponent applied to the matrix (> 0: a power at or below 0 would flatten
            or reverse the order of the scores while ``is_inverted`` stays as it is).
        is_inverted: True for similarities (high = close).
        collect_stats: accepted for pytorch-metric-learning's signature; pairloss records no
            statistics on distances.
    """

    def __init__(
        self,
        normalize_embeddings: bool = True,
        p: float = 2,
        power: float = 1,
        is_inverted: bool = False,
        collect_stats: bool | None = None,
    ) -> None:
        super().__init__(normalize_embeddings=normalize_embeddings)
        self.p = check_real(p, "p", low=0.0, low_open=True)
        self.power = check_positive(power, "power")
        self.is_inverted = is_inverted
        self.collect_stats = (
            None if collect_stats is None else check_bool(collect_stats, "collect_stats")
        )

    def compute_mat(self, query_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pairwise_distance(self, query_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def matrix(self, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        mat = self.compute_mat(a, c)
        return mat if self.power == 1 else mat**self.power

    def paired(self, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        out = self.pairwise_distance(a, c)
        return out if self.power == 1 else out**self.power


class DotProductSimilarity(BaseDistance):
    """s(a, c) = a . c. As in pytorch-metric-learning, the vectors are L2-normalised first
    unless ``normalize_embeddings=False`` (the name ``"dot"`` gives the raw dot product).
    ``power`` is a whole number >= 1: a dot product may be negative, where a fractional power
    is undefined."""

    def __init__(self, normalize_embeddings: bool = True, **kwargs) -> None:
        if "power" in kwargs:
            kwargs["power"] = check_whole(kwargs["power"], "power", low=1)
        if not check_bool(kwargs.pop("is_inverted", True), "is_inverted"):
            raise PairLossError(
                "is_inverted: a dot-product similarity is always inverted (high = close); "
                "expected True"
            )
        super().__init__(normalize_embeddings=normalize_embeddings, is_inverted=True, **kwargs)

    def compute_mat(self, query_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        return torch.matmul(query_emb, ref_emb.transpose(-1, -2))

    def pairwise_distance(self, query_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        return torch.sum(query_emb * ref_emb, dim=1)

    def dot_form(self) -> DotForm | None:
        if self.power != 1 or (self.normalize_embeddings and self.p != 2):
            return None
        return DotForm()


class CosineSimilarity(DotProductSimilarity):
    """s(a, c) = a . c / (|a| |c|): the dot product of L2-normalised vectors, in [-1, 1]."""

    def __init__(self, normalize_embeddings: bool = True, **kwargs) -> None:
        if normalize_embeddings is not True:
            raise PairLossError(
                "normalize_embeddings: CosineSimilarity always normalises; expected True "
                "(use DotProductSimilarity(normalize_embeddings=False) for raw dot products)"
            )
        super().__init__(normalize_embeddings=True, **kwargs)


CDIST_MM_ROWS = 25
"""``torch.cdist`` (p = 2) takes the matrix-product form when either side has more rows."""


def cdist_euclidean(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``torch.cdist(a, c, p=2)`` [A, N] of ``a`` [A, D] and ``c`` [N, D], computed the way
    torch computes it, so that the values agree to rounding (in float32, where the two forms
    differ by up to 1e-3 on close pairs, to the bit on the matrix-product form), but from
    differentiable operations: double backward, forward-mode AD and ``torch.func`` work (torch's
    own ``cdist`` backward has no derivative). With more than 25 rows on a side:
    d^2 = [-2a, |a|^2, 1] . [c, 1, |c|^2] in one product, clamped at 0; else the direct sum
    of squared differences. The gradient at d = 0 is 0."""
    if a.shape[0] > CDIST_MM_ROWS or c.shape[0] > CDIST_MM_ROWS:
        sq_a = a.pow(2).sum(-1, keepdim=True)
        sq_c = c.pow(2).sum(-1, keepdim=True)
        left = torch.cat([a.mul(-2), sq_a, torch.ones_like(sq_a)], -1)
        right = torch.cat([c, torch.ones_like(sq_c), sq_c], -1)
        return _safe_sqrt((left @ right.T).clamp_min(0))
    return _safe_sqrt(((a[:, None, :] - c[None, :, :]) ** 2).sum(-1))


class LpDistance(BaseDistance):
    """Minkowski distance d(a, c) = |a - c|_p, raised to ``power``.

    Defaults as pytorch-metric-learning: ``p=2``, ``power=1``, ``normalize_embeddings=True``
    (``p``-normalised first). The matrix is ``torch.cdist``'s (for ``p = 2`` the same formulas
    from differentiable operations, :func:`cdist_euclidean`), as in pytorch-metric-learning, so
    the values are the same (in float32 too, where ``torch.cdist`` takes
    d^2 = |a|^2 + |c|^2 - 2 a . c for more than 25 rows: a close pair's distance carries that
    formula's rounding). The blocked engine's hand-differentiated path computes the same formula
    from its block of dot products (see :class:`_NormalisedLpForm`); ``EuclideanDistance``
    is the raw (unnormalised) distance. The gradient at d = 0 (duplicate vectors) is 0.
    """

    def __init__(
        self, p: float = 2, power: float = 1, normalize_embeddings: bool = True, **kwargs
    ) -> None:
        if check_bool(kwargs.pop("is_inverted", False), "is_inverted"):
            raise PairLossError("is_inverted: a distance is never inverted; expected False")
        super().__init__(
            normalize_embeddings=normalize_embeddings, p=p, power=power, is_inverted=False,
            **kwargs,
        )  # fmt: skip

    def forward(self, a: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """pytorch-metric-learning's call, ``distance(query_emb, ref_emb=None)``: its values to
        the bit, ``compute_mat(...) ** power`` of the prepared inputs (``torch.cdist``'s)."""
        self.check_shapes(a, c)
        a = self.prepare(a)
        c = a if c is None else self.prepare(c)
        mat = self.compute_mat(a, c)
        return mat if self.power == 1 else mat**self.power

    def matrix(self, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The engines' scores. Normalised vectors, ``p = 2``, ``power`` 1 or 2:
        d^2 = |a|^2 + |c|^2 - 2 a . c from
        the product of the prepared sets, the very arithmetic of the blocked engine's fused walk
        (:class:`_NormalisedLpForm`), so that both engines agree on ties (e.g. pairs exactly at
        a margin); cdist's own formula for more than 25 rows, to rounding. Else
        ``compute_mat(a, c) ** power``."""
        if self.normalize_embeddings and self.p == 2 and self.power in (1, 2):
            dtype = a.dtype
            if dtype in (torch.float16, torch.bfloat16):
                a, c = a.float(), c.float()
            sq_a, sq_c = squared_norms(a, c)
            sq = (a @ c.T).mul(-2).add(sq_a[:, None]).add(sq_c[None, :]).clamp_min(0)
            return (sq if self.power == 2 else _safe_sqrt(sq)).to(dtype)
        return super().matrix(a, c)

    def compute_mat(self, query_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        """``torch.cdist``'s values (computed in float32 for half inputs); for ``p = 2`` by
        :func:`cdist_euclidean`, which autograd differentiates to any order. Unnormalised
        vectors beyond the range where squares stay finite are scaled by a power of two first
        (exact; no scaling, the same bits, in the usual range)."""
        dtype = query_emb.dtype
        if dtype in (torch.float16, torch.bfloat16):
            query_emb, ref_emb = query_emb.float(), ref_emb.float()
        dist = cdist_euclidean if self.p == 2 else partial(torch.cdist, p=self.p)
        if self.normalize_embeddings:
            out = dist(query_emb, ref_emb)
        else:
            m = _power_of_two_scale(query_emb, ref_emb)
            out = dist(query_emb / m, ref_emb / m) * m
        return out.to(dtype)

    def pairwise_distance(self, query_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        """pytorch-metric-learning's: ``torch.nn.functional.pairwise_distance`` (which adds
        1e-6 to every difference)."""
        return torch.nn.functional.pairwise_distance(query_emb, ref_emb, p=self.p)

    def paired(self, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The matrix's values on row pairs: |a_i - c_i|_p ** power, without the 1e-6 of
        :meth:`pairwise_distance` (exact at any magnitude, as :meth:`compute_mat`)."""
        m = 1.0 if self.normalize_embeddings else _power_of_two_scale(a, c)
        if self.p == 2:
            sq = (((a - c) / m) ** 2).sum(dim=1)
            if self.power == 2:
                return sq * (m * m)
            return (_safe_sqrt(sq) * m) ** self.power
        return (torch.linalg.vector_norm((a - c) / m, ord=self.p, dim=1) * m) ** self.power

    def dot_form(self) -> DotForm | None:
        if self.normalize_embeddings and self.p == 2 and self.power in (1, 2):
            return _NormalisedLpForm(int(self.power))
        return None


def _power_of_two_scale(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """A power of two ``m`` (detached) that brings the largest |entry| of ``a`` and ``c`` into
    the range where the squared norms of ``a / m`` and ``c / m`` neither overflow nor lose
    precision to underflow; 1 (no scaling) when it is there already, which is nearly always.

    Raw Euclidean distances are computed from ``a / m`` and ``c / m`` and scaled back. Dividing
    by a power of two is exact, so the distances are finite wherever the distance itself is (in
    float32 the squares of entries above about 1e19 overflow, below about 1e-19 vanish), and the
    same bits as without scaling where none is needed. The smallest sufficient ``m`` is taken
    because autograd carries ``m`` times the gradient through ``a / m``."""
    highs = [t.detach().abs().amax() for t in (a, c) if t.numel()]
    top = torch.stack(highs).amax() if highs else a.new_zeros(())
    finfo = torch.finfo(a.dtype)
    # |a|^2 + |c|^2 + 2 |a . c| <= 4 D top^2 must stay below the dtype's maximum
    hi = (math.log2(finfo.max) - math.log2(4 * max(1, a.shape[1]))) // 2 - 1
    lo = math.log2(finfo.tiny) // 4
    e = torch.log2(torch.where(top > 0, top, 1.0))
    shift = torch.where(e > hi, torch.ceil(e - hi), torch.where(e < lo, torch.floor(e - lo), 0.0))
    return torch.exp2(shift)


class EuclideanDistance(LpDistance):
    """Euclidean distance on raw vectors by default: ``LpDistance(normalize_embeddings=False)``."""

    def __init__(self, squared: bool = False, normalize_embeddings: bool = False) -> None:
        squared = check_bool(squared, "squared")
        super().__init__(p=2, power=2 if squared else 1, normalize_embeddings=normalize_embeddings)


class SNRDistance(BaseDistance):
    """Signal-to-noise ratio distance (Yuan et al., "Signal-To-Noise Ratio: A Robust Distance
    Metric for Deep Metric Learning", CVPR 2019): d(a, c) = Var(a - c) / Var(a), the variance
    over the features (unbiased, as ``torch.var``), of the (by default L2-normalised) vectors.

    Computed from centred vectors a' = a - mean(a): d = |a' - c'|^2 / |a'|^2, as one matrix
    product per block (|a'|^2 + |c'|^2 - 2 a'.c', clamped at 0). Defaults as
    pytorch-metric-learning's ``SNRDistance``: ``normalize_embeddings=True``, ``p=2``,
    ``power=1``. A vector with zero variance gives an infinite or undefined ratio, as there.
    """

    def __init__(self, **kwargs) -> None:
        if check_bool(kwargs.pop("is_inverted", False), "is_inverted"):
            raise PairLossError("is_inverted: a distance is never inverted; expected False")
        super().__init__(is_inverted=False, **kwargs)

    def compute_mat(self, query_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        q = query_emb - query_emb.mean(dim=1, keepdim=True)
        r = ref_emb - ref_emb.mean(dim=1, keepdim=True)
        sq_q = (q * q).sum(dim=1)
        sq_r = (r * r).sum(dim=1)
        diff = (sq_q[:, None] + sq_r[None, :] - 2 * (q @ r.T)).clamp_min(0)
        return diff / sq_q[:, None]

    def pairwise_distance(self, query_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        return torch.var(query_emb - ref_emb, dim=1) / torch.var(query_emb, dim=1)


class ScaledSimilarity(Similarity):
    """A learnable affine map of another similarity: s' = exp(t) * s + b.

    ``t`` (log-scale) starts at ``log(init_scale)`` and ``b`` at ``init_bias``; either can be
    frozen with ``learn_scale=False`` / ``learn_bias=False``. ``max_scale`` clamps exp(t) (CLIP
    clamps its logit scale at 100). Used for CLIP/SigLIP-style logits and GE2E's w cos + b.
    """

    def __init__(
        self,
        base: Similarity | None = None,
        init_scale: float = 1.0,
        init_bias: float = 0.0,
        learn_scale: bool = True,
        learn_bias: bool = True,
        max_scale: float | None = None,
    ) -> None:
        super().__init__()
        if base is not None and not isinstance(base, Similarity):
            raise PairLossError(f"base: expected a pairloss Similarity or None, got {base!r}")
        self.base = base if base is not None else CosineSimilarity()
        init_scale = check_positive(init_scale, "init_scale")
        self.is_distance = self.base.is_distance
        log_scale = torch.tensor(math.log(init_scale), dtype=torch.float32)
        bias = torch.tensor(check_real(init_bias, "init_bias"), dtype=torch.float32)
        learn_scale = check_bool(learn_scale, "learn_scale")
        learn_bias = check_bool(learn_bias, "learn_bias")
        self.log_scale = nn.Parameter(log_scale, requires_grad=learn_scale)
        self.bias = nn.Parameter(bias, requires_grad=learn_bias)
        self.max_scale = None if max_scale is None else check_positive(max_scale, "max_scale")

    def scale(self) -> torch.Tensor:
        """The current multiplier exp(t), clamped at ``max_scale`` when one is set."""
        s = self.log_scale.exp()
        return s if self.max_scale is None else s.clamp(max=self.max_scale)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return self.base.prepare(x)

    @property
    def bounded(self) -> bool:
        return self.base.bounded

    def matrix(self, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.scale().to(a.dtype) * self.base.matrix(a, c) + self.bias.to(a.dtype)

    def paired(self, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.scale().to(a.dtype) * self.base.paired(a, c) + self.bias.to(a.dtype)


class BatchedDistance(nn.Module):
    """pytorch-metric-learning's ``BatchedDistance``: walk the query rows in blocks of
    ``batch_size`` and hand each block's score matrix to ``iter_fn(mat, start, end)``; nothing
    of size queries x references is held. Attributes not found here are read from
    ``distance``.

    Passed as a loss's ``distance``, it stands for ``distance`` run by the blocked engine with
    ``batch_size`` rows per block (the loss is the same; the engine never holds the matrix).

    Args:
        distance: a :class:`Similarity` (or a pytorch-metric-learning distance).
        iter_fn: called with each block's [b, N] matrix and its row range.
        batch_size: rows per block (>= 1).
    """

    def __init__(self, distance, iter_fn=None, batch_size: int = 32) -> None:
        super().__init__()
        self.distance = get_similarity(distance, None)
        if self.distance is None:
            raise PairLossError("distance: expected a distance object, got None")
        self.iter_fn = None if iter_fn is None else check_callable(iter_fn, "iter_fn")
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)

    def forward(self, query_emb: torch.Tensor, ref_emb: torch.Tensor | None = None) -> None:
        if self.iter_fn is None:
            raise PairLossError("iter_fn: BatchedDistance was called without an iter_fn")
        ref_emb = query_emb if ref_emb is None else ref_emb
        for start in range(0, query_emb.shape[0], self.batch_size):
            end = min(query_emb.shape[0], start + self.batch_size)
            self.iter_fn(self.distance(query_emb[start:end], ref_emb), start, end)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["distance"], name)


def check_implemented(sim: Similarity) -> Similarity:
    """``sim`` if its class computes scores (implements :meth:`Similarity.matrix` or
    :meth:`BaseDistance.compute_mat`); else a :class:`PairLossError` naming ``distance``: the
    abstract bases (``BaseDistance()``, ``Similarity()``) would fail only at the first call."""
    cls = type(sim)
    if cls.matrix in (Similarity.matrix, BaseDistance.matrix) and cls.compute_mat in (
        Similarity.compute_mat,
        BaseDistance.compute_mat,
    ):
        raise PairLossError(
            f"distance: {cls.__name__} is an abstract base that computes no scores; expected a "
            f"subclass implementing compute_mat (e.g. LpDistance, CosineSimilarity, SNRDistance)"
        )
    return sim


_BY_NAME = {
    "cosine": CosineSimilarity,
    "dot": lambda: DotProductSimilarity(normalize_embeddings=False),
    "euclidean": lambda: LpDistance(power=1, normalize_embeddings=False),
    "squared_euclidean": lambda: LpDistance(power=2, normalize_embeddings=False),
}


def get_similarity(spec, default: Similarity | None) -> Similarity | None:
    """A :class:`Similarity` from an instance, a name (cosine, dot, euclidean,
    squared_euclidean), a pytorch-metric-learning distance (translated by
    :func:`pairloss.compat.pml.similarity_from_pml`), or None (``default``). A
    :class:`BatchedDistance` gives its inner distance."""
    if spec is None:
        return default
    if isinstance(spec, BatchedDistance):
        return spec.distance
    if isinstance(spec, Similarity):
        return check_implemented(spec)
    if isinstance(spec, str) and spec in _BY_NAME:
        return _BY_NAME[spec]()
    from .compat.pml import similarity_from_pml

    translated = similarity_from_pml(spec)
    if translated is not None:
        return translated
    raise PairLossError(
        f"distance: expected a pairloss Similarity, a pytorch-metric-learning distance or one "
        f"of {sorted(_BY_NAME)}, got {spec!r}"
    )
