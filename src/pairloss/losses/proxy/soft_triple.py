"""SoftTriple loss (Qian et al., "SoftTriple Loss: Deep Metric Learning Without Triplet
Sampling", ICCV 2019)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ...errors import PairLossError
from ...objectives.soft_triple import soft_triple_rows
from ...reducers import MeanReducer
from ...similarity import normalize_rows
from ...validation import check_int, check_positive
from .proxy_base import InitSpec, ProxyLossModule, call_functional


class SoftTripleLoss(ProxyLossModule):
    r"""SoftTriple: K centres per class, a relaxed (soft-max weighted) class similarity, then a
    margin softmax.

    .. math::
        S_{i,c} = \sum_k \frac{e^{s_{i,ck}/\gamma}}{\sum_{k'} e^{s_{i,ck'}/\gamma}} s_{i,ck},
        \qquad \ell_i = -\log \frac{e^{\lambda (S_{i,y_i} - \delta)}}{e^{\lambda (S_{i,y_i} -
        \delta)} + \sum_{c \ne y_i} e^{\lambda S_{i,c}}}

    s the cosine to centre k of class c. Paper: Qian et al., ICCV 2019, eq. 8-9. Defaults as
    pytorch-metric-learning: ``centers_per_class=10``, ``la`` (lambda) ``=20``, ``gamma=0.1``,
    ``margin`` (delta) ``=0.01``; centres ``fc`` [D, C * K] (pytorch-metric-learning's attribute
    and layout: class c's centres in columns c*K .. c*K + K - 1) initialised as its
    Kaiming-uniform init. Mean over the batch. ``get_logits(x)`` gives S [B, C]. As there, the
    attribute ``gamma`` holds 1 / gamma (10 by default), the factor of the scores.

    The paper (and its official code, tau = 0.2) adds a regulariser pulling a class's centres
    together, tau * sum_c sum_{k < k'} sqrt(2 + 1e-5 - 2 <w_ck, w_ck'>) / (C K (K - 1)) on
    normalised centres; pytorch-metric-learning leaves it out, so it is off by default here
    (``center_regularization=0``); pass the paper's tau to add it (scalar reductions only).

    Half-precision embeddings are computed in float32 against ``fc`` kept in float32,
    a deliberate difference: pytorch-metric-learning casts ``fc`` to half in place,
    where optimizer updates below half precision's resolution are lost.
    """

    default_reduction = "mean"
    weight_name = "fc"
    weight_layout = "DC"
    pml_default_reducer = MeanReducer

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        centers_per_class: int = 10,
        la: float = 20,
        gamma: float = 0.1,
        margin: float = 0.01,
        init: InitSpec = None,
        center_regularization: float = 0.0,
        **kwargs,
    ) -> None:
        k = check_int(centers_per_class, "centers_per_class", minimum=1)
        super().__init__(num_classes, embedding_size, k, init=init, **kwargs)
        self.centers_per_class = k
        self.la = check_positive(la, "la")
        self.gamma = 1.0 / check_positive(gamma, "gamma")
        self.margin = check_positive(margin, "margin", strict=False)
        self.center_regularization = check_positive(
            center_regularization, "center_regularization", strict=False
        )

    def default_init(self, w: torch.Tensor) -> None:
        nn.init.kaiming_uniform_(w, a=math.sqrt(5))

    def get_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The relaxed class similarities S_{i,c} [B, C] (pytorch-metric-learning's
        ``get_logits``)."""
        cos = super().get_logits(embeddings).view(-1, self.num_classes, self.centers_per_class)
        prob = torch.softmax(cos * self.gamma, dim=2)
        return torch.sum(prob * cos, dim=2)

    def check_reduction_ok(self) -> None:
        if self.center_regularization > 0 and self.reduction == "none":
            raise PairLossError(
                "center_regularization: needs a scalar reduction, got reduction='none'"
            )

    def proxy_objective(self, s, pos, neg, start, end, weights, extra):
        w = None if weights is None else weights[start:end]
        return soft_triple_rows(s, pos, self.centers_per_class, self.la, self.gamma, self.margin, w)

    def add_regularizer(self, loss: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        k = self.centers_per_class
        if self.center_regularization == 0 or k == 1:
            return loss
        c = normalize_rows(w).view(self.num_classes, k, -1)
        sim = c @ c.transpose(1, 2)
        upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=w.device), diagonal=1)
        reg = torch.sqrt(2.0 + 1e-5 - 2.0 * sim[:, upper]).sum()
        reg = reg / (self.num_classes * k * (k - 1.0))
        return loss + self.center_regularization * reg.to(loss.dtype)


def soft_triple(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    proxies: torch.Tensor,
    centers_per_class: int = 10,
    la: float = 20,
    gamma: float = 0.1,
    margin: float = 0.01,
    **kwargs,
) -> torch.Tensor:
    """Functional :class:`SoftTripleLoss` with centres ``proxies`` [C * K, D]."""
    k = check_int(centers_per_class, "centers_per_class", minimum=1)
    return call_functional(
        SoftTripleLoss, proxies, embeddings, labels, indices_tuple, ref_emb, ref_labels,
        per_class=k, centers_per_class=k, la=la, gamma=gamma, margin=margin, **kwargs,
    )  # fmt: skip
