"""Miners: which pairs or triplets a loss learns from, with pytorch-metric-learning's names,
arguments and outputs (``pairloss.miners.MultiSimilarityMiner``, ...).

Calling a miner, ``miner(embeddings, labels, ref_emb=None, ref_labels=None)``, returns
pytorch-metric-learning's index tuple: pairs ``(a1, p, a2, n)`` or triplets ``(a, p, n)``, as
its miner of that name does, usable by any loss of either library. The tuple is a
:class:`MinedIndices` (a ``tuple`` subclass) that remembers its miner and the tensors it was
mined on. :meth:`Miner.mine` gives the plain tuple.

Inside the pair engine, a miner whose rule is a function of each anchor's row of scores
(:attr:`Miner.has_transform`: Multi-Similarity, pair-margin, batch easy/hard, and triplet-margin
for the triplet loss) is applied as a transform of the relation, block by block:
``transform(s, pos, neg)`` takes one block of scores (in the miner's own similarity, detached)
and the block's masks and returns new masks, so that mining never holds a B x N index list. A
pairloss loss does so when it receives the miner as ``miner=``, or receives a
:class:`MinedIndices` of such a miner computed on the very inputs of the call; the pairs are the
same either way. Other miners (random sampling, global thresholds, triplet angles) hand their
indices to the loss.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from .engine import compute_dtype
from .errors import PairLossError
from .objectives.terms import masked_max, masked_min
from .relations import LabelRelation, Relation
from .similarity import (
    BaseDistance,
    CosineSimilarity,
    LpDistance,
    Similarity,
    get_similarity,
    power_of_two_scale,
)
from .validation import (
    check_bool,
    check_choice,
    check_embeddings,
    check_int,
    check_labels,
    check_real,
    check_same_device_dtype,
)


def _fingerprint(t: torch.Tensor | None):
    return None if t is None else (weakref.ref(t), t._version)


def _same(t: torch.Tensor | None, mark) -> bool:
    if t is None or mark is None:
        return t is None and mark is None
    ref, version = mark
    return ref() is t and t._version == version


@dataclass
class MinedRelation:
    """An ``indices_tuple`` that hands a loss a miner to apply inside its engine and/or the
    relation to use: ``relation`` (optional) replaces the relation a loss builds from its labels
    (memory banks pass the one that leaves out each anchor's own slot); ``miner`` may then be
    None."""

    miner: Miner | None
    relation: Relation | None = None


class MinedIndices(tuple):
    """A miner's output: pytorch-metric-learning's index tuple (pairs ``(a1, p, a2, n)`` or
    triplets ``(a, p, n)``), which also knows the :attr:`miner` that produced it and the tensors
    it was mined on (weakly: it keeps none of them alive)."""

    def __new__(cls, indices, miner: Miner, embeddings, labels, ref_emb, ref_labels):
        out = super().__new__(cls, indices)
        out.miner = miner
        out._source = tuple(_fingerprint(t) for t in (embeddings, labels, ref_emb, ref_labels))
        return out

    def mined_on(self, embeddings, labels, ref_emb=None, ref_labels=None) -> bool:
        """Whether these indices were mined on exactly these tensors (the same objects,
        unmodified since)."""
        return all(
            _same(t, mark)
            for t, mark in zip((embeddings, labels, ref_emb, ref_labels), self._source)
        )

    def __reduce__(self):
        return (tuple, (tuple(self),))


def _validated_inputs(embeddings, labels, ref_emb, ref_labels, labels_required=True):
    same_labels = ref_labels is not None and ref_labels is labels
    embeddings = check_embeddings(embeddings, "embeddings")
    if labels is None:
        if labels_required:
            raise PairLossError("labels: required by this miner; expected a [batch] tensor")
    else:
        labels = check_labels(labels, embeddings.shape[0], "labels").to(embeddings.device)
    if ref_emb is not None:
        if isinstance(ref_emb, torch.Tensor):
            check_same_device_dtype(embeddings, ref_emb, "embeddings", "ref_emb")
        ref_emb = check_embeddings(ref_emb, "ref_emb")
        if ref_emb.shape[1] != embeddings.shape[1]:
            raise PairLossError(
                f"ref_emb: has {ref_emb.shape[1]} features but embeddings have "
                f"{embeddings.shape[1]}; expected the same embedding size"
            )
        if ref_labels is None and labels is not None:
            raise PairLossError("ref_labels: required when ref_emb is given")
        if ref_labels is not None:
            ref_labels = check_labels(ref_labels, ref_emb.shape[0], "ref_labels")
            ref_labels = ref_labels.to(embeddings.device)
    elif ref_labels is not None:
        raise PairLossError("ref_labels: given without ref_emb; expected both or neither")
    if same_labels:
        ref_labels = labels  # keep the identity that marks a set compared with itself
    return embeddings, labels, ref_emb, ref_labels


def label_relation(labels: torch.Tensor, ref_labels: torch.Tensor | None) -> LabelRelation:
    """The label relation of anchors and candidates, with pytorch-metric-learning's rule for the
    self pairs: left out when there is no reference set, or when ``ref_labels`` is the very
    ``labels`` tensor (``miner(x, y, x, y)``)."""
    return LabelRelation(
        labels, ref_labels, exclude_self=ref_labels is None or ref_labels is labels
    )


def all_pairs(labels: torch.Tensor, ref_labels: torch.Tensor | None = None):
    """Every positive and negative pair of the labels (self pairs left out as
    :func:`label_relation` says): ``(a1, p, a2, n)`` in row-major order."""
    pos, neg = label_relation(labels, ref_labels).block(0, labels.shape[0])
    a1, p = torch.where(pos)
    a2, n = torch.where(neg)
    return a1, p, a2, n


def triplets_where(pos: torch.Tensor, neg: torch.Tensor, keep=None, rows_per_step: int = 0):
    """Every triplet (a, p, n) with ``pos[a, p]`` and ``neg[a, n]`` (and ``keep(a_block)`` [b, N,
    N] true, if given), in (a, p, n) lexicographic order, a few anchor rows at a time (never a
    B x N x N tensor)."""
    b, n = pos.shape
    step = rows_per_step or max(1, (1 << 24) // max(1, n * n))
    out = [[], [], []]
    for start in range(0, b, step):
        end = min(b, start + step)
        cube = pos[start:end, :, None] & neg[start:end, None, :]
        if keep is not None:
            cube &= keep(start, end)
        a, p, q = torch.where(cube)
        out[0].append(a + start)
        out[1].append(p)
        out[2].append(q)
    empty = torch.zeros(0, dtype=torch.long, device=pos.device)
    return tuple(torch.cat(x) if x else empty for x in out)


class Miner(nn.Module):
    """Base class. ``similarity`` (alias ``distance``) is the space the miner compares in.

    Subclasses implement :meth:`mine` (the index tuple) or, for a row-wise rule,
    :meth:`transform` (and set ``has_transform``): :meth:`mine` then lists the transformed
    masks' cells. ``output`` says what the index tuple holds: ``"pairs"`` or ``"triplets"``.
    After each call ``num_pos_pairs`` / ``num_neg_pairs`` (pairs) or ``num_triplets`` hold the
    sizes of the output, as in pytorch-metric-learning.

    Args:
        distance: a pairloss similarity, a name, or a pytorch-metric-learning distance.
        collect_stats: accepted for pytorch-metric-learning's signature; no statistics beyond
            the output sizes are recorded.
    """

    default_similarity: type[Similarity] = LpDistance
    output = "pairs"
    has_transform = False

    def __init__(
        self, distance: Similarity | str | None = None, collect_stats: bool | None = None
    ) -> None:
        super().__init__()
        self.similarity = get_similarity(distance, self.default_similarity())
        self.collect_stats = (
            None if collect_stats is None else check_bool(collect_stats, "collect_stats")
        )
        self.num_pos_pairs = self.num_neg_pairs = self.num_triplets = 0

    @property
    def distance(self) -> Similarity:
        """Alias of ``similarity`` (pytorch-metric-learning's name)."""
        return self.similarity

    def transform(
        self, s: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """New (pos, neg) masks of a block from its scores ``s`` [b, N] (row-wise miners)."""
        raise PairLossError(
            f"miner: {type(self).__name__} has no row-wise rule; its indices are used instead"
        )

    def _closeness(self, s: torch.Tensor) -> torch.Tensor:
        return self.similarity.signed(s)

    def _matrix(self, embeddings, ref_emb):
        """The [B, N] scores in the miner's similarity (fp16/bf16 computed in fp32)."""
        sim, dtype = self.similarity, compute_dtype(embeddings)
        a = sim.prepare(embeddings.to(dtype))
        c = a if ref_emb is None else sim.prepare(ref_emb.to(dtype))
        if isinstance(sim, BaseDistance):  # pytorch-metric-learning's values, to the bit
            mat = sim.compute_mat(a, c)
            return mat if sim.power == 1 else mat**sim.power
        return sim.matrix(a, c)

    def mine(self, embeddings, labels, ref_emb=None, ref_labels=None) -> tuple:
        """The index tuple, as pytorch-metric-learning's ``mine``: pairs from the transformed
        masks (row-major), or, for ``output == "triplets"``, every (a, p, n) of them."""
        pos, neg = self.masks(embeddings, labels, ref_emb, ref_labels)
        if self.output == "triplets":
            return triplets_where(pos, neg)
        a1, p = torch.where(pos)
        a2, n = torch.where(neg)
        return a1, p, a2, n

    def forward(self, embeddings, labels, ref_emb=None, ref_labels=None) -> MinedIndices:
        """Mine (without gradients); returns a :class:`MinedIndices` tuple."""
        raw = (embeddings, labels, ref_emb, ref_labels)
        inputs = _validated_inputs(embeddings, labels, ref_emb, ref_labels)
        with torch.no_grad():
            out = tuple(self.mine(*inputs))
        if len(out) == 3:
            self.num_triplets = int(out[0].shape[0])
        else:
            self.num_pos_pairs, self.num_neg_pairs = int(out[0].shape[0]), int(out[2].shape[0])
        return MinedIndices(out, self, *raw)

    def masks(self, embeddings, labels, ref_emb=None, ref_labels=None):
        """Dense mined masks (pos, neg) of shape [B, N] of a row-wise miner."""
        embeddings, labels, ref_emb, ref_labels = _validated_inputs(
            embeddings, labels, ref_emb, ref_labels
        )
        with torch.no_grad():
            s = self._matrix(embeddings, ref_emb)
            pos, neg = label_relation(labels, ref_labels).block(0, embeddings.shape[0])
            return self.transform(s, pos, neg)

    def indices(self, embeddings, labels, ref_emb=None, ref_labels=None) -> tuple:
        """Pair indices ``(a1, p, a2, n)`` of the mined cells (triplets as their pairs)."""
        out = self.mine(*_validated_inputs(embeddings, labels, ref_emb, ref_labels))
        return out if len(out) == 4 else (out[0], out[1], out[0], out[2])


class MultiSimilarityMiner(Miner):
    """Multi-Similarity pair mining (Wang et al., CVPR 2019, eq. 7-8).

    With s the similarity: keep negative (i, n) if s_in + eps > min_{p in P(i)} s_ip, keep
    positive (i, p) if s_ip - eps < max_{n in N(i)} s_in. A row without positives keeps no
    negatives and vice versa. Default epsilon=0.1, cosine similarity (distances are handled by
    flipping the comparisons). Output: pairs.
    """

    default_similarity = CosineSimilarity
    has_transform = True

    def __init__(self, epsilon: float = 0.1, distance=None, **kwargs) -> None:
        super().__init__(distance, **kwargs)
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
    Output: pairs.
    """

    def __init__(self, pos_margin: float = 0.2, neg_margin: float = 0.8, distance=None) -> None:
        super().__init__(distance)
        self.pos_margin = check_real(pos_margin, "pos_margin")
        self.neg_margin = check_real(neg_margin, "neg_margin")

    def transform(self, s, pos, neg):
        if self.similarity.is_distance:
            return pos & (s > self.pos_margin), neg & (s < self.neg_margin)
        return pos & (s < self.pos_margin), neg & (s > self.neg_margin)


def _one_hot_pick(c: torch.Tensor, mask: torch.Tensor, largest: bool) -> tuple[torch.Tensor, ...]:
    """Per row, the masked entry with the largest (or smallest) closeness: (one-hot, value, found).
    Ties go to the first column (as ``torch.max`` / ``torch.min``)."""
    fill = float("-inf") if largest else float("inf")
    filled = c.masked_fill(~mask, fill)
    value, idx = filled.max(dim=1) if largest else filled.min(dim=1)
    found = mask.any(dim=1)
    one_hot = torch.zeros_like(mask)
    rows = torch.arange(c.shape[0], device=c.device)
    one_hot[rows[found], idx[found]] = True
    return one_hot, value, found


def _check_range(value, name: str):
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise PairLossError(f"{name}: expected None or (low, high), got {value!r}")
    low = check_real(value[0], f"{name}[0]")
    high = check_real(value[1], f"{name}[1]")
    return (low, high)


class BatchEasyHardMiner(Miner):
    """One positive and/or one negative per anchor, by strategy (Xuan et al., WACV 2020).

    Strategies, for positives: hard = least close, easy = closest, semihard = least close among
    positives closer than the chosen negative; for negatives: hard = closest, easy = least close,
    semihard = closest among negatives farther than the chosen positive; "all" keeps every pair
    of that kind. ``allowed_pos_range`` / ``allowed_neg_range`` = (low, high) drop pairs whose
    score lies outside. When neither side is "all", anchors lacking either pick are dropped.
    Defaults: pos_strategy="easy", neg_strategy="semihard", normalised L2 distance. Output:
    pairs ``(a, p, a, n)``. The strategy names are class constants (``HARD``, ``SEMIHARD``,
    ``EASY``, ``ALL``, ``all_batch_mining_strategies``), as in pytorch-metric-learning.
    """

    HARD = "hard"
    SEMIHARD = "semihard"
    EASY = "easy"
    ALL = "all"
    all_batch_mining_strategies = [HARD, SEMIHARD, EASY, ALL]
    has_transform = True

    def __init__(
        self,
        pos_strategy: str = EASY,
        neg_strategy: str = SEMIHARD,
        allowed_pos_range: tuple[float, float] | None = None,
        allowed_neg_range: tuple[float, float] | None = None,
        distance=None,
        **kwargs,
    ) -> None:
        super().__init__(distance, **kwargs)
        check_choice(pos_strategy, "pos_strategy", self.all_batch_mining_strategies)
        check_choice(neg_strategy, "neg_strategy", self.all_batch_mining_strategies)
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
    negative; anchors lacking either are dropped. Normalised L2 distance by default. Output:
    triplets ``(a, p, n)``, one per kept anchor (as pytorch-metric-learning).

    The strategies are fixed at "hard"; ``pos_strategy`` / ``neg_strategy`` are refused (use
    :class:`BatchEasyHardMiner` to choose them)."""

    output = "triplets"

    def __init__(
        self,
        allowed_pos_range: tuple[float, float] | None = None,
        allowed_neg_range: tuple[float, float] | None = None,
        distance=None,
        **kwargs,
    ) -> None:
        for fixed in ("pos_strategy", "neg_strategy"):
            if fixed in kwargs:
                raise PairLossError(
                    f"{fixed}: BatchHardMiner always mines 'hard' and takes no {fixed}, got "
                    f"{kwargs[fixed]!r}; use BatchEasyHardMiner to choose the strategies"
                )
        super().__init__(
            "hard", "hard", allowed_pos_range, allowed_neg_range, distance=distance, **kwargs
        )

    def mine(self, embeddings, labels, ref_emb=None, ref_labels=None) -> tuple:
        pos, neg = self.masks(embeddings, labels, ref_emb, ref_labels)
        a, p = torch.where(pos)
        _, n = torch.where(neg)  # one positive and one negative per kept row, rows in order
        return a, p, n


TRIPLET_TYPES = ("all", "hard", "semihard", "easy")


class TripletMarginMiner(Miner):
    """Triplets (a, p, n) whose margin m = d_an - d_ap (s_ap - s_an for similarities) satisfies,
    as pytorch-metric-learning: "all": m <= margin; "hard": m <= margin and m <= 0; "semihard":
    0 < m <= margin; "easy": m > margin (FaceNet, Schroff et al. 2015). Default margin=0.2,
    "all", normalised L2 distance. Output: every such triplet (a, p, n).

    Inside the pair engine the triplet loss applies this miner as a window on each positive's
    negatives (exact, with sorting and prefix sums); a pair loss given its output uses the
    listed triplets' pairs.
    """

    output = "triplets"

    def __init__(
        self, margin: float = 0.2, type_of_triplets: str = "all", distance=None, **kwargs
    ) -> None:
        super().__init__(distance, **kwargs)
        self.margin = check_real(margin, "margin")
        self.type_of_triplets = check_choice(type_of_triplets, "type_of_triplets", TRIPLET_TYPES)

    def window(self) -> tuple[float, float]:
        """Allowed (low, high] range of the triplet margin m = d_an - d_ap."""
        inf = float("inf")
        return {
            "all": (-inf, self.margin),
            "hard": (-inf, min(self.margin, 0.0)),
            "semihard": (0.0, self.margin),
            "easy": (self.margin, inf),
        }[self.type_of_triplets]

    def mine(self, embeddings, labels, ref_emb=None, ref_labels=None) -> tuple:
        s = self._matrix(embeddings, ref_emb)
        pos, neg = label_relation(labels, ref_labels).block(0, embeddings.shape[0])
        low, high = self.window()
        sign = 1.0 if self.similarity.is_distance else -1.0

        def keep(start, end):
            m = sign * (s[start:end, None, :] - s[start:end, :, None])  # [b, P, N]: d_an - d_ap
            return (m > low) & (m <= high)

        return triplets_where(pos, neg, keep)


class AngularMiner(Miner):
    """Triplets (a, p, n) whose angle at the negative exceeds ``angle`` degrees (Wang et al.,
    "Deep Metric Learning with Angular Loss", ICCV 2017): with c = (x_a + x_p) / 2,
    tan(angle_apn) = |x_a - x_p| / (2 |x_n - c|); the distances are the distance's
    ``pairwise_distance`` of the embeddings as given (as pytorch-metric-learning).
    Default ``angle=20``; needs ``LpDistance(p=2, power=1, normalize_embeddings=True)`` (the
    default). Output: triplets. The triplets are enumerated a few anchors at a time.

    The angles do not depend on the scale of the inputs. Inputs whose largest entry lies
    outside [2^-10, 2^10] are first divided by a power of two (exact) that brings it into
    (1/2, 1]: in pytorch-metric-learning the 1e-6 that ``pairwise_distance`` adds to every
    difference decides the angles of tiny inputs, and the squares of huge ones overflow. In the
    usual range nothing is scaled (the same results as there).
    """

    output = "triplets"

    def __init__(self, angle: float = 20, distance=None, **kwargs) -> None:
        super().__init__(distance, **kwargs)
        require_distance(self, "AngularMiner", LpDistance, p=2, power=1, normalize_embeddings=True)
        self.angle = math.radians(check_real(angle, "angle"))

    def mine(self, embeddings, labels, ref_emb=None, ref_labels=None) -> tuple:
        ref = embeddings if ref_emb is None else ref_emb
        m = power_of_two_scale(torch.cat([embeddings, ref]))
        if not 2.0**-10 <= float(m) <= 2.0**10:
            embeddings, ref = embeddings / m, ref / m
        pos, neg = label_relation(labels, ref_labels).block(0, embeddings.shape[0])
        a, p, n = triplets_where(pos, neg)
        keep = torch.zeros(a.shape[0], dtype=torch.bool, device=a.device)
        dist = self.similarity.pairwise_distance
        step = 1 << 20
        for start in range(0, a.shape[0], step):
            sl = slice(start, start + step)
            xa, xp, xn = embeddings[a[sl]], ref[p[sl]], ref[n[sl]]
            centers = (xa + xp) / 2
            angles = torch.atan(dist(xa, xp) / (2 * dist(xn, centers)))
            keep[sl] = angles > self.angle
        return a[keep], p[keep], n[keep]


class DistanceWeightedMiner(Miner):
    """Distance-weighted sampling (Wu et al., "Sampling Matters in Deep Embedding Learning",
    ICCV 2017, sec. 4): for each anchor and each of its positives, one negative drawn with
    probability proportional to 1 / q(d), q(d) ~ d^(D-2) (1 - d^2 / 4)^((D-3)/2) the density of
    distances between uniform points on the unit sphere in D dimensions, d clamped below at
    ``cutoff`` (the variance), and negatives at d >= ``nonzero_loss_cutoff`` (which give no loss)
    never drawn. Defaults as pytorch-metric-learning: ``cutoff=0.5``,
    ``nonzero_loss_cutoff=1.4``; needs ``LpDistance(p=2, power=1, normalize_embeddings=True)``.

    The draws use torch's global random generator in pytorch-metric-learning's order (per
    label: each anchor's positives, then the negatives), so the same seed gives the same
    triplets. Output: triplets.
    """

    output = "triplets"

    def __init__(
        self, cutoff: float = 0.5, nonzero_loss_cutoff: float = 1.4, distance=None, **kwargs
    ) -> None:
        super().__init__(distance, **kwargs)
        require_distance(
            self, "DistanceWeightedMiner", LpDistance, p=2, power=1, normalize_embeddings=True
        )
        self.cutoff = check_real(cutoff, "cutoff")
        self.nonzero_loss_cutoff = check_real(nonzero_loss_cutoff, "nonzero_loss_cutoff")

    def weights(self, embeddings, labels, ref_emb=None, ref_labels=None) -> torch.Tensor:
        """The sampling weights [B, N] of every (anchor, candidate): 0 on same-class cells, on
        cells at or beyond ``nonzero_loss_cutoff`` and where the density is undefined; rows
        normalised to sum 1 (a row with no weight holds NaN and draws nothing)."""
        d = embeddings.shape[1]
        mat = self._matrix(embeddings, ref_emb).clamp_min(self.cutoff)
        log_w = (2.0 - d) * torch.log(mat) - ((d - 3) / 2) * torch.log(1.0 - 0.25 * mat**2)
        bad = ~torch.isfinite(log_w)
        ref = labels if ref_labels is None else ref_labels
        same = labels[:, None] == ref[None, :]
        log_w = torch.where(same, 0.0, log_w)
        top = log_w[~bad].max() if bool((~bad).any()) else log_w.new_zeros(())
        w = torch.exp(log_w - top)
        w = w * (~same) * (mat < self.nonzero_loss_cutoff).to(w.dtype)
        w = torch.where(bad, 0.0, w)
        return w / w.sum(dim=1, keepdim=True)

    def mine(self, embeddings, labels, ref_emb=None, ref_labels=None) -> tuple:
        w = self.weights(embeddings, labels, ref_emb, ref_labels)
        return random_triplets(labels, ref_labels, w)


def random_triplets(labels, ref_labels=None, weights=None, per_anchor: int | None = None):
    """Random triplets per label, drawing from torch's global generator in
    pytorch-metric-learning's order: for each label (ascending), ``per_anchor`` (default: the
    label's number of positives) positives per anchor uniformly, then one negative per triplet,
    uniformly or from the anchor's row of ``weights`` [B, N] (rows summing to 0 or NaN draw
    nothing). Returns (a, p, n)."""
    same_set = ref_labels is None or ref_labels is labels
    ref = labels if same_set else ref_labels
    out_a, out_p, out_n = [], [], []
    for label in torch.unique(labels):
        p_idx = torch.where(ref == label)[0]
        a_idx = p_idx if same_set else torch.where(labels == label)[0]
        n_idx = torch.where(ref != label)[0]
        n_a, n_p = a_idx.shape[0], p_idx.shape[0]
        if n_p < (2 if same_set else 1) or n_idx.shape[0] < 1:
            continue
        k = n_p if per_anchor is None else per_anchor
        count = n_a * k
        choices = p_idx.expand(n_a, n_p)
        if same_set:
            choices = choices[~torch.eye(n_a, dtype=torch.bool, device=p_idx.device)]
            choices = choices.view(n_a, n_a - 1)
        pick = torch.randint(0, choices.shape[1], (count,)).to(p_idx.device)
        rows = torch.arange(n_a, device=p_idx.device).view(-1, 1).repeat(1, k).view(count)
        p = choices[rows, pick]
        a = a_idx[rows]
        if weights is not None:
            w = weights[:, n_idx][a]
            live = torch.where(torch.sum(w, dim=1) > 0)[0]
            if live.numel() == 0:
                continue
            w, a, p = w[live], a[live], p[live]
            if w.dtype == torch.float16:
                w = w.float()
            n_pick = torch.multinomial(w, 1, replacement=True).flatten()
        else:
            n_pick = torch.randint(0, n_idx.shape[0], (count,)).to(p_idx.device)
        out_a.append(a)
        out_p.append(p)
        out_n.append(n_idx[n_pick])
    if not out_a:
        empty = torch.zeros(0, dtype=torch.long, device=labels.device)
        return empty, empty.clone(), empty.clone()
    return tuple(
        torch.cat(x).to(device=labels.device, dtype=torch.long) for x in (out_a, out_p, out_n)
    )


class HDCMiner(Miner):
    """Hard-aware deeply cascaded mining (Yuan et al., "Hard-Aware Deeply Cascaded Embedding",
    ICCV 2017): of all positive pairs, the ``filter_percentage`` hardest (the farthest;
    ``ceil(filter_percentage * count)`` of them), and of all negative pairs the hardest (the
    closest) likewise. Default ``filter_percentage=0.5``, normalised L2 distance. Output: pairs.

    As pytorch-metric-learning's, the pairs to filter can be given beforehand with
    :meth:`set_idx_externally` (e.g. another miner's output; kept until :meth:`reset_idx`), for
    the cascade of the paper.
    """

    def __init__(self, filter_percentage: float = 0.5, distance=None, **kwargs) -> None:
        super().__init__(distance, **kwargs)
        self.filter_percentage = check_real(filter_percentage, "filter_percentage", 0.0, 1.0)
        self.reset_idx()

    def mine(self, embeddings, labels, ref_emb=None, ref_labels=None) -> tuple:
        mat = self._matrix(embeddings, ref_emb)
        if not self.was_set_externally:
            self.a1, self.p, self.a2, self.n = all_pairs(labels, ref_labels)
        farthest = self.similarity.is_distance
        for kind, largest in (("pos", farthest), ("neg", not farthest)):
            anchors, others = (self.a1, self.p) if kind == "pos" else (self.a2, self.n)
            if anchors.shape[0] == 0:
                continue
            pairs = mat[anchors, others]
            k = int(math.ceil(self.filter_percentage * pairs.shape[0]))
            _, idx = torch.topk(pairs, k=k, largest=largest)
            if kind == "pos":
                self.a1, self.p = anchors[idx], others[idx]
            else:
                self.a2, self.n = anchors[idx], others[idx]
        return self.a1, self.p, self.a2, self.n

    def set_idx_externally(self, external_indices_tuple, labels) -> None:
        """Filter these pairs (or triplets' pairs; None: all pairs of ``labels``) instead of
        all pairs of the labels."""
        if external_indices_tuple is None:
            external_indices_tuple = all_pairs(labels)
        if len(external_indices_tuple) == 3:
            a, p, n = external_indices_tuple
            external_indices_tuple = (a, p, a, n)
        self.a1, self.p, self.a2, self.n = external_indices_tuple
        self.was_set_externally = True

    def reset_idx(self) -> None:
        """Forget externally set pairs."""
        self.a1 = self.p = self.a2 = self.n = None
        self.was_set_externally = False


class UniformHistogramMiner(Miner):
    """Pairs spread uniformly over the range of scores: the positive pairs' scores are cut into
    ``num_bins`` equal bins between their min and max, and ``pos_per_bin`` pairs are drawn with
    replacement from each non-empty bin (negatives likewise, ``neg_per_bin``). Defaults as
    pytorch-metric-learning: 100 bins, 10 per bin, normalised L2 distance. The draws use torch's
    global generator in pytorch-metric-learning's order (positives bin by bin, then negatives),
    so the same seed gives the same pairs. Output: pairs (with repetitions).
    """

    def __init__(
        self,
        num_bins: int = 100,
        pos_per_bin: int = 10,
        neg_per_bin: int = 10,
        distance=None,
        **kwargs,
    ) -> None:
        super().__init__(distance, **kwargs)
        self.num_bins = check_int(num_bins, "num_bins", minimum=1)
        self.pos_per_bin = check_int(pos_per_bin, "pos_per_bin", minimum=1)
        self.neg_per_bin = check_int(neg_per_bin, "neg_per_bin", minimum=1)

    def _spread(self, scores, anchors, others, per_bin):
        edges = torch.linspace(
            scores.min(), scores.max(), self.num_bins + 1, device=scores.device,
            dtype=scores.dtype,
        )  # fmt: skip
        picks = []
        for i in range(self.num_bins):
            low = edges[i] <= scores
            high = scores < edges[i + 1] if i < self.num_bins - 1 else scores <= edges[i + 1]
            members = torch.where(low & high)[0]
            if members.numel() == 0:
                continue
            draw = torch.multinomial(
                torch.ones(members.shape[0], device=members.device), per_bin, replacement=True
            )
            picks.append(members[draw])
        idx = torch.cat(picks)
        return anchors[idx], others[idx]

    def mine(self, embeddings, labels, ref_emb=None, ref_labels=None) -> tuple:
        mat = self._matrix(embeddings, ref_emb)
        a1, p, a2, n = all_pairs(labels, ref_labels)
        if a1.numel():
            a1, p = self._spread(mat[a1, p], a1, p, self.pos_per_bin)
        if a2.numel():
            a2, n = self._spread(mat[a2, n], a2, n, self.neg_per_bin)
        return a1, p, a2, n


class EmbeddingsAlreadyPackagedAsTriplets(Miner):
    """For batches laid out as consecutive triplets (anchor, positive, negative, anchor, ...):
    the triplets (0, 1, 2), (3, 4, 5), ... The batch size must be a multiple of 3; labels are
    not read (when given they must still be one integer label per row). Output: triplets."""

    output = "triplets"

    def mine(self, embeddings, labels=None, ref_emb=None, ref_labels=None) -> tuple:
        b = embeddings.shape[0]
        if b % 3:
            raise PairLossError(
                f"embeddings: {b} rows are not whole triplets; expected a multiple of 3"
            )
        device = embeddings.device
        return tuple(torch.arange(k, b, 3, device=device) for k in range(3))

    def forward(self, embeddings, labels=None, ref_emb=None, ref_labels=None) -> MinedIndices:
        raw = (embeddings, labels, ref_emb, ref_labels)
        embeddings = check_embeddings(embeddings, "embeddings")
        if labels is not None:
            check_labels(labels, embeddings.shape[0])
        out = self.mine(embeddings)
        self.num_triplets = int(out[0].shape[0])
        return MinedIndices(out, self, *raw)


class PMLMiner(Miner):
    """A user's pytorch-metric-learning miner (a subclass pairloss has no class for): its
    ``mine`` gives the indices."""

    def __init__(self, pml_miner) -> None:
        super().__init__(pml_miner.distance)
        self.pml = pml_miner

    def mine(self, embeddings, labels, ref_emb=None, ref_labels=None) -> tuple:
        ref = embeddings if ref_emb is None else ref_emb
        ref_labels = labels if ref_emb is None else ref_labels
        return tuple(self.pml.mine(embeddings, labels, ref, ref_labels))


def require_distance(owner: nn.Module, name: str, kind: type, **settings) -> None:
    """A :class:`PairLossError` unless ``owner.distance`` is a ``kind`` with these settings
    (pytorch-metric-learning's ``assert_distance_type``)."""
    distance = owner.distance
    if not isinstance(distance, kind) or any(
        getattr(distance, k) != v for k, v in settings.items()
    ):
        wanted = ", ".join(f"{k}={v!r}" for k, v in settings.items())
        raise PairLossError(f"distance: {name} needs {kind.__name__}({wanted}), got {distance!r}")


def miner_from(obj: object) -> Miner | None:
    """A pairloss miner from ``obj``: None, a pairloss miner, or a pytorch-metric-learning miner
    (translated by :func:`pairloss.compat.pml.miner_from_pml`); else a :class:`PairLossError`."""
    if obj is None or isinstance(obj, Miner):
        return obj
    from .compat.pml import miner_from_pml

    out = miner_from_pml(obj)
    if out is None:
        hint = ""
        if isinstance(obj, str):  # a miner has its own arguments: it is built as an object
            hint = " (build the miner itself, e.g. pairloss.miners.BatchHardMiner())"
        raise PairLossError(
            f"miner: expected a pairloss or pytorch-metric-learning miner, got {obj!r}{hint}"
        )
    return out
