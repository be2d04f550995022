"""The P x K class-balanced batch sampler (P classes, K samples of each per batch)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from ..errors import PairLossError
from ._labels import as_labels, check_int


class _Cycle:
    """Deals ``take`` distinct items of ``0..size-1`` at a time from shuffled passes.

    Each pass is a fresh random permutation; when fewer than ``take`` items remain in the
    current pass, they are dropped and a new pass starts, so every deal is without repetition
    and every item is dealt about equally often.
    """

    def __init__(self, size: int, take: int, generator: torch.Generator) -> None:
        self.size, self.take, self.generator = size, take, generator
        self.order: list[int] = []
        self.pos = 0

    def deal(self) -> list[int]:
        """The next ``take`` distinct positions."""
        if self.pos + self.take > len(self.order):
            self.order = torch.randperm(self.size, generator=self.generator).tolist()
            self.pos = 0
        out = self.order[self.pos : self.pos + self.take]
        self.pos += self.take
        return out


class _EpochDraw:
    """The batches of one epoch, drawn from one seeded generator (the same on every rank)."""

    def __init__(self, members: list[list[int]], p: int, k: int, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.members, self.k = members, k
        self.classes = _Cycle(len(members), p, self.generator)
        self.samples: dict[int, _Cycle] = {}

    def _take(self, c: int) -> list[int]:
        """K samples of class position ``c``: distinct if it has >= K, else with replacement."""
        idx = self.members[c]
        if len(idx) < self.k:
            picks = torch.randint(len(idx), (self.k,), generator=self.generator).tolist()
        else:
            if c not in self.samples:
                self.samples[c] = _Cycle(len(idx), self.k, self.generator)
            picks = self.samples[c].deal()
        return [idx[i] for i in picks]

    def batch(self) -> list[int]:
        """The next batch: P classes x K samples, grouped by class."""
        return [i for c in self.classes.deal() for i in self._take(c)]


def _class_members(
    labels: torch.Tensor, p: int, k: int, replace: bool
) -> tuple[torch.Tensor, list[list[int]], torch.Tensor]:
    """(usable classes, their sample indices, excluded classes); raise if fewer than P usable."""
    values = labels.numpy()
    classes, counts = np.unique(values, return_counts=True)
    usable = counts >= (1 if replace else k)
    if int(usable.sum()) < p:
        need = "1 sample" if replace else f"{k} samples"
        raise PairLossError(
            f"p, k: cannot draw {p} x {k}: only {int(usable.sum())} classes have >= {need} "
            f"(labels hold {len(classes)} classes); expected p <= that number"
            + ("" if replace else ", or lower k, or pass replace=True")
        )
    groups = np.split(np.argsort(values, kind="stable"), np.cumsum(counts)[:-1])
    members = [g.tolist() for g, keep in zip(groups, usable) if keep]
    return torch.from_numpy(classes[usable]), members, torch.from_numpy(classes[~usable])


def _per_rank(
    batches: int | None, n: int, batch_size: int, world_size: int, drop_last: bool
) -> int:
    """The number of batches each rank gets in an epoch."""
    if batches is None:
        return max(1, n // (batch_size * world_size))
    batches = check_int(batches, "batches", 1)
    per_rank = batches // world_size if drop_last else -(-batches // world_size)
    if per_rank == 0:
        raise PairLossError(
            f"batches: {batches} batches cannot give every one of world_size={world_size} ranks "
            "a batch with drop_last=True; expected batches >= world_size or drop_last=False"
        )
    return per_rank


class PKSampler(Sampler[list[int]]):
    """Class-balanced batch sampler: every batch holds P distinct classes x K samples each.

    Use it as ``DataLoader(dataset, batch_sampler=PKSampler(labels, p, k))``. Each batch is a
    list of ``p * k`` dataset indices grouped by class (K consecutive indices per class).
    Classes are dealt from shuffled passes over the usable classes, and the samples of a class
    from shuffled passes over that class, so within an epoch classes and samples are used about
    equally often; a sample is never repeated within a batch unless its class has fewer than K
    samples and ``replace=True``.

    The batches of an epoch depend only on ``seed`` and the epoch (:meth:`set_epoch`, as with
    :class:`torch.utils.data.DistributedSampler`): call ``set_epoch(e)`` at the start of every
    epoch to get new batches. With ``world_size > 1`` every rank draws the same global sequence
    and rank ``r`` takes batches ``r, r + world_size, ...``, so ranks get disjoint batches and
    the same number of them.

    Args:
        labels: class labels ``[N]`` of the dataset (tensor, numpy array or sequence of ints).
        p: classes per batch (>= 1).
        k: samples per class in a batch (>= 1).
        batches: the number of batches per epoch over all ranks; ``None`` means about one pass
            over the usable samples: ``max(1, n_usable // (p * k * world_size))`` per rank.
        seed: base seed (>= 0); epoch ``e`` uses ``seed + e``.
        rank: this process's rank, ``0 <= rank < world_size``.
        world_size: the number of processes sharing the epoch.
        drop_last: when ``batches`` is not a multiple of ``world_size``, drop the remainder
            (True) or draw extra batches so that every rank gets ``ceil(batches / world_size)``
            (False).
        replace: classes with fewer than K samples are kept and sampled with replacement (True)
            or left out (False, the default; see :attr:`excluded_classes`).

    Raises:
        PairLossError: bad labels or arguments (naming the argument); fewer than ``p`` usable
            classes ("cannot draw P x K: only n classes have >= K samples").
    """

    def __init__(
        self,
        labels: object,
        p: int,
        k: int,
        batches: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        replace: bool = False,
    ) -> None:
        labels = as_labels(labels)
        self.p, self.k = check_int(p, "p", 1), check_int(k, "k", 1)
        self.seed = check_int(seed, "seed", 0)
        self.world_size = check_int(world_size, "world_size", 1)
        self.rank = check_int(rank, "rank", 0)
        if self.rank >= self.world_size:
            raise PairLossError(f"rank: expected 0 <= rank < world_size={world_size}, got {rank}")
        for name, flag in (("drop_last", drop_last), ("replace", replace)):
            if not isinstance(flag, bool):
                raise PairLossError(f"{name}: expected a bool, got {type(flag).__name__}")
        self.drop_last, self.replace = drop_last, replace
        self.classes, self._members, self.excluded_classes = _class_members(labels, p, k, replace)
        usable = sum(len(m) for m in self._members)
        self._per_rank = _per_rank(batches, usable, self.p * self.k, self.world_size, drop_last)
        self.epoch = 0

    @property
    def batch_size(self) -> int:
        """``p * k``, the size of every batch."""
        return self.p * self.k

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (>= 0) whose batches the next iteration yields."""
        self.epoch = check_int(epoch, "epoch", 0)

    def __len__(self) -> int:
        """The number of batches this rank yields per epoch."""
        return self._per_rank

    def __iter__(self) -> Iterator[list[int]]:
        """Yield this rank's batches of the current epoch (lists of ``p * k`` indices)."""
        draw = _EpochDraw(self._members, self.p, self.k, self.seed + self.epoch)
        for i in range(self._per_rank * self.world_size):
            batch = draw.batch()
            if i % self.world_size == self.rank:
                yield batch
