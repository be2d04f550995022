"""The engine: dense and blocked agree; gradients, no_grad, dtypes, reductions, parameters."""

import pytest
import torch

from pairloss.engine import PairProblem, choose_engine, default_block_size, run
from pairloss.errors import PairLossError
from pairloss.losses.metric.multi_similarity import MultiSimilarityLoss, multi_similarity
from pairloss.objectives.multi_similarity import multi_similarity_rows
from pairloss.relations import DiagonalRelation, LabelRelation
from pairloss.similarity import CosineSimilarity, LpDistance, ScaledSimilarity

from .layouts import LAYOUTS, SEEDS, make_batch, make_ref


def _ms_problem(labels, sim, reduction="mean", ref_labels=None, params=()):
    def objective(s, pos, neg, start, end):
        return multi_similarity_rows(s, pos, neg, 2.0, 10.0, 0.5, sim.is_distance)

    return PairProblem(objective, sim, LabelRelation(labels, ref_labels), reduction, None, params)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("block", [1, 5, 7])
def test_dense_equals_blocked(seed, layout, block):
    x, y = make_batch(seed, layout)
    for sim in (CosineSimilarity(), LpDistance(normalize_embeddings=False)):
        for reduction in ("mean", "mean_valid", "mean_terms", "mean_nonzero", "sum"):
            p = _ms_problem(y, sim, reduction)
            d = run(p, x, engine="dense")
            (gd,) = torch.autograd.grad(d, x)
            b = run(p, x, engine="blocked", block_size=block)
            (gb,) = torch.autograd.grad(b, x)
            torch.testing.assert_close(b, d, rtol=1e-6, atol=1e-12)
            torch.testing.assert_close(gb, gd, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_dense_equals_blocked_with_reference_set(seed):
    x, y = make_batch(seed, "unbalanced")
    r, ry = make_ref(seed)
    p = _ms_problem(y, CosineSimilarity(), ref_labels=ry)
    d = run(p, x, r, engine="dense")
    gd = torch.autograd.grad(d, [x, r])
    b = run(p, x, r, engine="blocked", block_size=7)
    gb = torch.autograd.grad(b, [x, r])
    torch.testing.assert_close(b, d, rtol=1e-6, atol=1e-12)
    for u, v in zip(gb, gd):
        torch.testing.assert_close(u, v, rtol=1e-6, atol=1e-12)


def test_reduction_none_blocked_matches_dense_with_weighted_backward():
    x, y = make_batch(0, "balanced")
    p = _ms_problem(y, CosineSimilarity(), "none")
    w = torch.linspace(0.1, 2.0, x.shape[0], dtype=x.dtype)
    d = run(p, x, engine="dense")
    (gd,) = torch.autograd.grad((d * w).sum(), x)
    b = run(p, x, engine="blocked", block_size=5)
    (gb,) = torch.autograd.grad((b * w).sum(), x)
    assert b.shape == (x.shape[0],)
    torch.testing.assert_close(b, d, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(gb, gd, rtol=1e-6, atol=1e-12)


def test_learnable_similarity_parameters_get_the_same_gradient_in_both_engines():
    x, y = make_batch(1, "balanced")
    sim = ScaledSimilarity(init_scale=3.0, init_bias=-0.2).double()
    p = _ms_problem(y, sim, params=tuple(sim.parameters()))
    d = run(p, x, engine="dense")
    gd = torch.autograd.grad(d, [x, *sim.parameters()])
    b = run(p, x, engine="blocked", block_size=7)
    gb = torch.autograd.grad(b, [x, *sim.parameters()])
    for u, v in zip(gb, gd):
        torch.testing.assert_close(u, v, rtol=1e-6, atol=1e-12)
    assert all(float(g.abs().sum()) > 0 for g in gb)


@pytest.mark.parametrize("engine", ["dense", "blocked"])
def test_gradcheck(engine):
    x, y = make_batch(2, "balanced", n=9, dim=3)
    x = x.detach().requires_grad_(True)
    r, ry = make_ref(2, n=5, dim=3)
    r = r.detach().requires_grad_(True)
    loss = MultiSimilarityLoss(beta=10, engine=engine, block_size=4)
    assert torch.autograd.gradcheck(lambda a: loss(a, y), (x,))
    assert torch.autograd.gradcheck(lambda a, b: loss(a, y, ref_emb=b, ref_labels=ry), (x, r))


def test_no_grad_runs_without_graph_and_matches():
    x, y = make_batch(0, "balanced")
    with torch.no_grad():
        b = MultiSimilarityLoss(engine="blocked", block_size=5)(x, y)
        d = MultiSimilarityLoss(engine="dense")(x, y)
    assert not b.requires_grad
    torch.testing.assert_close(b, d, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("engine", ["dense", "blocked"])
def test_half_precision_is_computed_in_fp32_and_returned_in_input_dtype(dtype, engine):
    x, y = make_batch(0, "balanced", dtype=torch.float32)
    x16 = x.detach().to(dtype).requires_grad_(True)
    loss = MultiSimilarityLoss(beta=50, engine=engine, block_size=5)
    out = loss(x16, y)
    (g,) = torch.autograd.grad(out, x16)
    ref = loss(x16.detach().float(), y)
    assert out.dtype == dtype and g.dtype == dtype
    assert torch.isfinite(out) and torch.isfinite(g).all()
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)


def test_diagonal_relation_pairs_row_i_with_column_i():
    rel = DiagonalRelation(4, 4)
    pos, neg = rel.block(1, 3)
    assert pos.tolist() == [[False, True, False, False], [False, False, True, False]]
    assert (neg == ~pos).all()


def test_auto_engine_choice_by_size():
    assert choose_engine(100, 100, "auto") == "dense"
    assert choose_engine(100_000, 100_000, "auto") == "blocked"
    assert choose_engine(10, 10, "blocked") == "blocked"
    with pytest.raises(PairLossError, match="engine"):
        choose_engine(10, 10, "sparse")


def test_default_block_size_by_device():
    # 2^21 scores per block on a CPU (cache-sized), 2^24 on a GPU (fewer kernel launches),
    # never fewer than 256 rows
    assert default_block_size(4096) == default_block_size(4096, "cpu") == 512
    assert default_block_size(4096, torch.device("cuda")) == 4096
    assert default_block_size(100_000, "cuda") == default_block_size(100_000) == 256


def test_functional_equals_module():
    x, y = make_batch(0, "unbalanced")
    torch.testing.assert_close(multi_similarity(x, y, beta=20), MultiSimilarityLoss(beta=20)(x, y))
