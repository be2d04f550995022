"""Margin loss (Wu, Manmatha, Smola & Krähenbühl, "Sampling Matters in Deep Embedding
Learning", ICCV 2017)."""

from __future__ import annotations

import functools

import torch
from torch import nn

from ...errors import PairLossError
from ...mining import random_triplets, triplets_where
from ...objectives.pair_margins import (
    margin_fused,
    margin_rows,
    margin_triplet_rows,
    margin_triplets,
)
from ...objectives.terms import RowTerms
from ...reducers import NONZERO, DivisorReducer
from ...similarity import LpDistance, Similarity
from ...validation import (
    check_bool,
    check_int,
    check_labels,
    check_positive,
    check_real,
    check_result,
)
from ..base import Component, ListedPairs, PairLossModule, build_relation, listed_scores


class MarginLoss(PairLossModule):
    r"""Margin loss with a (learnable) boundary beta, over all triplets.

    For every triplet (a, p, n) of the batch (p shares a's label, n does not):

    .. math::
        \ell^+_{ap} = [d_{ap} - \beta_a + \alpha]_+, \qquad
        \ell^-_{an} = [\beta_a - d_{an} + \alpha]_+, \qquad
        L = \frac{\sum_{(a,p,n)} (\ell^+_{ap} + \ell^-_{an})}
                 {\#\{\ell^+ > 0\} + \#\{\ell^- > 0\}}
            + \nu\, \beta \text{ (regulariser)}

    with :math:`\alpha` = ``margin``. Paper: Wu et al., ICCV 2017, eq. 3-5 (the paper pairs the
    loss with distance-weighted sampling; this class, like pytorch-metric-learning's
    ``MarginLoss``, uses every triplet, or the pairs of ``indices_tuple``). With a similarity
    the signs flip: :math:`[\beta - s_{ap} + \alpha]_+` and :math:`[s_{an} - \beta + \alpha]_+`.

    Computed per anchor without listing triplets: a row with P positives and N negatives has
    P N triplets, in which each positive term appears N times and each negative term P times,
    so the sums and the non-zero counts are row-wise (O(B x N) memory).

    ``beta`` (default 1.2) is one value, or one per class with ``num_classes`` (indexed by the
    anchor's label, so labels are then required). ``learn_beta=True`` makes it an
    ``nn.Parameter`` and adds ``nu * beta`` as pytorch-metric-learning does: with one beta, the
    value ``nu * beta`` once (when any triplet exists); per class, ``nu * beta_{y_a}`` for every
    triplet, divided by the same non-zero count. ``nu`` is ignored without ``learn_beta``.
    beta is held in torch's default dtype (float32, as in pytorch-metric-learning) and cast to
    the scores' dtype; ``.double()`` the module for a float64 beta.

    Defaults as pytorch-metric-learning: ``margin=0.2``, ``nu=0``, ``beta=1.2``,
    ``triplets_per_anchor="all"``, ``LpDistance()``, reduction ``"mean_nonzero"`` (its
    ``DivisorReducer`` with the non-zero count). An int ``triplets_per_anchor`` samples that many
    triplets per anchor as pytorch-metric-learning does (the same triplets from the same seed),
    which are then listed.

    Shapes: embeddings [B, D], labels [B]; ref_emb [N, D] with ref_labels [N]. Returns a scalar.
    No triplet (one class, all-distinct labels, a batch of one) gives 0 with zero gradients.

    An ``indices_tuple`` gives pytorch-metric-learning's triplets: a triplet tuple its listed
    triplets (each listing counts, evaluated on the list), a pair tuple each listed positive
    pair with each listed negative pair of its anchor. A pair tuple that lists no pair twice (pytorch-metric-learning's pair miners) runs
    on the pair engine, whose rows hold exactly those combinations; one that repeats a pair (or
    lists it both as positive and as negative) is listed as triplets, as
    pytorch-metric-learning lists them.
    """

    default_reduction = "mean_nonzero"
    components = (
        Component("margin_loss", "triplet", "counted"),
        Component("beta_reg_loss", "already_reduced"),
    )
    pml_default_reducer = DivisorReducer
    lists_triplets = True

    def active_components(self):
        global_reg = self.learn_beta and self.nu != 0 and self.beta.numel() == 1
        return self.components if global_reg else self.components[:1]

    def divisor_counts(self, k, terms, start, end):
        # pytorch-metric-learning's divisor: the non-zero positive and negative pair terms
        return terms.n_nonzero

    def engine_rules(self):
        rules = super().engine_rules()
        # a mean over the triplets whose term is > 0 counts triplets, which the row form (its
        # counts are pair terms) does not: the triplets are listed for it
        return None if rules is None or NONZERO in rules else rules

    def reduce_listed(
        self, objective, embeddings, labels, indices_tuple, ref_emb, ref_labels, miner
    ):
        """pytorch-metric-learning's terms: every triplet of the relation (or the sampled ones)
        listed with its pair terms, the divisor, and the beta regulariser, handed to
        ``self.reducer``."""
        relation, mined, labels, ref_labels = build_relation(
            embeddings, labels, indices_tuple, ref_emb, ref_labels
        )
        miner = miner if miner is not None else mined
        if self.triplets_per_anchor != "all" and indices_tuple is None:
            a, p, n = random_triplets(labels, ref_labels, per_anchor=self.triplets_per_anchor)
        else:
            with torch.no_grad():
                pos, neg = relation.block(0, embeddings.shape[0])
                if miner is not None:
                    ms = miner.similarity
                    ma = ms.prepare(embeddings.detach())
                    mc = ma if ref_emb is None else ms.prepare(ref_emb.detach())
                    pos, neg = miner.transform(ms.matrix(ma, mc), pos, neg)
            a, p, n = triplets_where(pos, neg)
        return self.triplet_loss(embeddings, labels, ref_emb, a, p, n)

    def listed_loss(self, embeddings, labels, listed: ListedPairs, ref_emb) -> torch.Tensor:
        """pytorch-metric-learning's triplets of an explicit tuple: a triplet tuple as listed, a
        pair tuple as each listed positive pair with each listed negative pair of its anchor."""
        if listed.triplets:
            a, p, n = listed.a1, listed.p, listed.n
        else:
            a, p, n = _triplets_of_pairs(listed, embeddings.shape[0])
        return self.triplet_loss(embeddings, labels, ref_emb, a, p, n)

    def triplet_loss(self, embeddings, labels, ref_emb, a, p, n) -> torch.Tensor:
        """The loss of listed triplets (a, p, n) [T] (a triplet listed twice counts twice):
        with ``self.reducer``, pytorch-metric-learning's loss dictionary (the triplets' terms,
        the divisor, the beta regulariser); else the per-anchor components of
        :func:`margin_triplet_rows` reduced with ``self.reduction``. The pairs are scored by
        :func:`listed_scores` (O(min(T x D, B x N) + T) memory)."""
        listing = self.uses_reducer()
        if a.numel() == 0:
            if listing:
                zero = {"losses": 0, "indices": None, "reduction_type": "already_reduced"}
                return self.finish_listed(
                    {c.name: dict(zero) for c in self.components}, embeddings, labels
                )
            zero = embeddings.new_zeros(embeddings.shape[0])
            return self.reduce_rows([RowTerms(zero, zero, zero)], embeddings)
        sim, t = self.distance, a.numel()
        d = listed_scores(sim, embeddings, ref_emb, torch.cat([a, a]), torch.cat([p, n]))
        per_class = self.beta.numel() > 1
        beta = self.beta.to(d.dtype)
        beta_t = beta[labels[a]] if per_class else beta
        pos_t, neg_t = margin_triplets(d[:t], d[t:], beta_t, self.margin, sim.is_distance)
        check_result((pos_t + neg_t).detach(), embeddings)
        if not listing:
            regularised = self.learn_beta and self.nu != 0
            terms = margin_triplet_rows(
                pos_t, neg_t, a, embeddings.shape[0], beta_t, nu=self.nu,
                per_class_reg=regularised and per_class,
                global_reg=regularised and not per_class,
            )  # fmt: skip
            return self.reduce_rows(terms, embeddings)
        divisor = int((pos_t > 0).sum() + (neg_t > 0).sum())
        loss_dict = {
            "margin_loss": {
                "losses": pos_t + neg_t,
                "indices": (a, p, n),
                "reduction_type": "triplet",
                "divisor": divisor,
            }
        }
        if self.learn_beta and not per_class:
            reg = {"losses": beta * self.nu, "indices": None, "reduction_type": "already_reduced"}
        elif self.learn_beta:
            reg = {"losses": beta_t * self.nu, "indices": a, "reduction_type": "element"}
            reg["divisor"] = divisor
        else:
            reg = {"losses": 0, "indices": None, "reduction_type": "already_reduced"}
        loss_dict["beta_reg_loss"] = reg
        return self.finish_listed(loss_dict, embeddings, labels)

    def __init__(
        self,
        margin: float = 0.2,
        nu: float = 0,
        beta: float = 1.2,
        triplets_per_anchor: int | str = "all",
        learn_beta: bool = False,
        num_classes: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.margin = check_real(margin, "margin")
        self.nu = check_positive(nu, "nu", strict=False)
        beta = check_real(beta, "beta")
        if triplets_per_anchor != "all":
            triplets_per_anchor = check_int(triplets_per_anchor, "triplets_per_anchor", minimum=1)
        self.triplets_per_anchor = triplets_per_anchor
        if num_classes is not None:
            num_classes = check_int(num_classes, "num_classes", minimum=1)
        self.num_classes = num_classes
        self.learn_beta = check_bool(learn_beta, "learn_beta")
        init = torch.full((num_classes or 1,), beta)
        if self.learn_beta:
            self.beta = nn.Parameter(init)
        else:
            # not in the state_dict: pytorch-metric-learning keeps a fixed beta as a plain tensor
            self.register_buffer("beta", init, persistent=False)

    @staticmethod
    def default_similarity() -> Similarity:
        return LpDistance()

    def objective(self, s, pos, neg, start, end, labels=None):
        per_class = self.beta.numel() > 1
        table = self.beta.to(s.device)  # a fixed beta follows the inputs without .to(device)
        beta = table[labels[start:end]] if per_class else table
        reg = self.learn_beta and self.nu != 0
        return margin_rows(
            s,
            pos,
            neg,
            self.margin,
            beta,
            nu=self.nu,
            per_class_reg=reg and per_class,
            global_reg=reg and not per_class,
            is_distance=self.distance.is_distance,
        )

    def fused_form(self, miner):
        # one beta, no regulariser (the fused form has no gradient for beta), no miner
        regularised = self.learn_beta and self.nu != 0
        if miner is not None or self.beta.numel() > 1 or self.beta.requires_grad or regularised:
            return None
        beta = float(self.beta)

        def fused(s, pairs, grad, scale):
            return margin_fused(s, pairs, grad, scale, self.margin, beta, self.distance.is_distance)

        return fused

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of ``embeddings`` [B, D] with ``labels`` [B] (or explicit pairs/triplets in
        ``indices_tuple``, or a miner's output), optionally against ``ref_emb`` [N, D] with
        ``ref_labels`` [N]. Returns a scalar."""
        if self.beta.numel() > 1:
            if labels is None:
                raise PairLossError(
                    "labels: required when num_classes is set (beta is indexed by the anchor's "
                    "label)"
                )
            if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2:
                raise PairLossError("embeddings: expected a 2-D tensor of shape [batch, dim]")
            labels = check_labels(labels, embeddings.shape[0])
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise PairLossError(
                    f"labels: with num_classes={self.num_classes} expected labels in "
                    f"[0, {self.num_classes}), got range [{int(labels.min())}, "
                    f"{int(labels.max())}]"
                )
            labels = labels.to(embeddings.device)  # indexes beta, moved to the scores
        objective = functools.partial(self.objective, labels=labels)
        if self.triplets_per_anchor != "all" and indices_tuple is None:
            # sampled triplets are listed (pytorch-metric-learning's draws from the same seed)
            return self.reduce_listed(
                objective, embeddings, labels, None, ref_emb, ref_labels, self.miner
            )
        miner = self.miner
        if self.counts_listings():
            listed, checked, indices_tuple, miner = self.explicit_listings(
                embeddings, labels, indices_tuple, ref_emb, ref_labels
            )
            if listed is not None:
                return self.listed_loss(embeddings, checked, listed, ref_emb)
        return self.run_objective(
            objective,
            embeddings,
            labels,
            indices_tuple,
            ref_emb,
            ref_labels,
            miner=miner,
            fused=self.fused_form(miner),
        )


def _triplets_of_pairs(listed: ListedPairs, n_anchors: int):
    """pytorch-metric-learning's triplets of a pair tuple (``convert_to_triplets``): each listed
    positive pair (a, p) with each listed negative pair (a, n) of the same anchor, positive by
    positive in list order, the negatives in list order (every listing counts). O(triplets)
    memory: no positives x negatives matrix."""
    a1, p, a2, n = listed.a1, listed.p, listed.a2, listed.n
    order = torch.argsort(a2, stable=True)
    per_anchor = torch.bincount(a2, minlength=n_anchors)
    first = torch.cumsum(per_anchor, 0) - per_anchor
    k = per_anchor[a1]  # the negatives of each positive pair's anchor
    pos = torch.repeat_interleave(torch.arange(a1.numel(), device=a1.device), k)
    offset = torch.arange(pos.numel(), device=a1.device) - (torch.cumsum(k, 0) - k)[pos]
    return a1[pos], p[pos], n[order[first[a1[pos]] + offset]]


def margin_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    margin: float = 0.2,
    nu: float = 0,
    beta: float = 1.2,
    triplets_per_anchor: int | str = "all",
    learn_beta: bool = False,
    num_classes: int | None = None,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`MarginLoss` (same arguments and defaults)."""
    return MarginLoss(
        margin=margin,
        nu=nu,
        beta=beta,
        triplets_per_anchor=triplets_per_anchor,
        learn_beta=learn_beta,
        num_classes=num_classes,
        **kwargs,
    )(embeddings, labels, indices_tuple, ref_emb, ref_labels)
