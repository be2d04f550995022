"""Decoupled contrastive loss, DCL and DCLW (Yeh et al., "Decoupled Contrastive Learning",
ECCV 2022)."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch

from ...engine import compute_dtype, default_block_size
from ...errors import PairLossError
from ...objectives.softmax import dcl_fused, dcl_rows
from ...validation import check_callable, check_positive
from ..base import PairLossModule, build_relation

WeightFn = Callable[[torch.Tensor], torch.Tensor]


class DCLLoss(PairLossModule):
    r"""Decoupled contrastive loss (DCL): InfoNCE without the positive in the denominator.

    For every positive pair (i, p):

    .. math::
        \ell_{ip} = -w_{ip}\, s_{ip}/\tau + \log \sum_{n \in N(i)} e^{s_{in}/\tau}

    averaged over the positive pairs (reduction ``"mean_terms"``). ``s`` is cosine similarity by
    default; a distance ``d`` enters as ``-d``. ``w = 1`` unless ``weight_fn`` is given.
    Since the positive is left out of the denominator,
    ``DCL_ip = NT-Xent_ip - log(1 + e^{s_ip/t} / sum_n e^{s_in/t})``, always below NT-Xent.

    Paper: Yeh et al., ECCV 2022, eq. 6. Default ``temperature=0.1`` as the authors' code. For
    two-view batches pass the sample ids as labels, ``torch.arange(B // 2).repeat(2)``: the
    result is the mean of the two one-way losses ``(DCL(z1, z2) + DCL(z2, z1)) / 2`` with the
    2(B/2 - 1) other views of the batch as negatives.

    Args:
        temperature: tau > 0.
        weight_fn: optional map from the [b, N] block of scores (higher = closer) to weights of
            the positive terms, applied cell by cell. It must depend only on the cell (or its
            row), never on other rows; see :class:`DCLWLoss` for the batch-normalised weight.

    Shapes: embeddings [B, D], labels [B]; ref_emb [N, D] with ref_labels [N]. Returns a scalar
    (or [B] with ``reduction="none"``). The value can be negative, so ``reduction="mean_nonzero"``
    is refused.

    Degenerate input: no positive pair gives 0 with zero gradient; a positive pair whose anchor
    has no negative is undefined (log of an empty sum) and is dropped, so a single-class batch
    gives 0; a batch of one gives 0.
    """

    default_reduction = "mean_terms"

    def __init__(
        self, temperature: float = 0.1, weight_fn: WeightFn | None = None, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if self.reduction == "mean_nonzero":
            raise PairLossError(
                "reduction: DCL terms can be negative, so 'mean_nonzero' is meaningless; "
                "expected 'mean_terms' (the default), 'mean', 'mean_valid', 'sum' or 'none'"
            )
        self.temperature = check_positive(temperature, "temperature")
        self.weight_fn = None if weight_fn is None else check_callable(weight_fn, "weight_fn")

    def objective(self, s, pos, neg, start, end):
        weight = None if self.weight_fn is None else self.weight_fn(self.distance.signed(s))
        return dcl_rows(s, pos, neg, self.temperature, self.distance.is_distance, weight)

    def fused(self, s, pairs, grad, scale):
        return dcl_fused(s, pairs, grad, scale, self.temperature, self.distance.is_distance)

    def fused_form(self, miner):
        """The fused form covers unit weights only (no ``weight_fn``) and no miner."""
        return None if self.weight_fn is not None else super().fused_form(miner)


class DCLWLoss(DCLLoss):
    r"""Weighted decoupled contrastive loss (DCLW): DCL with the von Mises-Fisher weight

    .. math::
        w_{ip} = 2 - \frac{e^{s_{ip}/\sigma}}{\mathbb{E}_{(j,q) \in P}\big[e^{s_{jq}/\sigma}\big]}

    where the expectation runs over all positive pairs P of the batch (for two-view batches: the
    batch's pairs of views), so the weights average to 1 and harder positives weigh more. As in
    the authors' code the weight is not detached: gradients flow through it, expectation
    included. The expectation is a batch statistic, gathered from the positive pairs before the
    rows are walked (O(|P| D) work) and read by every row as one scalar; with a ``miner`` it is
    taken over the pairs before mining.

    Paper: Yeh et al., ECCV 2022, eq. 8. Defaults as the authors' code: ``sigma=0.5``,
    ``temperature=0.1``. Shapes, reduction and degenerate behaviour as :class:`DCLLoss`; when
    all positive pairs have the same score every weight is 1 and DCLW equals DCL.
    """

    def __init__(self, sigma: float = 0.5, temperature: float = 0.1, **kwargs) -> None:
        if "weight_fn" in kwargs:
            raise PairLossError("weight_fn: DCLWLoss sets its own weight; use DCLLoss instead")
        super().__init__(temperature=temperature, **kwargs)
        self.sigma = check_positive(sigma, "sigma")

    def log_mean_exp_positives(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """log E_P[e^{s/sigma}] over the batch's positive pairs (0 when there are none)."""
        relation, _, _, _ = build_relation(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        dtype = compute_dtype(embeddings)
        sim = self.distance
        a = sim.prepare(embeddings.to(dtype))
        c = a if ref_emb is None else sim.prepare(ref_emb.to(dtype))
        block = default_block_size(c.shape[0], c.device)
        rows, cols = [], []
        for start in range(0, a.shape[0], block):
            pos, _ = relation.block(start, min(a.shape[0], start + block))
            r, k = pos.nonzero(as_tuple=True)
            rows.append(r.to(a.device) + start)
            cols.append(k.to(a.device))
        rows_t, cols_t = torch.cat(rows), torch.cat(cols)
        if rows_t.numel() == 0:
            return a.new_zeros(())
        x = sim.signed(sim.paired(a[rows_t], c[cols_t])) / self.sigma
        return torch.logsumexp(x, dim=0) - math.log(rows_t.numel())

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        log_norm = self.log_mean_exp_positives(
            embeddings, labels, indices_tuple, ref_emb, ref_labels
        )
        objective = partial(self._weighted_objective, log_norm)
        return self.run_objective(
            objective,
            embeddings,
            labels,
            indices_tuple,
            ref_emb,
            ref_labels,
            extra_params=[log_norm],
        )

    def _weighted_objective(self, log_norm, s, pos, neg, start, end):
        # only positive cells are exponentiated: there e^{z - log_norm} <= |P|, never overflowing
        z = self.distance.signed(s) / self.sigma - log_norm.to(s.dtype)
        weight = 2 - torch.exp(torch.where(pos, z, torch.zeros_like(z)))
        return dcl_rows(s, pos, neg, self.temperature, self.distance.is_distance, weight)

    def fused_form(self, miner):
        """None: the weight's batch statistic wants a gradient the fused form does not give."""
        return None

    def objective(self, s, pos, neg, start, end):
        raise PairLossError(
            "DCLWLoss: the weight needs a batch statistic; call the module, not its objective"
        )


def dcl(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    temperature: float = 0.1,
    weight_fn: WeightFn | None = None,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`DCLLoss` (same arguments and defaults)."""
    return DCLLoss(temperature=temperature, weight_fn=weight_fn, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )


def dclw(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    sigma: float = 0.5,
    temperature: float = 0.1,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`DCLWLoss` (same arguments and defaults)."""
    return DCLWLoss(sigma=sigma, temperature=temperature, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )
