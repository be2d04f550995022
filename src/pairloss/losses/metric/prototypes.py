"""Proto-Triplet and ICNN losses (Mendez-Ruiz, Gonzalez-Zapata, Reyes-Amezcua, Flores-Araiza,
Lopez-Tiro, Mendez-Vazquez & Ochoa-Ruiz, "SuSana Distancia is all you need: Enforcing class
separability in metric learning via two novel distance-based loss functions for few-shot image
classification", 2023, arXiv:2305.09062).

Both work on a few-shot episode: a support set (``ref_emb`` / ``ref_labels``) and queries
(``embeddings`` / ``labels``), or one flat labelled batch that plays both roles. Distances are
Euclidean, ``d(a, b) = sqrt(||a - b||^2 + 1e-6)`` as in the authors' implementation (the
``1e-6`` keeps the gradient finite at zero distance).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...engine import compute_dtype
from ...errors import PairLossError
from ...objectives.terms import RowTerms
from ...reduction import ROW_REDUCTIONS, check_reduction, reduce_terms
from ...scale.distributed import set_gather
from ...similarity import normalize_rows
from ...validation import (
    check_bool,
    check_embeddings,
    check_int,
    check_labels,
    check_positive,
    check_real,
    check_result,
)
from ..base import check_reference

DIST_EPS = 1e-6


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[A, N] squared Euclidean distances (clamped at 0)."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return d.clamp(min=0)


def _dist(sq: torch.Tensor) -> torch.Tensor:
    return (sq + DIST_EPS).sqrt()


def _inputs(embeddings, labels, indices_tuple, ref_emb, ref_labels, normalize, who: str):
    """Validated (x, labels, ref, ref_labels) in the compute dtype (ref None without a ref set)."""
    embeddings = check_embeddings(embeddings, "embeddings")
    if labels is None:
        raise PairLossError(f"labels: required by {who}; expected a [batch] tensor")
    labels = check_labels(labels, embeddings.shape[0], "labels").to(embeddings.device)
    if indices_tuple is not None:
        raise PairLossError(
            f"indices_tuple: not supported by {who} (it works on class prototypes or "
            "neighbourhoods, not on listed pairs); expected None"
        )
    dtype = compute_dtype(embeddings)
    x = embeddings.to(dtype)
    ref = None
    if ref_emb is not None or ref_labels is not None:
        if ref_emb is None or ref_labels is None:
            raise PairLossError("ref_labels: ref_emb and ref_labels go together; got only one")
        ref_emb = check_reference(embeddings, ref_emb)
        ref_labels = check_labels(ref_labels, ref_emb.shape[0], "ref_labels").to(x.device)
        ref = ref_emb.to(dtype)
    if normalize:
        x = normalize_rows(x)
        ref = None if ref is None else normalize_rows(ref)
    return embeddings, x, labels, ref, ref_labels


# ---------------------------------------------------------------------------------- Proto-Triplet


def proto_triplet_rows(
    x: torch.Tensor,
    labels: torch.Tensor,
    ref: torch.Tensor | None,
    ref_labels: torch.Tensor | None,
    margin: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-anchor losses [B], valid [B]) of the Proto-Triplet loss."""
    source, src_labels = (x, labels) if ref is None else (ref, ref_labels)
    classes, inv = torch.unique(src_labels, return_inverse=True)
    n_cls = classes.numel()
    sums = torch.zeros(n_cls, x.shape[1], dtype=x.dtype, device=x.device).index_add(0, inv, source)
    counts = torch.bincount(inv, minlength=n_cls).to(x.dtype)
    protos = sums / counts[:, None]
    # each anchor's class among the prototype classes (-1: absent)
    match = labels[:, None] == classes[None, :]  # [B, C]
    has_own = match.any(dim=1)
    own = match.float().argmax(dim=1)
    if ref is None:
        # leave-one-out: the anchor's own prototype is the mean of its class without it
        n_own = counts[own]
        has_own = n_own > 1
        own_proto = (sums[own] - x) / (n_own - 1).clamp(min=1)[:, None]
    else:
        own_proto = protos[own]
    d_pos = _dist((x - own_proto).pow(2).sum(dim=1))
    d_all = _dist(_sq_dist(x, protos))  # [B, C]
    other = ~match
    valid = has_own & other.any(dim=1)
    d_neg = d_all.masked_fill(~other, float("inf")).amin(dim=1)
    d_neg = torch.where(valid, d_neg, torch.zeros_like(d_neg))
    loss = F.relu(d_pos - d_neg + margin)
    return torch.where(valid, loss, torch.zeros_like(loss)), valid


class ProtoTripletLoss(nn.Module):
    r"""Proto-Triplet loss: a triplet loss against class prototypes.

    For a query :math:`q` of class :math:`y`, with class prototypes :math:`p_c` (the mean of the
    support embeddings of class c),

    .. math::
        \ell(q) = \big[\, d(q, p_y) - \min_{c \ne y} d(q, p_c) + m \,\big]_+

    (the anchor is the query, the positive its own class prototype, the negative the closest
    other prototype), averaged over the queries. ``margin`` m defaults to 0.5 and distances are
    Euclidean, :math:`d = \sqrt{\lVert a - b\rVert^2 + 10^{-6}}`, both as in the authors'
    implementation; ``normalize_embeddings=True`` L2-normalises queries and support first
    (default False, as in the paper).

    Episode layout:

    - ``ref_emb`` / ``ref_labels`` given: they are the support set; ``embeddings`` / ``labels``
      are the queries (the paper's setting).
    - no reference set: the batch is both. A sample's own prototype is the mean of the other
      samples of its class (leave-one-out, so the anchor is not part of its positive); the
      negative prototypes are the full class means.

    Anchors without an own prototype (class absent from the support, or a single sample of
    its class in a flat batch) or without another class are left out: they give 0 and
    ``"mean"`` averages over the remaining anchors (0 with zero gradient if none remains, e.g.
    one class or all-distinct labels). ``reduction``: ``"mean"`` (default), ``"sum"`` or
    ``"none"`` ([B], 0 for left-out anchors).

    Prototypes are the candidates (C classes), so the loss is computed directly in
    O(B x C) memory, not with the pair engine. ``indices_tuple`` is refused. ``gather="exact"``:
    the loss of the global batch of a process group (:func:`pairloss.scale.set_gather`).
    """

    def __init__(
        self,
        margin: float = 0.5,
        normalize_embeddings: bool = False,
        reduction: str = "mean",
        gather: str | None = None,
    ) -> None:
        super().__init__()
        if gather is not None:
            set_gather(self, gather)
        self.margin = check_real(margin, "margin")
        self.normalize_embeddings = check_bool(normalize_embeddings, "normalize_embeddings")
        self.reduction = check_reduction(reduction, ROW_REDUCTIONS)

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of queries ``embeddings`` [B, D] with ``labels`` [B] against the prototypes of
        the support ``ref_emb`` [N, D] / ``ref_labels`` [N] (or of the batch itself)."""
        orig, x, labels, ref, ref_labels = _inputs(
            embeddings, labels, indices_tuple, ref_emb, ref_labels,
            self.normalize_embeddings, "ProtoTripletLoss",
        )  # fmt: skip
        rows, valid = proto_triplet_rows(x, labels, ref, ref_labels, self.margin)
        # "mean" averages over the queries that have an own and another prototype
        reduction = "mean_valid" if self.reduction == "mean" else self.reduction
        out = reduce_terms([RowTerms.per_anchor(rows, valid)], reduction, rows.shape[0])
        return check_result(out.to(orig.dtype), orig)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, reduction={self.reduction!r}"


def proto_triplet(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    margin: float = 0.5,
    normalize_embeddings: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """Functional form of :class:`ProtoTripletLoss` (same arguments and defaults)."""
    return ProtoTripletLoss(margin, normalize_embeddings, reduction)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )


# ----------------------------------------------------------------------------------------- ICNN


def icnn_score_terms(
    x: torch.Tensor,
    labels: torch.Tensor,
    ref: torch.Tensor | None,
    ref_labels: torch.Tensor | None,
    k: int,
    n_neighbors: int | None,
    eps: float,
) -> dict[str, torch.Tensor] | None:
    """The ICNN score and its parts (differentiable through the distances), or None when no
    anchor has a neighbour."""
    if ref is None:
        targets, t_labels = x, labels
        n_avail = x.shape[0] - 1
    else:
        targets, t_labels = ref, ref_labels
        n_avail = ref.shape[0]
    if n_avail < 1:
        return None
    n_nb = min(k + 1 if n_neighbors is None else n_neighbors, n_avail)
    k_eff = min(k, n_nb)
    d = _dist(_sq_dist(x, targets))  # [n, m]
    if ref is None:
        d = d.masked_fill(torch.eye(x.shape[0], dtype=torch.bool, device=x.device), float("inf"))
    dist, idx = d.topk(n_nb, dim=1, largest=False)  # ascending, [n, L]
    same = labels[:, None] == t_labels[idx]
    diff = ~same
    # nearest other-class neighbour among the L neighbours (none: ratios are 0)
    has_dc = diff.any(dim=1)
    nu = torch.where(diff, dist, torch.full_like(dist, float("inf"))).amin(dim=1)
    nu = torch.where(has_dc, nu, torch.ones_like(nu))
    dk, sk, dck = dist[:, :k_eff], same[:, :k_eff], diff[:, :k_eff]
    ratio = dk / (nu + eps)[:, None]
    ratio = torch.where(has_dc[:, None], ratio, torch.zeros_like(ratio))
    ratio = ratio / ratio.amax(dim=1).clamp(min=1.0)[:, None]
    sc = sk.to(x.dtype)
    dc = dck.to(x.dtype)
    p = sc.sum(dim=1)
    q = dc.sum(dim=1)
    intra_rows = (ratio * sc).sum(dim=1) / (p + eps)
    intra = 1.0 - intra_rows.sum() / ((p > 0).sum().to(x.dtype) + eps)
    delta = dk * dc
    delta = delta / (delta.amax() + eps)
    inter_rows = delta.sum(dim=1) / (q + eps)
    inter = inter_rows.sum() / ((q > 0).sum().to(x.dtype) + eps)
    if not bool(dck.any()):
        inter = (inter - 1.0).abs()
    lam = (intra + inter) / 2
    gamma = (p / k_eff).mean()
    score = (lam + gamma) / 2
    return {"score": score, "intra": intra, "inter": inter, "gamma": gamma}


class ICNNLoss(nn.Module):
    r"""ICNN loss: minus the log of an inter/intra-class nearest-neighbour score.

    :math:`L = -\log \mathrm{ICNN}`, with the score (in [0, 1], 1 best) of the authors'
    implementation. For each anchor i, take its L nearest neighbours (``n_neighbors``, default
    ``k + 1``; in a flat batch the anchor itself is excluded, with a reference set all of it
    is searched), in ascending distance :math:`d_{i1} \le \dots \le d_{iL}`, with
    :math:`s_{ij} = 1` when neighbour j has the anchor's class. Let :math:`\nu_i` be the
    distance to the nearest other-class neighbour among the L, and over the first k:

    .. math::
        r_{ij} = \frac{d_{ij}}{\nu_i + \epsilon}, \quad
        \hat r_{ij} = \frac{r_{ij}}{\max(1, \max_{j \le k} r_{ij})}, \quad
        P_i = \sum_{j \le k} s_{ij}, \quad Q_i = k - P_i

        \lambda_{intra} = 1 - \frac{\sum_i \frac{\sum_{j \le k} s_{ij} \hat r_{ij}}
            {P_i + \epsilon}}{\#\{i: P_i > 0\} + \epsilon}, \qquad
        \lambda_{inter} = \frac{\sum_i \frac{\sum_{j \le k} (1 - s_{ij}) d_{ij} / (\Delta +
            \epsilon)}{Q_i + \epsilon}}{\#\{i: Q_i > 0\} + \epsilon}

    with :math:`\Delta = \max_{i, j \le k} (1 - s_{ij}) d_{ij}` (:math:`r_{ij} = 0` when no
    other-class neighbour is among the L; :math:`\lambda_{inter} = 1` when no anchor has an
    other-class neighbour among its k), :math:`\lambda = (\lambda_{intra} + \lambda_{inter})/2`,
    the neighbourhood purity :math:`\gamma = \frac{1}{n}\sum_i P_i / k` and
    :math:`\mathrm{ICNN} = (\lambda + \gamma) / 2`. Defaults as the authors' implementation:
    ``k=4``, ``eps=1e-7``, Euclidean :math:`d = \sqrt{\lVert a - b\rVert^2 + 10^{-6}}`; the
    paper's full-episode variant uses ``n_neighbors`` = shots + queries per class.

    Gradients flow through the distances (the neighbour selection and gamma are piecewise
    constant). Differences from the authors' implementation, for small sets: k and L are
    clipped to the available neighbours (they set ``k = m - 2`` and gamma = 1 when
    ``k + 2 >= m``), and with a reference set no neighbour is dropped (theirs always drops the
    nearest one, meant to be the anchor itself).

    Episode layout: ``ref_emb`` / ``ref_labels`` (support or prototypes) with the queries as
    ``embeddings``, or one flat batch. The score is a batch-level statistic (a global max and
    counts), computed directly on the [B, N] distance matrix, not with the pair engine.
    ``indices_tuple`` is refused. A batch of one without a reference set (no neighbour) gives
    0 with zero gradient. The score is clamped at ``1e-12`` before the log. ``gather="exact"``:
    the loss of the global batch of a process group (:func:`pairloss.scale.set_gather`).
    """

    def __init__(
        self,
        k: int = 4,
        n_neighbors: int | None = None,
        eps: float = 1e-7,
        normalize_embeddings: bool = False,
        gather: str | None = None,
    ) -> None:
        super().__init__()
        if gather is not None:
            set_gather(self, gather)
        self.k = check_int(k, "k", minimum=1)
        self.n_neighbors = (
            None if n_neighbors is None else check_int(n_neighbors, "n_neighbors", minimum=1)
        )
        if self.n_neighbors is not None and self.n_neighbors < self.k:
            raise PairLossError(
                f"n_neighbors: expected None or an int >= k={self.k}, got {n_neighbors!r}"
            )
        self.eps = check_positive(eps, "eps")
        self.normalize_embeddings = check_bool(normalize_embeddings, "normalize_embeddings")

    def score(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor] | None:
        """The score and its parts ``{"score", "intra", "inter", "gamma"}`` (None when no
        anchor has a neighbour)."""
        _, x, labels, ref, ref_labels = _inputs(
            embeddings, labels, None, ref_emb, ref_labels,
            self.normalize_embeddings, "ICNNLoss",
        )  # fmt: skip
        return icnn_score_terms(x, labels, ref, ref_labels, self.k, self.n_neighbors, self.eps)

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``-log ICNN`` of ``embeddings`` [B, D] with ``labels`` [B] (neighbours searched in
        the batch, or in ``ref_emb`` [N, D] / ``ref_labels`` [N]); a scalar."""
        orig, x, labels, ref, ref_labels = _inputs(
            embeddings, labels, indices_tuple, ref_emb, ref_labels,
            self.normalize_embeddings, "ICNNLoss",
        )  # fmt: skip
        terms = icnn_score_terms(x, labels, ref, ref_labels, self.k, self.n_neighbors, self.eps)
        out = x.sum() * 0.0 if terms is None else -terms["score"].clamp(min=1e-12).log()
        return check_result(out.to(orig.dtype), orig)

    def extra_repr(self) -> str:
        return f"k={self.k}, n_neighbors={self.n_neighbors}, eps={self.eps}"


def icnn(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    k: int = 4,
    n_neighbors: int | None = None,
    eps: float = 1e-7,
    normalize_embeddings: bool = False,
) -> torch.Tensor:
    """Functional form of :class:`ICNNLoss` (same arguments and defaults)."""
    return ICNNLoss(k, n_neighbors, eps, normalize_embeddings)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )
