"""Intra-pair variance loss (Yu & Tao, "Deep Metric Learning with Tuplet Margin Loss", ICCV
2019), with pytorch-metric-learning's ``IntraPairVarianceLoss`` names, defaults and results."""

from __future__ import annotations

import torch

from ...engine import PairProblem, compute_dtype, run
from ...objectives.intra_pair_variance import (
    intra_pair_variance_fused,
    intra_pair_variance_rows,
    kind_sums_fused,
    kind_sums_rows,
    score_sum_rows,
    spread,
    spread_slopes,
)
from ...objectives.terms import RowTerms
from ...reducers import MEAN, NONZERO, SUM, MeanReducer
from ...similarity import DotProductSimilarity
from ...validation import check_embeddings, check_real
from ..base import (
    Component,
    PairLossModule,
    build_relation,
    listed_pairs,
    miner_in,
    pair_loss,
    paired_scores,
)


class IntraPairVarianceLoss(PairLossModule):
    r"""Intra-pair variance loss: keeps the scores of each kind of pair close to their mean.

    .. math::
        L = \frac{1}{|P|}\sum_{(i,p)} \big[(1 - \epsilon_+)\mu_+ - s_{ip}\big]_+^2
          + \frac{1}{|N|}\sum_{(i,n)} \big[s_{in} - (1 + \epsilon_-)\mu_-\big]_+^2

    with :math:`\mu_\pm` the mean score of the positive / negative pairs (with gradient). For a
    distance the directions flip. Paper: Yu & Tao, ICCV 2019, eq. 8 (the regulariser of the
    tuplet margin loss). Defaults as pytorch-metric-learning: ``pos_eps=0.01``,
    ``neg_eps=0.01``, cosine similarity; two sub-losses (``pos_loss``, ``neg_loss``), each the
    mean over its pairs.

    On the dense engine the means are tensors with their graph, the loss built from
    differentiable operations (exact to every order). On the blocked engine, with labels, the
    gradient through the means is one slope per kind of pair: with a
    similarity linear in the dot product (cosine, dot product) and no reference set the means
    come from class sums and the terms take one walk of the pair engine (its fused form on the
    blocked engine); otherwise two walks without gradient (the means, then the slopes) precede
    it. With ``reduction="none"``, a class-weighted reducer or a miner that rewrites the
    relation, the means are parameters of the terms' walk, their gradient flowing back through
    one walk each. Nothing of size B x N is held on the blocked engine. An explicit ``indices_tuple`` is read as
    pytorch-metric-learning reads it (each listed pair counts, repeats included).

    Shapes: embeddings [B, D], labels [B]; ref_emb [N, D] with ref_labels [N]. Returns a scalar.
    A kind without pairs contributes 0.
    """

    needs_all_rows = True  # statistics of its own walks: see pairloss.scale.distributed.row_mode

    default_reduction = "mean_terms"
    components = (
        Component("pos_loss", "pos_pair", "cells"),
        Component("neg_loss", "neg_pair", "cells"),
    )
    pml_default_reducer = MeanReducer

    def __init__(self, pos_eps: float = 0.01, neg_eps: float = 0.01, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pos_eps = check_real(pos_eps, "pos_eps")
        self.neg_eps = check_real(neg_eps, "neg_eps")

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
        miner = miner_in(indices_tuple, *raw) or self.miner
        if miner is not None and not miner.has_transform and indices_tuple is None:
            indices_tuple = miner(embeddings.detach(), labels, ref_emb, ref_labels)
        elif miner is not None:
            indices_tuple = None
        if indices_tuple is not None:
            return self._listed(embeddings, labels, indices_tuple, ref_emb)
        if (
            miner is None
            and labels is not None
            and self._walks_apart()
            and not self.runs_dense(embeddings, ref_emb)
        ):
            return self._walked(embeddings, labels, ref_emb, ref_labels)
        means = []
        for which in ("pos", "neg"):

            def total(s, pos, neg, start, end, which=which):
                return score_sum_rows(s, pos, neg, which)

            means.append(
                pair_loss(
                    total,
                    embeddings,
                    labels,
                    None,
                    ref_emb,
                    ref_labels,
                    similarity=self.distance,
                    reduction="mean_terms",
                    miner=miner,
                    engine=self.engine,
                    block_size=self.block_size,
                )  # fmt: skip
            )
        mean_pos, mean_neg = means
        eps, is_distance = (self.pos_eps, self.neg_eps), self.distance.is_distance

        def objective(s, pos, neg, start, end):
            return intra_pair_variance_rows(s, pos, neg, mean_pos, mean_neg, *eps, is_distance)

        return self.run_objective(
            objective, embeddings, labels, None, ref_emb, ref_labels, miner=miner,
            extra_params=means,
        )  # fmt: skip

    def _walks_apart(self) -> bool:
        """Whether every pair's weight in the loss is the same within its kind (so that the
        gradient through the means is one slope per kind)."""
        if self.uses_reducer():
            rules = self.engine_rules()
            return rules is not None and all(r in (MEAN, SUM, NONZERO) for r in rules)
        return self.reduction != "none"

    def _counts_nonzero(self) -> bool:
        if self.uses_reducer():
            return NONZERO in self.engine_rules()
        return self.reduction == "mean_nonzero"

    def _multipliers(self, n, nz, valid, n_rows) -> list[float]:
        """Each kind's weight on its terms' sum in the loss (the reduction's or reducer's)."""

        def inv(c):
            return 1.0 / c if c else 0.0

        if self.uses_reducer():
            by_rule = {MEAN: n, NONZERO: nz, SUM: (1.0, 1.0)}
            return [inv(by_rule[r][k]) for k, r in enumerate(self.engine_rules())]
        by_reduction = {
            "mean_terms": n, "mean_nonzero": nz, "mean_valid": valid, "sum": (1.0, 1.0),
            "mean": (n_rows, n_rows),
        }  # fmt: skip
        return [inv(c) for c in by_reduction[self.reduction]]

    def _counts(self, n, nz):
        """The engine's normalisers of the two kinds where they are known (else None)."""
        if self.uses_reducer():
            by_rule = {MEAN: n, NONZERO: nz, SUM: (1.0, 1.0)}
            counts = [by_rule[r][k] for k, r in enumerate(self.engine_rules())]
        else:
            counts = {"mean_terms": n, "mean_nonzero": nz}.get(self.reduction)
        if counts is None or any(c is None for c in counts):
            return None
        return lambda: list(counts)

    def _sums(self, relation, embeddings, ref_emb, f_pos, f_neg) -> list[float]:
        """One walk without gradient: :func:`kind_sums_rows` over the whole matrix."""
        total = torch.zeros(6, dtype=compute_dtype(embeddings), device=embeddings.device)

        def objective(s, pos, neg, start, end):
            total.add_(kind_sums_rows(s, pos, neg, f_pos, f_neg))
            return _no_terms(s)

        def fused(s, pairs, grad, scale):
            total.add_(kind_sums_fused(s, pairs, f_pos, f_neg))
            return _no_terms(s)

        problem = PairProblem(objective, self.distance, relation, reduction="sum", fused=fused)
        with torch.no_grad():
            run(
                problem, embeddings.detach(), None if ref_emb is None else ref_emb.detach(),
                engine=self.engine, block_size=self.block_size,
            )  # fmt: skip
        return total.tolist()

    def _terms(self, means, slopes, stats):
        """The objective and its fused form with the means held constant; each adds its
        block's :func:`intra_pair_variance_fused` statistics to ``stats`` (reset at the first
        block, so that the last full walk's are kept)."""
        eps = (self.pos_eps, self.neg_eps)
        is_distance = self.distance.is_distance
        inc = (not is_distance, is_distance)
        nonzero = self._counts_nonzero()

        def objective(s, pos, neg, start, end):
            moved = s - s.detach()  # 0, with the slope through the means as its gradient
            terms, sums = [], []
            for k, mask in enumerate((pos, neg)):
                r = torch.relu(spread(s, means[k], eps[k], inc[k]))
                terms.append(RowTerms.per_pair(r**2 + slopes[k] * moved, mask))
                sums.append(torch.where(mask, r.detach(), 0.0).sum())
            if start == 0:
                stats.zero_()
            stats[:2] += torch.stack(sums).to(stats.dtype)
            if nonzero:
                stats[2:] += torch.stack([t.n_nonzero.sum() for t in terms]).to(stats.dtype)
            return terms

        def fused(s, pairs, grad, scale):
            if pairs.start == 0:
                stats.zero_()
            return intra_pair_variance_fused(
                s, pairs, grad, scale, means, eps, is_distance, slopes, nonzero, stats
            )

        return objective, fused

    def _walked(self, embeddings, labels, ref_emb, ref_labels):
        """The means and the slopes through them first, then one walk for the terms.

        With a similarity linear in the dot product and no reference set, the kinds' score sums
        come from class sums (O(B D)) with their gradient, the slopes from the terms' walk
        itself, and the gradient through the means is added after it: one walk. Otherwise two
        walks without gradient (the means; the slopes) come first, and the terms' walk adds the
        slopes to every pair of their kind."""
        relation, _, labels, _ = build_relation(embeddings, labels, None, ref_emb, ref_labels)
        dtype = compute_dtype(embeddings)
        stats = torch.zeros(4, dtype=torch.float64, device=embeddings.device)
        n_rows = embeddings.shape[0]
        linear = (
            ref_emb is None
            and isinstance(self.distance, DotProductSimilarity)
            and self.distance.power == 1
        )
        if linear:
            kind_sums, n, valid = _class_sum_scores(self.distance, embeddings.to(dtype), labels)
            means = tuple(float(t.detach()) / c if c else 0.0 for t, c in zip(kind_sums, n))
            objective, fused = self._terms(means, (0.0, 0.0), stats)
            out = self.run_problem(
                objective, embeddings, None, relation, embeddings=embeddings, labels=labels,
                fused=fused, row_labels=labels, counts=self._counts(n, (None, None)),
            )  # fmt: skip
            if not torch.is_grad_enabled():
                return out
            eps, inc = (self.pos_eps, self.neg_eps), (True, False)
            nz = tuple(stats[2:].tolist())
            weights = self._multipliers(n, nz, valid, n_rows)
            moved = 0.0
            for k in range(2):
                if n[k]:
                    slope = 2 * spread_slopes(eps[k], inc[k])[1] * float(stats[k]) / n[k]
                    moved = moved + weights[k] * slope * (kind_sums[k] - kind_sums[k].detach())
            return out + moved.to(out.dtype) if isinstance(moved, torch.Tensor) else out
        eps = (self.pos_eps, self.neg_eps)
        is_distance = self.distance.is_distance
        inc = (not is_distance, is_distance)
        sum_p, sum_n, _, _, n_p, n_n = self._sums(
            relation, embeddings, ref_emb, lambda x: x, lambda x: x
        )
        means = (sum_p / n_p if n_p else 0.0, sum_n / n_n if n_n else 0.0)

        def wrong_side(k):
            return lambda x: torch.relu(spread(x, means[k], eps[k], inc[k]))

        r_p, r_n, nz_p, nz_n, _, _ = self._sums(
            relation, embeddings, ref_emb, wrong_side(0), wrong_side(1)
        )
        slopes = tuple(
            2 * spread_slopes(eps[k], inc[k])[1] * r / n if n else 0.0
            for k, r, n in ((0, r_p, n_p), (1, r_n, n_n))
        )
        objective, fused = self._terms(means, slopes, stats)
        return self.run_problem(
            objective, embeddings, ref_emb, relation, embeddings=embeddings, labels=labels,
            fused=fused, row_labels=labels, counts=self._counts((n_p, n_n), (nz_p, nz_n)),
        )  # fmt: skip

    def _listed(self, embeddings, labels, indices_tuple, ref_emb):
        """pytorch-metric-learning's reading of explicit pairs: means and terms over the lists."""
        b = embeddings.shape[0]
        n_cand = b if ref_emb is None else ref_emb.shape[0]
        a1, p, a2, n = listed_pairs(indices_tuple, b, n_cand, embeddings.device)
        is_distance = self.distance.is_distance
        parts = []
        for rows, cols, eps, increase in (
            (a1, p, self.pos_eps, not is_distance),
            (a2, n, self.neg_eps, is_distance),
        ):
            s = paired_scores(self.distance, embeddings, ref_emb, rows, cols)
            terms = torch.relu(spread(s, s.mean(), eps, increase)) ** 2 if s.numel() else s
            parts.append((terms, (rows, cols)))
        return self.reduce_pair_list(parts, embeddings, labels)


def intra_pair_variance(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    pos_eps: float = 0.01,
    neg_eps: float = 0.01,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`IntraPairVarianceLoss` (same arguments and defaults)."""
    return IntraPairVarianceLoss(pos_eps=pos_eps, neg_eps=neg_eps, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )


def _no_terms(s: torch.Tensor) -> list[RowTerms]:
    zero = s.new_zeros(s.shape[0])
    return [RowTerms(zero, zero, zero)]


def _class_sum_scores(similarity, embeddings: torch.Tensor, labels: torch.Tensor):
    """For a score that is the dot product of the prepared embeddings: the sums of the scores
    over the positive and over the negative pairs (ordered, no self pairs), differentiable, in
    float64, from the class sums; with the pairs' counts and the rows that have each kind."""
    x = similarity.prepare(embeddings).to(torch.float64)
    _, inverse, sizes = torch.unique(labels, return_inverse=True, return_counts=True)
    per_class = x.new_zeros(sizes.shape[0], x.shape[1]).index_add_(0, inverse, x)
    total = x.sum(dim=0)
    squares, class_squares = (x * x).sum(), (per_class * per_class).sum()
    kind_sums = (class_squares - squares, total.dot(total) - class_squares)
    b = labels.shape[0]
    sizes = sizes.to(torch.float64)
    n = (float((sizes * (sizes - 1)).sum()), float((sizes * (b - sizes)).sum()))
    valid = (float(sizes[sizes > 1].sum()), float(sizes[sizes < b].sum()))
    return kind_sums, n, valid
