"""Preference objectives: pure functions of sequence log-probabilities.

Notation: for a response ``y`` to a prompt, ``logp`` is the policy's summed token
log-probability ``log pi(y)``, ``ref`` the reference model's, and the log-ratio ``u = logp -
ref``; chosen (preferred) responses have subscript ``w``, rejected ones ``l``. TRL's names are
kept: ``chosen_logratios``, ``rejected_logratios``, ``delta_score`` (the chosen minus the rejected
score after the f-divergence transform; the plain log-ratio gap for reverse KL, DPO).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DPO_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)
"""TRL's ``DPOConfig.loss_type`` values (TRL 1.16)."""

F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")
F_DIVERGENCE_LOSS_TYPES = (
    "sigmoid",
    "sigmoid_norm",
    "hinge",
    "ipo",
    "exo_pair",
    "robust",
    "discopop",
    "sft",
)
"""The loss types built on the chosen-rejected score gap, the only ones TRL 1.16 allows with a
non-default f-divergence."""


def f_divergence_scores(logratios: torch.Tensor, kind: str, alpha: float) -> torch.Tensor:
    """The score ``f'(pi / pi_ref)`` of a response under the f-divergence regulariser (f-DPO,
    Wang et al., ICLR 2024), as TRL 1.16 computes it: reverse KL ``u``; forward KL ``1 - e^-u``;
    JS ``log 2 + log sigmoid(u)``; alpha-divergence ``(e^{(alpha-1) u} - 1) / (alpha - 1)``
    (``u`` when alpha = 1; the exponent clamped at 80 as TRL does in fp32)."""
    if kind == "reverse_kl":
        return logratios
    if kind == "forward_kl":
        return -torch.expm1(-logratios)
    if kind == "js_divergence":
        return math.log(2.0) + F.logsigmoid(logratios)
    if abs(alpha - 1.0) < 1e-6:
        return logratios
    t = torch.clamp((alpha - 1.0) * logratios, max=80.0)
    return torch.expm1(t) / (alpha - 1.0)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - e^x)`` for ``x < 0``, stable on both sides of ``-log 2`` (Maechler 2012).

    Each branch is fed only the inputs it serves (the other side gets -1), so that the branch
    not taken has a finite gradient: near 0 ``log1p(-e^x)`` is ``-inf`` and its gradient would
    turn the masked gradient into NaN."""
    far = x < -math.log(2.0)
    other = torch.full_like(x, -1.0)
    return torch.where(
        far,
        torch.log1p(-torch.exp(torch.where(far, x, other))),
        torch.log(-torch.expm1(torch.where(far, other, x))),
    )


def dpo_type_losses(
    loss_type: str,
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_scores: torch.Tensor,
    rejected_scores: torch.Tensor,
    chosen_tokens: torch.Tensor,
    rejected_tokens: torch.Tensor,
    beta: float,
    label_smoothing: float,
    discopop_tau: float,
) -> torch.Tensor:
    """Per-pair losses [B] of one TRL ``loss_type`` (formulas of TRL 1.16's
    ``DPOTrainer._compute_loss``; see :class:`pairloss.DPOLoss` for each one and for where TRL
    0.28 differs). ``*_scores`` are the f-divergence scores of the log-ratios, ``*_tokens`` the
    completion lengths (for ``ipo``, ``sigmoid_norm`` and ``sft``)."""
    chosen_logratios = chosen_logps - ref_chosen_logps
    rejected_logratios = rejected_logps - ref_rejected_logps
    delta = chosen_scores - rejected_scores
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * delta)
    if loss_type == "hinge":
        return torch.relu(1.0 - beta * delta)
    if loss_type == "ipo":
        gap = chosen_scores / chosen_tokens - rejected_scores / rejected_tokens
        return (gap - 1.0 / (2.0 * beta)) ** 2
    if loss_type == "exo_pair":
        eps = label_smoothing if label_smoothing > 0 else 1e-3
        z = beta * delta
        return torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-eps)) + torch.sigmoid(-z) * (
            F.logsigmoid(-z) - math.log(eps)
        )
    if loss_type == "nca_pair":
        cw, cl = beta * chosen_logratios, beta * rejected_logratios
        return -F.logsigmoid(cw) - 0.5 * F.logsigmoid(-cw) - 0.5 * F.logsigmoid(-cl)
    if loss_type == "robust":
        z = beta * delta
        clean = -(1.0 - label_smoothing) * F.logsigmoid(z)
        flipped = -label_smoothing * F.logsigmoid(-z)
        return (clean - flipped) / (1.0 - 2.0 * label_smoothing)
    if loss_type == "bco_pair":
        return -F.logsigmoid(beta * chosen_logratios) - F.logsigmoid(-beta * rejected_logratios)
    if loss_type == "sppo_hard":
        return (chosen_logratios - 0.5 / beta) ** 2 + (rejected_logratios + 0.5 / beta) ** 2
    if loss_type in ("aot", "aot_unpaired"):
        if loss_type == "aot":
            a = torch.sort(chosen_logps - rejected_logps, dim=0).values
            b = torch.sort(ref_chosen_logps - ref_rejected_logps, dim=0).values
        else:
            a = torch.sort(chosen_logratios, dim=0).values
            b = torch.sort(rejected_logratios, dim=0).values
        z = beta * (a - b)
        return -F.logsigmoid(z) * (1.0 - label_smoothing) - F.logsigmoid(-z) * label_smoothing
    if loss_type == "apo_zero":
        return (1.0 - torch.sigmoid(beta * chosen_logratios)) + torch.sigmoid(
            beta * rejected_logratios
        )
    if loss_type == "apo_down":
        return torch.sigmoid(beta * chosen_logratios) + (
            1.0 - torch.sigmoid(beta * (chosen_logratios - rejected_logratios))
        )
    if loss_type == "discopop":
        z = beta * delta
        mix = torch.sigmoid(z / discopop_tau)
        return -F.logsigmoid(z) * (1.0 - mix) + torch.exp(-z) * mix
    if loss_type == "sft":
        nll = -chosen_logps.sum() / chosen_tokens.sum()
        return nll.expand(chosen_logps.shape[0])
    if loss_type == "sigmoid_norm":
        gap = chosen_scores / chosen_tokens - rejected_scores / rejected_tokens
        return -F.logsigmoid(beta * gap)
    raise ValueError(loss_type)


def soft_bradley_terry(h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the Bradley-Terry probability ``sigmoid(h)`` against a soft target
    ``p``: ``-p log sigmoid(h) - (1 - p) log sigmoid(-h)``."""
    return -target * F.logsigmoid(h) - (1.0 - target) * F.logsigmoid(-h)
