"""The peer libraries' loss modules, loaded from their installed files.

open_clip and lightly are installed without their dependencies (their package ``__init__``
imports torchvision, which is not installed), so each module file is executed on its own with
importlib; the few package modules it imports and does not use for these losses are stubbed while
it loads (and removed from ``sys.modules`` afterwards).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from functools import cache
from pathlib import Path

import pytest


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{name} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def _load(path: Path, name: str, stubs: dict[str, types.ModuleType]) -> types.ModuleType:
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return module


@cache
def open_clip_loss() -> types.ModuleType:
    """``open_clip/loss.py`` (ClipLoss, SigLipLoss)."""
    return _load(_package_dir("open_clip") / "loss.py", "_peer_open_clip_loss", {})


@cache
def lightly_module(relative: str) -> types.ModuleType:
    """A module file of lightly, e.g. ``"loss/ntx_ent_loss.py"``; ``lightly.utils.dist`` and
    the memory bank load for real, ``lightly.models.utils`` (torchvision) is a stub."""
    root = _package_dir("lightly")
    dist = _load(root / "utils" / "dist.py", "_peer_lightly_dist", {})
    package = types.ModuleType("lightly")
    package.__path__ = []
    utils = types.ModuleType("lightly.utils")
    utils.__path__ = []
    utils.dist = dist
    models = types.ModuleType("lightly.models")
    models.__path__ = []
    model_utils = types.ModuleType("lightly.models.utils")
    modules = types.ModuleType("lightly.models.modules")
    modules.__path__ = []
    models.utils = model_utils
    stubs = {
        "lightly": package,
        "lightly.utils": utils,
        "lightly.utils.dist": dist,
        "lightly.models": models,
        "lightly.models.utils": model_utils,
        "lightly.models.modules": modules,
    }
    bank = _load(root / "models" / "modules" / "memory_bank.py", "_peer_lightly_bank", stubs)
    stubs["lightly.models.modules.memory_bank"] = bank
    modules.memory_bank = bank
    name = "_peer_lightly_" + relative.replace("/", "_").removesuffix(".py")
    return _load(root / relative, name, stubs)
