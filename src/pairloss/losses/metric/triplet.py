"""Triplet losses: the triplet margin loss over all (or mined, or given) triplets, batch-hard
triplet loss (Hermans et al., "In Defense of the Triplet Loss for Person Re-Identification",
2017) with its soft-margin variant, and FaceNet-style semi-hard triplet loss (Schroff et al.,
"FaceNet", CVPR 2015)."""

from __future__ import annotations

import math

import torch

from ...engine import compute_dtype
from ...errors import PairLossError
from ...mining import (
    BatchEasyHardMiner,
    MinedIndices,
    MinedRelation,
    Miner,
    TripletMarginMiner,
    random_triplets,
    triplets_where,
)
from ...objectives.terms import RowTerms
from ...objectives.triplet import (
    batch_all_chunked_rows,
    batch_all_hinge_fused,
    batch_all_hinge_rows,
    batch_hard_fused,
    batch_hard_rows,
    distance_like,
    triplet_values,
)
from ...reducers import AvgNonZeroReducer
from ...reduction import reduce_terms
from ...relations import Relation, _check_index
from ...similarity import EuclideanDistance, LpDistance, Similarity
from ...validation import check_bool, check_embeddings, check_int, check_labels, check_real
from ..base import Component, PairLossModule, _detached, build_relation, check_reference, miner_in


def _pairs_to_triplets(a1, p, a2, n):
    """Every (a, p, n) with (a, p) a listed positive pair and (a, n) a listed negative pair,
    with multiplicity (as pytorch-metric-learning's conversion). Memory O(number of triplets)."""
    order = torch.argsort(a2, stable=True)
    a2_sorted = a2[order]
    first = torch.searchsorted(a2_sorted, a1, side="left")
    last = torch.searchsorted(a2_sorted, a1, side="right")
    count = last - first
    k = torch.repeat_interleave(torch.arange(a1.shape[0], device=a1.device), count)
    starts = torch.cumsum(count, 0) - count
    offset = torch.arange(k.shape[0], device=a1.device) - starts[k]
    return a1[k], p[k], n[order[first[k] + offset]]


def _unique(rows: torch.Tensor, cols: torch.Tensor, n_cols: int) -> bool:
    cells = rows * n_cols + cols
    return torch.unique(cells).numel() == cells.numel()


def _picks_hardest(miner: Miner) -> bool:
    """Whether ``miner`` keeps exactly each anchor's farthest positive and closest negative
    (:class:`~pairloss.mining.BatchHardMiner`, or BatchEasyHardMiner("hard", "hard") without
    allowed ranges)."""
    return (
        isinstance(miner, BatchEasyHardMiner)
        and miner.pos_strategy == miner.neg_strategy == "hard"
        and miner.allowed_pos_range is None
        and miner.allowed_neg_range is None
    )


class TripletMarginLoss(PairLossModule):
    r"""Triplet margin loss over triplets (a, p, n): label(p) = label(a) != label(n).

    .. math::
        \ell_{apn} = [d_{ap} - d_{an} + m]_+ \quad (\text{smooth\_loss: }
        \log(1 + e^{d_{ap} - d_{an} + m}))

    For a similarity (e.g. cosine) the violation is :math:`s_{an} - s_{ap} + m`. Paper: Weinberger
    & Saul (LMNN), Schroff et al. (FaceNet, CVPR 2015). Defaults as pytorch-metric-learning:
    ``margin=0.05``, normalised Euclidean distance, mean over the triplets with a non-zero loss
    (reduction ``"mean_nonzero"``, PML's AvgNonZeroReducer).

    Which triplets count:

    - labels only (``triplets_per_anchor="all"``): every valid triplet ("batch all"). They are
      never enumerated: per anchor the negatives are sorted and prefix-summed, and each positive's
      violating negatives are found by binary search, O(B N log N) time and O(block x N) memory.
      The blocked engine's hand-differentiated form sorts only each anchor's positive thresholds
      and searches the few negatives that a cheap screen leaves
      (:func:`~pairloss.objectives.triplet.batch_all_hinge_fused`).
      ``smooth_loss=True`` uses chunks of positive columns instead (O(block x N x chunk)).
    - a pair miner (``miner=`` or its output as ``indices_tuple``, e.g.
      :class:`~pairloss.mining.BatchHardMiner`): all triplets over the mined positive and
      negative cells of each anchor (BatchHardMiner gives batch-hard triplets).
    - a :class:`~pairloss.mining.TripletMarginMiner` (``miner=`` or
      ``indices_tuple=TripletMarginMiner(...)(emb, labels)``): only triplets whose margin
      d_an - d_ap lies in the miner's window, measured in the miner's distance.
    - explicit triplets ``(a, p, n)`` as ``indices_tuple``: exactly those, duplicates counted.
      Pairs ``(a1, p, a2, n)``: every listed positive pair combined with every listed negative
      pair of the same anchor (with multiplicity, as PML).
    - ``triplets_per_anchor=k`` (an int) with labels: for each anchor with a positive and a
      negative, k positives and k negatives drawn uniformly with replacement from torch's global
      random generator (``torch.manual_seed`` makes it repeatable; the draw differs from PML's).
    - ``swap=True`` (use min(d_an, d_pn), Balntas et al. 2016): only with explicit triplets or
      ``triplets_per_anchor=k``; batch-all needs d_pn, which is not a per-anchor quantity, so it
      raises :class:`~pairloss.errors.PairLossError`. With ``ref_emb``, d_pn is measured between
      the reference rows p and n (PML indexes its query-by-reference matrix with p there).

    Shapes: embeddings [B, D], labels [B]; ref_emb [N, D] with ref_labels [N]; indices into the
    embeddings (anchors) and the reference set (positives, negatives). Returns a scalar ([B] with
    reduction "none"). No triplet, or no violating triplet, gives 0 with zero gradient.
    """

    default_reduction = "mean_nonzero"
    components = (Component("loss", "triplet", "counted"),)
    pml_default_reducer = AvgNonZeroReducer

    def __init__(
        self,
        margin: float = 0.05,
        swap: bool = False,
        smooth_loss: bool = False,
        triplets_per_anchor: int | str = "all",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.margin = check_real(margin, "margin")
        self.swap = check_bool(swap, "swap")
        self.smooth_loss = check_bool(smooth_loss, "smooth_loss")
        if triplets_per_anchor != "all":
            triplets_per_anchor = check_int(triplets_per_anchor, "triplets_per_anchor", minimum=1)
        self.triplets_per_anchor = triplets_per_anchor

    @staticmethod
    def default_similarity() -> Similarity:
        return LpDistance()

    # the plain batch-all objective (no triplet window), e.g. for direct engine use
    def objective(self, s, pos, neg, start, end):
        return self._rows(s, pos, neg, None, None, start, end)

    def fused(self, s, pairs, grad, scale):
        """Hand-differentiated batch-all hinge (not for ``smooth_loss``: see
        :meth:`fused_form`)."""
        return batch_all_hinge_fused(s, pairs, grad, scale, self.margin, self.distance.is_distance)

    def _batch_hard_fused(self, s, pairs, grad, scale):
        # the miner keeps the first of tied extremes, so the gradient goes to that one cell
        return batch_hard_fused(
            s, pairs, grad, scale, self.margin, False, self.distance.is_distance, False
        )

    def fused_form(self, miner: Miner | None):
        """Batch-all hinge without a miner; batch-hard (one triplet per anchor) with a
        :class:`~pairloss.mining.BatchHardMiner` that scores in the loss's own similarity.
        None for ``smooth_loss`` and every other miner (they take the mask objective)."""
        if self.smooth_loss:
            return None
        if miner is None:
            return self.fused
        if _picks_hardest(miner) and miner.similarity.same_scores(self.distance):
            return self._batch_hard_fused
        return None

    def _rows(self, s, pos, neg, miner, miner_prep, start, end, one_pair=False) -> list[RowTerms]:
        is_distance = self.distance.is_distance
        if one_pair and not self.smooth_loss:
            # at most one positive and one negative per row (e.g. BatchHardMiner): the row's
            # only triplet, read off with a masked max/min instead of a sort of the row
            return batch_hard_rows(s, pos, neg, self.margin, False, is_distance)
        window = None if miner is None else miner.window()
        if miner_prep is not None:
            ma, mc = miner_prep
            with torch.no_grad():
                w = distance_like(
                    miner.similarity.matrix(ma[start:end], mc), miner.similarity.is_distance
                )
            return batch_all_chunked_rows(
                s, pos, neg, self.margin, is_distance, self.smooth_loss, window, w
            )
        if self.smooth_loss:
            return batch_all_chunked_rows(s, pos, neg, self.margin, is_distance, True, window)
        return batch_all_hinge_rows(s, pos, neg, self.margin, is_distance, window)

    def _split_miners(self, indices_tuple, embeddings, labels, ref_emb, ref_labels):
        """(indices_tuple without a miner, triplet miner or None, pair miner or None): a miner
        passed as ``indices_tuple``, or the miner of a :class:`~pairloss.mining.MinedIndices`
        mined on these very inputs with a rule the engine applies, replaces the indices; a
        :class:`~pairloss.mining.MinedRelation` hands over its relation and its miner."""
        if isinstance(indices_tuple, MinedRelation):
            given, indices_tuple = indices_tuple.miner, indices_tuple.relation
        else:
            given = miner_in(indices_tuple, embeddings, labels, ref_emb, ref_labels)
        if (
            given is None
            and isinstance(indices_tuple, MinedIndices)
            and isinstance(indices_tuple.miner, TripletMarginMiner)
            and indices_tuple.mined_on(embeddings, labels, ref_emb, ref_labels)
        ):
            given = indices_tuple.miner
        if given is not None and not isinstance(indices_tuple, Relation):
            indices_tuple = None
        triplet_miner = pair_miner = None
        for m in (self.miner, given):  # the constructor's miner first
            if m is None:
                continue
            if isinstance(m, TripletMarginMiner):
                triplet_miner = triplet_miner or m
            else:
                pair_miner = pair_miner or m
        return indices_tuple, triplet_miner, pair_miner

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of ``embeddings`` [B, D] (see the class docstring for the accepted inputs)."""
        indices_tuple, triplet_miner, pair_miner = self._split_miners(
            indices_tuple, embeddings, labels, ref_emb, ref_labels
        )
        embeddings = check_embeddings(embeddings, "embeddings")
        if pair_miner is not None and not pair_miner.has_transform and indices_tuple is None:
            indices_tuple = pair_miner(embeddings.detach(), labels, _detached(ref_emb), ref_labels)
            pair_miner = None
        n_cand = embeddings.shape[0] if ref_emb is None else ref_emb.shape[0]
        triplets = None
        relation = isinstance(indices_tuple, Relation)
        if relation and self.triplets_per_anchor != "all":
            raise PairLossError(
                "indices_tuple: a relation gives all its triplets; expected "
                "triplets_per_anchor='all' with it"
            )
        if indices_tuple is not None and not relation:
            if not isinstance(indices_tuple, (tuple, list)) or len(indices_tuple) not in (3, 4):
                raise PairLossError(
                    "indices_tuple: expected (anchors, positives, negatives) or "
                    "(anchors1, positives, anchors2, negatives) index tensors"
                )
            names = ("anchors", "positives", "anchors", "negatives")
            if len(indices_tuple) == 3:
                names = ("anchors", "positives", "negatives")
            sizes = [embeddings.shape[0] if nm == "anchors" else n_cand for nm in names]
            idx = [
                _check_index(x, size, f"indices_tuple[{nm}]")
                for x, size, nm in zip(indices_tuple, sizes, names)
            ]
            if len(idx) == 3:
                if not idx[0].shape == idx[1].shape == idx[2].shape:
                    raise PairLossError("indices_tuple: index tensors differ in length")
                triplets = tuple(idx)
            else:
                a1, p, a2, n = idx
                if a1.shape != p.shape or a2.shape != n.shape:
                    raise PairLossError(
                        "indices_tuple: anchor and partner index tensors differ in length"
                    )
                if self.swap or not (_unique(a1, p, n_cand) and _unique(a2, n, n_cand)):
                    triplets = _pairs_to_triplets(a1, p, a2, n)
        elif self.triplets_per_anchor != "all":
            triplets = self._sample(embeddings, labels, ref_emb, ref_labels)
        elif self.swap or self._lists_terms():
            triplets = self._all_triplets(embeddings, labels, ref_emb, ref_labels, pair_miner)
            pair_miner = None
        if triplets is not None:
            if pair_miner is not None:
                raise PairLossError(
                    "miner: a pair miner cannot be combined with explicit or sampled triplets; "
                    "mine pairs with labels instead (indices_tuple=None)"
                )
            return self._explicit(embeddings, labels, triplets, ref_emb, triplet_miner)
        miner_prep = None
        if triplet_miner is not None and not triplet_miner.similarity.same_scores(self.distance):
            dtype = compute_dtype(embeddings)
            with torch.no_grad():
                sim = triplet_miner.similarity
                ma = sim.prepare(embeddings.detach().to(dtype))
                mc = ma if ref_emb is None else sim.prepare(ref_emb.detach().to(dtype))
            miner_prep = (ma, mc)

        one_pair = triplet_miner is None and getattr(pair_miner, "picks_one_pair", False)

        def objective(s, pos, neg, start, end):
            return self._rows(s, pos, neg, triplet_miner, miner_prep, start, end, one_pair)

        return self.run_objective(
            objective,
            embeddings,
            labels,
            indices_tuple,
            ref_emb,
            ref_labels,
            miner=pair_miner,
            fused=None if triplet_miner is not None else self.fused_form(pair_miner),
        )

    def _sample(self, embeddings, labels, ref_emb, ref_labels):
        if labels is None:
            raise PairLossError(
                "labels: required unless indices_tuple gives the triplets; expected a [batch] "
                "tensor"
            )
        labels = check_labels(labels, embeddings.shape[0], "labels").to(embeddings.device)
        if ref_emb is not None:
            if ref_labels is None:
                raise PairLossError(
                    "ref_labels: ref_emb was given without ref_labels; expected one label per "
                    "ref_emb row"
                )
            ref_labels = check_labels(ref_labels, ref_emb.shape[0], "ref_labels")
            ref_labels = ref_labels.to(embeddings.device)
        elif ref_labels is not None:
            raise PairLossError("ref_labels: given without ref_emb; expected both or neither")
        return random_triplets(labels, ref_labels, per_anchor=int(self.triplets_per_anchor))

    def _lists_terms(self) -> bool:
        """Whether the reducer needs each triplet's term (then the triplets are listed)."""
        return self.uses_reducer() and self.engine_rules() is None

    def _all_triplets(self, embeddings, labels, ref_emb, ref_labels, pair_miner):
        """Every triplet of the labels (of the mined pairs, with a pair miner), listed as
        pytorch-metric-learning lists them: needed for ``swap`` (d_pn of each triplet) and for a
        reducer that reads single terms. Memory O(number of triplets)."""
        relation, _, labels, ref_labels = build_relation(
            embeddings, labels, None, ref_emb, ref_labels
        )
        pos, neg = relation.block(0, embeddings.shape[0])
        if pair_miner is not None:
            sim = pair_miner.similarity
            dtype = compute_dtype(embeddings)
            with torch.no_grad():
                ma = sim.prepare(embeddings.detach().to(dtype))
                mc = ma if ref_emb is None else sim.prepare(ref_emb.detach().to(dtype))
                pos, neg = pair_miner.transform(sim.matrix(ma, mc), pos, neg)
        return triplets_where(pos, neg)

    def _explicit(self, embeddings, labels, triplets, ref_emb, triplet_miner) -> torch.Tensor:
        if ref_emb is not None:
            ref_emb = check_reference(embeddings, ref_emb)
        a, p, n = (x.to(embeddings.device) for x in triplets)
        dtype = compute_dtype(embeddings)
        sim = self.distance
        x = sim.prepare(embeddings.to(dtype))
        c = x if ref_emb is None else sim.prepare(ref_emb.to(dtype))
        if triplet_miner is not None:
            msim = triplet_miner.similarity
            with torch.no_grad():
                mx = msim.prepare(embeddings.detach().to(dtype))
                mc = mx if ref_emb is None else msim.prepare(ref_emb.detach().to(dtype))
                w_ap = distance_like(msim.paired(mx[a], mc[p]), msim.is_distance)
                w_an = distance_like(msim.paired(mx[a], mc[n]), msim.is_distance)
                m = w_an - w_ap
                low, high = triplet_miner.window()
                keep = torch.ones_like(m, dtype=torch.bool)
                if low > -math.inf:
                    keep &= m > low
                if high < math.inf:
                    keep &= m <= high
            a, p, n = a[keep], p[keep], n[keep]
        xa = x[a]
        t_ap = distance_like(sim.paired(xa, c[p]), sim.is_distance)
        t_an = distance_like(sim.paired(xa, c[n]), sim.is_distance)
        if self.swap:
            t_pn = distance_like(sim.paired(c[p], c[n]), sim.is_distance)
            t_an = torch.minimum(t_an, t_pn)
        loss = triplet_values(t_ap, t_an, self.margin, self.smooth_loss)
        if self.uses_reducer():
            entry = {"losses": loss if loss.numel() else 0, "indices": (a, p, n)}
            entry["reduction_type"] = "triplet"
            if labels is not None:
                labels = check_labels(labels, embeddings.shape[0]).to(embeddings.device)
            return self.finish_listed({"loss": entry}, embeddings, labels)
        n_rows = embeddings.shape[0]
        values = loss.new_zeros(n_rows).index_add(0, a, loss)
        n_terms = loss.new_zeros(n_rows).index_add(0, a, torch.ones_like(loss.detach()))
        n_nonzero = loss.new_zeros(n_rows).index_add(0, a, (loss.detach() > 0).to(loss.dtype))
        if not values.requires_grad and x.requires_grad:
            values = values + x.sum() * 0.0
        out = reduce_terms([RowTerms(values, n_terms, n_nonzero)], self.reduction, n_rows)
        return self.add_regularizers(out.to(embeddings.dtype), embeddings)


def triplet_margin(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    margin: float = 0.05,
    swap: bool = False,
    smooth_loss: bool = False,
    triplets_per_anchor: int | str = "all",
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`TripletMarginLoss` (same arguments and defaults)."""
    return TripletMarginLoss(
        margin=margin,
        swap=swap,
        smooth_loss=smooth_loss,
        triplets_per_anchor=triplets_per_anchor,
        **kwargs,
    )(embeddings, labels, indices_tuple, ref_emb, ref_labels)


class SemiHardTripletLoss(TripletMarginLoss):
    r"""FaceNet semi-hard triplet loss: :class:`TripletMarginLoss` over the semi-hard triplets,
    d_ap < d_an <= d_ap + margin (Schroff et al., CVPR 2015, eq. 4), i.e.
    ``TripletMarginLoss(margin, miner=TripletMarginMiner(margin, "semihard"))`` in the loss's
    own distance.

    Default ``margin=0.2`` (FaceNet), normalised Euclidean distance, mean over the non-zero
    terms. All semi-hard negatives of each (anchor, positive) count; TensorFlow Addons'
    ``triplet_semihard_loss`` instead keeps one negative per positive pair (the closest
    semi-hard one, else the farthest negative), which this class does not reproduce.

    Shapes and degenerate behaviour as :class:`TripletMarginLoss` (no semi-hard triplet: 0).
    """

    def __init__(self, margin: float = 0.2, **kwargs) -> None:
        if kwargs.get("miner") is not None:
            raise PairLossError("miner: SemiHardTripletLoss sets its own miner; expected None")
        kwargs.pop("miner", None)
        super().__init__(margin=margin, **kwargs)
        self.miner = TripletMarginMiner(self.margin, "semihard", distance=self.distance)


def semi_hard_triplet(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    margin: float = 0.2,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`SemiHardTripletLoss` (same arguments and defaults)."""
    return SemiHardTripletLoss(margin=margin, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )


class BatchHardTripletLoss(PairLossModule):
    r"""Batch-hard triplet loss (Hermans, Beyer & Leibe, "In Defense of the Triplet Loss for
    Person Re-Identification", 2017, eq. 5).

    .. math::
        \ell_i = \big[m + \max_{p \in P(i)} d_{ip} - \min_{n \in N(i)} d_{in}\big]_+ ,
        \qquad \ell_i^{\text{soft}} = \log\big(1 + e^{\max_p d_{ip} - \min_n d_{in}}\big)

    averaged over the anchors that have at least one positive and one negative (reduction
    ``"mean_valid"``). For a similarity the hardest positive is the least similar one and the
    hardest negative the most similar one. Defaults as sentence-transformers: ``margin=5``,
    Euclidean distance on the raw (unnormalised) embeddings; ``soft=True`` is the soft-margin
    variant (:class:`BatchHardSoftMarginTripletLoss`).

    sentence-transformers averages over all B anchors and gives anchors without a positive
    or negative a (meaningless) non-zero value; with P x K batches (every anchor has both)
    the two are identical. The same value is obtained with pytorch-metric-learning's
    ``BatchHardMiner`` + ``TripletMarginLoss(margin, reducer=MeanReducer())``.

    Shapes: embeddings [B, D], labels [B]; ref_emb [N, D] with ref_labels [N]. Returns a scalar
    ([B] with reduction "none"). No valid anchor gives 0 with zero gradient. Ties in the max/min
    share the gradient equally.
    """

    default_reduction = "mean_valid"

    def __init__(self, margin: float = 5.0, soft: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.margin = check_real(margin, "margin")
        self.soft = check_bool(soft, "soft")

    @staticmethod
    def default_similarity() -> Similarity:
        return EuclideanDistance()

    def objective(self, s, pos, neg, start, end):
        return batch_hard_rows(s, pos, neg, self.margin, self.soft, self.distance.is_distance)

    def fused(self, s, pairs, grad, scale):
        return batch_hard_fused(
            s, pairs, grad, scale, self.margin, self.soft, self.distance.is_distance
        )


def batch_hard_triplet(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    margin: float = 5.0,
    soft: bool = False,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`BatchHardTripletLoss` (same arguments and defaults)."""
    return BatchHardTripletLoss(margin=margin, soft=soft, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )


class BatchHardSoftMarginTripletLoss(BatchHardTripletLoss):
    r"""Soft-margin batch-hard triplet loss (Hermans et al. 2017, sec. 2):
    :math:`\log(1 + e^{\max_p d_{ip} - \min_n d_{in}})` per valid anchor, averaged over the
    valid anchors. No margin. Euclidean distance on raw embeddings by default (as
    sentence-transformers). Computed as a softplus, so large gaps cannot overflow. See
    :class:`BatchHardTripletLoss` for shapes and degenerate behaviour.
    """

    def __init__(self, **kwargs) -> None:
        if "margin" in kwargs or "soft" in kwargs:
            raise PairLossError("margin, soft: BatchHardSoftMarginTripletLoss takes neither")
        super().__init__(margin=0.0, soft=True, **kwargs)


def batch_hard_soft_margin_triplet(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`BatchHardSoftMarginTripletLoss`."""
    return BatchHardSoftMarginTripletLoss(**kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )
