"""P2SGrad loss (Zhang et al., "P2SGrad: Refined Gradients for Optimizing Deep Face Models",
CVPR 2019), with pytorch-metric-learning's ``P2SGradLoss`` names, defaults, weight layout and
results."""

from __future__ import annotations

import torch
from torch import nn

from ...engine import _transformed
from ...errors import PairLossError
from ...objectives.terms import RowTerms
from ...similarity import DotProductSimilarity, normalize_rows
from ...validation import check_int
from ..base import Component
from .proxy_base import ProxyLossModule


def p2s_rows(s: torch.Tensor, pos: torch.Tensor, n_classes: int) -> list[RowTerms]:
    """Per row: sum_c (clamp(cos_c, -1, 1) - [c = y])^2 / C (so that the mean over rows is the
    mean squared error over all B x C cells)."""
    err = (s.clamp(-1, 1) - pos.to(s.dtype)) ** 2
    values = err.sum(dim=1) / n_classes
    return [RowTerms.per_anchor(values, torch.ones_like(values, dtype=torch.bool))]


class P2SGradLoss(ProxyLossModule):
    r"""P2SGrad: the mean squared error between each embedding's cosines to the class weights
    and its one-hot label,

    .. math::
        L = \frac{1}{BC} \sum_i \sum_c \big(\cos\theta_{ic} - [c = y_i]\big)^2

    whose gradient is the paper's refined, hyper-parameter-free gradient (Zhang et al., CVPR
    2019, eq. 11). Arguments as pytorch-metric-learning's ``P2SGradLoss``:
    ``P2SGradLoss(descriptors_dim, num_classes)`` (in that order); the weight ``weight``
    [D, C] starts uniform in [-1, 1] with unit columns and is renormalised to unit columns at
    every call, as there. ``indices_tuple`` and ``ref_emb`` are not supported. The loss is
    already reduced (a reducer does not change it).

    Runs on the pair engine with the class weights as candidates (memory O(block x C)).
    Shapes: embeddings [B, D], labels [B] in [0, C). Returns a scalar.

    Half-precision embeddings are computed in float32 against ``weight`` kept in float32,
    a deliberate difference: pytorch-metric-learning casts ``weight`` to half in place,
    where optimizer updates below half precision's resolution are lost.
    """

    default_reduction = "mean"
    weight_name = "weight"
    weight_layout = "DC"
    components = (Component("loss", "already_reduced"),)

    def __init__(self, descriptors_dim: int, num_classes: int, **kwargs) -> None:
        descriptors_dim = check_int(descriptors_dim, "descriptors_dim", minimum=1)
        super().__init__(num_classes, descriptors_dim, 1, **kwargs)
        self.descriptors_dim = self.embedding_size

    @staticmethod
    def default_similarity():
        return DotProductSimilarity(normalize_embeddings=False)

    def prepare_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """x / |x| (the weights are unit columns already): cos = x . w / |x|, as
        pytorch-metric-learning, but exact at any magnitude (pytorch-metric-learning's
        ``x / sqrt(sum x^2)`` is 0/0 for float32 rows of entries below about 1e-19 and inf/inf
        above 1e19); an all-zero row has cosine 0 with every class (NaN there)."""
        return normalize_rows(x)

    def default_init(self, w: torch.Tensor) -> None:
        w.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)

    def active_components(self):
        return self.components

    def proxy_objective(self, s, pos, neg, start, end, weights, extra):
        return p2s_rows(s, pos, self.num_classes)

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of ``embeddings`` [B, D] with ``labels`` [B]. The module's own weight is
        renormalised first, in place (a projection step on the stored weight, outside autograd,
        as pytorch-metric-learning); a weight given through ``torch.func.functional_call``, or
        any weight under a ``torch.func`` transform or forward-mode AD (where a captured
        tensor cannot be changed), is used as given, so the loss is a plain differentiable
        function of it."""
        if indices_tuple is not None:
            raise PairLossError("indices_tuple: not supported by P2SGradLoss; expected None")
        w = self.weight_parameter()
        if isinstance(w, nn.Parameter) and not _transformed(embeddings):
            with torch.no_grad():
                w.copy_(w.renorm(2, 1, 1e-5).mul(1e5))
        return super().forward(embeddings, labels, None, ref_emb, ref_labels)


def p2s_grad(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    proxies: torch.Tensor,
    **kwargs,
) -> torch.Tensor:
    """Functional :class:`P2SGradLoss` with unit class weights ``proxies`` [C, D]."""
    from .proxy_base import call_functional

    return call_functional(
        _P2SFunctional, proxies, embeddings, labels, indices_tuple, ref_emb, ref_labels, **kwargs
    )


class _P2SFunctional(P2SGradLoss):
    """P2SGrad with the ProxyLossModule argument order, for the functional form."""

    def __init__(self, num_classes: int, embedding_size: int, init=None, **kwargs) -> None:
        super().__init__(embedding_size, num_classes, init=init, **kwargs)
