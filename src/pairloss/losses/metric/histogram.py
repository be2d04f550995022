"""Histogram loss (Ustinova & Lempitsky, "Learning Deep Embeddings with Histogram Loss",
NeurIPS 2016), with pytorch-metric-learning's ``HistogramLoss`` names, defaults and results."""

from __future__ import annotations

import torch

from ...engine import PairProblem, _check_scores, compute_dtype, run
from ...errors import PairLossError
from ...objectives.histogram import (
    counted_pairs,
    histogram_loss,
    histogram_rows,
    histogram_slope_rows,
)
from ...objectives.terms import RowTerms
from ...similarity import CosineSimilarity, Similarity
from ...validation import check_embeddings, check_int, check_real, check_result
from ..base import Component, PairLossModule, build_relation, listed_pairs, paired_scores


def _all_triplet_pairs(indices_tuple, n: int, device):
    a1, p, a2, neg = listed_pairs(indices_tuple, n, n, device)
    if len(indices_tuple) == 3:
        a, p, n_ = indices_tuple[0].to(device), p, neg
    else:  # pytorch-metric-learning's convert_to_triplets: each anchor's pairs combined
        ip, jn = torch.where(a1[:, None] == a2[None, :])
        a, p, n_ = a1[ip], p[ip], neg[jn]
    return a, p, n_


def _unique_unordered(i: torch.Tensor, j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = torch.sort(torch.stack([i, j]), dim=0).values
    pairs = torch.unique(pairs, dim=1)
    return pairs[0], pairs[1]


class HistogramLoss(PairLossModule):
    r"""Histogram loss: the probability that a random negative pair scores higher than a random
    positive pair, from soft histograms of the two kinds of scores.

    .. math::
        L = \sum_{r} p^-_r \, \Phi^+_r,\qquad \Phi^+_r = \sum_{q \le r} p^+_q

    with :math:`p^\pm` the histograms (linear interpolation between nodes spaced ``delta`` over
    [-1, 1], normalised by the number of pairs) of the distinct unordered positive and negative
    pairs, as pytorch-metric-learning lists them from the batch's triplets (a positive pair
    counts when one of its samples has a negative, a negative pair when one of them has a
    positive). Paper: Ustinova & Lempitsky, NeurIPS 2016, eq. 1-4. Arguments as
    pytorch-metric-learning's ``HistogramLoss``: ``n_bins`` or ``delta`` (``delta = 2 /
    n_bins``; 100 bins when neither is given), cosine similarity by default. A score of
    exactly 1 lands on the last node (pytorch-metric-learning raises an index error there).

    With labels, two walks of the pair engine: one without gradient builds the histograms, one
    hands each pair the loss's slope in its bin (a linear surrogate with the exact gradient);
    memory O(block x B). An explicit ``indices_tuple`` lists the pairs. ``ref_emb`` is not
    supported. The loss is already reduced, as there.

    Shapes: embeddings [B, D], labels [B]. Returns a scalar; no triplet gives 0.
    """

    needs_all_rows = True  # statistics of its own walks: see pairloss.scale.distributed.row_mode

    default_reduction = "sum"
    components = (Component("loss", "already_reduced"),)

    def __init__(self, n_bins: int | None = None, delta: float | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if n_bins is not None:
            n_bins = check_int(n_bins, "n_bins", minimum=1)
        if delta is not None:
            delta = check_real(delta, "delta", 0.0, 2.0, low_open=True)
        if delta is not None and n_bins is not None and delta != 2 / n_bins:
            raise PairLossError(
                f"delta, n_bins: expected delta = 2 / n_bins, got delta={delta} and n_bins={n_bins}"
            )
        if delta is None and n_bins is None:
            n_bins = 100
        self.delta = delta if delta is not None else 2 / n_bins
        self.n_nodes = round(1 + 2 / self.delta)

    @staticmethod
    def default_similarity() -> Similarity:
        return CosineSimilarity()

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of ``embeddings`` [B, D] (see the class docstring)."""
        embeddings = check_embeddings(embeddings, "embeddings")
        if ref_emb is not None or ref_labels is not None:
            raise PairLossError("ref_emb: not supported by HistogramLoss; expected None")
        if labels is None and indices_tuple is None:
            raise PairLossError("labels, indices_tuple: HistogramLoss needs one of them")
        if indices_tuple is not None:
            loss = self._listed(embeddings, indices_tuple)
        elif self.runs_dense(embeddings):
            loss = self._pairs_of_labels(embeddings, labels)
        else:
            loss = self._walked(embeddings, labels)
        return self.finish(loss, embeddings, labels)

    def finish(self, loss, embeddings, labels):
        if self.uses_reducer():
            entry = {"losses": loss, "indices": None, "reduction_type": "already_reduced"}
            return self.finish_listed({"loss": entry}, embeddings, labels)
        return self.add_regularizers(loss.to(embeddings.dtype), embeddings)

    def _pairs_of_labels(self, embeddings, labels):
        """The dense form: the histograms of every pair of a triplet of the batch (a positive
        pair whose class has a negative; a negative pair one of whose classes has a positive),
        from differentiable operations, exact to every order."""
        _, _, labels, _ = build_relation(embeddings, labels, None, None, None)
        _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        size = counts[inverse]
        has_pos, has_neg = size > 1, size < labels.shape[0]
        if not bool((has_pos & has_neg).any()):  # no triplet
            return (embeddings * 0).sum()
        i, j = torch.triu_indices(labels.shape[0], labels.shape[0], 1, device=embeddings.device)
        same = labels[i] == labels[j]
        pos = same & has_neg[i]
        neg = ~same & (has_pos[i] | has_pos[j])
        s_pos = paired_scores(self.distance, embeddings, None, i[pos], j[pos])
        s_neg = paired_scores(self.distance, embeddings, None, i[neg], j[neg])
        _check_scores(torch.cat([s_pos.detach(), s_neg.detach()]), embeddings, embeddings)
        return check_result(histogram_loss(s_pos, s_neg, self.delta, self.n_nodes), embeddings)

    def _listed(self, embeddings, indices_tuple):
        a, p, n = _all_triplet_pairs(indices_tuple, embeddings.shape[0], embeddings.device)
        if a.numel() == 0:
            return (embeddings * 0).sum()
        i_p, j_p = _unique_unordered(a, p)
        i_n, j_n = _unique_unordered(a, n)
        s_pos = paired_scores(self.distance, embeddings, None, i_p, j_p)
        s_neg = paired_scores(self.distance, embeddings, None, i_n, j_n)
        return histogram_loss(s_pos, s_neg, self.delta, self.n_nodes)

    def _walked(self, embeddings, labels):
        relation, _, labels, _ = build_relation(embeddings, labels, None, None, None)
        _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        size = counts[inverse]
        has_pos, has_neg = size > 1, size < labels.shape[0]
        if not bool((has_pos & has_neg).any()):  # no triplet
            return (embeddings * 0).sum()
        dtype = compute_dtype(embeddings)
        delta, nodes = self.delta, self.n_nodes
        hist_pos = torch.zeros(nodes, dtype=dtype, device=embeddings.device)
        hist_neg = torch.zeros_like(hist_pos)
        tally = torch.zeros(2, dtype=dtype, device=embeddings.device)

        def gather(s, pos, neg, start, end):
            pos_c, neg_c = counted_pairs(pos, neg, start, has_pos, has_neg)
            histogram_rows(s, pos_c, neg_c, delta, nodes, hist_pos, hist_neg)
            tally.add_(torch.stack([pos_c.sum(), neg_c.sum()]).to(dtype))
            zero = s.new_zeros(s.shape[0])
            return [RowTerms(zero, zero, zero)]

        with torch.no_grad():
            run(
                PairProblem(gather, self.distance, relation, reduction="sum"),
                embeddings.detach(), engine=self.engine, block_size=self.block_size,
            )  # fmt: skip
        p_pos = hist_pos / tally[0].clamp_min(1)
        p_neg = hist_neg / tally[1].clamp_min(1)
        value = torch.sum(p_neg * torch.cumsum(p_pos, dim=0))
        # dL/dp+_r = sum_{q >= r} p-_q and dL/dp-_r = Phi+_r; a pair in bin r moves its mass
        # from node r to node r + 1 at rate 1 / (delta * count)
        d_pos = torch.flip(torch.cumsum(torch.flip(p_neg, [0]), 0), [0])
        d_neg = torch.cumsum(p_pos, dim=0)
        slope_pos = (d_pos[1:] - d_pos[:-1]) / (delta * tally[0].clamp_min(1))
        slope_neg = (d_neg[1:] - d_neg[:-1]) / (delta * tally[1].clamp_min(1))

        def surrogate(s, pos, neg, start, end):
            pos_c, neg_c = counted_pairs(pos, neg, start, has_pos, has_neg)
            return histogram_slope_rows(s, pos_c, neg_c, delta, nodes, slope_pos, slope_neg)

        linear = run(
            PairProblem(surrogate, self.distance, relation, reduction="sum"),
            embeddings, engine=self.engine, block_size=self.block_size,
        )  # fmt: skip
        return linear - linear.detach() + value.to(linear.dtype)


def histogram(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    n_bins: int | None = None,
    delta: float | None = None,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`HistogramLoss` (same arguments and defaults)."""
    return HistogramLoss(n_bins=n_bins, delta=delta, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )
