"""Preference losses over lists of K responses per prompt: LiPO-lambda, InfoNCA and NCA, MMPO,
SPPO with soft probabilities, and iREPO.

Call convention (except iREPO): ``loss(logps, ref_logps, rewards, mask=None)`` with ``logps``
[B, K] the policy's summed log-probabilities of K responses to each of B prompts, ``ref_logps``
[B, K] the reference model's, ``rewards`` [B, K] the responses' rewards, labels or win
probabilities (each loss says which), and ``mask`` [B, K] (True = a real response; padded
responses are ignored, so lists may have different lengths). The implicit reward of a response
is ``r = beta (logp - ref_logp)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...engine import run_slate
from ...errors import PairLossError
from ...objectives.preference import soft_bradley_terry
from ...objectives.ranking import (
    count_lambda_pairs,
    exp2_gain,
    lambda_pairs_objective,
    order_by_scores,
)
from ...reduction import check_reduction
from ...validation import check_exp2_gains, check_positive, check_scores_matrix, check_tensor
from ._inputs import list_inputs

LIST_REDUCTIONS = ("mean", "sum", "none")


def _reduce_lists(values: torch.Tensor, counted: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per-list values [B]: ``"none"`` as they are, ``"sum"``, or ``"mean"`` over the lists that
    ``counted`` marks (0 with zero gradient if none)."""
    if reduction == "none":
        return values
    total = values.sum()
    if reduction == "sum":
        return total
    n = float(counted.sum())
    return total / n if n > 0 else total * 0.0


class _ListLoss(nn.Module):
    targets_name = "rewards"

    def __init__(self, beta: float, reduction: str) -> None:
        super().__init__()
        self.beta = check_positive(beta, "beta")
        self.reduction = check_reduction(reduction, LIST_REDUCTIONS)

    def per_list(self, rewards_model, targets, valid):
        raise NotImplementedError

    def forward(
        self,
        logps: torch.Tensor,
        ref_logps: torch.Tensor,
        rewards: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of B lists of K responses (see the module docstring): a scalar, or [B] with
        ``reduction="none"``."""
        x, ref, t, valid = list_inputs(logps, ref_logps, rewards, mask, self.targets_name)
        model = self.beta * (x - ref)
        values, counted = self.per_list(model, t, valid)
        return _reduce_lists(values, counted, self.reduction).to(logps.dtype)


class LiPOLambdaLoss(_ListLoss):
    r"""LiPO-lambda: listwise preference optimisation with LambdaRank-weighted pairwise logistic
    losses over the implicit rewards.

    .. math::
        \ell = -\sum_{\psi_i > \psi_j} \Delta_{ij} \log \sigma(r_i - r_j), \quad
        \Delta_{ij} = |G_i - G_j| \left|\frac{1}{D(\tau_i)} - \frac{1}{D(\tau_j)}\right|

    with ``r = beta (logp - ref_logp)``, labels ``psi`` (``rewards``; >= 0), gains ``G = 2^psi -
    1``, ``tau_i`` the rank of response ``i`` under ``r`` and ``D(tau) = log2(1 + tau)``. Sum
    within a list, mean over lists with at least one pair. Paper: Liu et al., "LiPO: Listwise
    Preference Optimization through Learning-to-Rank", 2024 (eq. with Lambda weights; the paper
    writes ``log(1 + tau)``, which changes every weight by the same factor ``ln 2``). This is the
    LambdaLoss row objective of :mod:`pairloss.objectives.ranking` (scheme ``"lambdarank"``,
    unnormalised gains, natural log) run on the implicit rewards.

    With two responses labelled 1 and 0 it is ``(1 - 1/log2 3)`` times DPO's ``-log sigma(beta
    h)`` (tested). Default ``beta=0.1``.
    """

    def __init__(self, beta: float = 0.1, reduction: str = "mean") -> None:
        super().__init__(beta, reduction)

    def per_list(self, model, labels, valid):
        if bool((valid & (labels < 0)).any()):
            raise PairLossError("rewards: LiPO's labels must be >= 0 (gains 2^psi - 1)")
        check_exp2_gains(labels, valid, model.dtype, "rewards")
        order = order_by_scores(model, valid)
        s = torch.gather(model, 1, order)
        psi = torch.gather(labels, 1, order)
        ok = torch.gather(valid, 1, order)
        objective = lambda_pairs_objective(
            psi, ok, exp2_gain(psi), "lambdarank", 1.0, 0.0, None, "either", 1.0
        )
        values, _ = run_slate(objective, s, "dense")
        pairs = count_lambda_pairs(psi, ok, "lambdarank", None, "either")
        return values, pairs > 0


class InfoNCALoss(_ListLoss):
    r"""InfoNCA: cross-entropy between the softmax of the rewards and the softmax of the implicit
    rewards over each list.

    .. math::
        \ell = -\sum_i \mathrm{softmax}(R / \alpha)_i \log \mathrm{softmax}(r)_i

    with ``r = beta (logp - ref_logp)`` and ``R`` the given rewards (``alpha``: the reward
    temperature). Mean over lists. Paper: Chen et al., "Noise Contrastive Alignment of Language
    Models with Explicit Rewards", NeurIPS 2024; as the authors' ``NCATrainer`` with
    ``loss_type="InfoNCA"`` (whose ``temperature_alpha`` is ``alpha`` here). At K = 2 with hard
    labels (``alpha -> 0``) it is DPO's sigmoid loss (tested). Defaults ``beta=0.1``, ``alpha=1``.
    """

    def __init__(self, beta: float = 0.1, alpha: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(beta, reduction)
        self.alpha = check_positive(alpha, "alpha")

    def target(self, rewards, valid):
        neg = torch.full_like(rewards, -torch.inf)
        return torch.softmax(torch.where(valid, rewards / self.alpha, neg), dim=1)

    def per_list(self, model, rewards, valid):
        neg = torch.full_like(model, -torch.inf)
        log_p = torch.log_softmax(torch.where(valid, model, neg), dim=1)
        terms = torch.where(valid, self.target(rewards, valid) * log_p, torch.zeros_like(log_p))
        return -terms.sum(dim=1), valid.any(dim=1)


class NCAPreferenceLoss(InfoNCALoss):
    r"""NCA: noise contrastive alignment, a binary classification of every response against the
    reward-weighted target.

    .. math::
        \ell = -\sum_i \mathrm{softmax}(R / \alpha)_i \log \sigma(r_i)
               - \frac{1}{K} \sum_i \log \sigma(-r_i)

    (``K`` the real responses of the list); mean over lists. Paper: Chen et al., NeurIPS 2024;
    as the authors' ``NCATrainer`` with ``loss_type="NCA"``. At K = 2 with hard labels it is
    TRL's ``"nca_pair"`` (tested).
    """

    def per_list(self, model, rewards, valid):
        target = self.target(rewards, valid)
        pos = torch.where(valid, target * F.logsigmoid(model), torch.zeros_like(model))
        neg = torch.where(valid, F.logsigmoid(-model), torch.zeros_like(model))
        k = valid.sum(dim=1).clamp(min=1).to(model.dtype)
        return -pos.sum(dim=1) - neg.sum(dim=1) / k, valid.any(dim=1)


class MMPOLoss(_ListLoss):
    r"""MMPO: margin matching preference optimisation, DPO with a soft Bradley-Terry target from
    the quality margin of every pair.

    .. math::
        \ell_{ij} = -p_{ij} \log \sigma(r_i - r_j) - (1 - p_{ij}) \log \sigma(r_j - r_i),
        \quad p_{ij} = \sigma\big(\gamma (R_i - R_j)\big)

    over the pairs of a list with ``R_i > R_j`` (``R``: quality scores, ``rewards``), mean over
    the pairs of the batch. Paper: Kim et al., "Margin Matching Preference Optimization:
    Enhanced Model Alignment with Granular Feedback", EMNLP 2024 Findings; as the authors' code
    (``p_chosen = 1 / (1 + exp(-bt_beta (score_chosen - score_rejected)))`` in the sigmoid DPO
    loss; ``gamma`` is their ``bt_beta``). K = 2 is their pairwise form; ``gamma -> inf`` gives
    DPO. Defaults ``beta=0.1``, ``gamma=1``.
    """

    def __init__(self, beta: float = 0.1, gamma: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(beta, reduction)
        self.gamma = check_positive(gamma, "gamma")

    def per_list(self, model, scores, valid):
        pairs = valid[:, :, None] & valid[:, None, :] & (scores[:, :, None] > scores[:, None, :])
        h = model[:, :, None] - model[:, None, :]
        p = torch.sigmoid(self.gamma * (scores[:, :, None] - scores[:, None, :]))
        terms = torch.where(pairs, soft_bradley_terry(h, p), torch.zeros_like(h))
        n = pairs.sum(dim=(1, 2)).to(model.dtype)
        return terms.sum(dim=(1, 2)), n

    def forward(self, logps, ref_logps, rewards, mask=None):
        """The loss of B lists of K responses (mean over the pairs of the batch)."""
        x, ref, t, valid = list_inputs(logps, ref_logps, rewards, mask, self.targets_name)
        values, pairs = self.per_list(self.beta * (x - ref), t, valid)
        if self.reduction == "none":
            return values.to(logps.dtype)
        total = values.sum()
        if self.reduction == "mean":
            n = float(pairs.sum())
            total = total / n if n > 0 else total * 0.0
        return total.to(logps.dtype)


class SPPOLoss(_ListLoss):
    r"""SPPO: self-play preference optimisation with soft win probabilities.

    .. math::
        \ell = \frac{1}{K} \sum_i \Big( \log\frac{\pi(y_i)}{\pi_{ref}(y_i)}
               - \frac{1}{\beta}\big(P_i - \tfrac{1}{2}\big) \Big)^2

    where ``P_i`` (``rewards``: win probabilities in [0, 1]) estimates the probability that response ``i`` beats
    the current policy. Mean over the real responses of a list, then over lists. Paper: Wu et
    al., "Self-Play Preference Optimization for Language Model Alignment", 2024 (Algorithm 1,
    eq. 4.7 with ``eta = 1/beta``); as the authors' trainer (``loss_type="sppo"``: ``(loss_w +
    loss_l) / 2``). TRL's ``"sppo_hard"`` is the sum over a pair with ``P = 1, 0``: twice this
    at K = 2 (tested). Default ``beta=0.1``. The implicit reward is not used: this loss reads
    the log-ratios.
    """

    def __init__(self, beta: float = 0.1, reduction: str = "mean") -> None:
        super().__init__(beta, reduction)

    def per_list(self, model, probs, valid):
        if bool((valid & ((probs < 0) | (probs > 1))).any()):
            raise PairLossError("rewards: SPPO's win probabilities must be in [0, 1]")
        u = model / self.beta
        sq = (u - (probs - 0.5) / self.beta) ** 2
        sq = torch.where(valid, sq, torch.zeros_like(sq))
        k = valid.sum(dim=1).clamp(min=1).to(model.dtype)
        return sq.sum(dim=1) / k, valid.any(dim=1)


class IREPOLoss(nn.Module):
    r"""iREPO: implicit reward pairwise difference regression onto the logit of the empirical
    preference.

    .. math::
        \ell_{ij} = \Big( (r_i - r_j) - \log\frac{\hat p_{ij}}{1 - \hat p_{ij}} \Big)^2

    with ``r = beta (logp - ref_logp)`` and ``p_hat_ij`` the empirical probability that
    response ``i`` is preferred to ``j`` (e.g. the share of annotators who preferred it), over
    the pairs ``i < j`` of real responses; mean over the pairs of the batch. The empirical
    probability is clipped to ``[eps, 1 - eps]`` (``eps=1e-3``) so that unanimous votes give a
    finite target. Paper: Le et al., "iREPO: implicit Reward Pairwise Difference based Empirical
    Preference Optimization", 2024 (regression of the implicit reward difference on the logit
    of the empirical preference, under the Bradley-Terry model). Default ``beta=0.1``.

    Call: ``loss(logps, ref_logps, preferences, mask=None)``: ``logps``, ``ref_logps`` [B, K],
    ``preferences`` [B, K, K] with ``preferences[b, i, j] = p_hat_ij`` (read for ``i < j``;
    every entry between two real responses must be finite, the diagonal and the lower triangle
    too). A preference pair is K = 2 with ``preferences[:, 0, 1] = p_hat``.
    """

    def __init__(self, beta: float = 0.1, eps: float = 1e-3, reduction: str = "mean") -> None:
        super().__init__()
        self.beta = check_positive(beta, "beta")
        self.eps = check_positive(eps, "eps")
        if self.eps >= 0.5:
            raise PairLossError(f"eps: expected a number in (0, 0.5), got {eps!r}")
        self.reduction = check_reduction(reduction, LIST_REDUCTIONS)

    def forward(
        self,
        logps: torch.Tensor,
        ref_logps: torch.Tensor,
        preferences: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of B lists (see the class): a scalar, or [B] per-list sums with
        ``reduction="none"``."""
        x = check_scores_matrix(logps, "logps")
        p = check_tensor(preferences, "preferences")
        n_lists, k = x.shape
        if tuple(p.shape) != (n_lists, k, k) or not p.is_floating_point():
            raise PairLossError(
                f"preferences: expected a floating-point tensor of shape {(n_lists, k, k)}, got "
                f"dtype {p.dtype} and shape {tuple(p.shape)}"
            )
        x, ref, _, valid = list_inputs(logps, ref_logps, torch.zeros_like(x), mask, "rewards")
        upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=x.device), diagonal=1)
        pairs = valid[:, :, None] & valid[:, None, :] & upper
        p = p.to(x.dtype)
        real = valid[:, :, None] & valid[:, None, :]
        if bool((real & ~torch.isfinite(p)).any()):
            raise PairLossError(
                "preferences: contains NaN or Inf between real responses; expected finite values"
            )
        if bool((pairs & ~((p >= 0) & (p <= 1))).any()):
            raise PairLossError("preferences: expected probabilities in [0, 1] for i < j")
        p = torch.where(pairs, p, torch.full_like(p, 0.5)).clamp(self.eps, 1 - self.eps)
        r = self.beta * (x - ref)
        err = (r[:, :, None] - r[:, None, :]) - torch.log(p / (1 - p))
        sq = torch.where(pairs, err * err, torch.zeros_like(err))
        values = sq.sum(dim=(1, 2))
        if self.reduction == "none":
            return values.to(logps.dtype)
        total = values.sum()
        if self.reduction == "mean":
            n = float(pairs.sum())
            total = total / n if n > 0 else total * 0.0
        return total.to(logps.dtype)


def lipo_lambda(logps, ref_logps, rewards, mask=None, beta: float = 0.1, **kwargs):
    """Functional form of :class:`LiPOLambdaLoss` (same arguments and defaults)."""
    return LiPOLambdaLoss(beta, **kwargs)(logps, ref_logps, rewards, mask)


def infonca(logps, ref_logps, rewards, mask=None, beta: float = 0.1, alpha: float = 1.0, **kw):
    """Functional form of :class:`InfoNCALoss` (same arguments and defaults)."""
    return InfoNCALoss(beta, alpha, **kw)(logps, ref_logps, rewards, mask)


def nca_preference(
    logps, ref_logps, rewards, mask=None, beta: float = 0.1, alpha: float = 1.0, **kw
):
    """Functional form of :class:`NCAPreferenceLoss` (same arguments and defaults)."""
    return NCAPreferenceLoss(beta, alpha, **kw)(logps, ref_logps, rewards, mask)


def mmpo(logps, ref_logps, rewards, mask=None, beta: float = 0.1, gamma: float = 1.0, **kw):
    """Functional form of :class:`MMPOLoss` (same arguments and defaults)."""
    return MMPOLoss(beta, gamma, **kw)(logps, ref_logps, rewards, mask)


def sppo(logps, ref_logps, rewards, mask=None, beta: float = 0.1, **kwargs):
    """Functional form of :class:`SPPOLoss` (same arguments and defaults)."""
    return SPPOLoss(beta, **kwargs)(logps, ref_logps, rewards, mask)


def irepo(logps, ref_logps, preferences, mask=None, beta: float = 0.1, **kwargs):
    """Functional form of :class:`IREPOLoss` (same arguments and defaults)."""
    return IREPOLoss(beta, **kwargs)(logps, ref_logps, preferences, mask)
