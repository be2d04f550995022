"""Memory banks: XBM against pytorch-metric-learning, the MoCo queue against its formula and
against pytorch-metric-learning's NT-Xent, the momentum encoder, every in-batch loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

import pairloss
from pairloss.catalogue import LOSSES, example
from pairloss.errors import PairLossError
from pairloss.mining import MinedRelation
from pairloss.relations import LabelRelation
from pairloss.scale import CrossBatchMemory, MemoryQueue, MomentumEncoder

PML_XBM = [
    "ContrastiveLoss",
    "MultiSimilarityLoss",
    "NTXentLoss",
    "TripletMarginLoss",
    "CircleLoss",
    "SupConLoss",
    "MarginLoss",
    "GeneralizedLiftedStructureLoss",
]


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", PML_XBM)
@pytest.mark.parametrize("mined", [False, True], ids=["all pairs", "ms miner"])
def test_cross_batch_memory_equals_pytorch_metric_learning(name, mined):
    g = torch.Generator().manual_seed(len(name))
    ours = CrossBatchMemory(
        getattr(pairloss, name)(),
        6,
        memory_size=20,
        miner=pairloss.miners.MultiSimilarityMiner(0.1) if mined else None,
    ).double()
    theirs = pml_losses.CrossBatchMemory(
        getattr(pml_losses, name)(),
        6,
        memory_size=20,
        miner=pml_miners.MultiSimilarityMiner(0.1) if mined else None,
    ).double()
    for step in range(5):  # 5 x 8 rows: the memory of 20 wraps around twice
        x = torch.randn(8, 6, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (8,), generator=g)
        mask = (torch.arange(8) < 3) if step == 3 else None
        a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        la, lb = ours(a, y, enqueue_mask=mask), theirs(b, y, enqueue_mask=mask)
        la.backward()
        lb.backward()
        close(la, lb)
        close(a.grad, b.grad)
    close(ours.embedding_memory, theirs.embedding_memory)
    assert torch.equal(ours.label_memory, theirs.label_memory)
    assert (ours.queue_idx, ours.has_been_filled) == (theirs.queue_idx, theirs.has_been_filled)
    for p, q in zip(ours.loss.parameters(), theirs.loss.parameters()):
        close(p.grad, q.grad)


IN_BATCH = [e for e in LOSSES if e.inputs == "embeddings"]


def _refuses_reference(loss, x, y) -> bool:
    """Whether ``loss`` refuses what a memory bank passes: a reference set and the relation
    that leaves out each anchor's own slot."""
    relation = MinedRelation(None, LabelRelation(y, y.clone(), exclude_self=True))
    try:
        loss(x, y, relation, x.clone(), y.clone())
    except PairLossError as err:
        return "ref_emb" in str(err) or "indices_tuple" in str(err)
    return False


@pytest.mark.parametrize("entry", IN_BATCH, ids=lambda e: e.name)
def test_every_in_batch_loss_runs_on_both_memories(entry):
    """Every loss that takes a reference set runs on both memories (the first step equal to the
    in-batch loss); one that refuses a reference set is refused by the memory as clearly."""
    ex = example(entry, n=12, dim=5, seed=2)
    x, y = ex.call["embeddings"], ex.call["labels"]
    xbm = CrossBatchMemory(entry.load()(**ex.init), 5, memory_size=30).double()
    queue = MemoryQueue(entry.load()(**ex.init), 5, memory_size=30).double()
    if _refuses_reference(entry.load()(**ex.init).double(), x, y):
        with pytest.raises(PairLossError, match="ref_emb|indices_tuple"):
            xbm(x, y)
        return
    # first step: the memory holds the batch only, so the value is the plain in-batch loss
    close(xbm(x, y), entry.load()(**ex.init).double()(x, y))
    g = torch.Generator().manual_seed(5)
    for _ in range(3):
        e = (x + 0.1 * torch.randn(x.shape, generator=g)).requires_grad_(True)
        k = torch.randn(x.shape, generator=g, dtype=x.dtype)
        for value in (xbm(e, y), queue(e, k, y)):
            assert torch.isfinite(value)
            value.backward()
        assert torch.isfinite(e.grad).all()


def test_queue_is_moco_info_nce():
    t = 0.07
    queue = MemoryQueue(pairloss.NTXentLoss(temperature=t), 8, memory_size=10).double()
    g = torch.Generator().manual_seed(0)
    history = []
    for _ in range(4):
        q = torch.randn(4, 8, generator=g, dtype=torch.float64).requires_grad_(True)
        k = torch.randn(4, 8, generator=g, dtype=torch.float64)
        got = queue(q, k)
        (grad_got,) = torch.autograd.grad(got, q)
        queued = torch.cat(history)[-10:] if history else k[:0]  # FIFO: the 10 newest rows
        candidates = F.normalize(torch.cat([k, queued]), dim=1)
        logits = F.normalize(q, dim=1) @ candidates.T / t
        want = F.cross_entropy(logits, torch.arange(4))
        (grad_want,) = torch.autograd.grad(want, q)
        close(got, want)
        close(grad_got, grad_want)
        history.append(k)
    assert queue.has_been_filled and queue.queue_idx == 6


def test_labelled_queue_equals_pytorch_metric_learning_ntxent_on_keys_and_queue():
    ours = MemoryQueue(pairloss.NTXentLoss(temperature=0.2), 6, memory_size=9).double()
    theirs = pml_losses.NTXentLoss(temperature=0.2)
    g = torch.Generator().manual_seed(1)
    keys, labels = torch.zeros(0, 6, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
    for _ in range(4):
        q = torch.randn(5, 6, generator=g, dtype=torch.float64)
        k = torch.randn(5, 6, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (5,), generator=g)
        ref = torch.cat([k, keys[-9:]])  # the batch's keys and the 9 newest queued rows
        ref_labels = torch.cat([y, labels[-9:]])
        a, b = q.clone().requires_grad_(True), q.clone().requires_grad_(True)
        got = ours(a, k, y)
        want = theirs(b, y, ref_emb=ref, ref_labels=ref_labels)
        got.backward()
        want.backward()
        close(got, want)
        close(a.grad, b.grad)
        keys, labels = torch.cat([keys, k]), torch.cat([labels, y])


def test_momentum_encoder_is_an_exponential_moving_average():
    online = torch.nn.Linear(4, 3).double()
    ema = MomentumEncoder(online, momentum=0.9)
    start = [p.detach().clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    ema.update(online)
    for s, p, q in zip(start, ema.parameters(), online.parameters()):
        close(p, 0.9 * s + 0.1 * q)
        assert not p.requires_grad
    out = ema(torch.randn(2, 4, dtype=torch.float64))
    assert not out.requires_grad
    with pytest.raises(PairLossError, match="momentum"):
        MomentumEncoder(online, momentum=1.5)
    with pytest.raises(PairLossError, match="encoder"):
        ema.update(torch.nn.Linear(5, 3))


def test_bad_memory_input_is_named():
    xbm = CrossBatchMemory(pairloss.ContrastiveLoss(), 4, memory_size=6)
    x, y = torch.randn(4, 4), torch.arange(4) % 2
    with pytest.raises(PairLossError, match="memory_size"):
        xbm(torch.randn(8, 4), torch.arange(8) % 2)
    with pytest.raises(PairLossError, match="embedding_size"):
        xbm(torch.randn(4, 5), y)
    with pytest.raises(PairLossError, match="enqueue_mask"):
        xbm(x, y, enqueue_mask=torch.ones(4))
    with pytest.raises(PairLossError, match="mutually exclusive"):
        xbm(x, y, indices_tuple=(y, y, y), enqueue_mask=torch.ones(4, dtype=torch.bool))
    with pytest.raises(PairLossError, match="indices_tuple"):
        xbm(x, y, indices_tuple="pairs")
    assert xbm.queue_idx == 0  # refused before anything was enqueued
    with pytest.raises(PairLossError, match="batch_size"):
        xbm.add_to_memory(x, y, 5)
    with pytest.raises(PairLossError, match="does not support"):
        CrossBatchMemory(pml_losses.ArcFaceLoss(3, 4), 4)
    with pytest.raises(PairLossError, match="labels"):
        xbm(x, None)
    queue = MemoryQueue(pairloss.NTXentLoss(), 4, memory_size=6)
    with pytest.raises(PairLossError, match="keys"):
        queue(x, torch.randn(3, 4))
    with pytest.raises(PairLossError, match="key_labels"):
        queue(x, x, key_labels=y)


def _tuples(indices: tuple) -> list:
    """The index tuple as a sorted list of rows ((a, p, n) or (a1, p), then (a2, n))."""
    if len(indices) == 3:
        return sorted(zip(*(t.tolist() for t in indices)))
    pos = sorted(zip(indices[0].tolist(), indices[1].tolist()))
    return pos + sorted(zip(indices[2].tolist(), indices[3].tolist()))


@pytest.mark.parametrize("inner", ["pairloss", "pml"])
def test_pml_miners_losses_and_index_tuples_as_pytorch_metric_learning(inner):
    """A PML miner (translated), a PML or pairloss inner loss and explicit index tuples (pairs
    and triplets appended to the memory's pairs) give PML's CrossBatchMemory's values and
    gradients; ``create_indices_tuple`` and ``curr_batch_idx`` are PML's."""
    g = torch.Generator().manual_seed(3)
    lib = pairloss if inner == "pairloss" else pml_losses
    kinds = [
        (pml_miners.MultiSimilarityMiner(0.2), pml_losses.ContrastiveLoss),
        (pml_miners.TripletMarginMiner(margin=0.5), pml_losses.TripletMarginLoss),
    ]
    for miner, kind in kinds:
        ours = CrossBatchMemory(getattr(lib, kind.__name__)(), 6, 20, miner=miner).double()
        theirs = pml_losses.CrossBatchMemory(kind(), 6, 20, miner=miner).double()
        assert isinstance(ours.miner, pairloss.miners.Miner)
        for step in range(4):  # 4 x 8 rows: the memory of 20 wraps around
            x = torch.randn(8, 6, generator=g, dtype=torch.float64)
            y = torch.randint(0, 3, (8,), generator=g)
            # PML appends the given tuple to the memory's pairs, so pairs repeat: the pair-based
            # losses count a repeated pair twice, PML's and pairloss's alike
            given = None
            if step % 2:
                given = pml_miners.PairMarginMiner(0.1, 0.9)(x, y)
            a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
            la, lb = ours(a, y, given), theirs(b, y, given)
            la.backward()
            lb.backward()
            close(la, lb)
            close(a.grad, b.grad)
            assert torch.equal(ours.curr_batch_idx, theirs.curr_batch_idx)
            mem, lab = theirs.embedding_memory, theirs.label_memory
            for extra in (None, given):  # the same tuples (a miner may list them in any order)
                got = ours.create_indices_tuple(x, y, mem, lab, extra, True)
                want = theirs.create_indices_tuple(x, y, mem, lab, extra, True)
                assert _tuples(got) == _tuples(want)
    assert CrossBatchMemory.supported_losses() == pml_losses.CrossBatchMemory.supported_losses()
