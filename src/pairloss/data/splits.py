"""Data splits: the zero-shot class split of metric learning and the face-recognition protocol
(held-out identities, enrolled vs unknown identities, gallery vs probe images)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch

from ..errors import PairLossError
from ._labels import as_labels, check_classes, check_int, is_int


class ClassSplit(NamedTuple):
    """A split by class: sample indices (sorted) and the classes on each side (sorted)."""

    train: torch.Tensor
    eval: torch.Tensor
    train_classes: torch.Tensor
    eval_classes: torch.Tensor


class IdentitySplit(NamedTuple):
    """A face-protocol split: sample indices (each sorted) and the identities of each group.

    ``train``: every sample of the training identities. ``gallery``: the enrolled images of the
    enrolled identities. ``probe``: their other images. ``unknown``: every image of the
    held-out identities that are not enrolled (open-set probes; empty for a closed set).
    """

    train: torch.Tensor
    gallery: torch.Tensor
    probe: torch.Tensor
    unknown: torch.Tensor
    train_ids: torch.Tensor
    enrolled_ids: torch.Tensor
    unknown_ids: torch.Tensor


def _indices_of(labels: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Sorted indices of the samples whose label is in ``classes``."""
    return torch.isin(labels, classes).nonzero().flatten()


def class_split(labels: object, train_classes: int | Iterable[int] | None = None) -> ClassSplit:
    """The zero-shot split of metric learning: training and evaluation share no class.

    Args:
        labels: integer labels ``[N]`` (tensor, numpy array or sequence).
        train_classes: ``None`` for the first half (``n // 2``) of the sorted classes; an int
            for that many first sorted classes; or the training classes themselves. The other
            classes are for evaluation.

    Returns:
        A :class:`ClassSplit` of sample indices and classes.

    Raises:
        PairLossError: bad labels; fewer than 2 classes; ``train_classes`` out of range, naming
            classes absent from the labels, or leaving one side empty.
    """
    labels = as_labels(labels)
    classes = labels.unique()
    if classes.numel() < 2:
        raise PairLossError(
            f"labels: expected at least 2 classes for a class split, got {classes.numel()}"
        )
    if train_classes is None:
        chosen = classes[: classes.numel() // 2]
    elif is_int(train_classes):
        count = check_int(train_classes, "train_classes", 1)
        if count >= classes.numel():
            raise PairLossError(
                f"train_classes: {count} leaves no evaluation class; expected 1 to "
                f"{classes.numel() - 1} (labels hold {classes.numel()} classes)"
            )
        chosen = classes[:count]
    else:
        chosen = check_classes(train_classes, classes, "train_classes")
    rest = classes[~torch.isin(classes, chosen)]
    if chosen.numel() == 0 or rest.numel() == 0:
        raise PairLossError(
            "train_classes: expected a non-empty, proper subset of the classes, got "
            f"{chosen.numel()} of {classes.numel()}"
        )
    return ClassSplit(_indices_of(labels, chosen), _indices_of(labels, rest), chosen, rest)


def _pick(
    pool: torch.Tensor, spec: int | Iterable[int], name: str, generator: torch.Generator
) -> torch.Tensor:
    """``spec`` random members of ``pool`` (an int) or the given members (sorted)."""
    if is_int(spec):
        count = check_int(spec, name, 1)
        if count > pool.numel():
            raise PairLossError(f"{name}: {count} requested but only {pool.numel()} available")
        return pool[torch.randperm(pool.numel(), generator=generator)[:count]].sort().values
    return check_classes(spec, pool, name)


def _gallery_probe(
    labels: torch.Tensor, enrolled: torch.Tensor, per_identity: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per enrolled identity, ``per_identity`` random images to the gallery, the rest to probe."""
    gallery, probe = [], []
    for identity in enrolled.tolist():
        idx = (labels == identity).nonzero().flatten()
        if idx.numel() <= per_identity:
            raise PairLossError(
                f"gallery_per_identity: identity {identity} has {idx.numel()} images; expected "
                f"more than {per_identity} (at least one probe image)"
            )
        order = idx[torch.randperm(idx.numel(), generator=generator)]
        gallery.append(order[:per_identity])
        probe.append(order[per_identity:])
    return torch.cat(gallery).sort().values, torch.cat(probe).sort().values


def enrol(
    labels: object, identities: Iterable[int], per_identity: int = 1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gallery and probe indices (each sorted) of an evaluation set: for every identity in
    ``identities``, ``per_identity`` random images (seeded) go to the gallery, the rest are
    probes. Every identity needs more than ``per_identity`` images."""
    labels = as_labels(labels)
    chosen = check_classes(identities, labels.unique(), "identities")
    per_identity = check_int(per_identity, "per_identity", 1)
    generator = torch.Generator().manual_seed(check_int(seed, "seed", 0))
    return _gallery_probe(labels, chosen, per_identity, generator)


def identity_split(
    labels: object,
    held_out: int | Iterable[int],
    enrolled: int | Iterable[int] | None = None,
    gallery_per_identity: int = 1,
    seed: int = 0,
) -> IdentitySplit:
    """The face-recognition protocol: train on some identities, test on held-out ones.

    Among the held-out identities, the enrolled ones put ``gallery_per_identity`` random images
    in the gallery and the rest in the probe set; the others (open set) are unknown and all
    their images are probes that should be rejected.

    Args:
        labels: identity labels ``[N]``.
        held_out: the number of held-out identities (drawn at random) or the identities.
        enrolled: ``None`` (closed set: every held-out identity is enrolled), a number of
            held-out identities (drawn at random), or the identities.
        gallery_per_identity: gallery images per enrolled identity (>= 1); each enrolled
            identity needs at least one more image for the probe set.
        seed: seeds every random choice; the same arguments give the same split.

    Returns:
        An :class:`IdentitySplit`.

    Raises:
        PairLossError: bad labels; counts out of range; identities absent from the labels
            (``held_out``) or not held out (``enrolled``); no training identity left; an
            enrolled identity with too few images.
    """
    labels = as_labels(labels)
    identities = labels.unique()
    gallery_per_identity = check_int(gallery_per_identity, "gallery_per_identity", 1)
    generator = torch.Generator().manual_seed(check_int(seed, "seed", 0))
    test_ids = _pick(identities, held_out, "held_out", generator)
    train_ids = identities[~torch.isin(identities, test_ids)]
    if train_ids.numel() == 0:
        raise PairLossError(
            f"held_out: all {identities.numel()} identities are held out; expected some left "
            "for training"
        )
    enrolled_ids = (
        test_ids if enrolled is None else _pick(test_ids, enrolled, "enrolled", generator)
    )
    unknown_ids = test_ids[~torch.isin(test_ids, enrolled_ids)]
    gallery, probe = _gallery_probe(labels, enrolled_ids, gallery_per_identity, generator)
    return IdentitySplit(
        train=_indices_of(labels, train_ids),
        gallery=gallery,
        probe=probe,
        unknown=_indices_of(labels, unknown_ids),
        train_ids=train_ids,
        enrolled_ids=enrolled_ids,
        unknown_ids=unknown_ids,
    )
