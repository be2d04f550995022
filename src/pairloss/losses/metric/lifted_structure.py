"""Lifted structure losses (Oh Song et al., "Deep Metric Learning via Lifted Structured Feature
Embedding", CVPR 2016) and their generalised form (Hermans et al., "In Defense of the Triplet
Loss for Person Re-Identification", 2017, p. 4)."""

from __future__ import annotations

import torch

from ...engine import PairProblem, run
from ...objectives.pair_margins import (
    generalized_lifted_fused,
    generalized_lifted_rows,
    negative_logsumexp_rows,
)
from ...objectives.terms import segment_logsumexp
from ...reducers import MeanReducer
from ...similarity import LpDistance, Similarity
from ...validation import check_embeddings, check_real
from ..base import Component, PairLossModule, build_relation, listed_pairs, miner_in, paired_scores


class GeneralizedLiftedStructureLoss(PairLossModule):
    r"""Generalized lifted structure loss.

    .. math::
        L = \frac{1}{B} \sum_i \Big[ \log \sum_{p \in P(i)} e^{d_{ip} - m_{pos}}
            + \log \sum_{n \in N(i)} e^{m_{neg} - d_{in}} \Big]_+

    A soft maximum of the positive distances against a soft minimum of the negative ones, per
    anchor (Hermans et al. 2017's generalisation of Oh Song et al. 2016 to all anchors). With a
    similarity the margins flip: :math:`e^{m_{pos} - s_{ip}}` and :math:`e^{s_{in} - m_{neg}}`.

    Defaults as pytorch-metric-learning's ``GeneralizedLiftedStructureLoss``:
    ``neg_margin=1``, ``pos_margin=0``, ``LpDistance()``, mean over all B anchors (reduction
    ``"mean"``).

    Shapes: embeddings [B, D], labels [B]; ref_emb [N, D] with ref_labels [N]. Returns a scalar.
    An empty positive or negative set contributes 0 to its row (so one class gives the
    positive half only, all-distinct labels the negative half only); a batch of one gives 0.

    Difference from pytorch-metric-learning: it returns 0 whenever every index list has at most
    one entry; here such inputs give the formula's value.
    """

    default_reduction = "mean"
    components = (Component(every_row=True),)
    pml_default_reducer = MeanReducer

    def __init__(self, neg_margin: float = 1, pos_margin: float = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.neg_margin = check_real(neg_margin, "neg_margin")
        self.pos_margin = check_real(pos_margin, "pos_margin")

    @staticmethod
    def default_similarity() -> Similarity:
        return LpDistance()

    def objective(self, s, pos, neg, start, end):
        return generalized_lifted_rows(
            s, pos, neg, self.pos_margin, self.neg_margin, self.distance.is_distance
        )

    def fused(self, s, pairs, grad, scale):
        return generalized_lifted_fused(
            s, pairs, grad, scale, self.pos_margin, self.neg_margin, self.distance.is_distance
        )


def generalized_lifted_structure(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    neg_margin: float = 1,
    pos_margin: float = 0,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`GeneralizedLiftedStructureLoss` (same arguments and
    defaults)."""
    return GeneralizedLiftedStructureLoss(neg_margin=neg_margin, pos_margin=pos_margin, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )


class LiftedStructureLoss(PairLossModule):
    r"""Lifted structure loss (Oh Song et al., CVPR 2016, eq. 4), per positive pair:

    .. math::
        \ell_{ap} = \frac12 \Big[\log \Big(\sum_{n \in N(a)} e^{m_{neg} - d_{an}}
            + \sum_{n \in N(p)} e^{m_{neg} - d_{pn}}\Big) + d_{ap} - m_{pos}\Big]_+^2

    averaged over the positive pairs (both orders of a pair count, hence the 1/2). With a
    similarity the margins flip (:math:`e^{s_{an} - m_{neg}}` and :math:`m_{pos} - s_{ap}`).
    Defaults as pytorch-metric-learning's ``LiftedStructureLoss``: ``neg_margin=1``,
    ``pos_margin=0``, ``LpDistance()``. The paper's m = ``neg_margin`` (its loss is squared and
    halved exactly so).

    Two stages: the log-sum-exp over each row's negatives, one pass of the pair engine
    (reduction 'none', blocked: memory O(block x N)); then a term per positive pair from its
    two rows' sums and its own distance. An explicit ``indices_tuple`` is read as
    pytorch-metric-learning reads it: each listed positive pair against the listed negative
    pairs whose anchor is one of its two indices (each listing counted; the positive's index is
    read as an anchor index, as there).

    Shapes: embeddings [B, D], labels [B]; ref_emb [N, D] with ref_labels [N]. Returns a scalar.
    No positive or no negative pair gives 0; a pair whose rows have no negative keeps
    [d_ap - m_pos]+^2 / 2.
    """

    default_reduction = "mean_terms"
    components = (Component("loss", "pos_pair"),)
    pml_default_reducer = MeanReducer

    def __init__(self, neg_margin: float = 1, pos_margin: float = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.neg_margin = check_real(neg_margin, "neg_margin")
        self.pos_margin = check_real(pos_margin, "pos_margin")

    @staticmethod
    def default_similarity() -> Similarity:
        return LpDistance()

    def objective(self, s, pos, neg, start, end):
        return negative_logsumexp_rows(s, pos, neg, self.neg_margin, self.distance.is_distance)

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of ``embeddings`` [B, D] (see the class docstring for the accepted inputs)."""
        raw = (embeddings, labels, ref_emb, ref_labels)
        embeddings = check_embeddings(embeddings, "embeddings")
        b = embeddings.shape[0]
        n_cand = b if ref_emb is None else ref_emb.shape[0]
        sim = self.distance
        miner = miner_in(indices_tuple, *raw) or self.miner
        if miner is not None and not miner.has_transform and indices_tuple is None:
            indices_tuple = miner(embeddings.detach(), labels, ref_emb, ref_labels)
            miner = None
        if indices_tuple is not None and miner_in(indices_tuple, *raw) is None:
            a1, p, a2, n = listed_pairs(indices_tuple, b, n_cand, embeddings.device)
            if a1.numel() == 0 or a2.numel() == 0:
                return self.reduce_pair_list(
                    [(embeddings.new_zeros(0), (a1[:0], p[:0]))], embeddings, labels
                )
            z = sim.margin(self.neg_margin, paired_scores(sim, embeddings, ref_emb, a2, n))
            lse = segment_logsumexp(z, a2, max(b, n_cand))
        else:
            relation, _, labels, ref_labels = build_relation(
                embeddings, labels, None, ref_emb, ref_labels
            )
            with torch.no_grad():
                pos, neg = relation.block(0, b)
                if miner is not None:
                    ms = miner.similarity
                    ma = ms.prepare(embeddings.detach())
                    mc = ma if ref_emb is None else ms.prepare(ref_emb.detach())
                    pos, neg = miner.transform(ms.matrix(ma, mc), pos, neg)
            a1, p = torch.where(pos)
            if a1.numel() == 0 or not bool(neg.any()):
                return self.reduce_pair_list(
                    [(embeddings.new_zeros(0), (a1[:0], p[:0]))], embeddings, labels
                )
            kept = neg

            def objective(s, pos_b, neg_b, start, end):
                return self.objective(s, pos_b, kept[start:end], start, end)

            problem = PairProblem(objective, sim, relation, reduction="none")
            rows = run(problem, embeddings, ref_emb, engine=self.engine, block_size=self.block_size)
            lse = torch.where(neg.any(dim=1), rows.to(embeddings.dtype), float("-inf"))
            lse = torch.cat([lse, lse.new_full((max(0, n_cand - b),), float("-inf"))])
        lse_a, lse_p = lse[a1], lse[p]  # p read as an anchor index, as pytorch-metric-learning
        a_ok = torch.isfinite(lse_a)
        p_ok = torch.isfinite(lse_p) & (p != a1)  # one anchor's negatives count once
        la, lp = torch.where(a_ok, lse_a, 0.0), torch.where(p_ok, lse_p, 0.0)
        one = torch.where(a_ok, la, lp)
        both = torch.where(a_ok & p_ok, torch.logaddexp(la, lp), one)
        d_ap = sim.margin(paired_scores(sim, embeddings, ref_emb, a1, p), self.pos_margin)
        terms = torch.relu(both + d_ap) ** 2 / 2
        return self.reduce_pair_list([(terms, (a1, p))], embeddings, labels)


def lifted_structure(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    neg_margin: float = 1,
    pos_margin: float = 0,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`LiftedStructureLoss` (same arguments and defaults)."""
    return LiftedStructureLoss(neg_margin=neg_margin, pos_margin=pos_margin, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )
