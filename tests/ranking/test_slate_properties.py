"""Ranking losses: dense equals blocked, padding invariance, ties, lists without a relevant
item, scores of 1e4, half precision, gradcheck, counts, bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import pairloss
from pairloss.catalogue import LOSSES, example
from pairloss.engine import run_slate
from pairloss.errors import PairLossError
from pairloss.objectives.ranking import (
    LAMBDA_SCHEMES,
    count_lambda_pairs,
    lambda_pairs_objective,
)

SLATE_ENTRIES = [e for e in LOSSES if e.inputs == "slates"]


def slate(seed=0, q=5, n=8, dtype=torch.float64, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    s = (scale * torch.randn(q, n, generator=g, dtype=dtype)).requires_grad_(True)
    y = torch.randint(0, 4, (q, n), generator=g).to(dtype)
    return s, y


def grad_of(out, s):
    """The value ``out`` and the gradient of its sum with respect to ``s``."""
    (g,) = torch.autograd.grad(out.sum(), s)
    return out.detach(), g


PAIRWISE = [
    *(lambda e, s=s: pairloss.LambdaLoss(s, k=3, engine=e, block_size=3) for s in LAMBDA_SCHEMES),
    lambda e: pairloss.LambdaLoss("ndcg_loss2pp", k=3, k_pairs="both", engine=e, block_size=2),
    lambda e: pairloss.RankNetLoss(weight_by_diff=True, engine=e, block_size=3),
    lambda e: pairloss.BPRLoss(engine=e, block_size=1),
    lambda e: pairloss.MannWhitneyRankingLoss(engine=e, block_size=3),
    lambda e: pairloss.PairwiseSoftmaxLoss("atan", 0.5, engine=e, block_size=3),
    lambda e: pairloss.PairwiseSoftmaxLoss("relu", engine=e, block_size=2),
    lambda e: pairloss.ApproxNDCGLoss(0.5, engine=e, block_size=3),
    lambda e: pairloss.ADRMSELoss(engine=e, block_size=5),
]


@pytest.mark.parametrize("make", PAIRWISE)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_dense_equals_blocked(make, reduction):
    for seed in (0, 1):
        s, y = slate(seed)
        y[1, 5:] = -1  # padding
        w = torch.linspace(0.5, 2.0, s.shape[0], dtype=s.dtype)
        outs = []
        for engine in ("dense", "blocked"):
            loss = make(engine)
            loss.reduction = reduction
            v = loss(s, y)
            (g,) = torch.autograd.grad((v * w[: v.numel()]).sum() if v.dim() else v, s)
            outs.append((v.detach(), g))
        torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-10, atol=1e-12)


def test_blocked_walk_without_grad_and_no_grad_mode():
    s, y = slate(3)
    loss = pairloss.LambdaLoss(engine="blocked", block_size=2)
    with torch.no_grad():
        a = loss(s, y)
    assert not a.requires_grad
    torch.testing.assert_close(a, pairloss.LambdaLoss(engine="dense")(s, y).detach())


@pytest.mark.parametrize("scheme", LAMBDA_SCHEMES)
@pytest.mark.parametrize("k, k_pairs", [(None, "either"), (2, "either"), (3, "both"), (20, "both")])
def test_pair_counts_in_closed_form_equal_the_counted_pairs(scheme, k, k_pairs):
    s, y = slate(4, q=6, n=9)
    valid = torch.rand(s.shape, generator=torch.Generator().manual_seed(1)) > 0.2
    valid, _ = torch.sort(valid.to(torch.int8), dim=1, descending=True)  # real items first
    valid = valid.bool()
    rel = torch.where(valid, y, torch.zeros_like(y))
    objective = lambda_pairs_objective(rel, valid, rel, scheme, 1.0, 10.0, k, k_pairs, 1.0)
    _, counted = run_slate(objective, s.detach(), "dense")
    torch.testing.assert_close(counted, count_lambda_pairs(rel, valid, scheme, k, k_pairs))


def _pad(entry, s, y, extra=3, seed=0):
    """The same slate with ``extra`` padded items inserted at random positions (after item 0,
    which Margin-MSE reads as the positive) holding NaN scores and arbitrary labels."""
    g = torch.Generator().manual_seed(seed)
    q, n = s.shape
    total = n + extra
    keep = torch.zeros(q, total, dtype=torch.bool)
    for row in range(q):
        slots = 1 + torch.randperm(total - 1, generator=g)[: n - 1]
        keep[row, 0] = True
        keep[row, slots] = True
    s2 = torch.full((q, total), math.nan, dtype=s.dtype)
    y2 = torch.full((q, total), 3.0, dtype=y.dtype)
    s2[keep] = s.detach().reshape(-1)
    y2[keep] = y.reshape(-1)
    return s2.requires_grad_(True), y2, keep


@pytest.mark.parametrize("entry", SLATE_ENTRIES, ids=lambda e: e.name)
def test_padding_anywhere_changes_nothing(entry):
    for seed in (0, 1):
        s, y = slate(seed)
        loss = entry.load()(reduction="none")
        base = grad_of(loss(s, y), s)
        s2, y2, keep = _pad(entry, s, y, seed=seed)
        padded = grad_of(loss(s2, y2, keep), s2)
        torch.testing.assert_close(padded[0], base[0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(padded[1][keep].reshape(s.shape), base[1], rtol=1e-9, atol=1e-12)
        assert bool((padded[1][~keep] == 0).all())
        if loss.padded_value_indicator == -1:  # allRank's convention: relevance -1 is padding
            y3 = torch.where(keep, y2, torch.full_like(y2, -1.0))
            torch.testing.assert_close(loss(s2, y3).detach(), base[0], rtol=1e-10, atol=1e-12)


ZERO_WITHOUT_RELEVANT = {
    "lambda_loss", "ranknet", "bpr", "mann_whitney_ranking", "pairwise_softmax",
    "approx_ndcg", "neural_ndcg", "listwise_softmax",
}  # fmt: skip


@pytest.mark.parametrize("entry", SLATE_ENTRIES, ids=lambda e: e.name)
def test_list_without_relevant_item_is_finite(entry):
    s, y = slate(5)
    y[2] = 0.0
    loss = entry.load()(reduction="none")
    values, grad = grad_of(loss(s, y), s)
    assert torch.isfinite(values).all() and torch.isfinite(grad).all()
    if entry.name in ZERO_WITHOUT_RELEVANT:
        assert float(values[2]) == 0.0 and bool((grad[2] == 0).all())
    everything_zero = torch.zeros_like(y)
    total, g = grad_of(entry.load()()(s, everything_zero), s)
    assert torch.isfinite(total) and torch.isfinite(g).all()


@pytest.mark.parametrize("entry", SLATE_ENTRIES, ids=lambda e: e.name)
def test_scores_of_1e4_stay_finite(entry):
    s, y = slate(6, scale=1e4)
    for dtype in (torch.float64, torch.float32):
        x = s.detach().to(dtype).requires_grad_(True)
        value, grad = grad_of(entry.load()()(x, y.to(dtype)), x)
        assert torch.isfinite(value) and torch.isfinite(grad).all(), dtype


def naive_ranknet(s, y, sigma=1.0):
    """RankNet written out pair by pair (the mean over pairs y_i > y_j)."""
    terms = []
    for q in range(s.shape[0]):
        for i in range(s.shape[1]):
            for j in range(s.shape[1]):
                if y[q, i] > y[q, j]:
                    terms.append(F.softplus(-sigma * (s[q, i] - s[q, j])))
    return torch.stack(terms).mean()


def test_ranknet_at_1e4_is_the_exact_pair_loss():
    s, y = slate(7, q=3, n=5, scale=1e4)
    ours = grad_of(pairloss.RankNetLoss(engine="blocked", block_size=2)(s, y), s)
    ref = grad_of(naive_ranknet(s, y), s)
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(ours[1], ref[1], rtol=1e-12, atol=1e-15)


def test_tied_scores_and_labels():
    # all scores tied: every pair's logistic loss is log 2
    s = torch.zeros(2, 5, dtype=torch.float64)
    y = torch.tensor([[3.0, 1, 0, 0, 2], [1, 1, 1, 0, 0]], dtype=torch.float64)
    assert float(pairloss.RankNetLoss()(s, y)) == pytest.approx(math.log(2), rel=1e-15)
    # tied labels make no pair: only the pairs of different labels count
    assert float(pairloss.RankNetLoss(reduction="sum")(s, y)) == pytest.approx(
        (9 + 6) * math.log(2), rel=1e-14
    )
    # ADR-MSE: tied labels share their average rank, reached exactly by tied scores
    assert float(pairloss.ADRMSELoss()(s, torch.ones_like(s))) == 0.0
    # ListMLE breaks tied labels by input position (a stable sort)
    x, labels = slate(8, q=1, n=6)
    labels = torch.tensor([[2.0, 1, 2, 0, 1, 2]], dtype=torch.float64)
    order = torch.tensor([0, 2, 5, 1, 4, 3])
    explicit = torch.arange(6, 0, -1, dtype=torch.float64)[None]
    torch.testing.assert_close(
        pairloss.ListMLELoss()(x, labels), pairloss.ListMLELoss()(x[:, order], explicit)
    )


def test_listwise_softmax_with_one_relevant_item_is_cross_entropy():
    s, _ = slate(9)
    target = torch.randint(0, s.shape[1], (s.shape[0],), generator=torch.Generator().manual_seed(2))
    y = F.one_hot(target, s.shape[1]).to(s.dtype) * 3.0  # the label scale does not matter
    torch.testing.assert_close(pairloss.ListwiseSoftmaxLoss()(s, y), F.cross_entropy(s, target))


def test_plackett_luce_distillation_special_cases():
    s, t = slate(10)
    t = torch.randn(s.shape, dtype=s.dtype, generator=torch.Generator().manual_seed(3))
    loss = pairloss.PlackettLuceDistillationLoss()
    # translation invariant in the student's scores
    torch.testing.assert_close(loss(s + 5.0, t), loss(s, t))
    # a one-hot teacher puts all the weight on the first choice: cross-entropy of the target
    target = torch.tensor([1, 0, 3, 7, 2])
    hot = F.one_hot(target, s.shape[1]).to(s.dtype) * 1e4
    torch.testing.assert_close(loss(s, hot), F.cross_entropy(s, target))
    torch.testing.assert_close(loss(s, t * 0, targets=target), loss(s, t * 0 + 0, targets=target))


@pytest.mark.parametrize("entry", SLATE_ENTRIES, ids=lambda e: e.name)
def test_half_precision_is_returned_in_input_dtype(entry):
    ex = example(entry, n=3, dim=5)
    s = ex.call["scores"].to(torch.bfloat16).requires_grad_(True)
    out = entry.load()()(s, ex.call["relevance"])
    (g,) = torch.autograd.grad(out, s)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out) and torch.isfinite(g).all()


@pytest.mark.parametrize("engine", ["dense", "blocked"])
def test_gradcheck_lambda_loss(engine):
    s, y = slate(11, q=3, n=6)
    loss = pairloss.LambdaLoss(k=4, engine=engine, block_size=2)
    assert torch.autograd.gradcheck(lambda x: loss(x, y), (s,))
    approx = pairloss.ApproxNDCGLoss(engine=engine, block_size=2)
    assert torch.autograd.gradcheck(lambda x: approx(x, y), (s,))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda L, s, y: L()(s[0], y[0]), "scores: expected a 2-D"),
        (lambda L, s, y: L()(s, y[:, :3]), "relevance: has shape"),
        (lambda L, s, y: L()(s.detach().long(), y), "floating-point"),
        (lambda L, s, y: L()(s, y, torch.ones_like(y)), "mask: expected a boolean"),
        (lambda L, s, y: L()(s[:0], y[:0]), "empty"),
        (lambda L, s, y: L()(s.detach().index_fill(1, torch.tensor([2]), math.nan), y), "query"),
        (lambda L, s, y: L()(s, y - 5), "relevance: has negative labels"),
        (lambda L, s, y: L(weighting_scheme="ndcg3"), "weighting_scheme"),
        (lambda L, s, y: L(k=0), "k: expected an int"),
        (lambda L, s, y: L(sigma=-1.0), "sigma"),
        (lambda L, s, y: L(engine="fast"), "engine"),
        (lambda L, s, y: L(block_size=0), "block_size"),
        (lambda L, s, y: L(k_pairs="any"), "k_pairs"),
        (lambda L, s, y: L(reduction="avg"), "reduction"),
        (lambda L, s, y: L(padded_value_indicator="x"), "padded_value_indicator"),
    ],
)
def test_bad_input_is_named(call, match):
    s, y = slate(12)
    with pytest.raises(PairLossError, match=match):
        call(pairloss.LambdaLoss, s, y)


def test_scheme_names_of_the_peers_are_accepted():
    s, y = slate(13)
    base = pairloss.LambdaLoss("ndcg_loss2pp")(s, y)
    for name in ("ndcgLoss2PP_scheme", "NDCGLoss2PPScheme", "NDCG-Loss2++"):
        torch.testing.assert_close(pairloss.LambdaLoss(name)(s, y), base)
    torch.testing.assert_close(
        pairloss.LambdaLoss(None, reduction_log="natural")(s, y), pairloss.RankNetLoss()(s, y)
    )
