"""Global proxy-based hard mining (Ali-bey, Chaib-draa & Giguere, "Global Proxy-based Hard Mining
for Visual Place Recognition", BMVC 2022): batches of classes that are each other's nearest
neighbours by their proxies."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from ..errors import PairLossError
from ..validation import check_bool, check_embeddings, check_int, check_labels


class ProxyBank:
    """Running class proxies: the mean of the (detached) descriptors seen for each class since
    the last :meth:`reset`, as the paper builds them over an epoch from its proxy head.

    Args:
        num_classes: C.
        dim: the descriptors' size.
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        self.num_classes = check_int(num_classes, "num_classes", minimum=1)
        self.dim = check_int(dim, "dim", minimum=1)
        self.reset()

    def reset(self) -> None:
        """Forget every descriptor (start of an epoch)."""
        self.total = torch.zeros(self.num_classes, self.dim, dtype=torch.float64)
        self.count = torch.zeros(self.num_classes, dtype=torch.float64)

    def update(self, descriptors: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch of descriptors [B, dim] with their class labels [B]."""
        descriptors = check_embeddings(descriptors, "descriptors")
        if descriptors.shape[1] != self.dim:
            raise PairLossError(
                f"descriptors: expected {self.dim} columns, got {descriptors.shape[1]}"
            )
        labels = check_labels(labels, descriptors.shape[0]).cpu()
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise PairLossError(f"labels: expected class ids in [0, {self.num_classes})")
        self.total.index_add_(0, labels, descriptors.detach().double().cpu())
        self.count.index_add_(0, labels, torch.ones(labels.shape[0], dtype=torch.float64))

    def proxies(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(proxies [C', dim] of the classes seen, their class ids [C'])."""
        seen = self.count > 0
        return (self.total[seen] / self.count[seen, None]).float(), torch.where(seen)[0]


def nearest_classes(proxies: torch.Tensor, k: int, cosine: bool = True) -> np.ndarray:
    """Each proxy's ``k`` nearest other proxies (rows of ``proxies``, closest first), found with a
    FAISS flat index (inner product of normalised proxies, or L2): [C, k]."""
    import faiss

    x = proxies.detach().float().cpu().numpy().copy()
    if cosine:
        faiss.normalize_L2(x)
        index = faiss.IndexFlatIP(x.shape[1])
    else:
        index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    _, found = index.search(x, min(k + 1, x.shape[0]))
    out = np.empty((x.shape[0], found.shape[1] - 1), dtype=np.int64)
    for i, row in enumerate(found):
        row = [j for j in row if j != i and j >= 0]
        out[i, : len(row)] = row[: out.shape[1]]
    return out


class GlobalProxySampler(Sampler[list[int]]):
    """Batches of ``classes_per_batch`` classes, each with ``samples_per_class`` samples, whose
    classes are each other's nearest neighbours by their proxies (the paper's sampler).

    Each batch starts from a random class not used yet this epoch and adds its nearest classes
    (by the proxies, a FAISS index) that are not used yet, until it has ``classes_per_batch``
    classes (topped up with random unused classes when the neighbours run out); every class is
    used at most once per epoch. A class contributes ``samples_per_class`` of its samples,
    drawn without replacement when it has enough (with replacement otherwise). Before any
    proxies are given (:meth:`set_proxies`) the batches are random P x K batches.

    Args:
        labels: the class of every sample of the data set [N].
        classes_per_batch: P, classes per batch.
        samples_per_class: K, samples per class.
        seed: the generator's seed (each epoch draws from seed + epoch, :meth:`set_epoch`).
        cosine: compare proxies by cosine (default) or by Euclidean distance.
    """

    def __init__(
        self,
        labels,
        classes_per_batch: int,
        samples_per_class: int,
        seed: int = 0,
        cosine: bool = True,
    ) -> None:
        y = torch.as_tensor(labels)
        self.labels = check_labels(y, y.shape[0] if y.dim() == 1 else -1).cpu()
        self.p = check_int(classes_per_batch, "classes_per_batch", minimum=1)
        self.k = check_int(samples_per_class, "samples_per_class", minimum=1)
        self.seed = check_int(seed, "seed")
        self.cosine = check_bool(cosine, "cosine")
        self.classes = torch.unique(self.labels)
        if self.classes.numel() < self.p:
            raise PairLossError(
                f"classes_per_batch: {self.p} is more than the {self.classes.numel()} classes"
            )
        self.members = {int(c): torch.where(self.labels == c)[0] for c in self.classes}
        self.neighbours: dict[int, list[int]] | None = None
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the draws of ``epoch``."""
        self.epoch = check_int(epoch, "epoch", minimum=0)

    def set_proxies(self, proxies: torch.Tensor, class_ids: torch.Tensor) -> None:
        """Rebuild the global index from class proxies [C', d] of the classes ``class_ids``
        (e.g. :meth:`ProxyBank.proxies` at the end of an epoch)."""
        proxies = check_embeddings(proxies, "proxies")
        ids = check_labels(class_ids, proxies.shape[0], "class_ids").tolist()
        near = nearest_classes(proxies, self.p - 1, self.cosine)
        self.neighbours = {c: [ids[j] for j in row] for c, row in zip(ids, near)}

    def __len__(self) -> int:
        return self.classes.numel() // self.p

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = self.classes[torch.randperm(self.classes.numel(), generator=g)].tolist()
        unused = dict.fromkeys(order)
        for _ in range(len(self)):
            start = next(iter(unused))
            chosen = [start]
            del unused[start]
            for c in (self.neighbours or {}).get(start, []):
                if len(chosen) == self.p:
                    break
                if c in unused:
                    chosen.append(c)
                    del unused[c]
            while len(chosen) < self.p:
                c = next(iter(unused))
                chosen.append(c)
                del unused[c]
            yield [i for c in chosen for i in self._draw(c, g)]

    def _draw(self, c: int, g: torch.Generator) -> list[int]:
        m = self.members[c]
        if m.numel() >= self.k:
            return m[torch.randperm(m.numel(), generator=g)[: self.k]].tolist()
        return m[torch.randint(0, m.numel(), (self.k,), generator=g)].tolist()
