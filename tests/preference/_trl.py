"""TRL's trainers driven with given log-probabilities.

TRL 1.16's ``DPOTrainer._compute_loss`` and ``KTOTrainer._compute_loss`` take a model and a
tokenised batch. They are run here as unbound methods on a stand-in trainer (the attributes the
method reads, set as TRL's constructor sets them from its config) with a stand-in model whose
per-token log-probabilities spread each given sequence log-probability evenly over its
completion tokens (0 on prompt and padding tokens, where TRL's fused head returns 0), so TRL's
own sums give back the given values and their gradients flow to them. CPO's, ORPO's and the
reward trainer's losses take log-probabilities or rewards directly.
"""

from __future__ import annotations

import ast
import enum
import types
from collections import defaultdict
from pathlib import Path

import torch

PROMPT = 2  # prompt tokens before every completion


def _accelerator():
    return types.SimpleNamespace(
        device=torch.device("cpu"), gather_for_metrics=lambda x: x, gather=lambda x: x
    )


def _batch(logps: torch.Tensor, tokens: torch.Tensor):
    """Token tensors of a batch whose completion i has ``tokens[i]`` tokens, and the per-token
    log-probabilities [N, T-1] that sum to ``logps[i]`` over them."""
    n = tokens.long()
    width = PROMPT + int(n.max())
    pos = torch.arange(width)[None, :]
    completion = ((pos >= PROMPT) & (pos < PROMPT + n[:, None])).long()
    attention = (pos < PROMPT + n[:, None]).long()
    shift = completion[:, 1:].to(logps.dtype)
    per_token = shift * (logps / n.to(logps.dtype))[:, None]
    ids = torch.ones_like(attention)
    return ids, attention, completion, per_token


class _Model:
    """Returns the given per-token log-probabilities (and zeros for the logged extras)."""

    training = True

    def __init__(self, per_token: torch.Tensor) -> None:
        self.per_token = per_token

    def __call__(self, **kwargs):
        z = torch.zeros_like(self.per_token)
        return types.SimpleNamespace(
            log_probs=self.per_token,
            entropy=z,
            mean_logits=z,
            is_top1=torch.zeros_like(z, dtype=torch.bool),
        )


def trl_dpo(
    chosen, rejected, ref_chosen, ref_rejected, chosen_tokens, rejected_tokens, **config
) -> tuple[torch.Tensor, dict]:
    """TRL 1.16's DPO loss and logged metrics for the given sequence log-probabilities.
    ``config``: DPOConfig fields (beta, loss_type, loss_weights, label_smoothing,
    discopop_tau, f_divergence_type, f_alpha_divergence_coef)."""
    from trl import DPOTrainer

    loss_type = config.get("loss_type", ["sigmoid"])
    loss_type = [loss_type] if isinstance(loss_type, str) else list(loss_type)
    weights = config.get("loss_weights") or [1.0] * len(loss_type)
    ids, attention, completion, per_token = _batch(
        torch.cat([chosen, rejected]), torch.cat([chosen_tokens, rejected_tokens])
    )
    model = _Model(per_token)
    trainer = types.SimpleNamespace(
        model=model,
        accelerator=_accelerator(),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type=config.get("f_divergence_type", "reverse_kl"),
        f_alpha_divergence_coef=config.get("f_alpha_divergence_coef", 0.5),
        loss_types=loss_type,
        loss_weights=weights,
        beta=config.get("beta", 0.1),
        label_smoothing=config.get("label_smoothing", 0.0),
        use_weighting=False,
        args=types.SimpleNamespace(discopop_tau=config.get("discopop_tau", 0.05)),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": ids,
        "attention_mask": attention,
        "completion_mask": completion,
        "ref_chosen_logps": ref_chosen,
        "ref_rejected_logps": ref_rejected,
    }
    loss = DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return loss, metrics


def trl_kto(logps, ref_logps, labels, kl_logps, ref_kl_logps, tokens, **config):
    """TRL 1.16's KTO loss (and metrics) for given sequence log-probabilities of unpaired
    completions with boolean ``labels`` (desirable or not) and of the mismatched completions
    used for the KL estimate."""
    from trl import KTOTrainer

    ids, attention, completion, per_token = _batch(logps, tokens)
    _, _, kl_completion, kl_per_token = _batch(kl_logps, tokens)
    loss_type = config.get("loss_type", "kto")
    calculate_kl = loss_type != "apo_zero_unpaired"
    calls = iter([kl_per_token, per_token] if calculate_kl else [per_token])

    class _TwoCalls(_Model):
        def __call__(self, **kwargs):
            self.per_token = next(calls)
            return super().__call__(**kwargs)

    model = _TwoCalls(per_token)
    trainer = types.SimpleNamespace(
        model=model,
        accelerator=_accelerator(),
        aux_loss_enabled=False,
        precompute_ref_logps=True,
        calculate_KL=calculate_kl,
        loss_type=loss_type,
        beta=config.get("beta", 0.1),
        desirable_weight=config.get("desirable_weight", 1.0),
        undesirable_weight=config.get("undesirable_weight", 1.0),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    trainer._compute_kl_logps = lambda m, batch: KTOTrainer._compute_kl_logps(trainer, m, batch)
    inputs = {
        "input_ids": ids,
        "attention_mask": attention,
        "completion_mask": completion,
        "KL_input_ids": ids,
        "KL_attention_mask": attention,
        "KL_completion_mask": kl_completion,
        "label": labels,
        "ref_logps": ref_logps,
        "ref_KL_logps": ref_kl_logps,
    }
    loss = KTOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    return loss, {k: v[-1] for k, v in trainer._metrics["train"].items()}


def trl_cpo_loss(chosen, rejected, **config):
    """TRL 1.16 (experimental) ``CPOTrainer.cpo_loss`` per-pair losses and rewards."""
    from trl.experimental.cpo import CPOTrainer

    trainer = types.SimpleNamespace(
        accelerator=_accelerator(),
        alpha=config.get("alpha", 0.0),
        beta=config.get("beta", 0.1),
        label_smoothing=config.get("label_smoothing", 0.0),
        loss_type=config.get("loss_type", "sigmoid"),
        simpo_gamma=config.get("simpo_gamma", 0.5),
    )
    return CPOTrainer.cpo_loss(trainer, chosen, rejected)


def trl_orpo_loss(chosen, rejected, beta=0.1):
    """TRL 1.16 (experimental) ``ORPOTrainer.odds_ratio_loss`` on token-averaged
    log-probabilities."""
    from trl.experimental.orpo import ORPOTrainer

    trainer = types.SimpleNamespace(accelerator=_accelerator(), beta=beta)
    return ORPOTrainer.odds_ratio_loss(trainer, chosen, rejected)


def trl_reward_loss(rewards_chosen, rewards_rejected, margin=None, center=None):
    """TRL 1.16 ``RewardTrainer.compute_loss`` with a stand-in model returning the rewards."""
    from trl import RewardTrainer

    logits = torch.cat([rewards_chosen, rewards_rejected])[:, None]
    model = lambda **kwargs: types.SimpleNamespace(logits=logits)  # noqa: E731
    model.training = True
    trainer = types.SimpleNamespace(
        model=model,
        accelerator=_accelerator(),
        args=types.SimpleNamespace(center_rewards_coefficient=center),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {"attention_mask": torch.ones(logits.shape[0], 3, dtype=torch.long)}
    if margin is not None:
        inputs["margin"] = margin
    loss = RewardTrainer.compute_loss(trainer, model, inputs)
    return loss, {k: v[-1] for k, v in trainer._metrics["train"].items()}


PEER_028 = Path(__file__).resolve().parents[2] / ".peers" / "trl028" / "trl" / "trainer"


def _definitions(path: Path, names: set[str]) -> list[ast.stmt]:
    """The top-level (or class-level) definitions called ``names`` in a source file."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names:
            found.append(node)
    return found


def trl028_dpo_loss():
    """TRL 0.28's ``DPOTrainer.dpo_loss`` (which takes log-probabilities directly), or None when
    TRL 0.28 is not in ``.peers/trl028`` (``pip install --no-deps --target .peers/trl028
    trl==0.28.*``). Its trainer module imports optional packages that are not installed here, so
    the function is taken from the file with the few definitions it reads (the f-divergence
    enum and constants, ``cap_exp``), unchanged, and run on a stand-in trainer."""
    if not PEER_028.is_dir():
        return None
    body = _definitions(PEER_028 / "dpo_config.py", {"FDivergenceType", "FDivergenceConstants"})
    body += _definitions(PEER_028 / "utils.py", {"get_exp_cap", "cap_exp"})
    body += _definitions(PEER_028 / "dpo_trainer.py", {"dpo_loss"})
    namespace = {"torch": torch, "F": torch.nn.functional, "Enum": enum.Enum}
    exec(compile(ast.Module(body=body, type_ignores=[]), "trl028", "exec"), namespace)  # noqa: S102
    fn = namespace["dpo_loss"]

    def dpo_loss(chosen, rejected, ref_chosen, ref_rejected, loss_type, **config):
        trainer = types.SimpleNamespace(
            accelerator=_accelerator(),
            reference_free=False,
            f_divergence_type=namespace["FDivergenceType"].REVERSE_KL,
            f_divergence_params=None,
            beta=config.get("beta", 0.1),
            label_smoothing=config.get("label_smoothing", 0.0),
            args=types.SimpleNamespace(discopop_tau=config.get("discopop_tau", 0.05)),
        )
        return fn(trainer, chosen, rejected, ref_chosen, ref_rejected, loss_type)

    return dpo_loss
