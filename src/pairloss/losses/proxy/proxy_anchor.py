"""Proxy-Anchor loss (Kim et al., "Proxy Anchor Loss for Deep Metric Learning", CVPR 2020)."""

from __future__ import annotations

import torch
from torch import nn

from ...objectives.proxy_anchor import proxy_anchor_fused, proxy_anchor_rows
from ...reducers import CLASS_WEIGHTED, DivisorReducer
from ...validation import check_positive, check_real
from ..base import Component
from .proxy_base import InitSpec, ProxyLossModule, call_functional


class ProxyAnchorLoss(ProxyLossModule):
    r"""Proxy-Anchor loss: the class proxies are the anchors, the batch embeddings the partners.

    .. math::
        L = \frac{1}{|P^+|} \sum_{p \in P^+} \log\Big(1 + \sum_{x \in X_p^+}
            e^{-\alpha (s(x, p) - \delta)}\Big)
          + \frac{1}{|P|} \sum_{p \in P} \log\Big(1 + \sum_{x \in X_p^-}
            e^{\alpha (s(x, p) + \delta)}\Big)

    with s the cosine, P all C proxies, P+ the proxies of classes present in the batch, X_p+ /
    X_p- the embeddings of / not of p's class. Paper: Kim et al., CVPR 2020, eq. 4. Defaults as
    pytorch-metric-learning and the paper: ``margin`` (delta) ``=0.1``, ``alpha=32``;
    ``proxies`` [C, D] initialised with Kaiming normal (fan_out), as pytorch-metric-learning
    (the same attribute name, layout and default reducer, ``DivisorReducer``).
    ``get_logits(x)`` gives the cosines [B, C].

    The engine runs with anchors = proxies and candidates = embeddings (the blocked engine walks
    blocks of proxies). Two components with their own normalisers (reduction ``"mean_valid"``:
    the positive part divided by the number of proxies with a positive, the negative part by C),
    as pytorch-metric-learning's DivisorReducer. ``reduction="none"`` gives one value per proxy
    ([C]). ``indices_tuple`` adds (w - 1) to every exponent of sample x, w being its miner weight
    (pytorch-metric-learning's rule). A batch whose labels all share one class still has
    negatives against the other C - 1 proxies; with C = 1 only the positive part remains.
    Proxies get their own learning rate through an optimizer group with ``loss.parameters()``.

    Half-precision embeddings are computed in float32 against ``proxies`` kept in float32,
    a deliberate difference: pytorch-metric-learning casts ``proxies`` to half in place,
    where optimizer updates below half precision's resolution are lost.
    """

    proxies_as_anchors = True
    default_reduction = "mean_valid"
    weight_name = "proxies"
    weight_layout = "CD"
    components = (
        Component("pos_loss", every_row=True),
        Component("neg_loss", every_row=True),
    )
    pml_default_reducer = DivisorReducer

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 0.1,
        alpha: float = 32,
        init: InitSpec = None,
        **kwargs,
    ) -> None:
        super().__init__(num_classes, embedding_size, 1, init=init, **kwargs)
        self.margin = check_real(margin, "margin")
        self.alpha = check_positive(alpha, "alpha")

    def divisor_counts(self, k, terms, start, end):
        # pytorch-metric-learning's divisors: the proxies with a positive, and all proxies
        return terms.n_terms if k == 0 else torch.ones_like(terms.values)

    def engine_rules(self):
        rules = super().engine_rules()
        # a class-weighted reducer reads labels[proxy index]: listed, as pytorch-metric-learning
        return None if rules is None or CLASS_WEIGHTED in rules else rules

    def default_init(self, w: torch.Tensor) -> None:
        nn.init.kaiming_normal_(w, mode="fan_out")

    def proxy_fused_form(self, weights, extra):
        if weights is not None:
            return None

        def fused(s, pairs, grad, scale):
            return proxy_anchor_fused(s, pairs, grad, scale, self.alpha, self.margin)

        return fused

    def known_counts(self, labels):
        if self.reduction not in ("mean_valid", "mean_terms"):
            return None
        # proxies with a positive = classes present in the batch; every proxy has a negative term
        return lambda: [float(torch.unique(labels).numel()), float(self.num_classes)]

    def proxy_objective(self, s, pos, neg, start, end, weights, extra):
        shift = None if weights is None else (weights - 1)[None, :]
        return proxy_anchor_rows(s, pos, neg, self.alpha, self.margin, shift)


def proxy_anchor(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    proxies: torch.Tensor,
    margin: float = 0.1,
    alpha: float = 32,
    **kwargs,
) -> torch.Tensor:
    """Functional :class:`ProxyAnchorLoss` with class proxies ``proxies`` [C, D]."""
    return call_functional(
        ProxyAnchorLoss, proxies, embeddings, labels, indices_tuple, ref_emb, ref_labels,
        margin=margin, alpha=alpha, **kwargs,
    )  # fmt: skip
