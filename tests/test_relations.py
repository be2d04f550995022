"""Relations build the right masks, block by block, without a full matrix."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pairloss.errors import PairLossError
from pairloss.relations import LabelRelation, PairListRelation, view_ids


def _full(rel, block):
    parts = [rel.block(s, min(rel.n_anchors, s + block)) for s in range(0, rel.n_anchors, block)]
    return torch.cat([p for p, _ in parts]), torch.cat([n for _, n in parts])


@settings(max_examples=30, deadline=None)
@given(
    labels=st.lists(st.integers(0, 3), min_size=1, max_size=12),
    block=st.integers(1, 5),
)
def test_label_relation_blocks_match_the_definition(labels, block):
    y = torch.tensor(labels)
    pos, neg = _full(LabelRelation(y), block)
    same = y[:, None] == y[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool)
    assert torch.equal(pos, same & ~eye)
    assert torch.equal(neg, ~same)


def test_reference_labels_keep_the_diagonal_and_ignore_mask_drops_cells():
    y, ry = torch.tensor([0, 1, 0]), torch.tensor([0, 1, 1, 0])
    ignore = torch.zeros(3, 4, dtype=torch.bool)
    ignore[0, 0] = True
    pos, neg = LabelRelation(y, ry, ignore=ignore).block(0, 3)
    assert pos.tolist() == [
        [False, False, False, True],
        [False, True, True, False],
        [True, False, False, True],
    ]
    assert neg.tolist() == [
        [False, True, True, False],
        [True, False, False, True],
        [False, True, True, False],
    ]
    with pytest.raises(PairLossError, match="ignore"):
        LabelRelation(y, ry, ignore=torch.zeros(2, 2, dtype=torch.bool))


def test_pair_list_relation_from_pairs_and_triplets():
    pairs = (torch.tensor([0, 2, 2]), torch.tensor([1, 3, 3]), torch.tensor([1]), torch.tensor([0]))
    rel = PairListRelation(pairs, 4, 4)
    pos, neg = _full(rel, 3)
    assert {tuple(t) for t in torch.nonzero(pos).tolist()} == {(0, 1), (2, 3)}
    assert {tuple(t) for t in torch.nonzero(neg).tolist()} == {(1, 0)}
    trip = (torch.tensor([0, 0]), torch.tensor([1, 1]), torch.tensor([2, 3]))
    pos, neg = PairListRelation(trip, 4, 4).block(0, 4)
    assert int(pos.sum()) == 1 and int(neg.sum()) == 2
    with pytest.raises(PairLossError, match="integer"):
        PairListRelation((torch.tensor([0.0]), torch.tensor([1]), torch.tensor([2])), 4, 4)


def test_view_ids():
    assert view_ids(3, 2).tolist() == [0, 1, 2, 0, 1, 2]
    with pytest.raises(PairLossError):
        view_ids(0)
