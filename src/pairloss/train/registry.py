"""Loss and miner construction by name for the trainer and the command line.

A name matches case-insensitively, ignoring ``-``, ``_``, spaces and a trailing ``loss`` /
``miner`` (:func:`pairloss.catalogue.name_key`): ``multi_similarity``, ``MultiSimilarityLoss``
and ``multi-similarity`` are the same loss. An unknown name raises :class:`PairLossError` with
the closest known names.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from torch import nn

from .. import miners as miner_module
from ..catalogue import find, name_key
from ..errors import PairLossError


def loss_class(name: str) -> type:
    """The loss class called ``name`` (catalogue name, class name or alias; see
    :func:`pairloss.catalogue.find`)."""
    return find(name).load()


def miner_class(name: str) -> type:
    """The miner class called ``name`` (e.g. ``multi_similarity`` or ``BatchHardMiner``)."""
    if not isinstance(name, str) or not name.strip():
        raise PairLossError(f"miner: expected a miner name, got {name!r}")
    listing = [n for n in miner_module.__all__ if n.endswith("Miner") and n != "Miner"]
    table = {name_key(n, "miner"): getattr(miner_module, n) for n in listing}
    cls = table.get(name_key(name, "miner"))
    if cls is None:
        close = difflib.get_close_matches(name, listing, n=3, cutoff=0.4)
        close += [n for n in listing if name_key(name, "miner") in name_key(n) and n not in close]
        hint = f"; did you mean {', '.join(close[:4])}?" if close else ""
        raise PairLossError(f"miner: unknown miner {name!r}{hint}; expected one of {listing}")
    return cls


def accepted_arguments(cls: type) -> set[str]:
    """The keyword arguments ``cls(...)`` accepts, following ``**kwargs`` up the base classes."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters
        names.update(
            n
            for n, p in params.items()
            if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        )
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break
    return names


def build_loss(
    name: str,
    options: dict[str, Any],
    num_classes: int | None = None,
    embedding_size: int | None = None,
) -> nn.Module:
    """Instantiate loss ``name`` with ``options``; ``num_classes`` and ``embedding_size`` are
    passed to losses that own class parameters (proxies, classifier weights) when given."""
    cls = loss_class(name)
    params = accepted_arguments(cls)
    kwargs = dict(options)
    for key, value in (("num_classes", num_classes), ("embedding_size", embedding_size)):
        if key in params and key not in kwargs and value is not None:
            kwargs[key] = value
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        raise PairLossError(
            f"loss_options: {cls.__name__} has no option {unknown[0]!r}; expected one of "
            f"{', '.join(sorted(params))}"
        )
    if "miner" in options:
        raise PairLossError(
            f"loss_options: choose the miner by name with --miner (got miner={options['miner']!r})"
        )
    try:
        return cls(**kwargs)
    except PairLossError as exc:
        raise PairLossError(f"loss_options: {cls.__name__}: {exc}") from None
    except (TypeError, ValueError, ArithmeticError) as exc:  # a constructor without validators
        raise PairLossError(
            f"loss_options: {cls.__name__}({_shown(options)}) was refused: {exc}"
        ) from None


def _shown(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in options.items())


def build_miner(name: str | None) -> nn.Module | None:
    """The miner called ``name`` with its default settings, or ``None``."""
    return None if name is None else miner_class(name)()
