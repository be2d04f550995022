"""Small embedding networks for the training examples and the command line.

* :class:`SmallCNN`: 28x28 grey images (MNIST, Fashion-MNIST), fast enough to train on a CPU.
* :class:`FaceCNN`: grey face crops of any size (e.g. the 112x92 AT&T faces), resized inside.
* :class:`MLPHead`: an MLP over precomputed feature vectors.
* ``scorer``: :class:`~pairloss.train.scorers.MLPScorer`, one score per document (ranking).

Every model maps a batch to ``[B, embedding_size]`` embeddings, L2-normalised when
``normalize=True``, exposes ``embedding_size``, and gives the representation before its last
(projection) layer with ``backbone(x)``. :func:`build_model` builds one by name.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import PairLossError
from ..text.encoder import MiniLM
from .backbones import PREFIX, TorchvisionEmbedder, check_torchvision_name
from .scorers import MLPScorer

__all__ = ["MODELS", "TEXT_MODELS", "FaceCNN", "MLPHead", "SmallCNN", "build_model"]


def _check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PairLossError(f"{name}: expected a positive int, got {value!r}")
    return value


def _check_size(value: object, name: str) -> tuple[int, int]:
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)
    ):
        raise PairLossError(
            f"{name}: expected a pair of positive ints (height, width), got {value!r}"
        )
    return int(value[0]), int(value[1])


def _as_images(x: object, in_channels: int, name: str = "images") -> torch.Tensor:
    """``[B, C, H, W]`` (or ``[B, H, W]`` when C == 1) uint8 or float -> float ``[B, C, H, W]``.

    uint8 input is scaled to [0, 1]; floating input is used as it is.
    """
    if not isinstance(x, torch.Tensor):
        raise PairLossError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 3 and in_channels == 1:
        x = x.unsqueeze(1)
    if x.dim() != 4 or x.shape[1] != in_channels:
        want = "[B, C, H, W]" if in_channels != 1 else "[B, 1, H, W] or [B, H, W]"
        raise PairLossError(
            f"{name}: expected shape {want} with C = {in_channels}, got shape {tuple(x.shape)}"
        )
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    if not x.is_floating_point():
        raise PairLossError(f"{name}: expected a uint8 or floating-point tensor, got {x.dtype}")
    return x


def _conv_block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """A two-block CNN for 28x28 grey images that keeps the spatial layout, small enough to
    train on a CPU.

    With ``w = width``: backbone conv3x3(w)-BN-ReLU-maxpool -> conv3x3(2w)-BN-ReLU-maxpool ->
    flatten (``2w * (H/4) * (W/4)`` features, 3,136 for 28x28 and w = 32), then the projection
    head linear(-> ``embedding_size``). The loss trains the head's output; :meth:`backbone` gives
    the representation before the head, which transfers better to classes never seen in
    training (the projection-head effect of Chen et al., "A Simple Framework for Contrastive
    Learning of Visual Representations", ICML 2020). Flattening instead of global pooling keeps
    where things are in the image, which is what separates unseen classes of small centred
    images.

    Args:
        embedding_size: output dimension D (default 64).
        in_channels: image channels C (default 1).
        normalize: L2-normalise each output row (default True).
        width: channels of the first block (default 32).
        input_size: (height, width) the images have (default (28, 28)); both must be
            multiples of 4.

    Shapes:
        input: ``[B, C, H, W]`` (or ``[B, H, W]`` when C == 1), uint8 (scaled to [0, 1] inside)
        or float. output: ``[B, D]`` float.
    """

    def __init__(
        self,
        embedding_size: int = 64,
        in_channels: int = 1,
        normalize: bool = True,
        width: int = 32,
        input_size: tuple[int, int] = (28, 28),
    ):
        super().__init__()
        self.embedding_size = _check_positive_int(embedding_size, "embedding_size")
        self.in_channels = _check_positive_int(in_channels, "in_channels")
        w = _check_positive_int(width, "width")
        h, v = _check_size(input_size, "input_size")
        if h % 4 or v % 4:
            raise PairLossError(f"input_size: expected multiples of 4, got {input_size!r}")
        self.input_size = (h, v)
        self.normalize = bool(normalize)
        self.features = nn.Sequential(
            _conv_block(in_channels, w, pool=True),
            _conv_block(w, 2 * w, pool=True),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * w * (h // 4) * (v // 4), embedding_size)

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        """The representation before the projection head: ``[B, 2w * H/4 * W/4]``."""
        x = _as_images(x, self.in_channels)
        if tuple(x.shape[-2:]) != self.input_size:
            raise PairLossError(
                f"images: expected {self.input_size[0]}x{self.input_size[1]} images, got "
                f"{x.shape[-2]}x{x.shape[-1]}; set input_size"
            )
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed ``x`` (``[B, C, H, W]`` or ``[B, H, W]``) into ``[B, embedding_size]``."""
        out = self.head(self.backbone(x))
        return F.normalize(out, dim=1) if self.normalize else out


class FaceCNN(nn.Module):
    """A four-block CNN for grey face crops of any size.

    The input is resized (bilinear) to ``input_size`` when it differs, then
    conv3x3(32)-BN-ReLU-maxpool -> conv3x3(64)-BN-ReLU-maxpool -> conv3x3(128)-BN-ReLU-maxpool ->
    conv3x3(256)-BN-ReLU -> adaptive average pool to 2x2 -> linear(1024 -> ``embedding_size``).

    Args:
        embedding_size: output dimension D (default 128).
        in_channels: image channels C (default 1).
        input_size: (height, width) the input is resized to (default (56, 46), half of the
            112x92 AT&T faces).
        normalize: L2-normalise each output row (default True).

    Shapes:
        input: ``[B, C, H, W]`` (or ``[B, H, W]`` when C == 1), any H, W, uint8 (scaled to
        [0, 1] inside) or float.
        output: ``[B, D]`` float.
    """

    def __init__(
        self,
        embedding_size: int = 128,
        in_channels: int = 1,
        input_size: tuple[int, int] = (56, 46),
        normalize: bool = True,
    ):
        super().__init__()
        self.embedding_size = _check_positive_int(embedding_size, "embedding_size")
        self.in_channels = _check_positive_int(in_channels, "in_channels")
        self.input_size = _check_size(input_size, "input_size")
        self.normalize = bool(normalize)
        self.features = nn.Sequential(
            _conv_block(in_channels, 32, pool=True),
            _conv_block(32, 64, pool=True),
            _conv_block(64, 128, pool=True),
            _conv_block(128, 256, pool=False),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(256 * 4, embedding_size))

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        """The representation before the head (pooled conv features): ``[B, 1024]``."""
        x = _as_images(x, self.in_channels)
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed ``x`` (``[B, C, H, W]`` or ``[B, H, W]``, any H, W) into ``[B, embedding_size]``."""
        out = self.head(self.backbone(x))
        return F.normalize(out, dim=1) if self.normalize else out


class MLPHead(nn.Module):
    """An MLP over precomputed feature vectors.

    Each hidden width h adds linear -> ReLU -> dropout; a final linear maps to
    ``embedding_size``.

    Args:
        in_features: input dimension F.
        embedding_size: output dimension D (default 128).
        hidden: hidden widths (default ``(512,)``; ``()`` gives a single linear map).
        normalize: L2-normalise each output row (default True).
        dropout: dropout probability after each hidden layer, in [0, 1) (default 0.0).

    Shapes:
        input: ``[B, F]`` float. output: ``[B, D]`` float.
    """

    def __init__(
        self,
        in_features: int,
        embedding_size: int = 128,
        hidden: Sequence[int] = (512,),
        normalize: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.in_features = _check_positive_int(in_features, "in_features")
        self.embedding_size = _check_positive_int(embedding_size, "embedding_size")
        if isinstance(hidden, int) and not isinstance(hidden, bool):
            hidden = (hidden,)
        if not isinstance(hidden, Sequence) or any(
            isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden
        ):
            raise PairLossError(
                f"hidden: expected a sequence of positive ints (hidden widths), got {hidden!r}"
            )
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise PairLossError(f"dropout: expected a float in [0, 1), got {dropout!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise PairLossError(f"dropout: expected a float in [0, 1), got {dropout!r}")
        self.hidden = tuple(int(h) for h in hidden)
        self.normalize = bool(normalize)
        layers: list[nn.Module] = []
        width = in_features
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(float(dropout)))
            width = h
        layers.append(nn.Linear(width, embedding_size))
        self.net = nn.Sequential(*layers)

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        """The representation before the last linear layer: ``[B, hidden[-1]]`` (the input
        itself when there is no hidden layer)."""
        return self.net[:-1](self._check(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed ``x`` (``[B, in_features]``) into ``[B, embedding_size]``."""
        out = self.net[-1](self.backbone(x))
        return F.normalize(out, dim=1) if self.normalize else out

    def _check(self, x: object) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise PairLossError(f"features: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise PairLossError(
                f"features: expected shape [B, {self.in_features}], got shape {tuple(x.shape)}"
            )
        return x if x.is_floating_point() else x.float()


MODELS: dict[str, type[nn.Module]] = {
    "cnn28": SmallCNN,
    "face": FaceCNN,
    "mlp": MLPHead,
    "scorer": MLPScorer,  # one score per document (learning to rank)
    "minilm": MiniLM,  # a sentence encoder (text)
}
"""The names :func:`build_model` accepts and the classes they build."""

TEXT_MODELS = frozenset({"minilm"})
"""The models of :data:`MODELS` that embed text (a list of strings) rather than tensors."""


def check_model_name(name: object) -> str:
    """``name`` if :func:`build_model` knows it (one of :data:`MODELS`, or
    ``torchvision:<name>``); else :class:`PairLossError` with close names."""
    if isinstance(name, str) and name.startswith(PREFIX):
        check_torchvision_name(name)
        return name
    if not isinstance(name, str) or name not in MODELS:
        close = difflib.get_close_matches(str(name), MODELS, n=3) if isinstance(name, str) else []
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise PairLossError(
            f"model: unknown model {name!r}{hint} (expected one of {', '.join(MODELS)}, or "
            f"{PREFIX}<name> for a torchvision model)"
        )
    return name


def build_model(name: str, embedding_size: int, **kwargs: object) -> nn.Module:
    """Build the model called ``name`` with output dimension ``embedding_size``.

    Args:
        name: ``"cnn28"`` (:class:`SmallCNN`), ``"face"`` (:class:`FaceCNN`), ``"mlp"``
            (:class:`MLPHead`, needs ``in_features=``), ``"minilm"``
            (:class:`~pairloss.text.encoder.MiniLM`, texts in, 384 out) or ``"torchvision:<name>"``
            (:class:`~pairloss.train.backbones.TorchvisionEmbedder`; takes ``pretrained=``).
        embedding_size: output dimension D.
        **kwargs: passed on to the class (e.g. ``in_channels``, ``normalize``, ``hidden``).

    Returns:
        the model; its ``forward`` returns ``[B, D]`` embeddings.

    Raises:
        PairLossError: unknown name (with close names suggested), unknown or missing keyword.
    """
    if check_model_name(name).startswith(PREFIX):
        allowed_tv = {"pretrained", "normalize"}
        for key in kwargs:
            if key not in allowed_tv:
                raise PairLossError(
                    f"{key}: not an option of model {name!r} (expected one of pretrained, normalize)"
                )
        return TorchvisionEmbedder(check_torchvision_name(name), embedding_size, **kwargs)
    if "pretrained" in kwargs:
        raise PairLossError(
            f"pretrained: model {name!r} has no pretrained weights; they apply to "
            f"{PREFIX}<name> models"
        )
    cls = MODELS[name]
    params = inspect.signature(cls.__init__).parameters
    allowed = [p for p in params if p not in ("self", "embedding_size")]
    for key in kwargs:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=2)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise PairLossError(
                f"{key}: not an option of model {name!r}{hint} (expected one of {', '.join(allowed)})"
            )
    missing = [
        p
        for p, spec in params.items()
        if p not in ("self", "embedding_size") and spec.default is inspect.Parameter.empty
    ]
    for p in missing:
        if p not in kwargs:
            raise PairLossError(f"{p}: model {name!r} needs {p}= (got none)")
    return cls(embedding_size=embedding_size, **kwargs)
