"""Ranking losses against allRank 1.4.3 and sentence-transformers 6.x cross-encoder losses:
values and gradients in float64 (the peers' float32 casts lifted by ``float64_peer``), several
seeds, padding layouts and options; NeuralNDCG in float32 (allRank's sort runs in float32 only).
"""

from __future__ import annotations

import warnings

import pytest
import torch

import pairloss

from ._peers import allrank, fake_cross_encoder, float64_peer, st_call, st_losses

SEEDS = (0, 1, 2)
RTOL, ATOL = 1e-9, 1e-12


def slate(
    seed: int,
    q: int = 6,
    n: int = 9,
    levels: int = 5,
    dtype=torch.float64,
    distinct: bool = False,
    scale: float = 1.0,
):
    """Scores with distinct values, graded labels (``distinct``: no tied labels within a query),
    allRank's -1 padding at the end of some queries (real items first, as allRank's loader
    pads), and the real lengths."""
    g = torch.Generator().manual_seed(seed)
    s = scale * torch.randn(q, n, generator=g, dtype=dtype)
    y = torch.randint(0, levels, (q, n), generator=g).to(dtype)
    if distinct:
        y = torch.stack([torch.randperm(n, generator=g) for _ in range(q)]).to(dtype) / 2
    lengths = [n] * q
    for row, length in ((0, 6), (2, 3), (4, n - 1)):
        if row < q:
            y[row, length:] = -1
            lengths[row] = length
    return s.requires_grad_(True), y, lengths


def value_and_grad(out, s):
    """The value ``out`` and its gradient with respect to ``s``."""
    (grad,) = torch.autograd.grad(out, s)
    return out.detach(), grad


def assert_same(ours, theirs, rtol=RTOL, atol=ATOL):
    torch.testing.assert_close(ours[0], theirs[0].to(ours[0].dtype), rtol=rtol, atol=atol)
    torch.testing.assert_close(ours[1], theirs[1].to(ours[1].dtype), rtol=rtol, atol=atol)


ALLRANK_SCHEMES = [
    ("ndcg_loss1", "ndcgLoss1_scheme"),
    ("ndcg_loss2", "ndcgLoss2_scheme"),
    ("ndcg_loss2pp", "ndcgLoss2PP_scheme"),
    ("lambdarank", "lambdaRank_scheme"),
    ("ranknet", None),
    ("ranknet", "rankNet_scheme"),
    ("ranknet_gt_diff", "rankNetWeightedByGTDiff_scheme"),
    ("ranknet_gt_diff_powed", "rankNetWeightedByGTDiffPowed_scheme"),
]


@pytest.mark.parametrize("ours_name, theirs_name", ALLRANK_SCHEMES)
@pytest.mark.parametrize("k", [None, 2, 4])
def test_lambda_loss_equals_allrank(ours_name, theirs_name, k):
    peer = allrank()
    # allRank floors each weighted pair probability at 1e-10 (a loss of at most 33 bits per
    # pair): with the squared-label weights (up to 16) that floor is reached at score gaps of a
    # few units, so those scores are kept small
    scale = 0.2 if ours_name == "ranknet_gt_diff_powed" else 1.0
    for seed in SEEDS:
        s, y, _ = slate(seed, scale=scale)
        for reduction, log in (("sum", "binary"), ("mean", "natural")):
            for engine in ("dense", "blocked"):
                loss = pairloss.LambdaLoss(
                    ours_name,
                    k=k,
                    sigma=1.5,
                    mu=7.0,
                    reduction_log=log,
                    k_pairs="both",
                    reduction=reduction,
                    engine=engine,
                    block_size=2,
                )
                ours = value_and_grad(loss(s, y), s)
                with float64_peer():
                    theirs = value_and_grad(
                        peer.lambdaLoss(
                            s,
                            y,
                            weighing_scheme=theirs_name,
                            k=k,
                            sigma=1.5,
                            mu=7.0,
                            reduction=reduction,
                            reduction_log=log,
                        ),
                        s,
                    )
                assert_same(ours, theirs)


@pytest.mark.parametrize("weight", ["none", "diff", "powed"])
def test_ranknet_equals_allrank_ranknet(weight):
    peer = allrank()
    for seed in SEEDS:
        s, y, _ = slate(seed)
        kwargs = {"weight_by_diff": weight == "diff", "weight_by_diff_powed": weight == "powed"}
        ours = value_and_grad(pairloss.RankNetLoss(**kwargs)(s, y), s)
        theirs = value_and_grad(peer.rankNet(s, y, **kwargs), s)  # float32 BCE target
        assert_same(ours, theirs, rtol=1e-6, atol=1e-7)


def test_listwise_and_approx_losses_equal_allrank():
    peer = allrank()
    for seed in SEEDS:
        s, y, _ = slate(seed)
        with float64_peer():
            pairs = [
                (pairloss.ApproxNDCGLoss(alpha=0.7)(s, y), peer.approxNDCGLoss(s, y, alpha=0.7)),
                (pairloss.ListNetLoss()(s, y), peer.listNet(s, y)),
            ]
        for ours, theirs in pairs:
            # allRank adds 1e-10 to ListNet's probabilities and clamps ApproxNDCG's sigmoids
            # at 1e-10: differences of that order
            assert_same(value_and_grad(ours, s), value_and_grad(theirs, s), rtol=1e-8, atol=1e-9)


def test_listmle_equals_allrank_without_ties():
    peer = allrank()
    for seed in SEEDS:
        s, y, _ = slate(seed, distinct=True)
        ours = value_and_grad(pairloss.ListMLELoss()(s, y), s)
        theirs = value_and_grad(peer.listMLE(s, y), s)
        # allRank adds 1e-10 inside the log of each tail sum
        assert_same(ours, theirs, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("k, powered", [(None, True), (3, True), (4, False)])
def test_neural_ndcg_equals_allrank_in_float32(k, powered):
    peer = allrank()
    for seed in SEEDS:
        s, y, _ = slate(seed, dtype=torch.float32)
        loss = pairloss.NeuralNDCGLoss(temperature=0.8, k=k, powered_relevancies=powered)
        ours = value_and_grad(loss(s, y), s)
        theirs = value_and_grad(
            peer.neuralNDCG(s, y, temperature=0.8, k=k, powered_relevancies=powered), s
        )
        assert_same(ours, theirs, rtol=2e-5, atol=2e-6)


ST_CASES = [
    ("LambdaLoss", lambda: pairloss.LambdaLoss(), {}),
    ("LambdaLoss", lambda: pairloss.LambdaLoss(k=3, sigma=0.5), {"k": 3, "sigma": 0.5}),
    ("LambdaLoss", lambda: pairloss.LambdaLoss("ndcg_loss1", reduction_log="natural"), "ndcg1"),
    ("LambdaLoss", lambda: pairloss.LambdaLoss("lambdarank", k=2), "lambdarank"),
    ("RankNetLoss", lambda: pairloss.RankNetLoss(reduction_log="binary"), {}),
    ("RankNetLoss", lambda: pairloss.RankNetLoss(k=4, reduction_log="binary"), {"k": 4}),
    ("ListNetLoss", lambda: pairloss.ListNetLoss(), {}),
    ("ListMLELoss", lambda: pairloss.ListMLELoss(), {"respect_input_order": False}),
    ("PListMLELoss", lambda: pairloss.PListMLELoss(), {"respect_input_order": False}),
    ("ADRMSELoss", lambda: pairloss.ADRMSELoss(alpha=0.5), {"alpha": 0.5}),
]


@pytest.mark.parametrize("name, make, kwargs", ST_CASES, ids=[c[0] for c in ST_CASES])
def test_list_losses_equal_sentence_transformers(name, make, kwargs):
    losses = st_losses()
    if kwargs == "ndcg1":
        kwargs = {"weighting_scheme": losses.NDCGLoss1Scheme(), "reduction_log": "natural"}
    elif kwargs == "lambdarank":
        kwargs = {"weighting_scheme": losses.LambdaRankScheme(), "k": 2}
    for seed in SEEDS:
        # ListMLE's order of tied labels is unspecified in the peer (an unstable sort)
        s, y, lengths = slate(seed, distinct=name in ("ListMLELoss", "PListMLELoss"))
        ours = value_and_grad(make()(s, y), s)
        with float64_peer(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = value_and_grad(st_call(getattr(losses, name), s, y, lengths, **kwargs), s)
        assert_same(ours, theirs)


def test_margin_mse_equals_sentence_transformers_formula():
    # sentence-transformers' cross-encoder MarginMSELoss: MSE(s_pos - s_neg_j, t_pos - t_neg_j)
    # over (batch, negatives); its input is (query, positive, negative_1, ...) columns
    losses = st_losses()
    for seed in SEEDS:
        g = torch.Generator().manual_seed(seed)
        s = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
        t = torch.randn(5, 4, generator=g, dtype=torch.float64)
        ours = value_and_grad(pairloss.MarginMSELoss()(s, t), s)

        with float64_peer():
            model = fake_cross_encoder(s.reshape(-1))
            ids = torch.arange(20).reshape(5, 4)
            columns = [[f"q{i}" for i in range(5)]] + [ids[:, j].tolist() for j in range(4)]
            theirs = losses.MarginMSELoss(model)(columns, t)
        assert_same(ours, value_and_grad(theirs, s))
