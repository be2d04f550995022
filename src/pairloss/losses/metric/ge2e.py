"""Generalized end-to-end (GE2E) loss (Wan, Wang, Papir & Lopez Moreno, "Generalized End-to-End
Loss for Speaker Verification", ICASSP 2018)."""

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
    check_choice,
    check_embeddings,
    check_labels,
    check_positive,
    check_real,
    check_result,
)

LOSS_METHODS = ("softmax", "contrast")
W_MIN = 1e-6


def _scalar(
    value: object, name: str, dtype: torch.dtype, device, positive: bool = False
) -> torch.Tensor:
    """A finite scalar tensor in ``dtype`` (a float or a 0-d/1-element tensor, kept in graph);
    a float must be > 0 when ``positive``."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or not value.is_floating_point():
            raise PairLossError(f"{name}: expected a float or a one-element float tensor")
        if not bool(torch.isfinite(value).all()):
            raise PairLossError(f"{name}: expected a finite value, got {value.item()!r}")
        return value.reshape(()).to(device=device, dtype=dtype)
    v = check_positive(value, name) if positive else check_real(value, name)
    return torch.tensor(v, dtype=dtype, device=device)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return normalize_rows(x)


def ge2e_rows(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    loss_method: str,
    normalize_embeddings: bool,
) -> torch.Tensor:
    """Per-utterance GE2E losses [B] (inputs already validated and in the compute dtype)."""
    x = _unit(embeddings) if normalize_embeddings else embeddings
    speakers, inv, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    if bool((counts < 2).any()):
        lonely = speakers[counts < 2][:5].tolist()
        raise PairLossError(
            f"labels: speaker(s) {lonely} have a single utterance; GE2E needs at least 2 "
            "utterances per speaker (the own-speaker centroid leaves the utterance out)"
        )
    n_spk, dim = speakers.numel(), x.shape[1]
    sums = torch.zeros(n_spk, dim, dtype=x.dtype, device=x.device).index_add(0, inv, x)
    n = counts.to(x.dtype)
    unit_x = _unit(x)
    cos = unit_x @ _unit(sums / n[:, None]).T  # [B, C]: all centroids
    excl = (sums[inv] - x) / (n[inv] - 1)[:, None]  # own centroid without the utterance
    cos_own = (unit_x * _unit(excl)).sum(dim=1)
    own = F.one_hot(inv, n_spk).bool()
    cos = torch.where(own, cos_own[:, None], cos)
    s = w.clamp(min=W_MIN) * cos + b
    s_own = s.gather(1, inv[:, None]).squeeze(1)
    if loss_method == "softmax":
        return torch.logsumexp(s, dim=1) - s_own
    term = 1.0 - torch.sigmoid(s_own)
    if n_spk == 1:
        return term
    s_other = s.masked_fill(own, float("-inf")).amax(dim=1)
    return term + torch.sigmoid(s_other)


def _compute(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None,
    indices_tuple,
    ref_emb,
    ref_labels,
    w: object,
    b: object,
    loss_method: str,
    reduction: str,
    normalize_embeddings: bool,
) -> torch.Tensor:
    embeddings = check_embeddings(embeddings, "embeddings")
    if labels is None:
        raise PairLossError("labels: required by GE2E (one speaker id per row); got None")
    labels = check_labels(labels, embeddings.shape[0], "labels").to(embeddings.device)
    if indices_tuple is not None:
        raise PairLossError(
            "indices_tuple: not supported by GE2E (it scores every utterance against every "
            "speaker centroid); expected None"
        )
    if ref_emb is not None or ref_labels is not None:
        raise PairLossError(
            "ref_emb: not supported by GE2E (the speaker centroids of the batch are the "
            "references); expected None"
        )
    dtype = compute_dtype(embeddings)
    x = embeddings.to(dtype)
    w_t = _scalar(w, "w", dtype, x.device, positive=True)
    b_t = _scalar(b, "b", dtype, x.device)
    rows = ge2e_rows(x, labels, w_t, b_t, loss_method, normalize_embeddings)
    every_row = torch.ones_like(rows, dtype=torch.bool)
    terms = [RowTerms.per_anchor(rows, every_row)]
    return check_result(
        reduce_terms(terms, reduction, rows.shape[0]).to(embeddings.dtype), embeddings
    )


class GE2ELoss(nn.Module):
    r"""Generalized end-to-end loss: each utterance against every speaker centroid.

    For utterance :math:`e_i` of speaker :math:`j` and every speaker :math:`k` of the batch,

    .. math::
        S_{i,k} = w \cos(e_i, c_k) + b, \qquad
        c_k = \frac{1}{M_k}\sum_{m:\, y_m = k} e_m, \qquad
        c_j^{(-i)} = \frac{1}{M_j - 1}\sum_{m \ne i:\, y_m = j} e_m

    where the utterance's own speaker uses the centroid :math:`c_j^{(-i)}` that leaves the
    utterance out (paper eq. 8-9). The per-utterance loss is

    - ``"softmax"`` (eq. 6): :math:`L_i = -S_{i,j} + \log \sum_k e^{S_{i,k}}`;
    - ``"contrast"`` (eq. 7): :math:`L_i = 1 - \sigma(S_{i,j}) + \max_{k \ne j} \sigma(S_{i,k})`.

    ``w`` and ``b`` are learnable scalars (float32 parameters, initialised to ``init_w=10`` and
    ``init_b=-5`` as in the paper); ``w`` enters the scores clamped to at least ``1e-6`` (the
    paper's constraint ``w > 0``; while the raw parameter is below that bound its gradient is
    zero). Embeddings are L2-normalised first (``normalize_embeddings=True``; the paper's
    d-vectors are unit vectors) so that centroids are means of unit vectors.

    Reduction: the paper sums the losses; the default here is ``"mean"`` over utterances (as
    most implementations, which use a cross-entropy mean); ``"sum"`` gives the paper's value,
    ``"none"`` the [B] per-utterance losses.

    Batch layout: a flat [B, D] batch with integer speaker ``labels`` [B]. Speakers need not be
    contiguous and may have unequal numbers of utterances (each centroid is the mean of that
    speaker's own utterances), but every speaker needs at least 2 utterances
    (:class:`~pairloss.errors.PairLossError` otherwise; so a batch of one is refused). One
    speaker only: ``"softmax"`` gives 0 (zero gradient to the embeddings), ``"contrast"`` gives
    :math:`1 - \sigma(S_{i,j})` (no other speaker to push away from).

    The centroids are the candidates (C <= B speakers), so the loss is computed directly as a
    dense [B, C] score matrix (O(B x C) memory, O(B x D) extra work), not with the pair engine.
    ``indices_tuple``, ``ref_emb`` and ``ref_labels`` are refused. fp16/bf16 embeddings are
    computed in float32; the result has the embeddings' dtype. ``gather="exact"``: the loss of
    the global batch of a process group (:func:`pairloss.scale.set_gather`).
    """

    def __init__(
        self,
        loss_method: str = "softmax",
        init_w: float = 10.0,
        init_b: float = -5.0,
        reduction: str = "mean",
        normalize_embeddings: bool = True,
        gather: str | None = None,
    ) -> None:
        super().__init__()
        if gather is not None:
            set_gather(self, gather)
        self.loss_method = check_choice(loss_method, "loss_method", LOSS_METHODS)
        init_w = check_positive(init_w, "init_w")
        init_b = check_real(init_b, "init_b")
        self.reduction = check_reduction(reduction, ROW_REDUCTIONS)
        self.normalize_embeddings = check_bool(normalize_embeddings, "normalize_embeddings")
        self.w = nn.Parameter(torch.tensor(init_w, dtype=torch.float32))
        self.b = nn.Parameter(torch.tensor(init_b, dtype=torch.float32))

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """GE2E loss of ``embeddings`` [B, D] with speaker ``labels`` [B]: a scalar, or [B]
        with ``reduction="none"``."""
        return _compute(
            embeddings, labels, indices_tuple, ref_emb, ref_labels, self.w, self.b,
            self.loss_method, self.reduction, self.normalize_embeddings,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"loss_method={self.loss_method!r}, reduction={self.reduction!r}"


def ge2e(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    w: float | torch.Tensor = 10.0,
    b: float | torch.Tensor = -5.0,
    loss_method: str = "softmax",
    reduction: str = "mean",
    normalize_embeddings: bool = True,
) -> torch.Tensor:
    """Functional :class:`GE2ELoss` with scale ``w`` and offset ``b`` given as floats or
    (learnable) one-element tensors; ``w`` is clamped to at least ``1e-6``."""
    return _compute(
        embeddings, labels, indices_tuple, ref_emb, ref_labels, w, b,
        check_choice(loss_method, "loss_method", LOSS_METHODS),
        check_reduction(reduction, ROW_REDUCTIONS),
        check_bool(normalize_embeddings, "normalize_embeddings"),
    )  # fmt: skip
