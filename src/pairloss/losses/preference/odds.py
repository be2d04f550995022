"""Preference losses without a reference model: CPO (and SimPO through it) and ORPO; and KTO on
unpaired completions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import PairLossError
from ...objectives.preference import log1mexp
from ...reduction import check_reduction
from ...validation import (
    check_choice,
    check_logps,
    check_positive,
    check_real,
    check_tensor,
)
from ._inputs import pair_inputs
from .dpo import PAIR_REDUCTIONS

CPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "simpo")


def _reduce(per_pair: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_pair
    return per_pair.sum() if reduction == "sum" else per_pair.mean()


def _chosen_nll(chosen_sums: torch.Tensor, chosen_tokens: torch.Tensor) -> torch.Tensor:
    """Token-level negative log-likelihood of the chosen completions of the batch."""
    return -chosen_sums.sum() / chosen_tokens.sum()


class CPOLoss(nn.Module):
    r"""Contrastive Preference Optimization, with TRL's ``CPOTrainer`` loss types (SimPO among
    them) and its AlphaPO reward shaping.

    .. math::
        \ell = \frac{1}{B}\sum_b \ell_{type}\big(\rho_w - \rho_l\big)
               + \alpha_{cpo}\, \mathrm{NLL}(y_w)

    with ``rho = log pi(y)`` (or its per-token average for ``"ipo"`` and ``"simpo"``, or the
    AlphaPO reward ``(1 - pi(y)^{-alpha}) / alpha`` when ``alpha != 0``) and, for ``z =
    rho_w - rho_l``: ``"sigmoid"`` ``-(1-eps) log sigmoid(beta z) - eps log sigmoid(-beta z)``
    (CPO, Xu et al. 2024, eq. 3); ``"hinge"`` ``relu(1 - beta z)``; ``"ipo"`` ``(z -
    1/(2 beta))^2``; ``"simpo"`` the sigmoid form on ``z - gamma / beta`` (SimPO, Meng et al.
    2024: ``-log sigmoid(beta (avg logp_w - avg logp_l) - gamma)``). The NLL term is the
    per-token negative log-likelihood of the chosen completions over the batch (weight
    ``cpo_alpha``; SimPO is ``loss_type="simpo", cpo_alpha=0``).

    Checked against TRL 1.16's ``CPOTrainer.cpo_loss`` (values and gradients) and its NLL term.
    Defaults as TRL's ``CPOConfig``: ``beta=0.1``, ``label_smoothing=0``, ``cpo_alpha=1``,
    ``simpo_gamma=0.5``, ``alpha=0``.

    Call: ``loss(chosen_logps, rejected_logps, chosen_tokens=None, rejected_tokens=None)``, [B]
    each: summed log-probabilities and token counts (without token counts the log-probabilities
    are taken as they are, and the NLL is their mean). Reductions: ``"mean"`` (TRL), ``"sum"``,
    ``"none"`` (per pair, with the NLL term added to each).
    """

    def __init__(
        self,
        beta: float = 0.1,
        loss_type: str = "sigmoid",
        label_smoothing: float = 0.0,
        cpo_alpha: float = 1.0,
        simpo_gamma: float = 0.5,
        alpha: float = 0.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.beta = check_positive(beta, "beta")
        self.loss_type = check_choice(loss_type, "loss_type", CPO_LOSS_TYPES)
        self.label_smoothing = check_real(
            label_smoothing, "label_smoothing", low=0.0, high=0.5, high_open=True
        )
        self.cpo_alpha = check_real(cpo_alpha, "cpo_alpha", low=0.0)
        self.simpo_gamma = check_real(simpo_gamma, "simpo_gamma")
        self.alpha = check_real(alpha, "alpha")
        self.reduction = check_reduction(reduction, PAIR_REDUCTIONS)

    def forward(
        self,
        chosen_logps: torch.Tensor,
        rejected_logps: torch.Tensor,
        chosen_tokens: torch.Tensor | None = None,
        rejected_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of a batch of pairs (each argument [B])."""
        c, r, _, _, tc, tr = pair_inputs(
            chosen_logps, rejected_logps, None, None, chosen_tokens, rejected_tokens, False
        )
        nll = _chosen_nll(c, tc)
        if self.loss_type in ("ipo", "simpo"):
            c, r = c / tc, r / tr
        if self.alpha != 0.0:
            c = -torch.expm1(-self.alpha * c) / self.alpha
            r = -torch.expm1(-self.alpha * r) / self.alpha
        z = c - r
        eps = self.label_smoothing
        if self.loss_type == "simpo":
            z = z - self.simpo_gamma / self.beta
        if self.loss_type in ("sigmoid", "simpo"):
            per_pair = -F.logsigmoid(self.beta * z) * (1 - eps) - F.logsigmoid(-self.beta * z) * eps
        elif self.loss_type == "hinge":
            per_pair = torch.relu(1 - self.beta * z)
        else:
            per_pair = (z - 1 / (2 * self.beta)) ** 2
        out = _reduce(per_pair + self.cpo_alpha * nll, self.reduction)
        return out.to(torch.as_tensor(chosen_logps).dtype)


class SimPOLoss(CPOLoss):
    r"""SimPO: Simple Preference Optimization with a reference-free, length-normalised reward.

    .. math::
        \ell = -\log \sigma\Big(\frac{\beta}{|y_w|} \log \pi(y_w)
               - \frac{\beta}{|y_l|} \log \pi(y_l) - \gamma\Big)

    Paper: Meng, Xia & Chen, "SimPO: Simple Preference Optimization with a Reference-Free
    Reward", NeurIPS 2024. :class:`CPOLoss` with ``loss_type="simpo"`` and ``cpo_alpha=0``, as
    TRL runs SimPO (defaults TRL's: ``beta=0.1``, ``gamma=0.5``; ``label_smoothing`` as CPO).
    Pass the token counts (the reward is the per-token average log-probability).
    """

    def __init__(
        self,
        beta: float = 0.1,
        gamma: float = 0.5,
        label_smoothing: float = 0.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__(beta, "simpo", label_smoothing, 0.0, gamma, 0.0, reduction)


class ORPOLoss(nn.Module):
    r"""ORPO: Odds Ratio Preference Optimization, supervised fine-tuning plus a log odds-ratio
    term, without a reference model.

    .. math::
        \ell = \mathrm{NLL}(y_w) - \frac{\beta}{B} \sum_b \log \sigma\Big(
               \log \frac{\mathrm{odds}(y_w)}{\mathrm{odds}(y_l)}\Big), \quad
        \mathrm{odds}(y) = \frac{P(y)}{1 - P(y)}

    with ``P(y)`` the per-token average probability ``exp(logp / n)`` and ``log odds = a -
    log(1 - e^a)`` for ``a = logp / n < 0`` (computed with a stable ``log(1 - e^a)``). Paper:
    Hong, Lee & Thorne, "ORPO: Monolithic Preference Optimization without Reference Model",
    EMNLP 2024 (eqs. 4 and 7; ``beta`` is the paper's lambda). As TRL 1.16's ``ORPOTrainer``
    (``odds_ratio_loss`` on the token-averaged log-probabilities and the chosen NLL per token;
    TRL computes the odds term in float32, pairloss in the input's precision). Default
    ``beta=0.1`` (TRL's ``ORPOConfig``).

    Call: ``loss(chosen_logps, rejected_logps, chosen_tokens=None, rejected_tokens=None)``; the
    average log-probabilities must be < 0 (a probability of 1 has infinite odds).
    Reductions: ``"mean"``, ``"sum"``, ``"none"`` (per pair, NLL added to each).
    """

    def __init__(self, beta: float = 0.1, reduction: str = "mean") -> None:
        super().__init__()
        self.beta = check_positive(beta, "beta")
        self.reduction = check_reduction(reduction, PAIR_REDUCTIONS)

    def forward(
        self,
        chosen_logps: torch.Tensor,
        rejected_logps: torch.Tensor,
        chosen_tokens: torch.Tensor | None = None,
        rejected_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of a batch of pairs (each argument [B])."""
        c, r, _, _, tc, tr = pair_inputs(
            chosen_logps, rejected_logps, None, None, chosen_tokens, rejected_tokens, False
        )
        nll = _chosen_nll(c, tc)
        c, r = c / tc, r / tr
        for name, v in (("chosen_logps", c), ("rejected_logps", r)):
            if bool((v >= 0).any()):
                raise PairLossError(
                    f"{name}: has a per-token average log-probability >= 0; expected < 0 "
                    "(ORPO's odds P / (1 - P) are infinite at P = 1)"
                )
        log_odds = (c - r) - (log1mexp(c) - log1mexp(r))
        per_pair = nll - self.beta * F.logsigmoid(log_odds)
        return _reduce(per_pair, self.reduction).to(torch.as_tensor(chosen_logps).dtype)


KTO_LOSS_TYPES = ("kto", "apo_zero_unpaired")


class KTOLoss(nn.Module):
    r"""KTO: Kahneman-Tversky Optimization on unpaired completions labelled desirable or not.

    .. math::
        \ell_i = \begin{cases}
          \lambda_D \big(1 - \sigma(\beta (u_i - z_0))\big) & y_i \text{ desirable} \\
          \lambda_U \big(1 - \sigma(\beta (z_0 - u_i))\big) & \text{otherwise}
        \end{cases}, \quad
        z_0 = \max\Big(0, \frac{1}{B} \sum_b \big(\log \pi(y'_b) - \log \pi_{ref}(y'_b)\big)\Big)

    (mean over the batch) where ``u = log pi(y) - log pi_ref(y)`` and ``y'`` are mismatched
    completions (each prompt with another example's completion) whose mean log-ratio estimates
    the KL term ``z_0`` (no gradient). Paper: Ethayarajh et al., "KTO: Model Alignment as
    Prospect Theoretic Optimization", ICML 2024 (eq. 7). As TRL 1.16's ``KTOTrainer``; its
    ``loss_type="apo_zero_unpaired"`` (D'Oosterlinck et al. 2024): ``1 - sigma(beta u)`` for
    desirable and ``sigma(beta u)`` for undesirable completions, no KL term. Defaults as
    ``KTOConfig``: ``beta=0.1``, ``desirable_weight=undesirable_weight=1``.

    Call: ``loss(logps, ref_logps, labels, kl_logps=None, ref_kl_logps=None)``: [B] each,
    ``labels`` boolean (True = desirable); the mismatched completions' log-probabilities
    ``kl_logps`` / ``ref_kl_logps`` [B'] (``"kto"``; without them ``z_0 = 0``).
    Reductions: ``"mean"``, ``"sum"``, ``"none"`` (per completion, in input order).
    """

    def __init__(
        self,
        beta: float = 0.1,
        desirable_weight: float = 1.0,
        undesirable_weight: float = 1.0,
        loss_type: str = "kto",
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.beta = check_positive(beta, "beta")
        self.desirable_weight = check_real(desirable_weight, "desirable_weight", low=0.0)
        self.undesirable_weight = check_real(undesirable_weight, "undesirable_weight", low=0.0)
        self.loss_type = check_choice(loss_type, "loss_type", KTO_LOSS_TYPES)
        self.reduction = check_reduction(reduction, PAIR_REDUCTIONS)

    def forward(
        self,
        logps: torch.Tensor,
        ref_logps: torch.Tensor,
        labels: torch.Tensor,
        kl_logps: torch.Tensor | None = None,
        ref_kl_logps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of a batch of unpaired completions (see the class)."""
        x = check_logps(logps, "logps")
        ref = check_logps(ref_logps, "ref_logps", x, "logps")
        labels = check_tensor(labels, "labels")
        if labels.dtype != torch.bool or tuple(labels.shape) != tuple(x.shape):
            raise PairLossError(
                f"labels: expected a boolean tensor of shape {tuple(x.shape)} (True = desirable), "
                f"got dtype {labels.dtype} and shape {tuple(labels.shape)}"
            )
        u = x - ref
        kl = torch.zeros((), dtype=x.dtype, device=x.device)
        if (kl_logps is None) != (ref_kl_logps is None):
            raise PairLossError("kl_logps, ref_kl_logps: only one was given; expected both")
        if kl_logps is not None and self.loss_type == "kto":
            kx = check_logps(kl_logps, "kl_logps")
            kr = check_logps(ref_kl_logps, "ref_kl_logps", kx, "kl_logps")
            kl = (kx - kr).mean().detach().clamp(min=0)
        if self.loss_type == "kto":
            desirable = 1 - torch.sigmoid(self.beta * (u - kl))
            undesirable = 1 - torch.sigmoid(self.beta * (kl - u))
        else:
            desirable = 1 - torch.sigmoid(self.beta * u)
            undesirable = torch.sigmoid(self.beta * u)
        per = torch.where(
            labels, self.desirable_weight * desirable, self.undesirable_weight * undesirable
        )
        return _reduce(per, self.reduction)


class BradleyTerryLoss(nn.Module):
    r"""The Bradley-Terry loss of a reward model, with an optional margin and reward centring.

    .. math::
        \ell = -\frac{1}{B} \sum_b \log \sigma\big(r_w - r_l - m\big)
               + c\, \frac{1}{B} \sum_b (r_w + r_l)^2

    Papers: Bradley & Terry 1952; Ouyang et al. 2022 (InstructGPT's reward model); the margin
    ``m`` of Llama 2 (Touvron et al. 2023); the centring term ``c`` of Eisenstein et al. 2023.
    As TRL 1.16's ``RewardTrainer.compute_loss`` (``margin`` column, ``center_rewards_coefficient``,
    default None = no centring).

    Call: ``loss(rewards_chosen, rewards_rejected, margin=None)``, [B] each (``margin`` [B]).
    Reductions: ``"mean"`` (TRL), ``"sum"``, ``"none"`` (per pair, centring term included).
    """

    def __init__(
        self, center_rewards_coefficient: float | None = None, reduction: str = "mean"
    ) -> None:
        super().__init__()
        self.center_rewards_coefficient = (
            None
            if center_rewards_coefficient is None
            else check_real(center_rewards_coefficient, "center_rewards_coefficient", low=0.0)
        )
        self.reduction = check_reduction(reduction, PAIR_REDUCTIONS)

    def forward(
        self,
        rewards_chosen: torch.Tensor,
        rewards_rejected: torch.Tensor,
        margin: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of a batch of scored pairs (each argument [B])."""
        rw = check_logps(rewards_chosen, "rewards_chosen")
        rl = check_logps(rewards_rejected, "rewards_rejected", rw, "rewards_chosen")
        gap = rw - rl
        if margin is not None:
            m = check_tensor(margin, "margin")
            if tuple(m.shape) != tuple(rw.shape) or not bool(torch.isfinite(m).all()):
                raise PairLossError(
                    f"margin: expected finite values of shape {tuple(rw.shape)}, got shape "
                    f"{tuple(m.shape)}"
                )
            gap = gap - m.to(rw.dtype)
        per = -F.logsigmoid(gap)
        if self.center_rewards_coefficient is not None:
            per = per + self.center_rewards_coefficient * (rw + rl) ** 2
        return _reduce(per, self.reduction)


def cpo(chosen_logps, rejected_logps, chosen_tokens=None, rejected_tokens=None, **kwargs):
    """Functional form of :class:`CPOLoss` (same arguments and defaults)."""
    return CPOLoss(**kwargs)(chosen_logps, rejected_logps, chosen_tokens, rejected_tokens)


def simpo(chosen_logps, rejected_logps, chosen_tokens=None, rejected_tokens=None, **kwargs):
    """Functional form of :class:`SimPOLoss` (same arguments and defaults)."""
    return SimPOLoss(**kwargs)(chosen_logps, rejected_logps, chosen_tokens, rejected_tokens)


def orpo(chosen_logps, rejected_logps, chosen_tokens=None, rejected_tokens=None, beta=0.1, **kw):
    """Functional form of :class:`ORPOLoss` (same arguments and defaults)."""
    return ORPOLoss(beta, **kw)(chosen_logps, rejected_logps, chosen_tokens, rejected_tokens)


def kto(logps, ref_logps, labels, kl_logps=None, ref_kl_logps=None, **kwargs):
    """Functional form of :class:`KTOLoss` (same arguments and defaults)."""
    return KTOLoss(**kwargs)(logps, ref_logps, labels, kl_logps, ref_kl_logps)


def bradley_terry(rewards_chosen, rewards_rejected, margin=None, **kwargs):
    """Functional form of :class:`BradleyTerryLoss` (same arguments and defaults)."""
    return BradleyTerryLoss(**kwargs)(rewards_chosen, rewards_rejected, margin)
