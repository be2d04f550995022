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

import torch
from torch import nn

from .errors import PairLossError
from .validation import check_bool, check_positive, check_real


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


class DotForm:
    """A score that is an elementwise function of the dot product of prepared vectors,
    s = f(a . c), applied in place on a block: :meth:`scores_` turns a block of dot products
    into scores and :meth:`dot_grad_` turns dL/ds into dL/d(a . c). The identity here."""

    def scores_(self, dots: torch.Tensor) -> torch.Tensor:
        return dots

    def dot_grad_(self, grad: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return grad


class _UnitSphereDistance(DotForm):
    """d = sqrt(2 - 2 a . c) for unit vectors (``power=2``: d^2 = 2 - 2 a . c), clamped at 0
    with a zero gradient at d = 0, as :class:`LpDistance` computes it."""

    def __init__(self, power: int) -> None:
        self.power = power

    def scores_(self, dots: torch.Tensor) -> torch.Tensor:
        dots.mul_(-2).add_(2).clamp_min_(0)
        return dots if self.power == 2 else dots.sqrt_()

    def dot_grad_(self, grad: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.power == 2:
            return grad.mul_(-2)
        # dd/d(a.c) = -1/d, and 0 where d = 0
        return grad.div_(scores).neg_().nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)


class Similarity(nn.Module):
    """Base class: ``forward(a, c)`` = ``matrix(prepare(a), prepare(c))``, shape [A, N].

    Subclasses set ``is_distance`` and implement :meth:`matrix` (and :meth:`prepare` if the
    inputs are transformed first).
    """

    is_distance: bool = False

    def __init__(self, normalize_embeddings: bool = False) -> None:
        super().__init__()
        self.normalize_embeddings = check_bool(normalize_embeddings, "normalize_embeddings")

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Transform a whole set once (L2 normalisation when ``normalize_embeddings``)."""
        if self.normalize_embeddings:
            return normalize_rows(x)
        return x

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

    def forward(self, a: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
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
        return self is other or (
            type(self) is type(other)
            and self.normalize_embeddings == other.normalize_embeddings
            and getattr(self, "power", None) == getattr(other, "power", None)
            and not list(self.parameters())
            and not list(other.parameters())
        )

    def closer(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Boolean: ``x`` means a closer pair than ``y``."""
        return x < y if self.is_distance else x > y

    def signed(self, s: torch.Tensor) -> torch.Tensor:
        """Scores turned into 'higher is closer' form: ``-d`` for distances, ``s`` otherwise."""
        return -s if self.is_distance else s


class DotProductSimilarity(Similarity):
    """s(a, c) = a . c. As in pytorch-metric-learning, the vectors are L2-normalised first
    unless ``normalize_embeddings=False`` (the name ``"dot"`` gives the raw dot product)."""

    def __init__(self, normalize_embeddings: bool = True) -> None:
        super().__init__(normalize_embeddings=normalize_embeddings)

    def matrix(self, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return a @ c.T

    def dot_form(self) -> DotForm | None:
        return DotForm()

    def paired(self, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return (a * c).sum(dim=1)


class CosineSimilarity(DotProductSimilarity):
    """s(a, c) = a . c / (|a| |c|): the dot product of L2-normalised vectors, in [-1, 1]."""

    def __init__(self, normalize_embeddings: bool = True) -> None:
        if not check_bool(normalize_embeddings, "normalize_embeddings"):
            raise PairLossError(
                "normalize_embeddings: CosineSimilarity always normalises; expected True "
                "(use DotProductSimilarity(normalize_embeddings=False) for raw dot products)"
            )
        super().__init__(normalize_embeddings=True)


class LpDistance(Similarity):
    """Euclidean distance d(a, c) = |a - c|_2, or its square with ``power=2``.

    ``normalize_embeddings=True`` (the default, as in pytorch-metric-learning) L2-normalises
    first, so d = sqrt(2 - 2 cos). Only p=2 is supported: the engine needs the distance as a
    function of a matrix product. The gradient at d = 0 (duplicate vectors) is taken as 0.
    """

    is_distance = True

    def __init__(self, p: float = 2, power: float = 1, normalize_embeddings: bool = True) -> None:
        super().__init__(normalize_embeddings=normalize_embeddings)
        if check_real(p, "p") != 2:
            raise PairLossError(f"p: only the Euclidean norm is supported; expected p=2, got {p!r}")
        if check_real(power, "power") not in (1, 2):
            raise PairLossError(
                f"power: expected 1 (distance) or 2 (squared distance), got {power!r}"
            )
        self.p = 2
        self.power = int(power)

    def _finish(self, sq: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        sq = sq.clamp_min(0)
        if scale is None:
            return sq if self.power == 2 else _safe_sqrt(sq)
        return sq * (scale * scale) if self.power == 2 else _safe_sqrt(sq) * scale

    def dot_form(self) -> DotForm | None:
        return _UnitSphereDistance(self.power) if self.normalize_embeddings else None

    def matrix(self, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.normalize_embeddings:
            return self._finish(2 - 2 * (a @ c.T))
        m = _power_of_two_scale(a, c)
        a, c = a / m, c / m
        sq = (a * a).sum(1, keepdim=True) + (c * c).sum(1)[None, :] - 2 * (a @ c.T)
        return self._finish(sq, m)

    def paired(self, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.normalize_embeddings:
            return self._finish(((a - c) ** 2).sum(dim=1))
        m = _power_of_two_scale(a, c)
        return self._finish((((a - c) / m) ** 2).sum(dim=1), m)


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


_BY_NAME = {
    "cosine": CosineSimilarity,
    "dot": lambda: DotProductSimilarity(normalize_embeddings=False),
    "euclidean": lambda: LpDistance(power=1, normalize_embeddings=False),
    "squared_euclidean": lambda: LpDistance(power=2, normalize_embeddings=False),
}


def get_similarity(spec: Similarity | str | None, default: Similarity) -> Similarity:
    """A :class:`Similarity` from an instance, a name (cosine, dot, euclidean,
    squared_euclidean) or None (``default``)."""
    if spec is None:
        return default
    if isinstance(spec, Similarity):
        return spec
    if isinstance(spec, str) and spec in _BY_NAME:
        return _BY_NAME[spec]()
    raise PairLossError(
        f"distance: expected a pairloss Similarity or one of {sorted(_BY_NAME)}, got {spec!r}"
    )
