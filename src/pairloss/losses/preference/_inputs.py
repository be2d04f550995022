"""Input checks of the preference losses: pairs of sequence log-probabilities and lists of K."""

from __future__ import annotations

import torch

from ...engine import compute_dtype
from ...errors import PairLossError
from ...validation import (
    check_logps,
    check_same_device,
    check_scores_matrix,
    check_tensor,
    check_token_counts,
)


def pair_inputs(
    chosen_logps: object,
    rejected_logps: object,
    ref_chosen_logps: object = None,
    ref_rejected_logps: object = None,
    chosen_tokens: object = None,
    rejected_tokens: object = None,
    need_reference: bool = True,
) -> tuple[torch.Tensor, ...]:
    """Checked pair inputs, in the compute dtype (fp32 for half inputs): ``(chosen, rejected,
    ref_chosen, ref_rejected, chosen_tokens, rejected_tokens)``, each [B]. A missing reference
    is 0 (reference-free) unless ``need_reference``; missing token counts are 1 (sequence-level
    log-probabilities)."""
    chosen = check_logps(chosen_logps, "chosen_logps")
    rejected = check_logps(rejected_logps, "rejected_logps", chosen, "chosen_logps")
    if (ref_chosen_logps is None) != (ref_rejected_logps is None):
        raise PairLossError(
            "ref_chosen_logps, ref_rejected_logps: only one was given; expected both or neither"
        )
    if ref_chosen_logps is None:
        if need_reference:
            raise PairLossError(
                "ref_chosen_logps: required (the reference model's log-probabilities, [batch]); "
                "pass reference_free=True for a loss without reference"
            )
        ref_c = torch.zeros_like(chosen)
        ref_r = torch.zeros_like(chosen)
    else:
        ref_c = check_logps(ref_chosen_logps, "ref_chosen_logps", chosen, "chosen_logps")
        ref_r = check_logps(ref_rejected_logps, "ref_rejected_logps", chosen, "chosen_logps")
    if (chosen_tokens is None) != (rejected_tokens is None):
        raise PairLossError(
            "chosen_tokens, rejected_tokens: only one was given; expected both or neither"
        )
    if chosen_tokens is None:
        tok_c = torch.ones_like(chosen)
        tok_r = torch.ones_like(chosen)
    else:
        tok_c = check_token_counts(chosen_tokens, "chosen_tokens", chosen, "chosen_logps")
        tok_r = check_token_counts(rejected_tokens, "rejected_tokens", chosen, "chosen_logps")
    dtype = compute_dtype(chosen)
    return tuple(t.to(dtype) for t in (chosen, rejected, ref_c, ref_r, tok_c, tok_r))


def list_inputs(
    logps: object,
    ref_logps: object,
    targets: object,
    mask: object = None,
    targets_name: str = "rewards",
    need_reference: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Checked list inputs: ``logps`` [B, K] (policy), ``ref_logps`` [B, K] (reference; None
    means 0 when not ``need_reference``), ``targets`` [B, K] (rewards, labels or
    probabilities) and an optional boolean ``mask`` [B, K] (True = a real response). Padded
    responses may hold anything. Returns ``(logps, ref_logps, targets, valid)`` in the compute
    dtype, with 0 at padding."""
    x = check_scores_matrix(logps, "logps")
    valid = torch.ones_like(x, dtype=torch.bool)
    if mask is not None:
        mask = check_tensor(mask, "mask")
        if tuple(mask.shape) != tuple(x.shape) or mask.dtype != torch.bool:
            raise PairLossError(
                f"mask: expected a boolean tensor of shape {tuple(x.shape)}, got dtype "
                f"{mask.dtype} and shape {tuple(mask.shape)}"
            )
        check_same_device(x, mask, "logps", "mask")
        valid = mask
    if ref_logps is None:
        if need_reference:
            raise PairLossError(
                "ref_logps: required (the reference model's log-probabilities, [batch, K])"
            )
        ref = torch.zeros_like(x)
    else:
        ref = check_scores_matrix(ref_logps, "ref_logps")
        _same_layout(x, ref, "ref_logps")
    t = check_tensor(targets, targets_name)
    if tuple(t.shape) != tuple(x.shape) or t.is_complex():
        raise PairLossError(
            f"{targets_name}: expected a real tensor of shape {tuple(x.shape)} (one per "
            f"response), got dtype {t.dtype} and shape {tuple(t.shape)}"
        )
    check_same_device(x, t, "logps", targets_name)
    dtype = compute_dtype(x)
    out = []
    for name, v in (("logps", x), ("ref_logps", ref), (targets_name, t)):
        v = v.to(dtype)
        bad = valid & ~torch.isfinite(v)
        if bool(bad.any()):
            rows = bad.any(dim=1).nonzero().flatten()[:5].tolist()
            raise PairLossError(
                f"{name}: contains NaN or Inf at real responses of list(s) {rows}; expected "
                "finite values"
            )
        out.append(torch.where(valid, v, torch.zeros((), dtype=dtype, device=v.device)))
    return out[0], out[1], out[2], valid


def _same_layout(x: torch.Tensor, other: torch.Tensor, name: str) -> None:
    if tuple(other.shape) != tuple(x.shape):
        raise PairLossError(
            f"{name}: has shape {tuple(other.shape)} but logps has {tuple(x.shape)}; expected "
            "the same shape"
        )
    check_same_device(x, other, "logps", name)
    if other.dtype != x.dtype:
        raise PairLossError(f"{name}: has dtype {other.dtype} but logps has {x.dtype}")
