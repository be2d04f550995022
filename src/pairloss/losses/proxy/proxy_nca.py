"""ProxyNCA loss (Movshovitz-Attias et al., "No Fuss Distance Metric Learning using Proxies",
ICCV 2017)."""

from __future__ import annotations

import torch

from ...objectives.margin_softmax import softmax_ce_fused, softmax_ce_rows
from ...reducers import MeanReducer
from ...similarity import LpDistance, Similarity
from ...validation import check_positive
from .proxy_base import InitSpec, ProxyLossModule, call_functional


class ProxyNCALoss(ProxyLossModule):
    r"""ProxyNCA: neighbourhood component analysis against one proxy per class.

    .. math:: \ell_i = -\log \frac{e^{-t\, d(x_i, p_{y_i})}}{\sum_c e^{-t\, d(x_i, p_c)}}

    with d the squared Euclidean distance of the L2-normalised vectors (pytorch-metric-learning's
    ``LpDistance(power=2)``) and t = ``softmax_scale``. Like pytorch-metric-learning, the
    denominator runs over all proxies (the original paper's leaves out the true class), the
    loss is averaged over the batch and ``proxies`` [C, D] start N(0, 1) (pytorch-metric-learning's
    attribute name and layout). ``get_logits(x)`` gives the distances [B, C].

    Difference: pytorch-metric-learning drops the rows whose softmax probability underflows to
    exactly 0 (only possible for extreme ``softmax_scale``); here the log-sum-exp form keeps
    them with their (large, finite) loss. Proxies get their own learning rate through an
    optimizer group with ``loss.parameters()``.

    Half-precision embeddings are computed in float32 against ``proxies`` kept in float32,
    a deliberate difference: pytorch-metric-learning casts ``proxies`` to half in place,
    where optimizer updates below half precision's resolution are lost.
    """

    default_reduction = "mean"
    uses_ref_for_weights = True
    weight_name = "proxies"
    weight_layout = "CD"
    pml_default_reducer = MeanReducer

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        softmax_scale: float = 1,
        init: InitSpec = None,
        **kwargs,
    ) -> None:
        super().__init__(num_classes, embedding_size, 1, init=init, **kwargs)
        self.softmax_scale = check_positive(softmax_scale, "softmax_scale")

    @staticmethod
    def default_similarity() -> Similarity:
        return LpDistance(power=2)

    def proxy_fused_form(self, weights, extra):
        t = self.softmax_scale

        def fused(s, pairs, grad, scale):
            w = None if weights is None else weights[pairs.start : pairs.start + pairs.n_rows]
            return softmax_ce_fused(s, pairs, grad, scale, -t, lambda d: -t * d, w)

        return fused

    def proxy_objective(self, s, pos, neg, start, end, weights, extra):
        w = None if weights is None else weights[start:end]
        return softmax_ce_rows(-self.softmax_scale * s, pos, w)


def proxy_nca(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    proxies: torch.Tensor,
    softmax_scale: float = 1,
    **kwargs,
) -> torch.Tensor:
    """Functional :class:`ProxyNCALoss` with class proxies ``proxies`` [C, D]."""
    return call_functional(
        ProxyNCALoss, proxies, embeddings, labels, indices_tuple, ref_emb, ref_labels,
        softmax_scale=softmax_scale, **kwargs,
    )  # fmt: skip
