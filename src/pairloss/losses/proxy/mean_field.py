r"""Mean-field losses (Furusawa, "Mean Field Theory in Deep Metric Learning", ICLR 2024,
arXiv 2306.15368; the official code's ``MeanFieldContrastiveLoss`` and
``MeanFieldClassWiseMultiSimilarityLoss``).

Mean field theory replaces a sample's interaction with all other samples by its interaction
with an average field: here one learnable vector per class (the mean field of the class),
which turns a pair loss into a classification-style loss with O(B C) pairs instead of O(B^2),
plus a regulariser (weight ``mf_reg``, power ``mf_power``) acting among the class vectors.

Both are proxy losses: ``W`` [C, D] float32 learnable class vectors, initialised N(0, 1) as the
official code (its weight is [D, C]; ours is the transpose, same values for equal seeds).
Distances are ``d = 1 - cos`` between L2-normalised vectors.
"""

from __future__ import annotations

import torch

from ...engine import PairProblem, run
from ...errors import PairLossError
from ...objectives.mean_field import (
    class_wise_multi_similarity_rows,
    mean_field_contrastive_rows,
    mean_field_regularizer_rows,
    segment_logsumexp,
)
from ...relations import LabelRelation
from ...validation import check_labels, check_positive, check_real
from .proxy_base import InitSpec, ProxyLossModule, call_functional


class _MeanField(ProxyLossModule):
    """Shared: labels stashed for the hooks, the class-vector regulariser."""

    def __init__(self, num_classes, embedding_size, mf_reg, mf_power, init, **kwargs) -> None:
        super().__init__(num_classes, embedding_size, 1, init=init, **kwargs)
        self.mf_reg = check_positive(mf_reg, "mf_reg", strict=False)
        self.mf_power = check_positive(mf_power, "mf_power")
        self._labels = None

    def compute(self, proxies, embeddings, labels=None, indices_tuple=None, ref_emb=None,
                ref_labels=None):  # fmt: skip
        self._labels = labels
        try:
            return super().compute(proxies, embeddings, labels, indices_tuple, ref_emb, ref_labels)
        finally:
            self._labels = None
            self._state = None

    def check_reduction_ok(self) -> None:
        if self.reduction == "none" and self.mf_reg > 0:
            raise PairLossError(
                "reduction: the mean-field regulariser (mf_reg > 0) needs a scalar reduction, "
                "got 'none'"
            )

    def regularizer_gap(self, s: torch.Tensor) -> torch.Tensor:
        """h(cos) >= 0 of a pair of class vectors."""
        raise NotImplementedError

    def regularizer(self, w: torch.Tensor) -> torch.Tensor | float:
        """``mf_reg * (1/C) sum_c sum_{c' != c} h(cos(w_c, w_c'))^mf_power`` (0 if mf_reg = 0),
        walked over blocks of class vectors."""
        if self.mf_reg == 0 or w.shape[0] < 2:
            return 0.0
        power = self.mf_power

        def objective(s, pos, neg, start, end):
            return mean_field_regularizer_rows(self.regularizer_gap(s), neg, power)

        relation = LabelRelation(torch.arange(w.shape[0], device=w.device))
        problem = PairProblem(objective, self.distance, relation, reduction="mean")
        return self.mf_reg * run(problem, w, None, engine=self.engine, block_size=self.block_size)


class MeanFieldContrastiveLoss(_MeanField):
    r"""MeanFieldContrastive loss (Furusawa, ICLR 2024): the contrastive loss with every other
    sample replaced by the class vectors (mean fields) ``w_c``.

    .. math::
        L = \frac1B \sum_i \Big[ [d_{i,y_i} - m_p]_+ + \sum_{c \ne y_i} [m_n - d_{i,c}]_+ \Big]
          + \lambda_{MF} \frac1C \sum_c \sum_{c' \ne c} [m_n - D_{cc'}]_+^{\,p}

    with :math:`d_{i,c} = 1 - \cos(x_i, w_c)`, :math:`D_{cc'} = 1 - \cos(w_c, w_{c'})`.

    Args:
        num_classes, embedding_size: C and D.
        pos_margin: m_p (default 0.02), neg_margin: m_n (default 0.3), in distance units: the
            defaults of the official training script (``--pos-mrg``, ``--neg-mrg``).
        mf_reg: lambda_MF >= 0, the weight of the mean-field regulariser (default 0; the
            official code has no default, its published runs use 0).
        mf_power: p > 0 (default 2, fixed in the official code).
        init, engine, block_size: as :class:`~pairloss.losses.proxy_base.ProxyLossModule`.
        reduction: of the data term (default ``"mean"``: divide by B, the official rule; the
            regulariser is always added as is); ``"none"`` (one value per sample) only with
            ``mf_reg=0``.

    Shapes: embeddings [B, D], labels [B] in [0, C). ``indices_tuple`` weights the rows by how
    often each sample appears (the proxy losses' rule). Degenerate input: a batch of one or a
    single class is fine (the negative terms run over all other class vectors).
    """

    default_reduction = "mean"

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        pos_margin: float = 0.02,
        neg_margin: float = 0.3,
        mf_reg: float = 0.0,
        mf_power: float = 2.0,
        init: InitSpec = None,
        **kwargs,
    ) -> None:
        super().__init__(num_classes, embedding_size, mf_reg, mf_power, init, **kwargs)
        self.pos_margin = check_real(pos_margin, "pos_margin")
        self.neg_margin = check_real(neg_margin, "neg_margin")

    def proxy_objective(self, s, pos, neg, start, end, weights, extra):
        return mean_field_contrastive_rows(
            s,
            pos,
            self.pos_margin,
            self.neg_margin,
            None if weights is None else weights[start:end],
        )

    def regularizer_gap(self, s):
        return torch.relu(self.neg_margin - (1 - s))

    def add_regularizer(self, loss, w):
        return loss + self.regularizer(w)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, pos_margin={self.pos_margin}, "
            f"neg_margin={self.neg_margin}, mf_reg={self.mf_reg}, mf_power={self.mf_power}"
        )


class MeanFieldClassWiseMultiSimilarityLoss(_MeanField):
    r"""MeanFieldClassWiseMultiSimilarity loss (Furusawa, ICLR 2024): the class-wise
    multi-similarity loss with the class-to-class interactions carried by the class vectors.

    With :math:`s_{ic} = \cos(x_i, w_c)`, :math:`\lambda` = ``base``, K the number of classes in
    the batch, :math:`\mathcal{B}_c` the batch samples of class c (:math:`n_c` of them) and

    .. math::
        P_c = \frac{1}{n_c} \sum_{i \in \mathcal{B}_c} e^{-\alpha (s_{ic} - \lambda)},\qquad
        A_{cc'} = \frac{1}{n_c} \sum_{i \in \mathcal{B}_c} e^{\beta (s_{ic'} - \lambda)}
        \ (A_{cc'} = 0 \text{ if } n_c = 0),

    .. math::
        L = \frac1K \Big[\frac1\alpha \sum_{c: n_c > 0} \log(1 + P_c)
            + \frac1{2\beta} \sum_{c \ne c'} \log(1 + A_{cc'} + A_{c'c})\Big]
          + \lambda_{MF} \frac1C \sum_c \sum_{c' \ne c}
            \operatorname{softplus}_\beta(\cos(w_c, w_{c'}) - \lambda)^{p}

    (the sum over ordered pairs counts each unordered pair twice; pairs of two classes absent
    from the batch give 0). :math:`\operatorname{softplus}_\beta(t) = \log(1 + e^{\beta t})/\beta`
    (``torch.nn.Softplus(beta)``). This is the official ``MeanFieldClassWiseMultiSimilarityLoss``
    formula, computed in log space (no overflow for large alpha or beta).

    Args:
        num_classes, embedding_size: C and D.
        alpha: 0.01, beta: 80, base: lambda = 0.8, mf_reg: 0, mf_power: 2 (the settings of
            every published run in the official repository; ``beta=None`` means
            ``beta = alpha`` as the official code).
        init, engine, block_size: as :class:`~pairloss.losses.proxy_base.ProxyLossModule`.

    The normalisation by K is the paper's; the loss has no ``reduction`` choice and refuses
    ``indices_tuple``. Engine layout: the class vectors are the anchors and the batch the
    candidates (memory O(block x B) per walk); pairs of two batch classes couple two rows and
    are computed from the K x B cosines of the batch classes. Degenerate input: a batch of one
    sample or one class gives the positive term plus its pairs with the absent classes.
    """

    proxies_as_anchors = True
    default_reduction = "sum"

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        alpha: float = 0.01,
        beta: float | None = 80.0,
        base: float = 0.8,
        mf_reg: float = 0.0,
        mf_power: float = 2.0,
        init: InitSpec = None,
        engine: str = "auto",
        block_size: int | None = None,
    ) -> None:
        super().__init__(
            num_classes, embedding_size, mf_reg, mf_power, init, engine=engine,
            block_size=block_size, reduction="sum",
        )  # fmt: skip
        self.alpha = check_positive(alpha, "alpha")
        self.beta = self.alpha if beta is None else check_positive(beta, "beta")
        self.base = check_real(base, "base")
        self._state = None

    def compute(self, proxies, embeddings, labels=None, indices_tuple=None, ref_emb=None,
                ref_labels=None):  # fmt: skip
        if indices_tuple is not None:
            raise PairLossError(
                "indices_tuple: not supported by MeanFieldClassWiseMultiSimilarityLoss (its "
                "terms are class means); expected None"
            )
        return super().compute(proxies, embeddings, labels, None, ref_emb, ref_labels)

    def extra_params(self, embeddings, w):
        labels = check_labels(self._labels, embeddings.shape[0]).to(embeddings.device)
        classes, column_class, counts = torch.unique(
            labels, return_inverse=True, return_counts=True
        )
        log_size = torch.log(counts.to(embeddings.dtype))
        self._state = (embeddings, classes, column_class, log_size)
        return ()

    def proxy_objective(self, s, pos, neg, start, end, weights, extra):
        _, _, column_class, log_size = self._state
        return class_wise_multi_similarity_rows(
            s, pos, self.alpha, self.beta, self.base, column_class, log_size
        )

    def batch_pair_sum(self, x, w) -> torch.Tensor | float:
        """``(1/beta) sum_{c < c'} log(1 + A_cc' + A_c'c)`` over pairs of batch classes."""
        _, classes, column_class, log_size = self._state
        k = classes.shape[0]
        if k < 2:
            return 0.0
        sim = self.distance
        st = sim.matrix(sim.prepare(w[classes]), sim.prepare(x))  # [K, B]: s_{i c'} by row c'
        # log A[c', c] for row c' (class vector) and column group c (samples of class c)
        log_a = segment_logsumexp(self.beta * (st - self.base), column_class, k)
        log_a = (log_a - log_size[None, :]).T  # [c, c']: A_{c c'}
        terms = torch.logsumexp(torch.stack([torch.zeros_like(log_a), log_a, log_a.T]), dim=0)
        off = ~torch.eye(k, dtype=torch.bool, device=x.device)
        return torch.where(off, terms, torch.zeros_like(terms)).sum() / (2 * self.beta)

    def add_regularizer(self, loss, w):
        x, classes, _, _ = self._state
        total = (loss + self.batch_pair_sum(x, w)) / classes.shape[0]
        return total + self.regularizer(w)

    def regularizer_gap(self, s):
        return torch.nn.functional.softplus(s - self.base, beta=self.beta)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, alpha={self.alpha}, beta={self.beta}, base={self.base}, "
            f"mf_reg={self.mf_reg}, mf_power={self.mf_power}"
        )


def mean_field_contrastive(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    proxies: torch.Tensor,
    pos_margin: float = 0.02,
    neg_margin: float = 0.3,
    mf_reg: float = 0.0,
    mf_power: float = 2.0,
    **kwargs,
) -> torch.Tensor:
    """Functional :class:`MeanFieldContrastiveLoss` with class vectors ``proxies`` [C, D]."""
    return call_functional(
        MeanFieldContrastiveLoss, proxies, embeddings, labels, indices_tuple, ref_emb, ref_labels,
        pos_margin=pos_margin, neg_margin=neg_margin, mf_reg=mf_reg, mf_power=mf_power, **kwargs,
    )  # fmt: skip


def mean_field_class_wise_multi_similarity(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    proxies: torch.Tensor,
    alpha: float = 0.01,
    beta: float | None = 80.0,
    base: float = 0.8,
    mf_reg: float = 0.0,
    mf_power: float = 2.0,
    **kwargs,
) -> torch.Tensor:
    """Functional :class:`MeanFieldClassWiseMultiSimilarityLoss` with class vectors ``proxies``
    [C, D]."""
    return call_functional(
        MeanFieldClassWiseMultiSimilarityLoss, proxies, embeddings, labels, indices_tuple,
        ref_emb, ref_labels, alpha=alpha, beta=beta, base=base, mf_reg=mf_reg,
        mf_power=mf_power, **kwargs,
    )  # fmt: skip
