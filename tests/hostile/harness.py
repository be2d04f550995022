"""The rule every hostile case checks, and helpers shared by the generated layers.

A case calls the library with one hostile input. The outcome must be either

- a :class:`pairloss.PairLossError` whose message names the offending argument (or, for a
  mismatch between two arguments, one of them), or
- a finite result (every tensor and float in it finite; ``None`` where a value is documented
  as undefined) that is right: equal to a reference value where the case has one.

Any other exception, a NaN or an Inf fails the case. Some cases are strict: only the error is
acceptable (NaN in an input, a device mismatch, a NaN hyper-parameter, ...).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing
from collections.abc import Callable, Iterable

import torch

from pairloss import PairLossError


class Refused(Exception):
    """The call raised a :class:`PairLossError` that names one of the expected arguments."""


def outcome(call: Callable[[], object], names: Iterable[str], rule: str = "either", what=""):
    """Run ``call``; return its result, or raise :class:`Refused` for a well-formed refusal.

    ``rule``: ``"either"`` (a refusal naming one of ``names`` or a result), ``"strict"`` (only
    such a refusal) or ``"valid"`` (only a result: the input is valid). Fails (AssertionError)
    on any other exception and on a refusal that names none of ``names``."""
    names = tuple(names)
    try:
        result = call()
    except PairLossError as err:
        msg = str(err)
        assert rule != "valid", f"{what}: valid input refused: {msg!r}"
        assert any(n in msg for n in names), f"{what}: PairLossError names none of {names}: {msg!r}"
        raise Refused(msg) from None
    except Exception as err:  # noqa: BLE001 - every other exception is the failure we look for
        raise AssertionError(
            f"{what}: {type(err).__name__} instead of PairLossError: {err}"
        ) from err
    assert rule != "strict", f"{what}: expected a PairLossError naming one of {names}, got a result"
    return result


def leaves(result: object, path: str = "result"):
    """Every (path, number or tensor) in a result: tensors, floats, ints, containers and
    dataclasses are walked; strings, bools and None are skipped."""
    if result is None or isinstance(result, (str, bool)):
        return
    if isinstance(result, (torch.Tensor, int, float)):
        yield path, result
    elif isinstance(result, dict):
        for k, v in result.items():
            yield from leaves(v, f"{path}[{k!r}]")
    elif isinstance(result, (list, tuple)):
        for i, v in enumerate(result):
            yield from leaves(v, f"{path}[{i}]")
    elif dataclasses.is_dataclass(result):
        for f in dataclasses.fields(result):
            yield from leaves(getattr(result, f.name), f"{path}.{f.name}")
    elif hasattr(result, "__dict__"):
        for k, v in vars(result).items():
            if not k.startswith("_"):
                yield from leaves(v, f"{path}.{k}")


def assert_finite(result: object, what: str = "") -> None:
    """Every number and floating tensor in ``result`` is finite."""
    for path, v in leaves(result):
        if isinstance(v, torch.Tensor):
            if v.is_floating_point() or v.is_complex():
                assert bool(torch.isfinite(v).all()), f"{what}: {path} is not finite: {v}"
        else:
            assert math.isfinite(v), f"{what}: {path} = {v}"


def assert_close(
    a: torch.Tensor, b: torch.Tensor, rtol: float, what: str = "", scale: float = 0.0
) -> None:
    """``a`` equals ``b`` to ``rtol`` relative to the largest entry of ``b`` or to ``scale``,
    whichever is larger (entries near zero are compared on the scale of the whole tensor, and a
    gradient that is zero but for rounding on the scale its inputs give it)."""
    a, b = a.detach().to(torch.float64), b.detach().to(torch.float64)
    assert a.shape == b.shape, f"{what}: shapes {tuple(a.shape)} != {tuple(b.shape)}"
    if a.numel() == 0:
        return
    scale = max(float(b.abs().max()), scale)
    err = float((a - b).abs().max())
    assert err <= rtol * max(scale, 1e-300), (
        f"{what}: differ by {err:.3g} (scale {scale:.3g}, rtol {rtol:g})"
    )


def tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance for two computations of the same value in ``dtype``."""
    return {torch.float64: 1e-7, torch.float32: 2e-4}.get(dtype, 2e-2)


# ---------------------------------------------------------------------------- hyper-parameters


@dataclasses.dataclass(frozen=True)
class Param:
    """One constructor parameter: its name, default (``inspect.Parameter.empty`` if required)
    and the set of accepted kinds read from its type hint (``float``, ``int``, ``bool``,
    ``str``, ``None``, ``other``)."""

    name: str
    default: object
    kinds: frozenset


def _kinds(hint) -> frozenset:
    out = set()
    for t in typing.get_args(hint) or (hint,):
        if t is type(None) or t is None:
            out.add("None")
        elif t in (float, int, bool, str):
            out.add(t.__name__)
        elif typing.get_args(t):
            out |= _kinds(t)
        else:
            out.add("other")
    return frozenset(out)


def param_of(fn: Callable, name: str) -> Param:
    """Parameter ``name`` of the function ``fn``."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - a hint that does not resolve means "other"
        hints = {}
    p = inspect.signature(fn).parameters[name]
    return Param(name, p.default, _kinds(hints.get(name, object)))


def constructor_params(cls: type) -> list[Param]:
    """The parameters of ``cls.__init__``, following ``**kwargs`` up the class hierarchy (a
    parameter a subclass passes itself is not repeated)."""
    seen: dict[str, Param] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # noqa: BLE001 - a hint that does not resolve means "other"
            hints = {}
        more = False
        for name, p in inspect.signature(init).parameters.items():
            if name == "self" or p.kind is p.VAR_POSITIONAL:
                continue
            if p.kind is p.VAR_KEYWORD:
                more = True
                continue
            if name not in seen:
                seen[name] = Param(name, p.default, _kinds(hints.get(name, object)))
        if not more or klass is torch.nn.Module:
            break
    return list(seen.values())


#: Hostile values for a hyper-parameter, with the rule each follows: "strict" (only a refusal
#: naming the parameter is right) or "either" (a refusal naming it, or a finite, right result).
BAD_VALUES: tuple[tuple[str, object], ...] = (
    ("nan", float("nan")),
    ("inf", float("inf")),
    ("-inf", float("-inf")),
    ("-1", -1),
    ("0", 0),
    ("string", "bogus"),
    ("True", True),
    ("None", None),
    ("2.5", 2.5),
    ("int1", 1),
    ("object", object()),
)


def rule_for(param: Param, label: str) -> str | None:
    """'strict', 'either', or None when the value is not a hostile case for ``param``."""
    kinds = param.kinds
    numeric = bool(kinds & {"float", "int"})
    if label in ("nan", "string", "object"):
        return "strict"
    if label == "True":
        return "either" if "bool" in kinds or "other" in kinds else "strict"
    if label == "None":
        return "either" if "None" in kinds or "other" in kinds else "strict"
    if label == "2.5":
        if "float" in kinds or "other" in kinds:
            return "either"
        return "strict"
    if label == "int1":
        return "strict" if kinds == {"bool"} or kinds == {"bool", "None"} else None
    if label in ("inf", "-inf", "-1", "0"):
        return "either" if numeric or "other" in kinds else "strict"
    return None
