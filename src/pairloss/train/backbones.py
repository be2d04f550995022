"""torchvision image models as embedding backbones: ``--model torchvision:resnet50``.

torchvision is imported only when such a model is built; without it, building one raises a
:class:`PairLossError` that says how to install it. The network's last linear layer (the
ImageNet classifier: ``fc`` of a ResNet, ``classifier[-1]`` of an EfficientNet or a ConvNeXt,
``heads.head`` of a ViT) is replaced by the identity, so ``backbone(x)`` is the pooled feature
vector, and a new linear projection head maps it to the embedding.

Pretrained weights (``pretrained``):

- ``None``: random initialisation;
- ``"default"``: torchvision's default weights for the architecture
  (``torchvision.models.get_model_weights(name).DEFAULT``), loaded from the torch hub cache
  (``$TORCH_HOME/hub/checkpoints``) or downloaded there on first use;
- a path: a ``state_dict`` file of the same architecture (e.g. torchvision's ``.pth`` copied
  from another machine), loaded with ``torch.load(weights_only=True)`` and strict key matching.

Inputs are uint8 (or float in [0, 1]) ``[B, C, H, W]`` images; grey images are repeated on 3
channels, then normalised with the ImageNet mean and standard deviation that the pretrained
weights expect.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import PairLossError
from .augment import as_unit_float

PREFIX = "torchvision:"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def torchvision_models() -> ModuleType:
    """``torchvision.models``, or a :class:`PairLossError` saying how to install it."""
    try:
        return importlib.import_module("torchvision.models")
    except ImportError as exc:
        raise PairLossError(
            f"model: torchvision models need torchvision, which is not installed ({exc}); "
            f"install the build that matches torch {torch.__version__} (`pip install torchvision` "
            "from the same index as torch), or use --model cnn28, face or mlp"
        ) from None


def _last_linear(net: nn.Module) -> tuple[str, nn.Linear]:
    """The name and module of the network's last ``nn.Linear`` (its classifier)."""
    found = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise PairLossError("model: the torchvision network has no linear classifier to replace")
    return found[-1]


def _replace(net: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, child, new)


def _load_weights(net: nn.Module, path: Path, name: str) -> None:
    if not path.is_file():
        raise PairLossError(f"pretrained: {path} does not exist; expected a state_dict file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for an unreadable file
        raise PairLossError(f"pretrained: {path} is not a readable weights file ({exc})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise PairLossError(f"pretrained: {path} holds no state_dict (got {type(state).__name__})")
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise PairLossError(
            f"pretrained: {path} does not fit torchvision's {name} ({first}); expected weights "
            "of the same architecture"
        ) from None


class TorchvisionEmbedder(nn.Module):
    """A torchvision network without its classifier, plus a linear projection head.

    Args:
        name: the torchvision model name (``torchvision.models.list_models()``), e.g.
            ``"resnet50"``.
        embedding_size: output dimension D.
        pretrained: ``None``, ``"default"`` or a path (see the module docstring).
        normalize: L2-normalise the output rows (default True).

    Shapes:
        input: ``[B, C, H, W]`` uint8 or float in [0, 1], C = 1 or 3. output: ``[B, D]``.
    """

    def __init__(
        self,
        name: str,
        embedding_size: int,
        pretrained: str | None = None,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        models = torchvision_models()
        weights = None
        if pretrained == "default":
            try:
                weights = models.get_model_weights(name).DEFAULT
            except (ValueError, KeyError) as exc:
                raise PairLossError(
                    f"model: torchvision has no weights for {name!r} ({exc})"
                ) from None
        try:
            net = models.get_model(name, weights=weights)
        except (ValueError, KeyError) as exc:
            raise PairLossError(
                f"model: torchvision has no model {name!r} ({exc}); see "
                "torchvision.models.list_models()"
            ) from None
        except OSError as exc:
            raise PairLossError(
                f"pretrained: the default weights of {name} are not in the torch hub cache and "
                f"cannot be downloaded ({exc}); copy the .pth file and pass --pretrained PATH"
            ) from None
        if pretrained not in (None, "default"):
            _load_weights(net, Path(pretrained), name)
        dotted, classifier = _last_linear(net)
        _replace(net, dotted, nn.Identity())
        self.net = net
        self.name = name
        self.feature_size = classifier.in_features
        self.embedding_size = embedding_size
        self.normalize = normalize
        self.head = nn.Linear(classifier.in_features, embedding_size)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features before the projection head: ``[B, feature_size]``."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] not in (1, 3):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise PairLossError(f"images: expected [B, 1 or 3, H, W], got {shape}")
        x = as_unit_float(x)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed images into ``[B, embedding_size]``."""
        out = self.head(self.backbone(x))
        return F.normalize(out, dim=1) if self.normalize else out


def check_torchvision_name(name: str) -> str:
    """The torchvision model name of ``torchvision:<name>``; refuses an empty one."""
    arch = name[len(PREFIX) :].strip()
    if not arch:
        raise PairLossError(f"model: expected {PREFIX}<name>, e.g. {PREFIX}resnet50, got {name!r}")
    return arch
