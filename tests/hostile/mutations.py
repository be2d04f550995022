"""Hostile versions of a valid call, generated from the tensors the call holds.

:func:`mutations` takes a call (argument name -> value) whose tensors share a leading size ``n``
(the batch, where they have one) and yields :class:`Mutation` s: wrong shapes, dtypes and
devices, NaN and Inf, empty and degenerate batches, half precision, float32, and extreme
magnitudes. Nothing here knows what the tensors mean, so a new call convention (two towers,
ranking slates, preference log-probabilities, ...) is mutated as soon as it has an example.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import torch

MAGNITUDES = (1e-30, 1e-15, 1e15, 1e30)


@dataclasses.dataclass
class Mutation:
    """One hostile call.

    Attributes:
        label: what was changed, e.g. ``"labels-nan"``.
        call: the mutated call.
        rule: ``"strict"`` (only a refusal naming an argument is right), ``"either"`` (a
            refusal or a finite, right result) or ``"valid"`` (only a finite, right result).
        reference: how the result is checked when there is one: ``"same"`` (equal to the
            result of ``base``), ``"close"`` (equal to it up to the rounding of the dtype),
            ``"scaled"`` (equal to the result of ``base`` when the function is invariant to the
            scale of its floating inputs), or None.
        base: the call the reference is computed from.
        rtol: the relative tolerance of the reference.
    """

    label: str
    call: dict
    rule: str = "either"
    reference: str | None = None
    base: dict | None = None
    rtol: float = 1e-7


def tensors(call: dict) -> dict[str, torch.Tensor]:
    """The tensor arguments of ``call``."""
    return {k: v for k, v in call.items() if isinstance(v, torch.Tensor)}


def floating(call: dict) -> dict[str, torch.Tensor]:
    """The floating-point tensor arguments of ``call``."""
    return {k: v for k, v in tensors(call).items() if v.is_floating_point()}


def differentiable(call: dict) -> dict[str, torch.Tensor]:
    """The floating-point tensor arguments of ``call`` that are inputs rather than targets: a
    floating tensor whose values are all integers holds labels given as floats (graded
    relevance, class ids, counts); the example inputs (embeddings, scores, log-probabilities)
    are drawn from continuous distributions."""
    out = {}
    for k, v in floating(call).items():
        finite = v[torch.isfinite(v)] if not v.is_meta else v
        if v.is_meta or not finite.numel() or not bool((finite == finite.round()).all()):
            out[k] = v
    return out


def replace(call: dict, **changes) -> dict:
    """``call`` with some arguments replaced."""
    out = dict(call)
    out.update(changes)
    return out


def scaled(call: dict, factor: float, dtype: torch.dtype | None = None) -> dict:
    """``call`` with every floating tensor cast to ``dtype`` (if given) and multiplied by
    ``factor``."""
    return replace(call, **{k: v.to(dtype or v.dtype) * factor for k, v in floating(call).items()})


def _set_middle(t: torch.Tensor, value: float) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[t.numel() // 2] = value
    return t


def mutations(call: dict, n: int) -> Iterator[Mutation]:
    """Every hostile version of ``call`` (see the module docstring); ``n`` is the batch size of
    its tensors (those whose first dimension is ``n`` are sliced together)."""
    yield Mutation("valid-float64", call, "valid")
    for key, t in tensors(call).items():
        yield Mutation(f"{key}-ndim+1", replace(call, **{key: t.unsqueeze(-1)}), "strict")
        if t.dim() == 1:
            yield Mutation(f"{key}-ndim-1", replace(call, **{key: t[0]}), "strict")
        elif t.dim() > 1:
            yield Mutation(f"{key}-ndim-1", replace(call, **{key: t[..., 0]}))
        if t.dim() and t.shape[0] > 1:
            yield Mutation(f"{key}-rows-1", replace(call, **{key: t[:-1]}))
        if t.dim() > 1 and t.shape[1] > 1:
            yield Mutation(f"{key}-cols-1", replace(call, **{key: t[:, :-1]}))
        yield Mutation(f"{key}-meta", replace(call, **{key: t.to("meta")}), "strict")
        yield Mutation(f"{key}-complex", replace(call, **{key: t.to(torch.complex128)}))
        if t.is_floating_point():
            yield Mutation(f"{key}-int", replace(call, **{key: (t * 3).round().long()}))
            yield Mutation(f"{key}-bool", replace(call, **{key: t > 0}))
            for bad in ("nan", "inf", "-inf"):
                bad_t = _set_middle(t, float(bad))
                yield Mutation(f"{key}-{bad}", replace(call, **{key: bad_t}), "strict")
            if t.dim() == 2:
                zero = t.clone()
                zero[: t.shape[0] // 2] = 0
                yield Mutation(f"{key}-zero-rows", replace(call, **{key: zero}))
                yield Mutation(f"{key}-equal-rows", replace(call, **{key: t[:1].expand_as(t)}))
        elif t.dtype == torch.bool:
            yield Mutation(f"{key}-as-int", replace(call, **{key: t.long()}))
            yield Mutation(f"{key}-as-float", replace(call, **{key: t.double()}))
            nan = _set_middle(t.double(), float("nan"))
            yield Mutation(f"{key}-nan", replace(call, **{key: nan}), "strict")
            yield Mutation(f"{key}-all-true", replace(call, **{key: torch.ones_like(t)}))
            yield Mutation(f"{key}-all-false", replace(call, **{key: torch.zeros_like(t)}))
        else:
            same = {"reference": "same", "base": call}
            yield Mutation(f"{key}-as-float", replace(call, **{key: t.double()}), "valid", **same)
            yield Mutation(f"{key}-int32", replace(call, **{key: t.int()}), "valid", **same)
            yield Mutation(f"{key}-fraction", replace(call, **{key: t.double() + 0.5}))
            nan = _set_middle(t.double(), float("nan"))
            yield Mutation(f"{key}-nan", replace(call, **{key: nan}), "strict")
            yield Mutation(f"{key}-bool", replace(call, **{key: t > t.min()}))
            yield Mutation(f"{key}-negative", replace(call, **{key: t - t.max() - 1}))
            yield Mutation(f"{key}-one-value", replace(call, **{key: torch.zeros_like(t)}))
    batch = [k for k, v in tensors(call).items() if v.dim() and v.shape[0] == n]
    for k in (0, 1, 2, 3):
        yield Mutation(f"first-{k}-rows", replace(call, **{b: call[b][:k] for b in batch}))
    for dtype in (torch.float16, torch.bfloat16):
        half = {k: v.to(dtype) for k, v in floating(call).items()}
        rounded = {k: v.to(torch.float32) for k, v in half.items()}
        label = str(dtype).replace("torch.", "")
        yield Mutation(
            label, replace(call, **half), "valid", "close", replace(call, **rounded), 1e-2
        )
    f32 = scaled(call, 1.0, torch.float32)
    yield Mutation("float32", f32, "valid", "close", call, 1e-3)
    for dtype in (torch.float32, torch.float64):
        base = scaled(call, 1.0, dtype)
        rtol = 1e-3 if dtype == torch.float32 else 1e-7
        for m in MAGNITUDES:
            label = f"times-{m:g}-{dtype}".replace("torch.", "")
            yield Mutation(label, scaled(base, m), "either", "scaled", base, rtol)
