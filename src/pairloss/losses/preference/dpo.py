"""Direct preference optimisation and every loss type of TRL's ``DPOTrainer``, on precomputed
sequence log-probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import PairLossError
from ...objectives.preference import (
    DPO_LOSS_TYPES,
    F_DIVERGENCE_LOSS_TYPES,
    F_DIVERGENCES,
    dpo_type_losses,
    f_divergence_scores,
)
from ...reduction import check_reduction
from ...validation import check_bool, check_choice, check_positive, check_real
from ._inputs import pair_inputs

PAIR_REDUCTIONS = ("mean", "sum", "none")


def check_loss_types(loss_type: object, loss_weights: object) -> tuple[list[str], list[float]]:
    """``loss_type``: one TRL name or a non-empty list of them; ``loss_weights``: None (all 1)
    or one finite weight per type."""
    types = [loss_type] if isinstance(loss_type, str) else loss_type
    if not isinstance(types, Sequence) or isinstance(types, str) or not types:
        raise PairLossError(
            f"loss_type: expected one of {DPO_LOSS_TYPES} or a non-empty list of them, "
            f"got {loss_type!r}"
        )
    types = [check_choice(t, "loss_type", DPO_LOSS_TYPES) for t in types]
    if loss_weights is None:
        return types, [1.0] * len(types)
    if not isinstance(loss_weights, Sequence) or isinstance(loss_weights, str):
        raise PairLossError(f"loss_weights: expected a list of numbers, got {loss_weights!r}")
    if len(loss_weights) != len(types):
        raise PairLossError(
            f"loss_weights: has {len(loss_weights)} weights for {len(types)} loss types; "
            "expected one weight per loss type"
        )
    return types, [check_real(w, "loss_weights") for w in loss_weights]


class DPOLoss(nn.Module):
    r"""DPO and every ``loss_type`` of TRL's ``DPOConfig``, on sequence log-probabilities.

    With the implicit rewards ``r = beta (log pi(y) - log pi_ref(y))`` and the log-ratio gap
    ``h = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))`` of a pair (after the
    f-divergence transform, reverse KL by default), the per-pair loss of each type is
    (TRL 1.16's ``DPOTrainer``; ``u_w, u_l`` the two log-ratios, ``n_w, n_l`` the token counts,
    ``eps`` the label smoothing):

    - ``"sigmoid"`` (DPO, Rafailov et al. 2023): ``-log sigmoid(beta h)``. TRL 0.28 applied the
      label smoothing here (conservative DPO, ``-(1-eps) log sigmoid(beta h) - eps log
      sigmoid(-beta h)``); TRL 1.x ignores it for ``"sigmoid"``. pairloss follows 1.x, and
      gives the 0.28 form with ``conservative=True``.
    - ``"hinge"`` (SLiC, Zhao et al. 2023): ``relu(1 - beta h)``.
    - ``"ipo"`` (Azar et al. 2023, eq. 17): ``(u_w / n_w - u_l / n_l - 1 / (2 beta))^2`` (the
      log-ratios averaged per token, as TRL 1.x; without token counts, sequence level as in the
      paper). TRL 0.28 averaged the log-probabilities of every loss type of the combination
      (and the logged rewards) per token when ``"ipo"`` was among them.
    - ``"exo_pair"`` (Ji et al. 2024, eq. 16): ``q_w (log q_w - log(1-eps)) + q_l (log q_l -
      log eps)``, ``q_w = sigmoid(beta h)``, ``q_l = 1 - q_w``. With ``label_smoothing=0`` the
      paper's 1e-3 is used (as TRL 0.28; TRL 1.16 returns inf there).
    - ``"nca_pair"`` (Chen et al. 2024): ``-log sigmoid(r_w) - (log sigmoid(-r_w) + log
      sigmoid(-r_l)) / 2``.
    - ``"robust"`` (Chowdhury et al. 2024): ``(-(1-eps) log sigmoid(beta h) + eps log
      sigmoid(-beta h)) / (1 - 2 eps)``, ``eps`` in [0, 0.5).
    - ``"bco_pair"`` (Jung et al. 2024): ``-log sigmoid(r_w) - log sigmoid(-r_l)`` (TRL 0.28
      subtracted a running mean of the rewards; 1.x does not).
    - ``"sppo_hard"`` (Wu et al. 2024, hard labels): ``(u_w - 1/(2 beta))^2 + (u_l +
      1/(2 beta))^2``.
    - ``"aot"`` / ``"aot_unpaired"`` (Melnyk et al. 2024): the batch's sorted chosen-minus-rejected
      policy log-ratios against the sorted reference ones (``"aot"``), or the sorted ``u_w``
      against the sorted ``u_l`` (``"aot_unpaired"``), through the label-smoothed logistic
      loss. The sort couples the pairs of a batch (the loss of a pair depends on the others).
    - ``"apo_zero"`` / ``"apo_down"`` (D'Oosterlinck et al. 2024, eqs. 7 and 8): ``1 -
      sigmoid(r_w) + sigmoid(r_l)`` / ``sigmoid(r_w) + 1 - sigmoid(r_w - r_l)``.
    - ``"discopop"`` (Chris Lu et al. 2024, eq. 5): ``(1 - m) (-log sigmoid(beta h)) + m
      e^{-beta h}``, ``m = sigmoid(beta h / tau)``, ``tau = discopop_tau`` (0.05).
    - ``"sft"``: the negative log-likelihood of the chosen responses per token,
      ``-sum_b logp_w / sum_b n_w`` (one value for the batch; without token counts, the mean
      sequence NLL).
    - ``"sigmoid_norm"``: ``-log sigmoid(beta (u_w / n_w - u_l / n_l))`` (TRL 1.x only).

    Several types combine as ``sum_t w_t mean_b loss_t`` (``loss_weights``, default all 1), as
    TRL's ``loss_type`` list (e.g. MPO: ``["sigmoid", "bco_pair", "sft"]`` with ``[0.8, 0.2,
    1.0]``). Checked against TRL 1.16's ``DPOTrainer._compute_loss`` (driven with given
    per-token log-probabilities) for every type and combinations, values and gradients in
    float64, and against TRL 0.28's ``dpo_loss`` where the two versions agree.

    Args:
        beta: the KL strength (0.1, TRL's default; for ``"ipo"`` it is the paper's tau).
        loss_type, loss_weights: as TRL.
        label_smoothing: eps of ``"robust"``, ``"exo_pair"``, ``"aot"``, ``"aot_unpaired"`` (and
            of ``"sigmoid"`` with ``conservative``); 0.
        discopop_tau: 0.05.
        f_divergence_type: ``"reverse_kl"`` (default, DPO), ``"forward_kl"``,
            ``"js_divergence"`` or ``"alpha_divergence"`` (with ``f_alpha_divergence_coef``,
            0.5): allowed for the types built on ``h`` only, as TRL 1.16.
        reference_free: no reference model (its log-probabilities are 0), as TRL 0.28's flag.
        conservative: ``"sigmoid"`` with label smoothing (cDPO, TRL 0.28's ``"sigmoid"``).
        reduction: ``"mean"`` (TRL), ``"sum"``, or ``"none"``: the weighted per-pair losses [B].

    Call: ``loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps,
    chosen_tokens=None, rejected_tokens=None)``, each [B]: summed log-probabilities of the
    completions and (optional) their token counts. Not covered: TRL's WPO weighting and LD-DPO
    (both need per-token log-probabilities; compute the sums as they define them).
    """

    def __init__(
        self,
        beta: float = 0.1,
        loss_type: str | Sequence[str] = "sigmoid",
        loss_weights: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
        discopop_tau: float = 0.05,
        f_divergence_type: str = "reverse_kl",
        f_alpha_divergence_coef: float = 0.5,
        reference_free: bool = False,
        conservative: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.beta = check_positive(beta, "beta")
        self.loss_types, self.loss_weights = check_loss_types(loss_type, loss_weights)
        high = 0.5 if "robust" in self.loss_types else 1.0
        self.label_smoothing = check_real(
            label_smoothing, "label_smoothing", low=0.0, high=high, high_open=True
        )
        self.discopop_tau = check_positive(discopop_tau, "discopop_tau")
        self.f_divergence_type = check_choice(f_divergence_type, "f_divergence_type", F_DIVERGENCES)
        if self.f_divergence_type != "reverse_kl":
            bad = [t for t in self.loss_types if t not in F_DIVERGENCE_LOSS_TYPES]
            if bad:
                raise PairLossError(
                    f"f_divergence_type: {self.f_divergence_type!r} is defined only for the loss "
                    f"types {F_DIVERGENCE_LOSS_TYPES}; got {bad}"
                )
        self.f_alpha_divergence_coef = check_positive(
            f_alpha_divergence_coef, "f_alpha_divergence_coef"
        )
        self.reference_free = check_bool(reference_free, "reference_free")
        self.conservative = check_bool(conservative, "conservative")
        self.reduction = check_reduction(reduction, PAIR_REDUCTIONS)

    def forward(
        self,
        chosen_logps: torch.Tensor,
        rejected_logps: torch.Tensor,
        ref_chosen_logps: torch.Tensor | None = None,
        ref_rejected_logps: torch.Tensor | None = None,
        chosen_tokens: torch.Tensor | None = None,
        rejected_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of a batch of preference pairs (each argument [B]); a scalar, or [B] with
        ``reduction="none"``."""
        c, r, rc, rr, tc, tr = pair_inputs(
            chosen_logps,
            rejected_logps,
            None if self.reference_free else ref_chosen_logps,
            None if self.reference_free else ref_rejected_logps,
            chosen_tokens,
            rejected_tokens,
            need_reference=not self.reference_free,
        )
        kind, coef = self.f_divergence_type, self.f_alpha_divergence_coef
        sc = f_divergence_scores(c - rc, kind, coef)
        sr = f_divergence_scores(r - rr, kind, coef)
        total = None
        for loss_type, weight in zip(self.loss_types, self.loss_weights):
            per_pair = dpo_type_losses(
                loss_type,
                c,
                r,
                rc,
                rr,
                sc,
                sr,
                tc,
                tr,
                self.beta,
                self.label_smoothing,
                self.discopop_tau,
            )
            if loss_type == "sigmoid" and self.conservative and self.label_smoothing > 0:
                z = self.beta * (sc - sr)
                eps = self.label_smoothing
                per_pair = -(1.0 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)
            part = weight * per_pair
            total = part if total is None else total + part
        if self.reduction == "none":
            out = total
        elif self.reduction == "sum":
            out = total.sum()
        else:
            out = total.mean()
        return out.to(torch.as_tensor(chosen_logps).dtype)


def dpo(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    chosen_tokens: torch.Tensor | None = None,
    rejected_tokens: torch.Tensor | None = None,
    beta: float = 0.1,
    loss_type: str | Sequence[str] = "sigmoid",
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`DPOLoss` (same arguments and defaults)."""
    return DPOLoss(beta, loss_type, **kwargs)(
        chosen_logps,
        rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        chosen_tokens,
        rejected_tokens,
    )
