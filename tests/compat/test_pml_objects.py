"""pytorch-metric-learning's objects inside pairloss, pairloss's outputs inside it, and the
class weights in its layout (checkpoints load, assignment takes effect or raises)."""

from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning import losses as pml
from pytorch_metric_learning import miners as pml_miners

import pairloss
from pairloss import miners
from pairloss.errors import PairLossError

from ..layouts import assert_close, make_batch, value_and_grads

PROXY_LOSSES = [
    ("ArcFaceLoss", "W", {}),
    ("CosFaceLoss", "W", {}),
    ("NormalizedSoftmaxLoss", "W", {}),
    ("LargeMarginSoftmaxLoss", "W", {}),
    ("SphereFaceLoss", "W", {}),
    ("SubCenterArcFaceLoss", "W", {}),
    ("ProxyAnchorLoss", "proxies", {}),
    ("ProxyNCALoss", "proxies", {}),
    ("SoftTripleLoss", "fc", {"centers_per_class": 3}),
]


@pytest.mark.parametrize("name,attr,kw", PROXY_LOSSES, ids=[c[0] for c in PROXY_LOSSES])
def test_pml_checkpoints_load_and_weights_follow_assignment(name, attr, kw):
    torch.manual_seed(3)
    theirs = getattr(pml, name)(num_classes=5, embedding_size=4, **kw)
    ours = getattr(pairloss, name)(num_classes=5, embedding_size=4, **kw)
    ours.load_state_dict(theirs.state_dict())  # the same keys, shapes and layout
    assert set(ours.state_dict()) == set(theirs.state_dict())
    x = torch.randn(8, 4, dtype=torch.float64)
    y = torch.arange(8) % 5
    ours, theirs = ours.double(), theirs.double()
    torch.testing.assert_close(ours(x, y), theirs(x, y))
    torch.testing.assert_close(ours.get_logits(x), theirs.get_logits(x))
    new = torch.nn.Parameter(torch.randn_like(getattr(theirs, attr)))
    setattr(theirs, attr, new)
    setattr(ours, attr, torch.nn.Parameter(new.detach().clone()))
    torch.testing.assert_close(ours(x, y), theirs(x, y))  # the new weights took effect
    with pytest.raises(PairLossError, match=attr):
        setattr(ours, attr, torch.nn.Parameter(torch.randn(3, 3)))
    other = next(n for n in ("W", "proxies", "fc") if n != attr)
    with pytest.raises(PairLossError, match=other):
        setattr(ours, other, torch.nn.Parameter(torch.randn(4, 5)))


def test_sub_center_outliers_match_pml():
    torch.manual_seed(0)
    theirs = pml.SubCenterArcFaceLoss(num_classes=3, embedding_size=4, sub_centers=2)
    ours = pairloss.SubCenterArcFaceLoss(3, 4, sub_centers=2)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(30, 4)
    y = torch.arange(30) % 3
    a = ours.get_outliers(x, y, threshold=60)
    b = theirs.get_outliers(x, y, threshold=60)
    assert sorted(a[0].tolist()) == sorted(b[0].tolist())
    torch.testing.assert_close(a[1], b[1])


def test_pml_miners_inside_pairloss_and_pairloss_indices_inside_pml():
    x, y = make_batch(0, "balanced", n=20)
    # a PML miner passed to a pairloss loss is translated and mined inside the engine
    ours = pairloss.MultiSimilarityLoss(miner=pml_miners.MultiSimilarityMiner(0.2))
    want = pml.MultiSimilarityLoss()(x, y, pml_miners.MultiSimilarityMiner(0.2)(x, y))
    torch.testing.assert_close(ours(x, y), want)
    assert isinstance(ours.miner, miners.MultiSimilarityMiner)

    # a user's own PML miner is used through its indices
    class EveryOther(pml_miners.BaseMiner):
        def mine(self, embeddings, labels, ref_emb, ref_labels):
            a, p, n = pml_miners.TripletMarginMiner(0.5).mine(
                embeddings, labels, ref_emb, ref_labels
            )
            return a[::2], p[::2], n[::2]

    torch.testing.assert_close(
        pairloss.TripletMarginLoss(miner=EveryOther())(x, y),
        pml.TripletMarginLoss()(x, y, EveryOther()(x, y)),
    )
    # pairloss miners' index tuples feed PML's losses
    for miner, loss in (
        (miners.MultiSimilarityMiner(0.3), pml.ContrastiveLoss()),
        (miners.BatchHardMiner(), pml.TripletMarginLoss()),
        (miners.TripletMarginMiner(0.2, "semihard"), pml.TripletMarginLoss(0.2)),
    ):
        ours_tuple = miner(x, y)
        theirs_tuple = getattr(pml_miners, type(miner).__name__)(
            **({"epsilon": 0.3} if "MultiSim" in type(miner).__name__ else {})
            | (
                {"margin": 0.2, "type_of_triplets": "semihard"}
                if "TripletMargin" in type(miner).__name__
                else {}
            )
        )(x, y)
        torch.testing.assert_close(loss(x, y, ours_tuple), loss(x, y, theirs_tuple))


def test_mined_indices_take_the_engine_path_only_on_their_own_inputs():
    x, y = make_batch(1, "unbalanced", n=20)
    miner = miners.MultiSimilarityMiner(0.2)
    tup = miner(x, y)
    loss = pairloss.MultiSimilarityLoss(engine="blocked", block_size=7)
    assert_close(
        value_and_grads(lambda: loss(x, y, tup), [x]),
        value_and_grads(lambda: pml.MultiSimilarityLoss()(x, y, tuple(tup)), [x]),
    )
    other = x.detach().clone().requires_grad_(True)  # other inputs: the listed pairs are used
    assert_close(
        value_and_grads(lambda: loss(other, y, tup), [other]),
        value_and_grads(lambda: pml.MultiSimilarityLoss()(other, y, tuple(tup)), [other]),
    )
