"""Losses on graded sentence pairs: CoSENT, AnglE and the cosine-similarity regression."""

from __future__ import annotations

import torch
from torch import nn

from ...errors import PairLossError
from ...objectives.graded import angle_similarity, ranked_pairs_logsumexp
from ...similarity import cosine_rows
from ...validation import check_choice, check_real, check_result, check_tensor
from .towers import check_towers


def check_scores(scores: object, n: int, name: str = "scores") -> torch.Tensor:
    """``n`` finite gold scores as a 1-D [n] tensor (any real or bool dtype)."""
    scores = check_tensor(scores, name)
    if scores.dim() != 1 or scores.shape[0] != n:
        raise PairLossError(
            f"{name}: expected {n} gold scores (one per pair), got shape {tuple(scores.shape)}"
        )
    if scores.is_complex():
        raise PairLossError(f"{name}: expected real scores, got dtype {scores.dtype}")
    if scores.dtype == torch.bool:
        scores = scores.long()
    if scores.is_floating_point() and not bool(torch.isfinite(scores).all()):
        raise PairLossError(f"{name}: contains NaN or Inf; expected finite gold scores")
    return scores


def pair_similarity(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    """Scores of paired rows: ``"cosine"`` or AnglE's ``"angle"`` similarity, in the input
    dtype (fp16/bf16 are computed in fp32)."""
    if a.dtype in (torch.float16, torch.bfloat16):
        a, b = a.float(), b.float()
    if kind == "angle":
        return angle_similarity(a, b)
    return cosine_rows(a, b)


def _check_pairs(a, b, scores):
    a, b = check_towers(a, b, "embeddings_a", "embeddings_b")
    return a, b, check_scores(scores, a.shape[0]).to(a.device)


class CoSENTLoss(nn.Module):
    r"""CoSENT: rank the pairs' similarities as their gold scores rank them.

    For pairs (a_k, b_k) with gold scores y_k and s_k = cos(a_k, b_k):

    .. math::
        L = \log\Big(1 + \sum_{y_k < y_l} e^{\lambda (s_k - s_l)}\Big)

    Paper: Su, "CoSENT" (2022; Huang et al., IEEE/ACM TASLP 2024). Default ``scale = lambda =
    20`` as sentence-transformers' ``CoSENTLoss``, checked against it (values and gradients,
    float64, ties included). Exact in ``O(P log P)`` (a sort and a suffix log-sum-exp), with no
    P x P matrix.

    Shapes: ``embeddings_a``, ``embeddings_b`` [P, D]; ``scores`` [P] (any real dtype; only
    their order matters). Returns a scalar; no two distinct gold scores give 0.
    """

    similarity = "cosine"

    def __init__(self, scale: float = 20.0) -> None:
        super().__init__()
        self.scale = check_real(scale, "scale", low=0.0, low_open=True)

    def forward(
        self, embeddings_a: torch.Tensor, embeddings_b: torch.Tensor, scores: torch.Tensor
    ) -> torch.Tensor:
        """The loss of P pairs with their gold ``scores``."""
        a, b, y = _check_pairs(embeddings_a, embeddings_b, scores)
        s = pair_similarity(a, b, self.similarity)
        return ranked_pairs_logsumexp(s, y, self.scale).to(embeddings_a.dtype)


class AnglELoss(nn.Module):
    r"""AnglE: CoSENT on the angle similarity, optionally with the cosine CoSENT term.

    .. math::
        L = w_{\cos}\, \mathrm{CoSENT}_\lambda(\cos) + w_{angle}\, \mathrm{CoSENT}_\lambda(
            \mathrm{angle})

    where ``angle`` is :func:`~pairloss.objectives.graded.angle_similarity` (the embedding read
    as a complex vector; the score is the size of the normalised quotient's parts). Paper: Li
    & Li, "AoE: Angle-optimized Embeddings for Semantic Textual Similarity", ACL 2024, which
    adds the two terms to an in-batch negatives term (use
    :class:`~pairloss.losses.contrastive.in_batch.InBatchNegativesLoss` next to this loss for
    it). Defaults as sentence-transformers' ``AnglELoss`` (``scale = 20``, angle term only),
    checked against it (values and gradients, float64, odd and even sizes).

    Shapes as :class:`CoSENTLoss`. Returns a scalar.
    """

    def __init__(self, scale: float = 20.0, cosine_weight: float = 0.0, angle_weight: float = 1.0):
        super().__init__()
        self.scale = check_real(scale, "scale", low=0.0, low_open=True)
        self.cosine_weight = check_real(cosine_weight, "cosine_weight", low=0.0)
        self.angle_weight = check_real(angle_weight, "angle_weight", low=0.0)

    def forward(
        self, embeddings_a: torch.Tensor, embeddings_b: torch.Tensor, scores: torch.Tensor
    ) -> torch.Tensor:
        """The loss of P pairs with their gold ``scores``."""
        a, b, y = _check_pairs(embeddings_a, embeddings_b, scores)
        loss = a.new_zeros(
            (), dtype=torch.float32 if a.dtype in (torch.float16, torch.bfloat16) else a.dtype
        )
        if self.angle_weight:
            s = pair_similarity(a, b, "angle")
            loss = loss + self.angle_weight * ranked_pairs_logsumexp(s, y, self.scale)
        if self.cosine_weight:
            s = pair_similarity(a, b, "cosine")
            loss = loss + self.cosine_weight * ranked_pairs_logsumexp(s, y, self.scale)
        return loss.to(embeddings_a.dtype)


REGRESSION_LOSSES = ("mse", "l1", "huber")


class CosineSimilarityLoss(nn.Module):
    r"""Regress the pairs' cosine similarity onto their gold scores.

    .. math::
        L = \frac{1}{P} \sum_k \ell\big(\cos(a_k, b_k), y_k\big)

    with ``l`` the squared error by default (``"mse"``; also ``"l1"`` and ``"huber"``). Gold
    scores must lie on the cosine's scale (e.g. STS scores divided by 5). As
    sentence-transformers' ``CosineSimilarityLoss`` (Reimers & Gurevych, EMNLP 2019), checked
    against it. Shapes as :class:`CoSENTLoss`. Returns a scalar.
    """

    def __init__(self, loss: str = "mse") -> None:
        super().__init__()
        self.loss = check_choice(loss, "loss", REGRESSION_LOSSES)

    def forward(
        self, embeddings_a: torch.Tensor, embeddings_b: torch.Tensor, scores: torch.Tensor
    ) -> torch.Tensor:
        """The loss of P pairs with their gold ``scores``."""
        a, b, y = _check_pairs(embeddings_a, embeddings_b, scores)
        s = pair_similarity(a, b, "cosine")
        fn = {"mse": nn.functional.mse_loss, "l1": nn.functional.l1_loss}.get(
            self.loss, nn.functional.huber_loss
        )
        return check_result(fn(s, y.to(s.dtype)).to(embeddings_a.dtype), y, "scores")


def cosent(embeddings_a, embeddings_b, scores, scale: float = 20.0) -> torch.Tensor:
    """Functional form of :class:`CoSENTLoss`."""
    return CoSENTLoss(scale)(embeddings_a, embeddings_b, scores)


def angle(
    embeddings_a, embeddings_b, scores, scale: float = 20.0, cosine_weight=0.0, angle_weight=1.0
) -> torch.Tensor:
    """Functional form of :class:`AnglELoss`."""
    return AnglELoss(scale, cosine_weight, angle_weight)(embeddings_a, embeddings_b, scores)


def cosine_similarity_loss(embeddings_a, embeddings_b, scores, loss: str = "mse") -> torch.Tensor:
    """Functional form of :class:`CosineSimilarityLoss`."""
    return CosineSimilarityLoss(loss)(embeddings_a, embeddings_b, scores)
