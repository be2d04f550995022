"""pair_weights reads off the weight dL/dS that a loss puts on each pair (GPW view)."""

import pytest
import torch

import pairloss
from pairloss.errors import PairLossError


def _vectors(angles):
    a = torch.tensor(angles, dtype=torch.float64)
    return torch.stack([a.cos(), a.sin()], dim=1)


def test_weights_equal_the_gradient_of_the_loss_with_respect_to_the_scores():
    torch.manual_seed(0)
    x = torch.randn(12, 5, dtype=torch.float64)
    y = torch.arange(12) % 3
    loss = pairloss.MultiSimilarityLoss(beta=10)
    w = pairloss.pair_weights(loss, x, y)
    s = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(x, dim=1).T
    s.requires_grad_(True)
    # the same loss written directly on the score matrix
    pos = (y[:, None] == y[None, :]) & ~torch.eye(12, dtype=torch.bool)
    neg = y[:, None] != y[None, :]
    lp = torch.log1p((torch.exp(-2 * (s - 0.5)) * pos).sum(1)) / 2
    ln = torch.log1p((torch.exp(10 * (s - 0.5)) * neg).sum(1)) / 10
    (g,) = torch.autograd.grad((lp + ln).mean(), s)
    torch.testing.assert_close(w.weight, g[w.anchor, w.candidate])
    torch.testing.assert_close(w.score, s.detach()[w.anchor, w.candidate])
    assert int(w.is_positive.sum()) == int(pos.sum())
    assert int((~w.is_positive).sum()) == int(neg.sum())


def test_ms_negative_weight_grows_with_its_own_similarity():
    torch.manual_seed(1)
    x = torch.randn(40, 8, dtype=torch.float64)
    y = torch.arange(40) % 4
    w = pairloss.pair_weights(pairloss.MultiSimilarityLoss(), x, y)
    for i in range(40):
        row = (w.anchor == i) & ~w.is_positive
        order = torch.argsort(w.score[row])
        weights = w.weight[row][order]
        assert (weights > 0).all()
        assert (weights[1:] > weights[:-1]).all()


def test_ms_negative_weight_grows_with_relative_similarity():
    # anchors 0 and 3 each have one negative at the same cosine 0.5 (angle pi/3); anchor 0's other
    # negatives are far (angle ~pi), anchor 3's are as close: the MS weight is larger for anchor 0
    angles = [0.0, 0.05, torch.pi / 3, 10.0, 10.05, 10.0 + torch.pi / 3]
    x = torch.cat([_vectors(angles), _vectors([torch.pi, torch.pi + 0.1, 10 + 1.0, 10 + 1.02])])
    y = torch.tensor([0, 0, 1, 2, 2, 3, 4, 4, 5, 5])
    w = pairloss.pair_weights(pairloss.MultiSimilarityLoss(), x, y)

    def weight(a, c):
        k = (w.anchor == a) & (w.candidate == c)
        return float(w.score[k]), float(w.weight[k])

    s0, w0 = weight(0, 2)
    s3, w3 = weight(3, 5)
    assert abs(s0 - s3) < 1e-12
    assert w0 > w3 > 0


def test_positive_weights_have_the_opposite_sign_for_a_similarity():
    torch.manual_seed(2)
    x = torch.randn(16, 4, dtype=torch.float64)
    w = pairloss.pair_weights(pairloss.MultiSimilarityLoss(), x, torch.arange(16) % 4)
    _, pos_w = w.positives()
    assert (pos_w < 0).all()


def test_miner_is_applied():
    torch.manual_seed(3)
    x = torch.randn(20, 4, dtype=torch.float64)
    y = torch.arange(20) % 4
    miner = pairloss.miners.MultiSimilarityMiner(0.1)
    w = pairloss.pair_weights(pairloss.MultiSimilarityLoss(miner=miner), x, y)
    pos, neg = miner.masks(x, y)
    assert w.anchor.numel() == int(pos.sum() + neg.sum())


def test_rejects_non_losses():
    with pytest.raises(PairLossError, match="loss"):
        pairloss.pair_weights(torch.nn.MSELoss(), torch.randn(4, 2), torch.arange(4))


def test_contrastive_weights_every_active_negative_the_same():
    torch.manual_seed(4)
    x = torch.randn(30, 6, dtype=torch.float64)
    y = torch.arange(30) % 5
    loss = pairloss.ContrastiveLoss(pos_margin=0.0, neg_margin=1.2)
    w = pairloss.pair_weights(loss, x, y)
    scores, weights = w.negatives()
    active = scores < 1.2
    assert w.is_distance and 0 < int(active.sum()) < scores.numel()
    assert torch.allclose(weights[active], weights[active][0].expand(int(active.sum())))
    assert float(weights[active][0]) < 0
    assert (weights[~active] == 0).all()
