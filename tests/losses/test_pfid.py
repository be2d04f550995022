"""PFID loss: cross-entropy plus the contrastive pairwise term; loop reference, PML check of the
pairwise part, dense vs blocked, degenerate input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from pairloss.errors import PairLossError
from pairloss.losses.metric.pfid import PFIDLoss, pfid
from tests.layouts import LAYOUTS, SEEDS, assert_close, make_batch, make_ref, value_and_grads


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


N_CLASSES = 120  # the "singletons" layout uses labels up to 100 + B/2


def params(seed, dim=6, n_classes=N_CLASSES):
    g = torch.Generator().manual_seed(2000 + seed)
    w = torch.randn(n_classes, dim, generator=g, dtype=torch.float64).requires_grad_(True)
    b = torch.randn(n_classes, generator=g, dtype=torch.float64).requires_grad_(True)
    return w, b


def reference(x, y, w, b, ref=None, ry=None, pair_weight=1.0, pos_margin=0.0, neg_margin=1.0):
    """Cross-entropy row by row plus the contrastive loss pair by pair."""
    ce = []
    for i in range(x.shape[0]):
        logits = w @ x[i] + (b if b is not None else 0.0)
        ce.append(-(logits[int(y[i])] - torch.log(torch.exp(logits).sum())))
    ce = torch.stack(ce).mean()
    unit = lambda v: v / v.norm()  # noqa: E731
    cands, cy = (x, y) if ref is None else (ref, ry)
    pos, neg = [], []
    for i in range(x.shape[0]):
        for j in range(cands.shape[0]):
            if ref is None and i == j:
                continue
            d = (unit(x[i]) - unit(cands[j])).norm()
            if int(y[i]) == int(cy[j]):
                pos.append(torch.clamp(d - pos_margin, min=0))
            else:
                neg.append(torch.clamp(neg_margin - d, min=0))

    def avg_nonzero(terms):
        nz = [t for t in terms if float(t.detach()) > 0]
        return sum(nz) / len(nz) if nz else ce * 0.0

    return ce + pair_weight * (avg_nonzero(pos) + avg_nonzero(neg))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", SEEDS)
def test_matches_loop_reference(seed, layout):
    x, y = make_batch(seed, layout)
    w, b = params(seed)
    assert_close(
        value_and_grads(lambda: pfid(x, y, weight=w, bias=b), [x, w, b]),
        value_and_grads(lambda: reference(x, y, w, b), [x, w, b]),
    )
    r, ry = make_ref(seed)
    assert_close(
        value_and_grads(
            lambda: pfid(x, y, ref_emb=r, ref_labels=ry, weight=w, pair_weight=0.3), [x, w, r]
        ),
        value_and_grads(lambda: reference(x, y, w, None, r, ry, pair_weight=0.3), [x, w, r]),
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_pairwise_part_matches_pml_contrastive(seed):
    x, y = make_batch(seed, "unbalanced")
    w, b = params(seed)

    def ce():
        return torch.nn.functional.cross_entropy(x @ w.T + b, y)

    pml = pml_losses.ContrastiveLoss(pos_margin=0.1, neg_margin=0.8)
    mined = pml_miners.MultiSimilarityMiner()(x, y)
    for indices in (None, mined):
        ours = value_and_grads(
            lambda indices=indices: pfid(
                x, y, indices, weight=w, bias=b, pos_margin=0.1, neg_margin=0.8, pair_weight=2.0
            ),
            [x, w, b],
        )
        theirs = value_and_grads(lambda indices=indices: ce() + 2.0 * pml(x, y, indices), [x, w, b])
        assert_close(ours, theirs)
    r, ry = make_ref(seed)
    assert_close(
        value_and_grads(lambda: pfid(x, y, None, r, ry, weight=w, bias=b), [x, r, w]),
        value_and_grads(lambda: ce() + pml_losses.ContrastiveLoss()(x, y, None, r, ry), [x, r, w]),
    )


@pytest.mark.parametrize("block_size", [1, 5, 7])
@pytest.mark.parametrize("with_ref", [False, True])
def test_dense_vs_blocked(block_size, with_ref):
    x, y = make_batch(1, "unbalanced")
    r, ry = make_ref(1) if with_ref else (None, None)
    results = []
    for engine in ("dense", "blocked"):
        torch.manual_seed(0)
        mod = PFIDLoss(5, 6, engine=engine, block_size=block_size).double()
        inputs = [x, mod.W, mod.b] + ([r] if with_ref else [])
        results.append(value_and_grads(lambda mod=mod: mod(x, y, None, r, ry), inputs))
    assert_close(results[0], results[1], rtol=1e-6, atol=1e-9)


def test_module_matches_functional_and_keeps_fp32_parameters():
    torch.manual_seed(0)
    mod = PFIDLoss(5, 6)
    assert mod.W.dtype == torch.float32 and mod.b.dtype == torch.float32
    x, y = make_batch(0, "unbalanced", dtype=torch.float16)
    out = mod(x, y)
    assert out.dtype == torch.float16 and torch.isfinite(out)
    out.backward()
    assert mod.W.dtype == torch.float32 and mod.W.grad.dtype == torch.float32
    x64, y64 = make_batch(0, "unbalanced")
    mod64 = mod.double()
    torch.testing.assert_close(mod64(x64, y64), pfid(x64, y64, weight=mod64.W, bias=mod64.b))
    no_bias = PFIDLoss(5, 6, bias=False).double()
    assert no_bias.b is None
    torch.testing.assert_close(no_bias(x64, y64), pfid(x64, y64, weight=no_bias.W))


def test_pair_weight_zero_is_cross_entropy():
    x, y = make_batch(2, "balanced")
    w, b = params(2)
    torch.testing.assert_close(
        pfid(x, y, weight=w, bias=b, pair_weight=0.0),
        torch.nn.functional.cross_entropy(x @ w.T + b, y),
    )


@pytest.mark.parametrize("engine", ["dense", "blocked"])
def test_gradcheck(engine):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    w = torch.randn(3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: pfid(x, y, weight=w, bias=b, neg_margin=1.5, engine=engine, block_size=3),
        (x, w, b),
    )


@settings(deadline=None, max_examples=25)
@given(
    st.integers(1, 12),
    st.integers(1, 4),
    st.integers(1, 5),
    st.integers(0, 2**16),
    st.sampled_from([1e-3, 1.0, 1e3]),
)
def test_finite_on_random_input(n, n_cls, dim, seed, scale):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, dim, generator=g, dtype=torch.float64) * scale).requires_grad_(True)
    y = torch.randint(0, n_cls, (n,), generator=g)
    mod = PFIDLoss(n_cls, dim).double()
    loss = mod(x, y)
    grads = torch.autograd.grad(loss, [x, mod.W, mod.b])
    assert torch.isfinite(loss) and all(torch.isfinite(gr).all() for gr in grads)


def test_degenerate_input():
    x, _ = make_batch(0, "balanced", n=6)
    w, b = params(0, n_classes=6)
    for y in (torch.zeros(6, dtype=torch.long), torch.arange(6)):
        loss = pfid(x, y, weight=w, bias=b)
        grads = torch.autograd.grad(loss, [x, w, b])
        assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)
        torch.testing.assert_close(loss, reference(x, y, w, b))
    one = x[:1].detach().requires_grad_(True)
    loss = pfid(one, torch.tensor([2]), weight=w, bias=b)
    ce = torch.nn.functional.cross_entropy(one @ w.T + b, torch.tensor([2]))
    torch.testing.assert_close(loss, ce)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"embedding_size": 0}, "embedding_size"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"pair_weight": -1.0}, "pair_weight"),
        ({"pair_weight": float("nan")}, "pair_weight"),
        ({"pos_margin": float("inf")}, "pos_margin"),
        ({"neg_margin": "x"}, "neg_margin"),
        ({"bias": 1}, "bias"),
        ({"distance": "manhattan"}, "distance"),
    ],
)
def test_bad_hyperparameters(kwargs, name):
    args = {"num_classes": 3, "embedding_size": 4, **kwargs}
    with pytest.raises(PairLossError, match=name):
        PFIDLoss(**args)


def test_bad_call_arguments():
    mod = PFIDLoss(3, 4)
    x = torch.randn(5, 4)
    with pytest.raises(PairLossError, match="labels"):
        mod(x)
    with pytest.raises(PairLossError, match="labels"):
        mod(x, torch.tensor([0, 1, 2, 3, 0]))
    with pytest.raises(PairLossError, match="embeddings"):
        mod(torch.randn(5, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(PairLossError, match="weight"):
        pfid(x, torch.zeros(5, dtype=torch.long), weight=torch.randn(3))
    with pytest.raises(PairLossError, match="bias"):
        pfid(x, torch.zeros(5, dtype=torch.long), weight=torch.randn(3, 4), bias=torch.randn(2))
