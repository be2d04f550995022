"""Memory banks: candidates from earlier batches, without gradient.

- :class:`CrossBatchMemory` (XBM; Wang et al., "Cross-Batch Memory for Embedding Learning",
  CVPR 2020) with pytorch-metric-learning's name, arguments and results: the batch is enqueued
  first, then each anchor is scored against the whole memory (its own slot left out).
- :class:`MemoryQueue` (MoCo; He et al., "Momentum Contrast for Unsupervised Visual
  Representation Learning", CVPR 2020): each anchor is scored against the batch's keys (from a
  momentum encoder, :class:`MomentumEncoder`) and a FIFO queue of earlier keys; the keys are
  enqueued after the loss.

Both wrap any in-batch loss that takes pytorch-metric-learning's
``(embeddings, labels, indices_tuple, ref_emb, ref_labels)`` call. Under a distributed loss
(``DistributedLossWrapper(CrossBatchMemory(...))``) the wrapper gathers the batch in rank order
before the memory sees it, so every process enqueues the same global batch and the memories
stay identical on every process (pytorch-metric-learning's gather puts the own rank first, so
its memories differ between processes: its issue 639).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import PairLossError
from ..losses.base import PairLossModule
from ..mining import MinedIndices, MinedRelation, Miner, all_pairs, miner_from
from ..relations import LabelRelation
from ..validation import check_embeddings, check_int, check_labels, check_real


def _check_loss(loss: object) -> nn.Module:
    if not isinstance(loss, nn.Module):
        raise PairLossError(f"loss: expected a loss module, got {type(loss).__name__}")
    return loss


def _check_mask(mask: object, n: int) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.dim() != 1 or mask.shape[0] != n:
        raise PairLossError(
            f"enqueue_mask: expected a boolean tensor of shape [{n}] (one flag per row)"
        )
    if mask.dtype != torch.bool:
        raise PairLossError(f"enqueue_mask: expected dtype torch.bool, got {mask.dtype}")
    return mask


class _Ring(nn.Module):
    """A ring buffer of ``memory_size`` embeddings and labels."""

    def __init__(self, embedding_size: int, memory_size: int) -> None:
        super().__init__()
        self.embedding_size = check_int(embedding_size, "embedding_size", minimum=1)
        self.memory_size = check_int(memory_size, "memory_size", minimum=1)
        self.reset_queue()

    def reset_queue(self) -> None:
        """Empty the memory."""
        self.register_buffer("embedding_memory", torch.zeros(self.memory_size, self.embedding_size))
        self.register_buffer("label_memory", torch.zeros(self.memory_size, dtype=torch.long))
        self.has_been_filled = False
        self.queue_idx = 0

    def _follow(self, like: torch.Tensor) -> None:
        """Keep the memory on ``like``'s device and in its dtype."""
        if self.embedding_memory.device != like.device or self.embedding_memory.dtype != like.dtype:
            self.embedding_memory = self.embedding_memory.to(like.device, like.dtype)
            self.label_memory = self.label_memory.to(like.device)

    def add_to_memory(
        self, embeddings: torch.Tensor, labels: torch.Tensor, batch_size: int | None = None
    ) -> torch.Tensor:
        """Write ``embeddings`` (detached) and ``labels`` at the next slots (the first
        ``batch_size`` rows, all by default: pytorch-metric-learning's signature); the slots
        are kept as ``curr_batch_idx`` and returned."""
        n = (
            embeddings.shape[0]
            if batch_size is None
            else check_int(batch_size, "batch_size", minimum=0)
        )
        if n > embeddings.shape[0] or labels.shape[0] < n:
            raise PairLossError(
                f"batch_size: {n} rows asked for but {embeddings.shape[0]} embeddings and "
                f"{labels.shape[0]} labels given; expected at most as many rows as given"
            )
        embeddings, labels = embeddings[:n], labels[:n]
        slots = torch.arange(self.queue_idx, self.queue_idx + n, device=embeddings.device)
        slots = slots % self.memory_size
        self.embedding_memory[slots] = embeddings.detach()
        self.label_memory[slots] = labels.to(self.label_memory.dtype)
        previous = self.queue_idx
        self.queue_idx = (self.queue_idx + n) % self.memory_size
        if not self.has_been_filled and n > 0 and self.queue_idx <= previous:
            self.has_been_filled = True
        self.curr_batch_idx = slots
        return slots

    def filled(self) -> int:
        """How many slots hold an embedding."""
        return self.memory_size if self.has_been_filled else self.queue_idx

    def _check_batch(self, embeddings: object, name: str = "embeddings") -> torch.Tensor:
        embeddings = check_embeddings(embeddings, name, allow_empty=True)
        if embeddings.shape[1] != self.embedding_size:
            raise PairLossError(
                f"{name}: have {embeddings.shape[1]} features but the memory holds "
                f"{self.embedding_size}; expected embedding_size columns"
            )
        return embeddings


_PML_SUPPORTED = (
    "AngularLoss",
    "CircleLoss",
    "ContrastiveLoss",
    "GeneralizedLiftedStructureLoss",
    "IntraPairVarianceLoss",
    "LiftedStructureLoss",
    "MarginLoss",
    "MultiSimilarityLoss",
    "NCALoss",
    "NTXentLoss",
    "SignalToNoiseRatioContrastiveLoss",
    "SupConLoss",
    "TripletMarginLoss",
    "TupletMarginLoss",
)


class CrossBatchMemory(_Ring):
    """Cross-batch memory (XBM): every anchor against the embeddings of recent batches.

    pytorch-metric-learning's ``CrossBatchMemory(loss, embedding_size, memory_size=1024,
    miner=None)``, same call ``(embeddings, labels, indices_tuple=None, enqueue_mask=None)``,
    same methods (``add_to_memory(embeddings, labels, batch_size)``, ``create_indices_tuple``,
    ``reset_queue``, ``supported_losses``), attributes (``curr_batch_idx``, ``queue_idx``,
    ``has_been_filled``) and results (tested against it in float64, values and gradients, over
    several steps with the memory wrapping around, and with PML's own test file): the batch (or
    its rows flagged by ``enqueue_mask``) is written into the ring buffer first (detached),
    then ``loss(anchors, labels, indices_tuple, ref_emb=memory, ref_labels=memory labels)`` is
    evaluated, where the anchors are the batch (or its rows not flagged) and each anchor's own
    memory slot is left out. Gradients reach the anchors only.

    Paper: Wang, Zhang, Huang & Scott, CVPR 2020 (memory of the most recent embeddings, the
    current batch included).

    Two paths give the same pairs:

    - a pairloss loss with no explicit ``indices_tuple`` (or a pairloss miner's output, whose
      miner is then used) gets the relation "same label, not the anchor's own slot" and the
      miner, applied inside its engine block by block (no index lists). A row-wise miner
      (``has_transform``) then sees each anchor without its own slot; pytorch-metric-learning
      mines first and drops the slot after, which differs only for rows whose sole positive is
      themselves.
    - any other loss (a pytorch-metric-learning loss, a user's module), a miner with no
      row-wise rule, or an explicit ``indices_tuple`` gets pytorch-metric-learning's index
      tuple (:meth:`create_indices_tuple`): the miner's tuple on (anchors, memory), or every
      pair of them, with each anchor's own slot left out, then the given ``indices_tuple``
      appended (converted to pairs or triplets to match, as pytorch-metric-learning does).
      A pair listed twice there counts as the loss counts listings (twice in
      pytorch-metric-learning's pair-based losses and their pairloss twins, once in the losses
      computed on a mask: see :func:`pairloss.losses.base.read_listings`).

    ``miner`` may be a pairloss miner or a pytorch-metric-learning miner (translated to
    pairloss's miner of the same name and settings). pytorch-metric-learning losses must be
    among :meth:`supported_losses` (as pytorch-metric-learning checks); pairloss losses and
    other modules with the same call are accepted as they are.

    Shapes: embeddings [B, embedding_size] with B <= memory_size (unless ``enqueue_mask``
    [B] bool is given), labels [B]. Buffers ``embedding_memory`` [memory_size, D] and
    ``label_memory`` [memory_size].
    """

    def __init__(
        self,
        loss: nn.Module,
        embedding_size: int,
        memory_size: int = 1024,
        miner: Miner | None = None,
    ) -> None:
        super().__init__(embedding_size, memory_size)
        self.loss = _check_loss(loss)
        if type(loss).__module__.startswith("pytorch_metric_learning."):
            self.check_loss_support(type(loss).__name__)
        self.miner = miner_from(miner)

    @staticmethod
    def supported_losses() -> list[str]:
        """pytorch-metric-learning's list of the losses its CrossBatchMemory wraps."""
        return list(_PML_SUPPORTED)

    @classmethod
    def check_loss_support(cls, loss_name: str) -> None:
        """A :class:`PairLossError` unless ``loss_name`` is in :meth:`supported_losses`."""
        if loss_name not in cls.supported_losses():
            raise PairLossError(
                f"loss: CrossBatchMemory does not support pytorch-metric-learning's {loss_name}; "
                f"expected one of {', '.join(cls.supported_losses())} (or a pairloss loss)"
            )

    def _engine_miner(self, indices_tuple):
        """(use the engine path, miner) for this call."""
        if not isinstance(self.loss, PairLossModule):
            return False, None
        miner = self.miner
        if isinstance(indices_tuple, MinedRelation) and indices_tuple.relation is None:
            miner = miner or indices_tuple.miner
        elif isinstance(indices_tuple, MinedIndices) and indices_tuple.miner.has_transform:
            miner = miner or indices_tuple.miner  # a row-wise rule: applied against the memory
        elif isinstance(indices_tuple, Miner):
            miner = miner or indices_tuple
        elif indices_tuple is not None:
            return False, None
        return miner is None or miner.has_transform, miner

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        indices_tuple=None,
        enqueue_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Enqueue, then the loss of the anchors against the memory (see the class docstring)."""
        embeddings = self._check_batch(embeddings)
        n = embeddings.shape[0]
        if labels is None:
            raise PairLossError("labels: required by CrossBatchMemory; expected a [batch] tensor")
        labels = check_labels(labels, n).to(embeddings.device)
        if indices_tuple is not None and enqueue_mask is not None:
            raise PairLossError(
                "indices_tuple, enqueue_mask: mutually exclusive; expected at most one"
            )
        engine, miner = self._engine_miner(indices_tuple)
        if not engine and indices_tuple is not None:
            _check_given(indices_tuple)  # before the memory changes
        self._follow(embeddings)
        if enqueue_mask is not None:
            mask = _check_mask(enqueue_mask, n).to(embeddings.device)
            self.add_to_memory(embeddings[mask], labels[mask])
            anchors, anchor_labels = embeddings[~mask], labels[~mask]
        else:
            if n > self.memory_size:
                raise PairLossError(
                    f"embeddings: {n} rows do not fit a memory of {self.memory_size}; expected "
                    "at most memory_size rows (or an enqueue_mask)"
                )
            self.add_to_memory(embeddings, labels)
            anchors, anchor_labels = embeddings, labels
        if anchors.shape[0] == 0:
            return embeddings.sum() * 0.0
        filled = self.filled()
        memory, memory_labels = self.embedding_memory[:filled], self.label_memory[:filled]
        if not engine:
            pairs = self.create_indices_tuple(
                anchors, anchor_labels, memory, memory_labels, indices_tuple, enqueue_mask is None
            )
            return self.loss(anchors, anchor_labels, pairs, memory, memory_labels)
        relation = None
        if enqueue_mask is None:
            # the batch's own slots first, so that anchor i's own slot is candidate i
            slots = self.curr_batch_idx
            others = torch.ones(filled, dtype=torch.bool, device=embeddings.device)
            others[slots] = False
            order = torch.cat([slots, torch.nonzero(others).flatten()])
            memory, memory_labels = memory[order], memory_labels[order]
            relation = LabelRelation(anchor_labels, memory_labels, exclude_self=True)
        marker = None
        if relation is not None or miner is not None:
            marker = MinedRelation(miner, relation)
        return self.loss(anchors, anchor_labels, marker, memory, memory_labels)

    def create_indices_tuple(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        E_mem: torch.Tensor,
        L_mem: torch.Tensor,
        input_indices_tuple=None,
        do_remove_self_comparisons: bool = True,
    ) -> tuple:
        """pytorch-metric-learning's index tuple of the anchors against the memory: the miner's
        tuple (or every pair), each anchor's own slot (``curr_batch_idx``) left out of its
        positives when ``do_remove_self_comparisons``, then ``input_indices_tuple`` appended
        (converted to the same kind: pairs ``(a1, p, a2, n)`` or triplets ``(a, p, n)``)."""
        if self.miner is not None:
            indices = tuple(self.miner(embeddings, labels, E_mem, L_mem))
        else:
            indices = all_pairs(labels, L_mem)
        if do_remove_self_comparisons:
            indices = self._without_own_slots(indices)
        if input_indices_tuple is None:
            return indices
        given = _check_given(input_indices_tuple)
        if len(given) == 3 and len(indices) == 4:
            given = (given[0], given[1], given[0], given[2])
        elif len(given) == 4 and len(indices) == 3:
            given = triplets_from_pairs(given)
        return tuple(torch.cat([x, y.to(x.device)]) for x, y in zip(indices, given))

    def _without_own_slots(self, indices: tuple) -> tuple:
        """``indices`` without the positive pairs (or triplets) of an anchor and its own
        memory slot (pytorch-metric-learning's ``remove_self_comparisons``)."""
        slots = self.curr_batch_idx
        a, p = indices[0], indices[1]
        if a.numel() and int(a.max()) >= slots.shape[0]:
            raise PairLossError(
                f"embeddings: anchor index {int(a.max())} has no slot in the last enqueued batch "
                f"of {slots.shape[0]} rows; expected the batch that was enqueued last"
            )
        keep = p != slots.to(a.device)[a]
        if len(indices) == 3:
            return tuple(t[keep] for t in indices)
        return a[keep], p[keep], indices[2], indices[3]

    def extra_repr(self) -> str:
        return f"embedding_size={self.embedding_size}, memory_size={self.memory_size}"


def _check_given(indices_tuple) -> tuple:
    """An explicit ``indices_tuple`` as a tuple of 3 or 4 tensors, else a PairLossError."""
    listed = isinstance(indices_tuple, (tuple, list))
    if not (listed and len(indices_tuple) in (3, 4)):
        raise PairLossError(
            "indices_tuple: expected None, a pairloss miner's output, or an index tuple "
            f"(a, p, n) or (a1, p, a2, n); got {type(indices_tuple).__name__}"
        )
    return tuple(indices_tuple)


def triplets_from_pairs(pairs: tuple) -> tuple:
    """pytorch-metric-learning's ``convert_to_triplets`` of pairs ``(a1, p, a2, n)``: every
    positive pair combined with every negative pair of the same anchor."""
    a1, p, a2, n = pairs
    ip, jn = torch.where(a1[:, None] == a2[None, :])
    return a1[ip], p[ip], n[jn]


class MemoryQueue(_Ring):
    """A MoCo-style queue: each anchor against this batch's keys and a FIFO of earlier keys.

    ``queue(embeddings, keys, labels=None, key_labels=None)`` evaluates ``loss(embeddings,
    labels, ref_emb=cat(keys, queue), ref_labels=...)`` and then enqueues the keys (detached),
    dropping the oldest beyond ``memory_size``: MoCo's order (He et al., CVPR 2020, Algorithm
    1). Without labels it is instance discrimination: anchor i's positive is key i, every other
    key and every queued key is a negative (in-batch keys count as negatives, as in MoCo v3 and
    SimCLR; MoCo v1/v2 score the queue only); with labels, queued keys of the anchor's class
    are positives too (supervised contrast). Any in-batch loss with reference candidates works
    (NTXentLoss(temperature=0.07) is MoCo's InfoNCE). Keys come from a momentum encoder,
    :class:`MomentumEncoder`; they carry no gradient unless the caller gives them one.

    Shapes: embeddings [B, D], keys [B, D] (D = embedding_size), labels / key_labels [B].
    """

    def __init__(self, loss: nn.Module, embedding_size: int, memory_size: int = 65536) -> None:
        super().__init__(embedding_size, memory_size)
        self.loss = _check_loss(loss)
        self.register_buffer("labelled", torch.zeros(self.memory_size, dtype=torch.bool))

    def reset_queue(self) -> None:
        super().reset_queue()
        self.register_buffer("labelled", torch.zeros(self.memory_size, dtype=torch.bool))

    def queued_slots(self) -> torch.Tensor:
        """The slots that hold a key, oldest first."""
        order = torch.arange(self.filled(), device=self.embedding_memory.device)
        if self.has_been_filled:
            order = (order + self.queue_idx) % self.memory_size
        return order

    def forward(
        self,
        embeddings: torch.Tensor,
        keys: torch.Tensor,
        labels: torch.Tensor | None = None,
        key_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss against the keys and the queue, then enqueue the keys (see the class
        docstring)."""
        embeddings = self._check_batch(embeddings)
        keys = self._check_batch(keys, "keys")
        n, k = embeddings.shape[0], keys.shape[0]
        if key_labels is not None and labels is None:
            raise PairLossError("key_labels: given without labels; expected both or neither")
        if key_labels is None and n != k:
            raise PairLossError(
                f"keys: {k} rows for {n} embeddings; without key_labels expected one key per "
                "row (key i pairs with row i)"
            )
        self._follow(embeddings)
        labelled = labels is not None
        if labels is None:
            labels = torch.arange(n, device=embeddings.device)
        labels = check_labels(labels, n).to(embeddings.device)
        key_labels = labels if key_labels is None else key_labels
        key_labels = check_labels(key_labels, k, "key_labels").to(embeddings.device)
        slots = self.queued_slots()
        # a queued key without a label matches no anchor
        unmatched = (labels.min() - 1) if n else labels.new_zeros(())
        queued_labels = torch.where(self.labelled[slots], self.label_memory[slots], unmatched)
        candidates = torch.cat([keys, self.embedding_memory[slots]])
        cand_labels = torch.cat([key_labels, queued_labels])
        loss = self.loss(embeddings, labels, None, candidates, cand_labels)
        written = self.add_to_memory(keys, key_labels)
        self.labelled[written] = labelled
        return loss

    def extra_repr(self) -> str:
        return f"embedding_size={self.embedding_size}, memory_size={self.memory_size}"


class MomentumEncoder(nn.Module):
    """A momentum (exponential moving average) copy of an encoder, for MoCo keys (and BYOL
    targets).

    ``update(encoder)`` sets every parameter ``p_k <- m p_k + (1 - m) p_q`` from the online
    ``encoder`` and copies its buffers (He et al., CVPR 2020, eq. 2; default ``momentum=0.999``
    as MoCo); calling the module runs the copy without gradient. The copy starts equal to
    ``encoder`` (its ``.module`` for a DistributedDataParallel wrapper); under DDP the online
    parameters are the same on every process, so the copies stay identical too.
    """

    def __init__(self, encoder: nn.Module, momentum: float = 0.999) -> None:
        super().__init__()
        if not isinstance(encoder, nn.Module):
            raise PairLossError(
                f"encoder: expected a torch.nn.Module, got {type(encoder).__name__}"
            )
        self.momentum = check_real(momentum, "momentum", 0.0, 1.0)
        self.encoder = copy.deepcopy(_online(encoder))
        self.encoder.requires_grad_(False)

    @torch.no_grad()
    def update(self, encoder: nn.Module) -> None:
        """One EMA step towards ``encoder``'s current parameters."""
        online = _online(encoder)
        mine = list(self.encoder.parameters())
        theirs = list(online.parameters())
        if len(mine) != len(theirs) or any(a.shape != b.shape for a, b in zip(mine, theirs)):
            raise PairLossError(
                "encoder: its parameters differ in number or shape from the momentum copy's; "
                "expected the encoder the copy was made from"
            )
        m = self.momentum
        for k, q in zip(mine, theirs):
            k.mul_(m).add_(q.detach(), alpha=1.0 - m)
        for k, q in zip(self.encoder.buffers(), online.buffers()):
            k.copy_(q)

    def forward(self, *args, **kwargs):
        """The momentum encoder's output, without gradient."""
        with torch.no_grad():
            return self.encoder(*args, **kwargs)


def _online(encoder: nn.Module) -> nn.Module:
    if isinstance(encoder, nn.parallel.DistributedDataParallel):
        return encoder.module
    return encoder
