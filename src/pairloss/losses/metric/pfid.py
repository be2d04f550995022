"""PFID loss (Shukla, Cheema, Anand, Qureshi & Jhala, "Primate Face Identification in the Wild",
PRICAI 2019, arXiv:1907.02642): cross-entropy over class logits plus a pairwise loss over the
positive and negative pairs of the batch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...engine import compute_dtype
from ...errors import PairLossError
from ...scale.distributed import set_gather
from ...similarity import LpDistance, Similarity, get_similarity
from ...validation import (
    check_embeddings,
    check_int,
    check_labels,
    check_positive,
    check_real,
    check_result,
)
from .contrastive import contrastive


def _check_classes(labels: torch.Tensor, num_classes: int) -> None:
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise PairLossError(
            f"labels: must lie in [0, {num_classes}) (num_classes={num_classes}), "
            f"got range [{lo}, {hi}]"
        )


def pfid_value(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    embeddings: torch.Tensor,
    labels: torch.Tensor | None,
    indices_tuple,
    ref_emb: torch.Tensor | None,
    ref_labels: torch.Tensor | None,
    pair_weight: float,
    pos_margin: float,
    neg_margin: float,
    distance: Similarity | str | None,
    engine: str,
    block_size: int | None,
) -> torch.Tensor:
    """CE(x W^T + b, y) + pair_weight * contrastive(x, y, ...) (see :class:`PFIDLoss`)."""
    embeddings = check_embeddings(embeddings, "embeddings")
    if labels is None:
        raise PairLossError("labels: required by PFIDLoss (class ids); expected a [batch] tensor")
    labels = check_labels(labels, embeddings.shape[0], "labels").to(embeddings.device)
    num_classes, dim = weight.shape
    if embeddings.shape[1] != dim:
        raise PairLossError(
            f"embeddings: have {embeddings.shape[1]} features but the classifier has {dim}; "
            "expected embedding_size columns"
        )
    if weight.device != embeddings.device:
        raise PairLossError(
            f"embeddings: are on device {embeddings.device} but the classifier is on "
            f"{weight.device}; expected the same device (move the loss with .to())"
        )
    _check_classes(labels, num_classes)
    dtype = compute_dtype(embeddings)
    x = embeddings.to(dtype)
    logits = x @ weight.to(dtype).T
    if bias is not None:
        logits = logits + bias.to(dtype)
    ce = F.cross_entropy(logits, labels)
    out = ce
    if pair_weight != 0:
        pair = contrastive(
            x, labels, indices_tuple,
            ref_emb.to(dtype) if isinstance(ref_emb, torch.Tensor) else ref_emb, ref_labels,
            pos_margin=pos_margin, neg_margin=neg_margin, distance=distance, engine=engine,
            block_size=block_size,
        )  # fmt: skip
        out = ce + pair_weight * pair
    return check_result(out.to(embeddings.dtype), embeddings)


class PFIDLoss(nn.Module):
    r"""PFID loss: softmax cross-entropy plus a pairwise (contrastive) loss.

    .. math::
        L = \frac{1}{B}\sum_i -\log \frac{e^{w_{y_i}^\top x_i + b_{y_i}}}
            {\sum_c e^{w_c^\top x_i + b_c}}
          \;+\; \lambda \, L_{pair}

    with the class logits of a linear classifier ``W`` [C, D] (and bias ``b`` [C]) owned by the
    loss, and :math:`L_{pair}` the contrastive loss over the positive and negative pairs of the
    batch (:func:`pairloss.losses.contrastive`:
    :math:`[d_{ip} - m_{pos}]_+` over positive pairs plus :math:`[m_{neg} - d_{in}]_+` over
    negative pairs, each part averaged over its non-zero terms; Euclidean distance of the
    L2-normalised embeddings by default). Defaults: ``pair_weight`` :math:`\lambda = 1`,
    ``pos_margin=0``, ``neg_margin=1``.

    Paper: Shukla et al., PRICAI 2019 ("the PFID loss augments the standard cross entropy loss
    with a pairwise loss" on positive and negative pairs). The pairwise term, its distance,
    margins and weight here are a documented choice (Hadsell et al.'s contrastive loss), not a
    transcription of the paper's equations; change them with ``pos_margin``, ``neg_margin``,
    ``distance`` and ``pair_weight``.

    Parameters: ``W`` (and ``b`` with ``bias=True``) are float32 :class:`torch.nn.Parameter`
    that stay float32 for half-precision embeddings (the loss computes in float32 and only casts
    them out of place); initialised as :class:`torch.nn.Linear`. ``module.double()`` makes them
    float64.

    Inputs: ``embeddings`` [B, D], ``labels`` [B] in [0, num_classes). ``indices_tuple`` (PML
    pairs or triplets, or a pairloss miner) restricts the pairwise term's pairs;
    ``ref_emb`` / ``ref_labels`` give the pairwise term reference candidates (the
    cross-entropy always runs over the batch). Degenerate input (one class, all-distinct labels,
    a batch of one) keeps the cross-entropy; a pairwise part with no non-zero term is 0.
    ``gather="exact"``: the loss of the global batch of a process group
    (:func:`pairloss.scale.set_gather`).
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        pair_weight: float = 1.0,
        pos_margin: float = 0.0,
        neg_margin: float = 1.0,
        distance: Similarity | str | None = None,
        bias: bool = True,
        engine: str = "auto",
        block_size: int | None = None,
        gather: str | None = None,
    ) -> None:
        super().__init__()
        if gather is not None:
            set_gather(self, gather)
        self.num_classes = check_int(num_classes, "num_classes", minimum=1)
        self.embedding_size = check_int(embedding_size, "embedding_size", minimum=1)
        self.pair_weight = check_positive(pair_weight, "pair_weight", strict=False)
        self.pos_margin = check_real(pos_margin, "pos_margin")
        self.neg_margin = check_real(neg_margin, "neg_margin")
        if not isinstance(bias, bool):
            raise PairLossError(f"bias: expected a bool, got {bias!r}")
        self.distance = get_similarity(distance, LpDistance())
        self.engine = engine
        self.block_size = block_size
        self.W = nn.Parameter(torch.empty(self.num_classes, self.embedding_size))
        self.b = nn.Parameter(torch.empty(self.num_classes)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """:class:`torch.nn.Linear`'s initialisation."""
        nn.init.kaiming_uniform_(self.W, a=math.sqrt(5))
        if self.b is not None:
            bound = 1 / math.sqrt(self.embedding_size)
            nn.init.uniform_(self.b, -bound, bound)

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """PFID loss of ``embeddings`` [B, D] with class ``labels`` [B]; a scalar."""
        return pfid_value(
            self.W, self.b, embeddings, labels, indices_tuple, ref_emb, ref_labels,
            self.pair_weight, self.pos_margin, self.neg_margin, self.distance, self.engine,
            self.block_size,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embedding_size={self.embedding_size}, "
            f"pair_weight={self.pair_weight}, bias={self.b is not None}"
        )


def pfid(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    *,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    pair_weight: float = 1.0,
    pos_margin: float = 0.0,
    neg_margin: float = 1.0,
    distance: Similarity | str | None = None,
    engine: str = "auto",
    block_size: int | None = None,
) -> torch.Tensor:
    """Functional :class:`PFIDLoss` with classifier ``weight`` [C, D] and optional ``bias``
    [C] (gradients flow to both)."""
    weight = check_embeddings(weight, "weight")
    if bias is not None and (
        not isinstance(bias, torch.Tensor) or bias.shape != (weight.shape[0],)
    ):
        raise PairLossError(f"bias: expected None or a [{weight.shape[0]}] tensor")
    return pfid_value(
        weight, bias, embeddings, labels, indices_tuple, ref_emb, ref_labels,
        check_positive(pair_weight, "pair_weight", strict=False),
        check_real(pos_margin, "pos_margin"),
        check_real(neg_margin, "neg_margin"), distance, engine, block_size,
    )  # fmt: skip
