"""Multi-Similarity loss and MS mining against pytorch-metric-learning."""

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from pairloss.losses.metric.multi_similarity import MultiSimilarityLoss
from pairloss.mining import MultiSimilarityMiner

from ..layouts import LAYOUTS, SEEDS, assert_close, make_batch, make_ref, value_and_grads


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("engine", ["dense", "blocked"])
def test_matches_pml(seed, layout, engine):
    x, y = make_batch(seed, layout)
    ours = MultiSimilarityLoss(alpha=2, beta=10, base=0.3, engine=engine, block_size=7)
    theirs = pml_losses.MultiSimilarityLoss(alpha=2, beta=10, base=0.3)
    assert_close(
        value_and_grads(lambda: ours(x, y), [x]), value_and_grads(lambda: theirs(x, y), [x])
    )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("engine", ["dense", "blocked"])
def test_matches_pml_with_reference_set(seed, engine):
    x, y = make_batch(seed, "unbalanced")
    r, ry = make_ref(seed)
    ours = MultiSimilarityLoss(engine=engine, block_size=5)
    theirs = pml_losses.MultiSimilarityLoss()
    assert_close(
        value_and_grads(lambda: ours(x, y, ref_emb=r, ref_labels=ry), [x, r]),
        value_and_grads(lambda: theirs(x, y, ref_emb=r, ref_labels=ry), [x, r]),
    )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("engine", ["dense", "blocked"])
def test_with_ms_mining_matches_pml(seed, layout, engine):
    x, y = make_batch(seed, layout)
    ours = MultiSimilarityLoss(engine=engine, block_size=5)
    theirs = pml_losses.MultiSimilarityLoss()
    assert_close(
        value_and_grads(lambda: ours(x, y, MultiSimilarityMiner(epsilon=0.1)(x, y)), [x]),
        value_and_grads(
            lambda: theirs(x, y, pml_miners.MultiSimilarityMiner(epsilon=0.1)(x, y)), [x]
        ),
    )
    # the miner given to the constructor is the same as its output given per call
    mined = MultiSimilarityLoss(miner=MultiSimilarityMiner(), engine=engine, block_size=5)
    torch.testing.assert_close(mined(x, y), ours(x, y, MultiSimilarityMiner()(x, y)))


@pytest.mark.parametrize("seed", SEEDS)
def test_with_explicit_indices_tuple_matches_pml(seed):
    x, y = make_batch(seed, "balanced")
    pairs = pml_miners.MultiSimilarityMiner(epsilon=0.3)(x, y)
    triplets = pml_miners.TripletMarginMiner(margin=0.5)(x, y)
    for tup in (pairs, triplets):
        if any(len(t) == 0 for t in tup):
            continue
        assert_close(
            value_and_grads(
                lambda t=tup: MultiSimilarityLoss(engine="blocked", block_size=5)(x, y, t), [x]
            ),
            value_and_grads(lambda t=tup: pml_losses.MultiSimilarityLoss()(x, y, t), [x]),
        )


@pytest.mark.parametrize("engine", ["dense", "blocked"])
def test_degenerate_batches_give_zero_with_zero_gradient(engine):
    loss = MultiSimilarityLoss(engine=engine, block_size=3)
    x = torch.randn(1, 4, dtype=torch.float64, requires_grad=True)
    out = loss(x, torch.tensor([3]))
    (g,) = torch.autograd.grad(out, x)
    assert out.item() == 0.0 and torch.count_nonzero(g) == 0
    # one class: positives only; all distinct labels: negatives only -> finite values
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    for y in (torch.zeros(6, dtype=torch.long), torch.arange(6)):
        out = loss(x, y)
        (g,) = torch.autograd.grad(out, x)
        assert torch.isfinite(out) and torch.isfinite(g).all()
