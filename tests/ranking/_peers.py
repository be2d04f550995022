"""The reference implementations, loaded without their package imports.

allRank's package ``__init__`` (and its data module) import torchvision and other things the
losses never use, so each loss file is loaded on its own with importlib, with the few names it
imports from the package provided by small stand-in modules. sentence-transformers'
cross-encoder losses take a CrossEncoder; they are driven with a stand-in model whose scores are
given logits.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path

import torch

_ALLRANK = None


def _allrank_dir() -> Path:
    spec = importlib.machinery.PathFinder.find_spec("allrank")
    if spec is None or spec.origin is None:
        raise ImportError("allRank is not installed")
    return Path(spec.origin).parent


def allrank() -> types.SimpleNamespace:
    """allRank 1.4.3's loss functions and metrics: ``lambdaLoss``, ``rankNet``, ``listNet``,
    ``listMLE``, ``approxNDCGLoss``, ``neuralNDCG``, ``neuralNDCG_transposed``, ``ndcg``,
    ``dcg``, ``mrr``, and the weighting scheme functions."""
    global _ALLRANK
    if _ALLRANK is not None:
        return _ALLRANK
    root = _allrank_dir()
    saved = {k: sys.modules.get(k) for k in _STUBS}
    try:
        for name in _STUBS:
            sys.modules[name] = types.ModuleType(name)
        sys.modules["allrank"].__path__ = [str(root)]
        sys.modules["allrank.data.dataset_loading"].PADDED_Y_VALUE = -1
        sys.modules["allrank.models.losses"].DEFAULT_EPS = 1e-10
        sys.modules["allrank.models.model_utils"].get_torch_device = lambda: torch.device("cpu")
        out = {}
        metrics = _load(root / "models" / "metrics.py", "allrank.models.metrics")
        sys.modules["allrank.models.metrics"] = metrics
        utils = _load(
            root / "models" / "losses" / "loss_utils.py", "allrank.models.losses.loss_utils"
        )
        sys.modules["allrank.models.losses.loss_utils"] = utils
        for file in ("lambdaLoss", "rankNet", "listNet", "listMLE", "approxNDCG", "neuralNDCG"):
            module = _load(
                root / "models" / "losses" / f"{file}.py", f"allrank.models.losses.{file}"
            )
            out.update(
                {k: v for k, v in vars(module).items() if callable(v) and not k.startswith("_")}
            )
        out.update(ndcg=metrics.ndcg, dcg=metrics.dcg, mrr=metrics.mrr)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    _ALLRANK = types.SimpleNamespace(**out)
    return _ALLRANK


_STUBS = (
    "allrank",
    "allrank.data",
    "allrank.data.dataset_loading",
    "allrank.models",
    "allrank.models.losses",
    "allrank.models.model_utils",
    "allrank.models.metrics",
    "allrank.models.losses.loss_utils",
)


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_cross_encoder(logits: torch.Tensor) -> torch.nn.Module:
    """A stand-in for a sentence-transformers CrossEncoder (an instance of its class, built
    without loading a model): ``preprocess`` passes the (query, document) pairs through, and
    the forward pass returns, as ``scores``, the logit that the test assigned to each document
    (a document is the integer index of its logit)."""
    from sentence_transformers.cross_encoder import CrossEncoder

    class FakeCrossEncoder(CrossEncoder):
        def __init__(self, logits: torch.Tensor) -> None:
            torch.nn.Module.__init__(self)
            self.logits = logits

        num_labels = 1

        @property
        def device(self) -> torch.device:
            return self.logits.device

        def preprocess(self, pairs, prompt=None, task=None):
            return {"index": torch.tensor([doc for _, doc in pairs], dtype=torch.long)}

        def forward(self, tokens):
            return {"scores": self.logits[tokens["index"]][:, None]}

    return FakeCrossEncoder(logits)


def st_losses():
    """sentence-transformers' cross-encoder loss module."""
    from sentence_transformers.cross_encoder import losses

    return losses


def st_call(loss_cls, scores: torch.Tensor, labels: torch.Tensor, lengths, **kwargs):
    """Run a sentence-transformers list loss on a slate: query q has ``lengths[q]`` documents
    whose logits are ``scores[q, :lengths[q]]`` and labels ``labels[q, :lengths[q]]``."""
    flat = torch.cat([scores[q, :n] for q, n in enumerate(lengths)])
    model = fake_cross_encoder(flat)
    docs, start = [], 0
    for n in lengths:
        docs.append(list(range(start, start + n)))
        start += n
    queries = [f"q{q}" for q in range(len(lengths))]
    label_list = [labels[q, :n] for q, n in enumerate(lengths)]
    loss = loss_cls(model, **kwargs)
    return loss([queries, docs], label_list)


@contextlib.contextmanager
def float64_peer():
    """Run a peer's code in float64: its ``.float()`` casts and default-dtype allocations
    (allRank computes discounts with ``.float()``, sentence-transformers casts the logits and
    labels with ``.float()``) become float64, so that its formula can be compared with ours to
    rounding. Only the precision changes, never the formula."""
    saved_float, saved_default = torch.Tensor.float, torch.get_default_dtype()
    torch.Tensor.float = lambda self, *args, **kwargs: self.double()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.Tensor.float = saved_float
        torch.set_default_dtype(saved_default)
