"""Circle loss at class level (Sun et al., "Circle Loss: A Unified Perspective of Pair
Similarity Optimization", CVPR 2020, the class-label form)."""

from __future__ import annotations

import torch

from ...objectives.circle import circle_rows
from ...validation import check_positive, check_real
from .proxy_base import InitSpec, ProxyLossModule, call_functional


class ProxyCircleLoss(ProxyLossModule):
    r"""Circle loss with class-level labels: the positive of embedding i is its class weight,
    the negatives the other C - 1 class weights.

    .. math::
        \ell_i = \mathrm{softplus}\Big( \log \sum_{c \ne y_i} e^{\gamma \alpha_c (s_{ic} - m)}
            - \gamma \alpha_{y_i} (s_{iy_i} - 1 + m) \Big)

    with s the cosine, :math:`\alpha_{y} = [1 + m - s_{iy}]_+` and :math:`\alpha_c = [s_{ic} +
    m]_+` held constant (the row objective of :class:`pairloss.losses.CircleLoss`, reused).
    Paper: Sun et al., CVPR 2020, eq. 6 with one positive (its face-recognition setting):
    defaults ``m=0.25``, ``gamma=256``. Mean over the batch; weights N(0, 1). With C = 1 there
    is no negative and the loss is 0. Max-shifted log-sum-exp: gamma = 256 cannot overflow.
    No pytorch-metric-learning twin.
    """

    default_reduction = "mean"

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        m: float = 0.25,
        gamma: float = 256,
        init: InitSpec = None,
        **kwargs,
    ) -> None:
        super().__init__(num_classes, embedding_size, 1, init=init, **kwargs)
        self.m = check_real(m, "m")
        self.gamma = check_positive(gamma, "gamma")

    def proxy_objective(self, s, pos, neg, start, end, weights, extra):
        terms = circle_rows(s, pos, neg, self.m, self.gamma)
        if weights is not None:
            t = terms[0]
            terms = [type(t)(t.values * weights[start:end], t.n_terms, t.n_nonzero)]
        return terms


def proxy_circle(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    proxies: torch.Tensor,
    m: float = 0.25,
    gamma: float = 256,
    **kwargs,
) -> torch.Tensor:
    """Functional :class:`ProxyCircleLoss` with class weights ``proxies`` [C, D]."""
    return call_functional(
        ProxyCircleLoss, proxies, embeddings, labels, indices_tuple, ref_emb, ref_labels,
        m=m, gamma=gamma, **kwargs,
    )  # fmt: skip
