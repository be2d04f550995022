"""Miners: transforms of a relation that keep or drop cells using per-row statistics.

A miner never returns an index list inside the engine: ``transform(s, pos, neg)`` takes one block
of scores (in the miner's own similarity, detached) and the block's masks, and returns new masks.
It therefore runs inside the blocked engine with no B x N tensor.

For code moving from pytorch-metric-learning, calling a miner like a PML miner,
``miner(embeddings, labels)``, returns a :class:`MinedRelation` marker that a pairloss loss
accepts as ``indices_tuple``: the loss then mines inside its own engine on the same embeddings.
:meth:`Miner.indices` gives PML-style index tuples when explicit lists are wanted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .engine import compute_dtype
from .errors import PairLossError
from .objectives.terms import masked_max, masked_min
from .relations import LabelRelation, Relation
from .similarity import CosineSimilarity, LpDistance, Similarity, get_similarity
from .validation import (
    check_choice,
    check_embeddings,
    check_labels,
    check_real,
    check_same_device_dtype,
)


@dataclass
class MinedRelation:
    """What calling a miner returns: the miner to apply inside the loss's engine.

    ``relation`` (optional) replaces the relation a loss builds from its labels (memory banks
    pass the one that leaves out each anchor's own slot); ``miner`` may then be None."""

    miner: Miner | None
    relation: Relation | None = None


class Miner(nn.Module):
    """Base class for relation transforms. ``similarity`` is the space the miner compares in."""

    default_similarity: type[Similarity] = LpDistance

    def __init__(self, distance: Similarity | str | None = None) -> None:
        super().__init__()
        self.similarity = get_similarity(distance, self.default_similarity())

    @property
    def distance(self) -> Similarity:
        """Alias of ``similarity`` (pytorch-metric-learning's name)."""
        return self.similarity

    def transform(
        self, s: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _closeness(self, s: torch.Tensor) -> torch.Tensor:
        return self.similarity.signed(s)

    def forward(self, embeddings, labels, ref_emb=None, ref_labels=None) -> MinedRelation:
        """PML-style call; returns a marker that a pairloss loss takes as ``indices_tuple``."""
        return MinedRelation(self)

    def masks(self, embeddings, labels, ref_emb=None, ref_labels=None):
        """Dense mined masks (pos, neg) of shape [B, N], for inspection and tests."""
        s, pos, neg = self._scores_and_relation(embeddings, labels, ref_emb, ref_labels)
        with torch.no_grad():
            return self.transform(s, pos, neg)

    def _scores_and_relation(self, embeddings, labels, ref_emb, ref_labels):
        """The checked inputs' [B, N] scores in the miner's similarity and the label masks."""
        embeddings = check_embeddings(embeddings)
        labels = check_labels(labels, embeddings.shape[0]).to(embeddings.device)
        if ref_emb is not None:
            if isinstance(ref_emb, torch.Tensor):
                check_same_device_dtype(embeddings, ref_emb, "embeddings", "ref_emb")
            ref_emb = check_embeddings(ref_emb, "ref_emb")
            if ref_emb.shape[1] != embeddings.shape[1]:
                raise PairLossError(
                    f"ref_emb: has {ref_emb.shape[1]} features but embeddings have "
                    f"{embeddings.shape[1]}; expected the same embedding size"
                )
            if ref_labels is None:
                raise PairLossError("ref_labels: required when ref_emb is given")
            ref_labels = check_labels(ref_labels, ref_emb.shape[0], "ref_labels")
            ref_labels = ref_labels.to(embeddings.device)
        elif ref_labels is not None:
            raise PairLossError("ref_labels: given without ref_emb; expected both or neither")
        with torch.no_grad():
            dtype = compute_dtype(embeddings)
            a = self.similarity.prepare(embeddings.to(dtype))
            c = a if ref_emb is None else self.similarity.prepare(ref_emb.to(dtype))
            s = self.similarity.matrix(a, c)
            pos, neg = LabelRelation(labels, ref_labels).block(0, embeddings.shape[0])
        return s, pos, neg

    def indices(self, embeddings, labels, ref_emb=None, ref_labels=None):
        """PML-style pair indices ``(a1, p, a2, n)`` of the mined masks."""
        pos, neg = self.masks(embeddings, labels, ref_emb, ref_labels)
        a1, p = torch.where(pos)
        a2, n = torch.where(neg)
        return a1, p, a2, n


class MultiSimilarityMiner(Miner):
    """Multi-Similarity pair mining (Wang et al., CVPR 2019, eq. 7-8).

    With s the similarity: keep negative (i, n) if s_in + eps > min_{p in P(i)} s_ip, keep
    positive (i, p) if s_ip - eps < max_{n in N(i)} s_in. A row without positives keeps no
    negatives and vice versa. Default epsilon=0.1, cosine similarity (distances are handled by
    flipping the comparisons).
    """

    default_similarity = CosineSimilarity

    def __init__(self, epsilon: float = 0.1, distance: Similarity | str | None = None) -> None:
        super().__init__(distance)
        self.epsilon = check_real(epsilon, "epsilon")

    def transform(self, s, pos, neg):
        c = self._closeness(s)
        hardest_pos = masked_min(c, pos)
        hardest_neg = masked_max(c, neg)
        keep_neg = neg & (c + self.epsilon > hardest_pos[:, None])
        keep_pos = pos & (c - self.epsilon < hardest_neg[:, None])
        return keep_pos, keep_neg


class PairMarginMiner(Miner):
    """Keeps positives farther than ``pos_margin`` and negatives closer than ``neg_margin``.

    Distances: pos kept if d > pos_margin, neg kept if d < neg_margin; similarities: pos kept if
    s < pos_margin, neg kept if s > neg_margin. Defaults 0.2 / 0.8 on normalised L2 distance.
    """

    def __init__(self, pos_margin: float = 0.2, neg_margin: float = 0.8, distance=None) -> None:
        super().__init__(distance)
        self.pos_margin = check_real(pos_margin, "pos_margin")
        self.neg_margin = check_real(neg_margin, "neg_margin")

    def transform(self, s, pos, neg):
        if self.similarity.is_distance:
            return pos & (s > self.pos_margin), neg & (s < self.neg_margin)
        return pos & (s < self.pos_margin), neg & (s > self.neg_margin)


_STRATEGIES = ("hard", "semihard", "easy", "all")


def _one_hot_pick(c: torch.Tensor, mask: torch.Tensor, largest: bool) -> tuple[torch.Tensor, ...]:
    """Per row, the masked entry with the largest (or smallest) closeness: (one-hot, value, found)."""
    fill = float("-inf") if largest else float("inf")
    filled = c.masked_fill(~mask, fill)
    value, idx = filled.max(dim=1) if largest else filled.min(dim=1)
    found = mask.any(dim=1)
    one_hot = torch.zeros_like(mask)
    rows = torch.arange(c.shape[0], device=c.device)
    one_hot[rows[found], idx[found]] = True
    return one_hot, value, found


def _check_range(value: object, name: str) -> tuple[float, float] | None:
    """None or a pair (low, high) of finite numbers with low <= high."""
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise PairLossError(f"{name}: expected None or a pair (low, high), got {value!r}")
    low, high = check_real(value[0], name), check_real(value[1], name)
    if low > high:
        raise PairLossError(f"{name}: expected low <= high, got {value!r}")
    return low, high


class BatchEasyHardMiner(Miner):
    """One positive and/or one negative per anchor, by strategy (Xuan et al., WACV 2020).

    Strategies, for positives: hard = least close, easy = closest, semihard = least close among
    positives closer than the chosen negative; for negatives: hard = closest, easy = least close,
    semihard = closest among negatives farther than the chosen positive; "all" keeps every pair
    of that kind. ``allowed_pos_range`` / ``allowed_neg_range`` = (low, high) drop pairs whose
    score lies outside. When neither side is "all", anchors lacking either pick are dropped.
    Defaults: pos_strategy="easy", neg_strategy="semihard", normalised L2 distance.
    """

    def __init__(
        self,
        pos_strategy: str = "easy",
        neg_strategy: str = "semihard",
        allowed_pos_range: tuple[float, float] | None = None,
        allowed_neg_range: tuple[float, float] | None = None,
        distance=None,
    ) -> None:
        super().__init__(distance)
        check_choice(pos_strategy, "pos_strategy", _STRATEGIES)
        check_choice(neg_strategy, "neg_strategy", _STRATEGIES)
        if pos_strategy == neg_strategy == "semihard":
            raise PairLossError("pos_strategy, neg_strategy: cannot both be 'semihard'")
        if "semihard" in (pos_strategy, neg_strategy) and "all" in (pos_strategy, neg_strategy):
            raise PairLossError("pos_strategy, neg_strategy: 'semihard' cannot go with 'all'")
        self.pos_strategy, self.neg_strategy = pos_strategy, neg_strategy
        self.allowed_pos_range = _check_range(allowed_pos_range, "allowed_pos_range")
        self.allowed_neg_range = _check_range(allowed_neg_range, "allowed_neg_range")

    @property
    def picks_one_pair(self) -> bool:
        """True when every row keeps at most one positive and one negative."""
        return "all" not in (self.pos_strategy, self.neg_strategy)

    @staticmethod
    def _in_range(s, mask, rng):
        if rng is None:
            return mask
        return mask & (s >= rng[0]) & (s <= rng[1])

    def transform(self, s, pos, neg):
        c = self._closeness(s)
        pos_ok = self._in_range(s, pos, self.allowed_pos_range)
        neg_ok = self._in_range(s, neg, self.allowed_neg_range)
        ps, ns = self.pos_strategy, self.neg_strategy
        if ps == "semihard":
            n_pick, n_val, n_found = _one_hot_pick(c, neg_ok, largest=ns != "easy")
            p_pick, _, p_found = _one_hot_pick(c, pos_ok & (c > n_val[:, None]), largest=False)
        elif ns == "semihard":
            p_pick, p_val, p_found = _one_hot_pick(c, pos_ok, largest=ps == "easy")
            n_pick, _, n_found = _one_hot_pick(c, neg_ok & (c < p_val[:, None]), largest=True)
        else:
            if ps != "all":
                p_pick, _, p_found = _one_hot_pick(c, pos_ok, largest=ps == "easy")
            if ns != "all":
                n_pick, _, n_found = _one_hot_pick(c, neg_ok, largest=ns != "easy")
        if ps == "all" and ns == "all":
            return pos, neg
        if ps == "all":
            return pos, n_pick
        if ns == "all":
            return p_pick, neg
        keep = (p_found & n_found)[:, None]
        return p_pick & keep, n_pick & keep


class BatchHardMiner(BatchEasyHardMiner):
    """Batch-hard mining (Hermans et al. 2017): per anchor, the farthest positive and the closest
    negative; anchors lacking either are dropped. Normalised L2 distance by default."""

    def __init__(self, distance=None) -> None:
        super().__init__("hard", "hard", distance=distance)


class TripletMarginMiner(Miner):
    """Triplets (a, p, n) whose margin m_apn = d_an - d_ap (s_ap - s_an for similarities)
    satisfies: "all": m <= margin; "hard": m <= 0; "semihard": 0 < m <= margin;
    "easy": m > margin (FaceNet, Schroff et al. 2015). Default margin=0.2, "all".

    Triplet selection is not a product of a positive and a negative mask, so this miner is
    applied by :class:`pairloss.TripletMarginLoss` as a window on each positive's negatives
    (exact, with sorting and prefix sums); pair losses reject it.
    """

    def __init__(self, margin: float = 0.2, type_of_triplets: str = "all", distance=None) -> None:
        super().__init__(distance)
        self.type_of_triplets = check_choice(
            type_of_triplets, "type_of_triplets", ("all", "hard", "semihard", "easy")
        )
        self.margin = check_real(margin, "margin")

    def window(self) -> tuple[float, float]:
        """Allowed (low, high] range of the triplet margin m = d_an - d_ap."""
        inf = float("inf")
        return {
            "all": (-inf, self.margin),
            "hard": (-inf, 0.0),
            "semihard": (0.0, self.margin),
            "easy": (self.margin, inf),
        }[self.type_of_triplets]

    def transform(self, s, pos, neg):
        raise PairLossError(
            "miner: TripletMarginMiner selects triplets, which only TripletMarginLoss can "
            "apply (as miner= or indices_tuple); use a pair miner (MultiSimilarityMiner, "
            "BatchHardMiner, ...) here"
        )

    def indices(self, embeddings, labels, ref_emb=None, ref_labels=None):
        """pytorch-metric-learning's triplets ``(a, p, n)``: every anchor, positive and negative
        whose margin ``d_an - d_ap`` (``s_ap - s_an`` for similarities) lies in the window of
        ``type_of_triplets``. Memory O(B x N x N) (for inspection and tests)."""
        s, pos, neg = self._scores_and_relation(embeddings, labels, ref_emb, ref_labels)
        with torch.no_grad():
            c = self._closeness(s)
            margin = c[:, :, None] - c[:, None, :]  # [a, p, n]: closeness(a, p) - (a, n)
            low, high = self.window()
            keep = pos[:, :, None] & neg[:, None, :] & (margin > low) & (margin <= high)
            return tuple(keep.nonzero(as_tuple=True))
