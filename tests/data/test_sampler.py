"""PKSampler: batch invariants (hypothesis), determinism, ranks, length, and errors."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from pairloss.data import PKSampler
from pairloss.errors import PairLossError


def labels_from_sizes(sizes: list[int], seed: int) -> torch.Tensor:
    """Class ``c`` has ``sizes[c]`` samples (labels 10 * c, to avoid 0..n-1), shuffled."""
    labels = torch.repeat_interleave(10 * torch.arange(len(sizes)), torch.tensor(sizes))
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


@st.composite
def sampler_args(draw: st.DrawFn, replace: bool = False) -> dict:
    sizes = draw(st.lists(st.integers(1, 12), min_size=1, max_size=12))
    k = draw(st.integers(1, min(5, max(sizes))))  # at least one class has k samples
    usable = sum(s >= (1 if replace else k) for s in sizes)
    p = draw(st.integers(1, usable))
    world_size = draw(st.integers(1, 4))
    return {
        "labels": labels_from_sizes(sizes, draw(st.integers(0, 99))),
        "p": p,
        "k": k,
        "batches": draw(st.one_of(st.none(), st.integers(world_size, 12))),
        "seed": draw(st.integers(0, 2**31)),
        "world_size": world_size,
        "drop_last": draw(st.booleans()),
        "replace": replace,
    }


def check_batch(batch: list[int], labels: list[int], p: int, k: int) -> None:
    """P distinct classes x K samples, grouped by class; indices repeat only in classes that
    have fewer than K samples (possible with replace=True)."""
    assert len(batch) == p * k and all(isinstance(i, int) for i in batch)
    assert all(0 <= i < len(labels) for i in batch)
    batch_labels = [labels[i] for i in batch]
    counts = Counter(batch_labels)
    assert len(counts) == p and set(counts.values()) == {k}
    assert all(len(set(batch_labels[j * k : (j + 1) * k])) == 1 for j in range(p))
    sizes = Counter(labels)
    repeated = [i for i, n in Counter(batch).items() if n > 1]
    assert all(sizes[labels[i]] < k for i in repeated)


@settings(max_examples=60, deadline=None)
@given(args=sampler_args(), replace=st.booleans(), epoch=st.integers(0, 3))
def test_batches_hold_p_classes_of_k_samples(args, replace, epoch):
    args = {**args, "replace": replace}
    sampler = PKSampler(**args)
    sampler.set_epoch(epoch)
    batches = list(sampler)
    assert len(batches) == len(sampler) >= 1
    for batch in batches:
        check_batch(batch, args["labels"].tolist(), args["p"], args["k"])


@settings(max_examples=40, deadline=None)
@given(args=sampler_args(replace=True))
def test_replace_keeps_small_classes(args):
    sampler = PKSampler(**args)
    assert sampler.excluded_classes.numel() == 0
    assert sampler.classes.tolist() == sorted(set(args["labels"].tolist()))
    for batch in sampler:
        check_batch(batch, args["labels"].tolist(), args["p"], args["k"])


@settings(max_examples=40, deadline=None)
@given(args=sampler_args(), epoch=st.integers(0, 5))
def test_ranks_are_disjoint_and_equal_in_length(args, epoch):
    world_size = args["world_size"]
    per_rank = []
    for rank in range(world_size):
        sampler = PKSampler(**{**args, "rank": rank})
        sampler.set_epoch(epoch)
        per_rank.append(list(sampler))
        assert len(per_rank[-1]) == len(sampler)
    assert len({len(b) for b in per_rank}) == 1
    # rank r holds batches r, r + world_size, ... of one global sequence
    n = len(per_rank[0])
    single = PKSampler(**{**args, "world_size": 1, "batches": n * world_size, "drop_last": True})
    single.set_epoch(epoch)
    assert [per_rank[j % world_size][j // world_size] for j in range(n * world_size)] == list(
        single
    )


@settings(max_examples=30, deadline=None)
@given(args=sampler_args())
def test_deterministic_under_seed_and_epoch(args):
    a, b = PKSampler(**args), PKSampler(**args)
    assert list(a) == list(b) == list(a)  # re-iterating repeats the epoch
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)


def test_epochs_and_seeds_change_the_batches():
    labels = torch.arange(200) % 10
    sampler = PKSampler(labels, p=4, k=3, seed=7)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert list(PKSampler(labels, p=4, k=3, seed=8)) != first


def test_one_epoch_visits_every_sample_once_when_balanced():
    labels = torch.arange(240) % 12  # 12 classes of 20; p=4 divides 12, k=5 divides 20
    sampler = PKSampler(labels, p=4, k=5, seed=1)
    assert len(sampler) == 240 // 20
    seen = [i for batch in sampler for i in batch]
    assert sorted(seen) == list(range(240))


def test_lengths():
    labels = torch.arange(100) % 5
    assert len(PKSampler(labels, 2, 5)) == 10
    assert len(PKSampler(labels, 2, 5, world_size=3, rank=2)) == 3
    assert len(PKSampler(labels, 2, 5, batches=7, world_size=3)) == 2
    assert len(PKSampler(labels, 2, 5, batches=7, world_size=3, drop_last=False)) == 3
    assert len(PKSampler(labels, 5, 10, batches=None, world_size=8)) == 1
    assert PKSampler(labels, 2, 5).batch_size == 10


def test_excluded_classes_and_inputs():
    labels = np.array([4, 4, 4, 7, 9, 9, 9, 9])
    sampler = PKSampler(labels, p=2, k=3)
    assert sampler.classes.tolist() == [4, 9] and sampler.excluded_classes.tolist() == [7]
    assert all(7 not in labels[b] for b in sampler)
    assert list(PKSampler(labels.tolist(), p=2, k=3)) == list(sampler)


def test_with_a_dataloader():
    labels = torch.arange(60) % 6
    data = TensorDataset(torch.randn(60, 4), labels)
    loader = DataLoader(data, batch_sampler=PKSampler(labels, p=3, k=4, batches=5))
    shapes = [(x.shape, y.bincount(minlength=6).max().item()) for x, y in loader]
    assert shapes == [(torch.Size([12, 4]), 4)] * 5


def test_cannot_draw_p_by_k():
    labels = [0, 0, 0, 1, 1, 2]
    with pytest.raises(PairLossError, match=r"cannot draw 3 x 2: only 2 classes have >= 2 samples"):
        PKSampler(labels, p=3, k=2)
    with pytest.raises(PairLossError, match="cannot draw 4 x 2: only 3 classes have >= 1 sample "):
        PKSampler(labels, p=4, k=2, replace=True)
    assert len(PKSampler(labels, p=3, k=2, replace=True)) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p": 0}, "p: expected an int >= 1"),
        ({"k": 2.0}, "k: expected an int"),
        ({"p": True}, "p: expected an int"),
        ({"batches": 0}, "batches: expected an int >= 1"),
        ({"seed": -1}, "seed: expected an int >= 0"),
        ({"rank": 2, "world_size": 2}, "rank: expected 0 <= rank < world_size=2"),
        ({"world_size": 0}, "world_size: expected an int >= 1"),
        ({"batches": 1, "world_size": 2}, "batches: 1 batches cannot give every one"),
        ({"drop_last": 1}, "drop_last: expected a bool"),
        ({"labels": torch.zeros(2, 3, dtype=torch.long)}, "labels: expected a 1-D tensor"),
        ({"labels": torch.tensor([0.0, 1.0])}, "labels: expected integer labels"),
        ({"labels": "abc"}, "labels: expected a 1-D tensor, array or sequence"),
    ],
)
def test_argument_errors(kwargs, message):
    args = {"labels": torch.arange(20) % 4, "p": 2, "k": 2, **kwargs}
    with pytest.raises(PairLossError, match=message):
        PKSampler(**args)


def test_set_epoch_checks_its_argument():
    with pytest.raises(PairLossError, match="epoch: expected an int >= 0"):
        PKSampler([0, 0, 1, 1], 2, 2).set_epoch(-1)
