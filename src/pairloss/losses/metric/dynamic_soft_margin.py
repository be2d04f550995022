"""Dynamic soft margin loss (Zhang & Rusinkiewicz, "Learning Local Descriptors with a CDF-Based
Dynamic Soft Margin", ICCV 2019), with pytorch-metric-learning's ``DynamicSoftMarginLoss``
names, defaults and results."""

from __future__ import annotations

import torch

from ...engine import PairProblem, compute_dtype, run
from ...errors import PairLossError
from ...mining import require_distance
from ...objectives.dynamic_soft_margin import add_triplet_histogram_, bins, cdf_weighted_rows
from ...objectives.terms import RowTerms
from ...similarity import LpDistance
from ...validation import check_embeddings, check_int, check_real
from ..base import Component, PairLossModule, build_relation, listed_pairs, miner_in, paired_scores


class DynamicSoftMarginLoss(PairLossModule):
    r"""Dynamic soft margin loss: each triplet's margin x = d_ap - d_an weighted by the
    cumulative distribution of x over the batches seen so far.

    .. math::
        L = \frac{1}{T} \sum_{(a,p,n)} \mathrm{CDF}(x_{apn})\, x_{apn},\qquad
        x_{apn} = d_{ap} - d_{an}

    where the CDF comes from a histogram of x (``num_bins`` bins of width 2|min_val| / num_bins
    from ``min_val``, linear interpolation between bins) updated on every call with
    ``momentum`` (the first call takes the batch's histogram as it is). Paper: Zhang &
    Rusinkiewicz, ICCV 2019, eq. 4-6. Defaults as pytorch-metric-learning:
    ``min_val=-2.0``, ``num_bins=10``, ``momentum=0.01``; ``LpDistance`` with p = 2 and
    normalised embeddings (required). The histogram is ``hist_`` (not in the state_dict, as
    there).

    With labels: every triplet of the batch (or of ``indices_tuple``). Without labels the
    batch and ``ref_emb`` are matching descriptor pairs (row i with row i) and each pair's
    hardest negative in its row or column is used (HardNet's rule, the paper's setting; dense).

    Differences from pytorch-metric-learning: the histogram is a statistic without gradient, as
    in the paper and its official code (pytorch-metric-learning differentiates through it and
    keeps its graph, so a second training step fails); values of x outside [min_val, -min_val)
    fall in the first or last bin (pytorch-metric-learning raises an index error). With labels
    the triplets are summed per anchor on the pair engine, a few positives at a time (two
    walks: the histogram, then the weighted sum), never listed.

    Shapes: embeddings [B, D], labels [B] (or ref_emb [B', D] without labels). Returns a
    scalar; no triplet gives 0 (and leaves the histogram as it was).
    """

    needs_all_rows = True  # statistics of its own walks: see pairloss.scale.distributed.row_mode

    default_reduction = "mean_terms"
    components = (Component("loss", "already_reduced"),)

    def __init__(
        self, min_val: float = -2.0, num_bins: int = 10, momentum: float = 0.01, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        require_distance(self, "DynamicSoftMarginLoss", LpDistance, normalize_embeddings=True, p=2)
        self.min_val = check_real(min_val, "min_val", high=0.0, high_open=True)
        self.num_bins = check_int(num_bins, "num_bins", minimum=1)
        self.delta = 2 * abs(self.min_val) / self.num_bins
        self.momentum = check_real(momentum, "momentum", 0.0, 1.0)
        self.hist_ = torch.zeros((self.num_bins,))

    @staticmethod
    def default_similarity() -> LpDistance:
        return LpDistance()

    def _update(self, lower: torch.Tensor, upper: torch.Tensor) -> None:
        """hist <- normalise((1 - m) hist + m * (lower + upper)), m = 1 on the first call."""
        m = self.momentum if bool(self.hist_.sum() != 0) else 1.0
        hist = (1.0 - m) * self.hist_ + m * (lower + upper[: self.num_bins])
        self.hist_ = hist / hist.sum()

    def _list_loss(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            idx, frac = bins(x.detach(), self.min_val, self.delta, self.num_bins)
            lower = x.new_zeros(self.num_bins).scatter_add_(0, idx, 1 - frac)
            upper = x.new_zeros(self.num_bins + 1).scatter_add_(0, idx + 1, frac)
            self._update(lower, upper)
        cdf = torch.cumsum(self.hist_, 0)
        return (cdf[idx] * x).mean()

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of ``embeddings`` [B, D] (see the class docstring)."""
        raw = (embeddings, labels, ref_emb, ref_labels)
        embeddings = check_embeddings(embeddings, "embeddings")
        dtype = compute_dtype(embeddings)
        self.hist_ = self.hist_.to(device=embeddings.device, dtype=dtype)
        if labels is None and indices_tuple is None:
            loss = self._matching(embeddings, ref_emb)
        elif indices_tuple is not None and miner_in(indices_tuple, *raw) is None:
            loss = self._listed(embeddings, indices_tuple, ref_emb)
        else:
            loss = self._walked(
                embeddings, labels, ref_emb, ref_labels, miner_in(indices_tuple, *raw)
            )
        if self.uses_reducer():
            entry = {"losses": loss, "indices": None, "reduction_type": "already_reduced"}
            return self.finish_listed({"loss": entry}, embeddings, labels)
        return self.add_regularizers(loss.to(embeddings.dtype), embeddings)

    def _matching(self, embeddings, ref_emb):
        if ref_emb is None:
            raise PairLossError(
                "labels: without labels DynamicSoftMarginLoss needs ref_emb (row i matches "
                "ref_emb row i); expected labels or ref_emb"
            )
        sim = self.distance
        a = sim.prepare(embeddings.to(compute_dtype(embeddings)))
        mat = sim.matrix(a, sim.prepare(ref_emb.to(a.dtype)))
        r, c = mat.shape
        d_pos = mat.new_zeros(max(r, c))
        d_pos[: min(r, c)] = mat.diagonal()
        k = torch.arange(min(r, c), device=mat.device)
        hidden = mat.clone()
        hidden[k, k] = float("inf")
        col_min, row_min = mat.new_zeros(max(r, c)), mat.new_zeros(max(r, c))
        col_min[:c] = hidden.min(dim=0).values
        row_min[:r] = hidden.min(dim=1).values
        return self._list_loss(d_pos - torch.minimum(col_min, row_min))

    def _listed(self, embeddings, indices_tuple, ref_emb):
        b = embeddings.shape[0]
        n_cand = b if ref_emb is None else ref_emb.shape[0]
        a1, p, a2, n = listed_pairs(indices_tuple, b, n_cand, embeddings.device)
        if isinstance(indices_tuple, (tuple, list)) and len(indices_tuple) == 3:
            a, pp, nn_ = indices_tuple[0].to(embeddings.device), p, n
        else:
            ip, jn = torch.where(a1[:, None] == a2[None, :])
            a, pp, nn_ = a1[ip], p[ip], n[jn]
        if a.numel() == 0:
            return (embeddings * 0).sum()
        sim = self.distance
        x = paired_scores(sim, embeddings, ref_emb, a, pp) - paired_scores(
            sim, embeddings, ref_emb, a, nn_
        )
        return self._list_loss(x)

    def _walked(self, embeddings, labels, ref_emb, ref_labels, miner):
        relation, _, labels, ref_labels = build_relation(
            embeddings, labels, None, ref_emb, ref_labels
        )
        dtype = compute_dtype(embeddings)
        nb, lo, width = self.num_bins, self.min_val, self.delta
        lower = torch.zeros(nb, dtype=dtype, device=embeddings.device)
        upper = torch.zeros(nb + 1, dtype=dtype, device=embeddings.device)
        count = torch.zeros((), dtype=torch.long, device=embeddings.device)

        def gather(s, pos, neg, start, end):
            add_triplet_histogram_(s, pos, neg, lo, width, nb, lower, upper, count)
            zero = s.new_zeros(s.shape[0])
            return [RowTerms(zero, zero, zero)]

        with torch.no_grad():
            problem = PairProblem(gather, self.distance, relation, reduction="sum", miner=miner)
            run(problem, embeddings.detach(), None if ref_emb is None else ref_emb.detach(),
                engine=self.engine, block_size=self.block_size)  # fmt: skip
        if int(count) == 0:
            return (embeddings * 0).sum()
        self._update(lower, upper)
        cdf = torch.cumsum(self.hist_, 0)

        def weighted(s, pos, neg, start, end):
            return cdf_weighted_rows(s, pos, neg, cdf, lo, width, nb)

        problem = PairProblem(
            weighted, self.distance, relation, reduction="mean_terms", miner=miner
        )
        return run(problem, embeddings, ref_emb, engine=self.engine, block_size=self.block_size)


def dynamic_soft_margin(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    min_val: float = -2.0,
    num_bins: int = 10,
    momentum: float = 0.01,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`DynamicSoftMarginLoss` (same arguments and defaults; a new
    histogram on every call)."""
    return DynamicSoftMarginLoss(min_val=min_val, num_bins=num_bins, momentum=momentum, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )
