"""Using a trained run: embeddings of any input its model takes, and nearest-neighbour search.

``model.pt`` in a run folder holds the selected epoch's weights with what is needed to rebuild
the model without the training data: the model's name and options, the embedding size and the
input the model takes (image size and channels, or the vector length). So

- :func:`embed_files` embeds image files (decoded, converted to the run's channels and resized
  to its image size) or vector files (``.npy`` / ``.pt``);
- :func:`embed_dataset` embeds every sample of a data set known to the trainer (by default the
  run's own), with its labels;
- :func:`write_embeddings` writes ``PREFIX.npy`` (float32 ``[N, D]``), ``PREFIX.txt`` (one item
  name per line: a path, or ``<data set>/<part>/<index>``), ``PREFIX.labels.npy`` when the
  items have labels, and ``PREFIX.faiss`` (an exact FAISS ``IndexFlatIP`` over the
  L2-normalised rows, i.e. cosine similarity) when asked;
- :func:`search` finds the ``k`` nearest gallery items of each query (exact cosine similarity,
  :func:`pairloss.metrics.knn`; ties by gallery order).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import decode_image
from ..data.folders import IMAGE_SUFFIXES, resize, to_grey, to_rgb
from ..data.images import ImageFiles
from ..errors import PairLossError
from ..metrics import knn
from .config import TrainConfig
from .evaluate import embed
from .models import build_model
from .scorers import MLPScorer
from .trainer import load_checkpoint, resolve_device

MODEL = "model.pt"


@dataclass(frozen=True)
class TrainedModel:
    """A run's selected model, ready to embed.

    Attributes:
        model: the model (eval mode, CPU).
        config: the run's settings.
        inputs: what the model takes: ``{"images": True, "shape": [C, H, W]}`` or
            ``{"images": False, "shape": [F]}``.
    """

    model: nn.Module
    config: TrainConfig
    inputs: dict[str, Any]


def load_trained(run: str | Path) -> TrainedModel:
    """The selected model of the run folder ``run`` (from its ``model.pt``)."""
    from .run import read_config

    folder = Path(run)
    if not folder.is_dir():
        raise PairLossError(f"run: {folder} is not a run folder")
    config = read_config(folder / "config.json")
    state = load_checkpoint(folder / MODEL)
    spec = state.get("spec")
    if not isinstance(spec, dict) or not {"name", "options", "inputs"} <= set(spec):
        raise PairLossError(f"{folder / MODEL}: has no model description; expected a pairloss run")
    model = build_model(spec["name"], config.embedding_size, **spec["options"])
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise PairLossError(f"{folder / MODEL}: does not fit its model ({first})") from None
    return TrainedModel(model.eval(), config, spec["inputs"])


def _image_tensor(path: Path, inputs: dict[str, Any]) -> torch.Tensor:
    channels, height, width = inputs["shape"]
    image = decode_image(path)
    pixels = to_rgb(image) if channels == 3 else to_grey(image)[None]
    return resize(torch.from_numpy(np.ascontiguousarray(pixels)), (height, width))


def load_inputs(files: list[str | Path], trained: TrainedModel) -> tuple[Any, list[str]]:
    """The files as the model's input (images or vectors) and their item names."""
    if not files:
        raise PairLossError("input: expected at least one file")
    paths = [Path(f) for f in files]
    for path in paths:
        if not path.is_file():
            raise PairLossError(f"input: {path} is not a file")
    if trained.inputs["images"]:
        bad = [p for p in paths if p.suffix.lower() not in IMAGE_SUFFIXES]
        if bad:
            raise PairLossError(
                f"input: {bad[0]} is not an image ({', '.join(sorted(IMAGE_SUFFIXES))}); the "
                "run's model takes images"
            )
        images = torch.stack([_image_tensor(p, trained.inputs) for p in paths])
        return (images[:, 0] if trained.inputs["shape"][0] == 1 else images), [
            str(p) for p in paths
        ]
    vectors, names = [], []
    for path in paths:
        x = _vectors(path)
        if x.shape[1] != trained.inputs["shape"][0]:
            raise PairLossError(
                f"input: {path} holds vectors of {x.shape[1]} values; the run's model takes "
                f"{trained.inputs['shape'][0]}"
            )
        vectors.append(x)
        names.extend(f"{path}/{i}" for i in range(len(x)))
    return torch.cat(vectors), names


def _vectors(path: Path) -> torch.Tensor:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        from ..data.embeddings import _load_npy, check_embedding_tensor

        return check_embedding_tensor(_load_npy(path), path).float()
    if suffix == ".pt":
        from ..data.embeddings import _load_pt, _split_pt, check_embedding_tensor

        content, _ = _split_pt(_load_pt(path), path)
        return check_embedding_tensor(content, path).float()
    raise PairLossError(f"input: {path}: expected .npy or .pt vectors for this run's model")


def _check_embeds(trained: TrainedModel) -> None:
    """Refuse a run whose model scores documents (learning to rank) instead of embedding."""
    if isinstance(trained.model, MLPScorer):
        raise PairLossError(
            f"run: the {trained.config.dataset} run holds a document scorer, not an embedding "
            "model; evaluate it with `pairloss eval RUN`"
        )


def embed_files(
    trained: TrainedModel, files: list[str | Path], device: str = "cpu", backbone: bool = False
) -> tuple[torch.Tensor, list[str]]:
    """Embeddings ``[N, D]`` of ``files`` with the run's model, and the item names."""
    _check_embeds(trained)
    x, names = load_inputs(files, trained)
    model = trained.model.to(resolve_device(device))
    return embed(model, x, resolve_device(device), backbone=backbone), names


def embed_dataset(
    trained: TrainedModel,
    dataset: str | None = None,
    data_dir: str | None = None,
    device: str = "cpu",
    backbone: bool = False,
) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """Embeddings of every sample of ``dataset`` (default: the run's), their names and labels.

    Images are prepared like the run's (channels and size of its model's input)."""
    from .config import check_paths
    from .datasets import LOADERS, load_data
    from .tasks import check_applies, check_dataset

    _check_embeds(trained)
    if dataset is not None and check_dataset(dataset) not in LOADERS:
        raise PairLossError(
            f"dataset: {dataset!r} holds no labelled samples to embed; expected one of "
            f"{', '.join(LOADERS)}"
        )
    config = trained.config.replace(
        dataset=check_dataset(trained.config.dataset if dataset is None else dataset),
        data_dir=data_dir if data_dir is not None else trained.config.data_dir,
        image_size=trained.inputs["shape"][1:] if trained.inputs["images"] else None,
        test_fraction=None,
        labels=trained.config.labels if dataset in (None, trained.config.dataset) else None,
    )
    check_paths(config.replace(out="."))
    check_applies(config.replace(image_size=None))
    data = load_data(config)
    if data.images != bool(trained.inputs["images"]):
        kind = "images" if trained.inputs["images"] else "vectors"
        raise PairLossError(
            f"dataset: {config.dataset!r} does not hold {kind}, which the model takes"
        )
    parts = [("all" if data.test is None else "train", _as_input(data.x, trained), data.y)]
    if data.test is not None:
        parts.append(("test", _as_input(data.test[0], trained), data.test[1]))
    device_ = resolve_device(device)
    model = trained.model.to(device_)
    out, names, labels = [], [], []
    for part, x, y in parts:
        out.append(embed(model, x, device_, backbone=backbone))
        if isinstance(x, ImageFiles):
            names.extend(str(p) for p in x.paths)
        else:
            names.extend(f"{config.dataset}/{part}/{i}" for i in range(len(y)))
        labels.append(y)
    return torch.cat(out), names, torch.cat(labels)


def _as_input(x: Any, trained: TrainedModel) -> Any:
    """Images with the channels the run's model takes (vectors unchanged)."""
    if not trained.inputs["images"]:
        return x
    channels, height, width = trained.inputs["shape"]
    if isinstance(x, ImageFiles):
        if x.channels == channels:
            return x
        return ImageFiles(
            x.paths, (height, width), "rgb" if channels == 3 else "grey", workers=x.workers
        )
    images = x if x.dim() == 4 else x[:, None]
    if images.shape[1] == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1)
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # BT.601, as the readers
    return (images.float() * weights).sum(1).round().clamp(0, 255).to(torch.uint8)


def write_embeddings(
    prefix: str | Path,
    embeddings: torch.Tensor,
    names: list[str],
    labels: torch.Tensor | None = None,
    faiss_index: bool = False,
) -> list[Path]:
    """Write the files of the module docstring; returns their paths."""
    if not str(prefix).strip():
        raise PairLossError("out: expected a file prefix such as runs/x/embeddings, got ''")
    prefix = Path(prefix)
    if prefix.suffix == ".npy":
        prefix = prefix.with_suffix("")
    if prefix.is_dir():
        raise PairLossError(f"out: {prefix} is a folder; expected a file prefix inside one")
    if not prefix.parent.is_dir():
        raise PairLossError(f"out: the folder {prefix.parent} does not exist")
    written = [prefix.with_suffix(".npy"), prefix.with_suffix(".txt")]
    np.save(written[0], embeddings.numpy().astype(np.float32))
    written[1].write_text("".join(n.replace("\n", " ") + "\n" for n in names), encoding="utf-8")
    if labels is not None:
        written.append(Path(f"{prefix}.labels.npy"))
        np.save(written[-1], labels.numpy())
    if faiss_index:
        written.append(prefix.with_suffix(".faiss"))
        write_faiss(written[-1], embeddings)
    return written


def write_faiss(path: Path, embeddings: torch.Tensor) -> None:
    """An exact cosine-similarity FAISS index (``IndexFlatIP`` of L2-normalised rows)."""
    try:
        import faiss
    except ImportError as exc:
        raise PairLossError(
            f"faiss: writing {path} needs faiss, which is not installed; `pip install faiss-cpu`"
        ) from exc
    x = torch.nn.functional.normalize(embeddings.float(), dim=1).numpy()
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(np.ascontiguousarray(x))
    faiss.write_index(index, str(path))


def read_gallery(prefix: str | Path) -> tuple[torch.Tensor, list[str], torch.Tensor | None]:
    """The embeddings, names and (if present) labels written by :func:`write_embeddings`."""
    prefix = Path(prefix)
    if prefix.suffix == ".npy":
        prefix = prefix.with_suffix("")
    from ..data.embeddings import _load_npy, check_embedding_tensor

    path = prefix.with_suffix(".npy")
    if not path.is_file():
        raise PairLossError(f"gallery: {path} not found; expected the output of `pairloss embed`")
    x = check_embedding_tensor(_load_npy(path), path).float()
    names_file = prefix.with_suffix(".txt")
    names = (
        names_file.read_text(encoding="utf-8").splitlines()
        if names_file.is_file()
        else [str(i) for i in range(len(x))]
    )
    if len(names) != len(x):
        raise PairLossError(f"{names_file}: {len(names)} names for {len(x)} embeddings in {path}")
    labels_file = Path(f"{prefix}.labels.npy")
    labels = torch.from_numpy(_load_npy(labels_file)) if labels_file.is_file() else None
    return x, names, labels


def search(
    queries: torch.Tensor, gallery: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most cosine-similar gallery rows of each query: (scores, indices), each
    ``[Q, k]``, best first (exact; see :func:`pairloss.metrics.knn`)."""
    if gallery.shape[1] != queries.shape[1]:
        raise PairLossError(
            f"gallery: holds {gallery.shape[1]}-d embeddings, the queries are {queries.shape[1]}-d; "
            "expected embeddings of the same run"
        )
    found = knn(queries.float(), gallery.float(), k=min(k, len(gallery)), metric="cosine")
    return found.scores, found.indices
