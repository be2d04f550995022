"""Margin-softmax proxy losses: softmax cross-entropy of each embedding against learnable class
weights, with a margin on the true class.

All of them run through the pair engine with the class weights as candidates (see
:mod:`pairloss.losses.proxy_base`): positive = own class weight, negatives = the other classes.
Names, constructor arguments, defaults, weight initialisation and results follow
pytorch-metric-learning, and so does the weight: ``W`` [D, C] (the engine reads its transpose,
a view). ``get_logits(x)`` gives the scaled logits [B, C] as pytorch-metric-learning's. Shapes: embeddings [B, D], labels [B] in [0, num_classes). Returns a scalar mean over
the batch (``reduction="mean"``), or [B] with ``reduction="none"``. ``indices_tuple`` weights
each sample by how often it appears (pytorch-metric-learning's rule). Give the weights their own
learning rate with an optimizer parameter group holding ``loss_fn.parameters()``.
"""

from __future__ import annotations

import math

import torch

from ...errors import PairLossError
from ...objectives.margin_softmax import arcface_target, margin_softmax_rows, softmax_ce_fused
from ...reducers import MeanReducer
from ...similarity import Similarity, row_norms
from ...validation import (
    check_bool,
    check_embeddings,
    check_int,
    check_labels,
    check_positive,
    check_real,
)
from .proxy_base import InitSpec, ProxyLossModule, call_functional


class _MarginSoftmax(ProxyLossModule):
    """Shared machinery: ``kind`` of margin, ``margin``, ``scale``, k proxies per class."""

    kind = "none"
    default_reduction = "mean"
    weight_name = "W"
    weight_layout = "DC"
    pml_default_reducer = MeanReducer

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float,
        scale: float,
        sub_centers: int = 1,
        init: InitSpec = None,
        **kwargs,
    ) -> None:
        sub_centers = check_int(sub_centers, "sub_centers", minimum=1)
        super().__init__(num_classes, embedding_size, sub_centers, init=init, **kwargs)
        self.scale = check_positive(scale, "scale")
        self.margin_value = float(margin)
        self.easy_margin = False

    def row_col_scales(self, extra, start, end):
        return None, None

    def get_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The logits of every class, [B, C]: ``scale`` times the cosine (the largest of a
        class's sub-centres), times the norms for the multiplicative-margin losses, without the
        margin (pytorch-metric-learning's ``get_logits``)."""
        cos = super().get_logits(embeddings)
        if self.proxies_per_class > 1:
            cos = cos.view(cos.shape[0], self.num_classes, self.proxies_per_class).amax(dim=2)
        x = embeddings.to(cos.dtype)
        w = self.proxy_weights().to(cos.dtype)
        row, col = self.row_col_scales(self.extra_params(x, w), 0, x.shape[0])
        out = cos * self.scale
        if row is not None:
            out = out * row[:, None]
        if col is not None:
            out = out * col[None, :]
        return out

    def target_logit(self, cos: torch.Tensor) -> torch.Tensor:
        """The true class's logit from its cosine (the margin applied), elementwise."""
        if self.kind == "cosface":
            return self.scale * (cos - self.margin_value)
        if self.kind == "arcface":
            return self.scale * arcface_target(cos, self.margin_value, self.easy_margin)
        return self.scale * cos

    def proxy_fused_form(self, weights, extra):
        if self.proxies_per_class != 1 or self.kind not in ("none", "cosface", "arcface"):
            return None

        def fused(s, pairs, grad, scale):
            w = None if weights is None else weights[pairs.start : pairs.start + pairs.n_rows]
            return softmax_ce_fused(s, pairs, grad, scale, self.scale, self.target_logit, w)

        return fused

    def proxy_objective(self, s, pos, neg, start, end, weights, extra):
        row, col = self.row_col_scales(extra, start, end)
        return margin_softmax_rows(
            s,
            pos,
            self.kind,
            self.margin_value,
            self.scale,
            sub_centers=self.proxies_per_class,
            weights=None if weights is None else weights[start:end],
            row_scale=row,
            col_scale=col,
            easy_margin=self.easy_margin,
        )


class NormalizedSoftmaxLoss(_MarginSoftmax):
    r"""Normalized softmax (NormSoftmax; Zhai & Wu, "Classification is a Strong Baseline for Deep
    Metric Learning", BMVC 2019, arXiv 2018).

    .. math:: \ell_i = -\log \frac{e^{\cos(x_i, w_{y_i}) / \tau}}{\sum_c e^{\cos(x_i, w_c)/\tau}}

    Defaults as pytorch-metric-learning: ``temperature=0.05``, weights initialised N(0, 1),
    ``DotProductSimilarity()``; with ``DotProductSimilarity(normalize_embeddings=False)`` only
    the class weights are normalised (x . w_c / t), as there.
    Large 1/temperature cannot overflow (max-shifted log-sum-exp). A batch of one or a single
    class gives a finite value (the cross-entropy against all C classes; with C = 1 it is 0).

    Half-precision embeddings are computed in float32 against ``W`` kept in float32,
    a deliberate difference: pytorch-metric-learning casts ``W`` to half in place,
    where optimizer updates below half precision's resolution are lost.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        temperature: float = 0.05,
        init: InitSpec = None,
        **kwargs,
    ) -> None:
        t = check_positive(temperature, "temperature")
        super().__init__(num_classes, embedding_size, 0.0, 1.0 / t, init=init, **kwargs)
        self.temperature = t

    @staticmethod
    def default_similarity() -> Similarity:
        from ...similarity import DotProductSimilarity

        return DotProductSimilarity()

    def check_distance(self) -> None:
        from ...similarity import DotProductSimilarity

        d = self.distance
        if not isinstance(d, DotProductSimilarity) or d.power != 1 or d.p != 2:
            raise PairLossError(
                f"distance: NormalizedSoftmaxLoss needs a DotProductSimilarity, got {d!r}"
            )

    def prepare_weights(self, w: torch.Tensor) -> torch.Tensor:
        """The class weights are normalised whatever the similarity does with the embeddings
        (with ``DotProductSimilarity(normalize_embeddings=False)`` the logits are x . w_c / t,
        as pytorch-metric-learning)."""
        if self.distance.normalize_embeddings:
            return w
        return torch.nn.functional.normalize(w, dim=1)


class CosFaceLoss(_MarginSoftmax):
    r"""CosFace / large-margin cosine loss (Wang et al., CVPR 2018, arXiv 1801.09414).

    .. math:: \ell_i = -\log \frac{e^{s(\cos\theta_{y_i} - m)}}{e^{s(\cos\theta_{y_i} - m)}
        + \sum_{c \ne y_i} e^{s \cos\theta_c}}

    Defaults as pytorch-metric-learning (and the paper): ``margin=0.35``, ``scale=64``; weights
    N(0, 1). ``margin`` must be >= 0, ``scale`` > 0.

    Half-precision embeddings are computed in float32 against ``W`` kept in float32,
    a deliberate difference: pytorch-metric-learning casts ``W`` to half in place,
    where optimizer updates below half precision's resolution are lost.
    """

    kind = "cosface"

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 0.35,
        scale: float = 64,
        init: InitSpec = None,
        **kwargs,
    ) -> None:
        m = check_positive(margin, "margin", strict=False)
        super().__init__(num_classes, embedding_size, m, scale, init=init, **kwargs)
        self.margin = m


class ArcFaceLoss(_MarginSoftmax):
    r"""ArcFace / additive angular margin loss (Deng et al., CVPR 2019, arXiv 1801.07698).

    .. math:: \ell_i = -\log \frac{e^{s\,\psi(\theta_{y_i})}}{e^{s\,\psi(\theta_{y_i})}
        + \sum_{c \ne y_i} e^{s \cos\theta_c}},\quad
        \psi(\theta) = \begin{cases}\cos(\theta + m) & \theta \le \pi - m \\
        \cos\theta - m \sin m & \text{otherwise}\end{cases}

    ``margin`` is in degrees, as pytorch-metric-learning: default 28.6 (= 0.5 rad, the paper's
    m), ``scale=64``; weights N(0, 1). As there, the attribute ``margin`` holds it in radians. Beyond theta = pi - m, cos(theta + m) would increase
    again; the second branch (pytorch-metric-learning's rule, the same as the official
    InsightFace code's ``cos - sin(pi - m) m``) keeps the target logit decreasing.
    ``easy_margin=True`` selects the InsightFace alternative: margin only where cos > 0, the
    plain cosine elsewhere (not in pytorch-metric-learning). The value equals the exact formula;
    at |cos| = 1 exactly (where d theta / d cos is infinite) the gradient is taken one rounding
    step inside, so it stays finite.

    Half-precision embeddings are computed in float32 against ``W`` kept in float32,
    a deliberate difference: pytorch-metric-learning casts ``W`` to half in place,
    where optimizer updates below half precision's resolution are lost.
    """

    kind = "arcface"

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 28.6,
        scale: float = 64,
        init: InitSpec = None,
        easy_margin: bool = False,
        sub_centers: int = 1,
        **kwargs,
    ) -> None:
        deg = check_positive(margin, "margin", strict=False)
        if deg >= 180:
            raise PairLossError(f"margin: expected degrees in [0, 180), got {margin!r}")
        super().__init__(
            num_classes,
            embedding_size,
            math.radians(deg),
            scale,
            sub_centers=sub_centers,
            init=init,
            **kwargs,
        )
        self.margin = math.radians(deg)
        self.easy_margin = check_bool(easy_margin, "easy_margin")


class SubCenterArcFaceLoss(ArcFaceLoss):
    r"""Sub-center ArcFace (Deng et al., ECCV 2020): ``sub_centers`` k weight vectors per class;
    each class's cosine is the max over its k sub-centres, then :class:`ArcFaceLoss`.

    ``W`` is [D, C * k], class c's sub-centres in columns c*k .. c*k + k - 1 (as
    pytorch-metric-learning). Defaults as pytorch-metric-learning: ``margin=28.6`` degrees,
    ``scale=64``, ``sub_centers=3``; weights N(0, 1). :meth:`get_outliers` finds the samples
    far from their class's dominant sub-centre (the paper's cleaning step).

    Half-precision embeddings are computed in float32 against ``W`` kept in float32,
    a deliberate difference: pytorch-metric-learning casts ``W`` to half in place,
    where optimizer updates below half precision's resolution are lost.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 28.6,
        scale: float = 64,
        sub_centers: int = 3,
        init: InitSpec = None,
        **kwargs,
    ) -> None:
        k = check_int(sub_centers, "sub_centers", minimum=1)
        super().__init__(
            num_classes, embedding_size, margin, scale, init=init, sub_centers=k, **kwargs
        )
        self.sub_centers = k

    def get_outliers(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        threshold: float = 75,
        return_dominant_centers: bool = True,
    ):
        """Per class present in ``labels``: the dominant sub-centre (the one closest to most of
        the class's samples) and the class's samples whose angle to it exceeds ``threshold``
        degrees (default 75, the paper's). Returns the outliers' indices [n], and with
        ``return_dominant_centers`` also the dominant centres as [D, C] (columns of classes
        absent from ``labels`` are 0)."""
        embeddings = check_embeddings(embeddings, "embeddings")
        labels = check_labels(labels, embeddings.shape[0]).to(embeddings.device)
        threshold = check_real(threshold, "threshold", 0.0, 180.0)
        return_dominant_centers = check_bool(return_dominant_centers, "return_dominant_centers")
        self.cast_types(embeddings.dtype, embeddings.device)
        k, dtype = self.sub_centers, embeddings.dtype
        cos_threshold = math.cos(math.radians(threshold))
        w = self.W.detach().to(dtype)
        dominant = torch.zeros(w.shape[0], self.num_classes, dtype=dtype, device=w.device)
        outliers = []
        with torch.no_grad():
            for label in torch.unique(labels).tolist():
                members = torch.nonzero(labels == label).flatten()
                centres = w[:, label * k : (label + 1) * k]
                cos = self.distance(embeddings[members], centres.T)
                best = torch.bincount(torch.argmax(cos, dim=1), minlength=k).argmax()
                dominant[:, label] = centres[:, best]
                outliers.append(members[cos[:, best] < cos_threshold])
        found = torch.cat(outliers) if outliers else labels.new_zeros(0)
        return (found, dominant) if return_dominant_centers else found


class LargeMarginSoftmaxLoss(_MarginSoftmax):
    r"""Large-margin softmax (L-Softmax; Liu et al., ICML 2016, arXiv 1612.02295).

    .. math:: \ell_i = -\log \frac{e^{s\|w_{y_i}\|\|x_i\|\psi(\theta_{y_i})}}
        {e^{s\|w_{y_i}\|\|x_i\|\psi(\theta_{y_i})} + \sum_{c \ne y_i} e^{s\|w_c\|\|x_i\|
        \cos\theta_c}},\quad \psi(\theta) = (-1)^k \cos(m\theta) - 2k, \quad
        \theta \in [k\pi/m, (k+1)\pi/m]

    cos(m theta) by the multiple-angle expansion of the paper (eq. 7), k held constant.
    Defaults as pytorch-metric-learning: integer ``margin=4`` (m >= 1), ``scale=1``; weights
    N(0, 1). The norms of the embeddings and of the weights scale the logits (they receive
    gradients).

    Half-precision embeddings are computed in float32 against ``W`` kept in float32,
    a deliberate difference: pytorch-metric-learning casts ``W`` to half in place,
    where optimizer updates below half precision's resolution are lost.
    """

    kind = "multiplicative"
    use_weight_norm = True

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: int = 4,
        scale: float = 1,
        init: InitSpec = None,
        **kwargs,
    ) -> None:
        # cos(m theta) by the multiple-angle expansion: m is an integer (2.5 is refused, not
        # rounded)
        m = check_int(margin, "margin", minimum=1)
        super().__init__(num_classes, embedding_size, m, scale, init=init, **kwargs)
        self.margin = m

    def extra_params(self, embeddings, w):
        xn = row_norms(embeddings)
        return (xn, row_norms(w)) if self.use_weight_norm else (xn,)

    def row_col_scales(self, extra, start, end):
        return extra[0][start:end], (extra[1] if self.use_weight_norm else None)


class SphereFaceLoss(LargeMarginSoftmaxLoss):
    r"""SphereFace / A-Softmax (Liu et al., CVPR 2017, arXiv 1704.08063): as
    :class:`LargeMarginSoftmaxLoss` but the weights are normalised, so only the embedding norm
    scales the logits: :math:`s\|x_i\|\psi(\theta_c)`. Defaults as pytorch-metric-learning:
    ``margin=4``, ``scale=1``; weights N(0, 1). Half-precision embeddings: ``W`` stays float32,
    as :class:`LargeMarginSoftmaxLoss` says."""

    use_weight_norm = False


# ---------------------------------------------------------------------- functional forms


def normalized_softmax(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    proxies: torch.Tensor,
    temperature: float = 0.05,
    **kwargs,
) -> torch.Tensor:
    """Functional :class:`NormalizedSoftmaxLoss` with class weights ``proxies`` [C, D]."""
    return call_functional(
        NormalizedSoftmaxLoss, proxies, embeddings, labels, indices_tuple, ref_emb, ref_labels,
        temperature=temperature, **kwargs,
    )  # fmt: skip


def cosface(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    proxies: torch.Tensor,
    margin: float = 0.35,
    scale: float = 64,
    **kwargs,
) -> torch.Tensor:
    """Functional :class:`CosFaceLoss` with class weights ``proxies`` [C, D]."""
    return call_functional(
        CosFaceLoss, proxies, embeddings, labels, indices_tuple, ref_emb, ref_labels,
        margin=margin, scale=scale, **kwargs,
    )  # fmt: skip


def arcface(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    proxies: torch.Tensor,
    margin: float = 28.6,
    scale: float = 64,
    **kwargs,
) -> torch.Tensor:
    """Functional :class:`ArcFaceLoss` with class weights ``proxies`` [C, D] (margin in
    degrees)."""
    return call_functional(
        ArcFaceLoss, proxies, embeddings, labels, indices_tuple, ref_emb, ref_labels,
        margin=margin, scale=scale, **kwargs,
    )  # fmt: skip


def sub_center_arcface(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    proxies: torch.Tensor,
    margin: float = 28.6,
    scale: float = 64,
    sub_centers: int = 3,
    **kwargs,
) -> torch.Tensor:
    """Functional :class:`SubCenterArcFaceLoss` with sub-centres ``proxies`` [C * k, D]."""
    k = check_int(sub_centers, "sub_centers", minimum=1)
    return call_functional(
        SubCenterArcFaceLoss, proxies, embeddings, labels, indices_tuple, ref_emb, ref_labels,
        per_class=k, margin=margin, scale=scale, sub_centers=k, **kwargs,
    )  # fmt: skip


def large_margin_softmax(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    proxies: torch.Tensor,
    margin: int = 4,
    scale: float = 1,
    **kwargs,
) -> torch.Tensor:
    """Functional :class:`LargeMarginSoftmaxLoss` with class weights ``proxies`` [C, D]."""
    return call_functional(
        LargeMarginSoftmaxLoss, proxies, embeddings, labels, indices_tuple, ref_emb, ref_labels,
        margin=margin, scale=scale, **kwargs,
    )  # fmt: skip


def sphereface(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    proxies: torch.Tensor,
    margin: int = 4,
    scale: float = 1,
    **kwargs,
) -> torch.Tensor:
    """Functional :class:`SphereFaceLoss` with class weights ``proxies`` [C, D]."""
    return call_functional(
        SphereFaceLoss, proxies, embeddings, labels, indices_tuple, ref_emb, ref_labels,
        margin=margin, scale=scale, **kwargs,
    )  # fmt: skip
