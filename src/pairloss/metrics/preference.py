"""Preference metrics as TRL logs them: implicit rewards of chosen and rejected responses, reward
accuracy (strict >) and reward margins; and their listwise counterparts."""

from __future__ import annotations

import torch

from ..validation import check_logps, check_positive


def preference_metrics(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    beta: float = 0.1,
) -> dict[str, float]:
    """TRL's DPO metrics of a batch of pairs (each argument [B]; no reference: 0):

    - ``rewards/chosen``, ``rewards/rejected``: the means of ``beta (logp - ref_logp)``;
    - ``rewards/accuracies``: the share of pairs whose chosen reward is strictly greater (a tie
      counts as wrong, as TRL's ``chosen_rewards > rejected_rewards``);
    - ``rewards/margins``: the mean of chosen minus rejected reward;
    - ``logps/chosen``, ``logps/rejected``: the means of the policy log-probabilities.
    """
    beta = check_positive(beta, "beta")
    c = check_logps(chosen_logps, "chosen_logps").detach().to(torch.float64)
    r = check_logps(rejected_logps, "rejected_logps", chosen_logps, "chosen_logps").detach()
    r = r.to(torch.float64)
    rc = torch.zeros_like(c) if ref_chosen_logps is None else ref_chosen_logps.detach().double()
    rr = torch.zeros_like(c) if ref_rejected_logps is None else ref_rejected_logps.detach().double()
    if ref_chosen_logps is not None:
        check_logps(ref_chosen_logps, "ref_chosen_logps", chosen_logps, "chosen_logps")
        check_logps(ref_rejected_logps, "ref_rejected_logps", chosen_logps, "chosen_logps")
    chosen, rejected = beta * (c - rc), beta * (r - rr)
    return {
        "rewards/chosen": float(chosen.mean()),
        "rewards/rejected": float(rejected.mean()),
        "rewards/accuracies": float((chosen > rejected).double().mean()),
        "rewards/margins": float((chosen - rejected).mean()),
        "logps/chosen": float(c.mean()),
        "logps/rejected": float(r.mean()),
    }


def list_reward_accuracy(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    rewards: torch.Tensor,
    mask: torch.Tensor | None = None,
    beta: float = 0.1,
) -> float | None:
    """Listwise reward accuracy: over every pair of real responses of a list with different
    given rewards, the share where the implicit reward ``beta (logp - ref_logp)`` of the better
    response is strictly greater (TRL's strict > on pairs; at K = 2 it is
    ``rewards/accuracies``). None (undefined) when no list has such a pair (all rewards of
    every list equal)."""
    from ..losses.preference._inputs import list_inputs

    beta = check_positive(beta, "beta")
    x, ref, t, valid = list_inputs(logps, ref_logps, rewards, mask)
    r = beta * (x.detach() - ref.detach())
    pairs = valid[:, :, None] & valid[:, None, :] & (t[:, :, None] > t[:, None, :])
    right = pairs & (r[:, :, None] > r[:, None, :])
    n = int(pairs.sum())
    return float(right.sum()) / n if n else None
