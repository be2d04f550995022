"""The fused blocked path (hand-written gradients on the sparse relation) gives the dense
engine's values and gradients, and is actually the path the blocked engine takes."""

import pytest
import torch

import pairloss
import pairloss.engine as engine_module
from pairloss.relations import DiagonalRelation, LabelRelation
from pairloss.similarity import DotProductSimilarity, LpDistance

from .layouts import SEEDS, make_ref

# (name, constructor keyword arguments): every loss with a fused form, in several settings
CASES = [
    ("MultiSimilarityLoss", {}),
    ("MultiSimilarityLoss", {"alpha": 3.0, "beta": 7.0, "base": 0.2}),
    ("MultiSimilarityLoss", {"distance": LpDistance()}),
    ("MultiSimilarityLoss", {"distance": LpDistance(power=2)}),
    ("MultiSimilarityLoss", {"distance": DotProductSimilarity(normalize_embeddings=False)}),
    ("MultiSimilarityLoss", {"miner": pairloss.miners.MultiSimilarityMiner()}),
    ("MultiSimilarityLoss", {"miner": pairloss.miners.MultiSimilarityMiner(epsilon=0.4)}),
    (
        "MultiSimilarityLoss",
        {
            "distance": LpDistance(),
            "miner": pairloss.miners.MultiSimilarityMiner(epsilon=0.2, distance=LpDistance()),
        },
    ),
    # softmax family cases
    ("SupConLoss", {}),
    ("SupConLoss", {"temperature": 0.5}),
    ("SupConLoss", {"distance": LpDistance()}),
    ("SupConLoss", {"distance": LpDistance(power=2), "temperature": 0.3}),
    ("SupConLoss", {"distance": DotProductSimilarity(normalize_embeddings=False)}),
    ("NTXentLoss", {}),
    ("NTXentLoss", {"temperature": 0.5}),
    ("NTXentLoss", {"distance": LpDistance()}),
    ("NTXentLoss", {"distance": LpDistance(power=2), "temperature": 0.3}),
    ("NTXentLoss", {"distance": DotProductSimilarity(normalize_embeddings=False)}),
    ("InfoNCELoss", {"temperature": 0.2}),
    ("DCLLoss", {}),
    ("DCLLoss", {"temperature": 0.5, "distance": LpDistance()}),
    ("DCLLoss", {"distance": LpDistance(power=2)}),
    ("DCLLoss", {"distance": DotProductSimilarity(normalize_embeddings=False)}),
    ("MarginLoss", {}),
    ("MarginLoss", {"margin": 0.1, "beta": 0.8, "distance": LpDistance(power=2)}),
    ("MarginLoss", {"margin": 0.3, "beta": 0.2, "distance": "cosine"}),
    # pair-margin family cases
    ("ContrastiveLoss", {}),
    ("ContrastiveLoss", {"pos_margin": 0.3, "neg_margin": 1.2}),
    ("ContrastiveLoss", {"distance": LpDistance(power=2), "neg_margin": 2.5}),
    ("ContrastiveLoss", {"distance": "cosine", "pos_margin": 0.8, "neg_margin": 0.1}),
    ("CircleLoss", {}),
    ("CircleLoss", {"m": 0.25, "gamma": 256}),
    ("CircleLoss", {"m": 0.0, "gamma": 10}),
    ("CircleLoss", {"m": -0.2, "gamma": 30}),
    ("CircleLoss", {"distance": DotProductSimilarity(normalize_embeddings=False), "gamma": 2}),
    ("GeneralizedLiftedStructureLoss", {}),
    ("GeneralizedLiftedStructureLoss", {"neg_margin": 0.7, "pos_margin": 0.2}),
    ("GeneralizedLiftedStructureLoss", {"distance": LpDistance(power=2)}),
    ("GeneralizedLiftedStructureLoss", {"distance": "cosine", "neg_margin": 0.3}),
    (
        "GeneralizedLiftedStructureLoss",
        {"distance": DotProductSimilarity(normalize_embeddings=False)},
    ),
    ("BinomialDevianceLoss", {}),
    ("BinomialDevianceLoss", {"alpha": 3.0, "beta": 7.0, "base": 0.2}),
    ("BinomialDevianceLoss", {"distance": LpDistance(), "base": 1.0}),
    ("BinomialDevianceLoss", {"distance": LpDistance(power=2)}),
    # triplet family cases
    ("TripletMarginLoss", {}),
    ("TripletMarginLoss", {"margin": 0.3, "distance": pairloss.CosineSimilarity()}),
    ("TripletMarginLoss", {"margin": 0.5, "distance": LpDistance(power=2)}),
    ("TripletMarginLoss", {"margin": -0.2}),
    ("TripletMarginLoss", {"miner": pairloss.miners.BatchHardMiner()}),
    (
        "TripletMarginLoss",
        {
            "margin": 0.2,
            "distance": pairloss.CosineSimilarity(),
            "miner": pairloss.miners.BatchHardMiner(distance=pairloss.CosineSimilarity()),
        },
    ),
    ("BatchHardTripletLoss", {"distance": LpDistance()}),
    ("BatchHardTripletLoss", {"margin": 0.3, "distance": pairloss.CosineSimilarity()}),
    ("BatchHardSoftMarginTripletLoss", {"distance": LpDistance(power=2)}),
]
SPARSE_LAYOUTS = ("balanced", "unbalanced", "singletons")


def _labels(layout: str, n: int, g: torch.Generator) -> torch.Tensor:
    if layout == "balanced":
        return torch.arange(n) // 4
    if layout == "unbalanced":
        return torch.randint(0, 9, (n,), generator=g)
    return torch.cat([torch.arange(n // 2) // 3, 100 + torch.arange(n - n // 2)])


def _case_id(case):
    name, kwargs = case
    return name + "".join(
        f"-{k}={type(v).__name__ if hasattr(v, 'forward') else v}" for k, v in kwargs.items()
    )


@pytest.fixture
def fused_calls(monkeypatch):
    calls = []
    run = engine_module._FusedWalk.run

    def counting(self, *args, **kwargs):
        calls.append(1)
        return run(self, *args, **kwargs)

    monkeypatch.setattr(engine_module._FusedWalk, "run", counting)
    return calls


def _value_and_grads(case, engine, x, y, ref=None, ref_y=None, reduction=None, row_w=None):
    name, kwargs = case
    extra = {} if reduction is None else {"reduction": reduction}
    loss = getattr(pairloss, name)(engine=engine, block_size=7, **kwargs, **extra)
    inputs = [x] if ref is None else [x, ref]
    out = loss(x, y, ref_emb=ref, ref_labels=ref_y)
    total = out if row_w is None else (out * row_w).sum()
    grads = torch.autograd.grad(total, inputs, allow_unused=True)
    return out.detach(), [torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs)]


def _assert_same(a, b):
    torch.testing.assert_close(a[0], b[0], rtol=1e-9, atol=1e-12)
    for u, v in zip(a[1], b[1]):
        torch.testing.assert_close(u, v, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("layout", SPARSE_LAYOUTS)
def test_fused_equals_dense(case, seed, layout, fused_calls):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64, requires_grad=True)
    y = _labels(layout, 40, g)
    for reduction in (None, "sum"):
        fused_calls.clear()
        blocked = _value_and_grads(case, "blocked", x, y, reduction=reduction)
        assert fused_calls, "the blocked engine did not take the fused path"
        _assert_same(blocked, _value_and_grads(case, "dense", x, y, reduction=reduction))


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("seed", SEEDS)
def test_fused_equals_dense_with_reference_set(case, seed, fused_calls):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(30, 6, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 9, (30,), generator=g)
    r, ry = make_ref(seed, n=25)
    ry = ry * 2  # some anchor classes missing from the reference set
    blocked = _value_and_grads(case, "blocked", x, y, r, ry)
    assert fused_calls
    _assert_same(blocked, _value_and_grads(case, "dense", x, y, r, ry))


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_fused_reduction_none_with_weighted_backward(case, fused_calls):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(33, 6, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.arange(33) // 3
    w = torch.linspace(-1.0, 2.0, 33, dtype=torch.float64)
    blocked = _value_and_grads(case, "blocked", x, y, reduction="none", row_w=w)
    assert fused_calls
    _assert_same(blocked, _value_and_grads(case, "dense", x, y, reduction="none", row_w=w))


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_fused_without_grad_and_in_float32(case, fused_calls):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(50, 6, generator=g, dtype=torch.float64)
    y = torch.arange(50) // 5
    name, kwargs = case
    with torch.no_grad():
        blocked = getattr(pairloss, name)(engine="blocked", block_size=7, **kwargs)(x.float(), y)
    assert fused_calls
    dense = getattr(pairloss, name)(engine="dense", **kwargs)(x, y)
    assert blocked.dtype == torch.float32
    torch.testing.assert_close(blocked.double(), dense, rtol=1e-5, atol=1e-6)


def test_dense_positives_fall_back_to_masks(fused_calls):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 2, (40,), generator=g)
    blocked = _value_and_grads(CASES[0], "blocked", x, y)
    assert not fused_calls
    _assert_same(blocked, _value_and_grads(CASES[0], "dense", x, y))


def test_large_scores_take_the_exact_shift():
    # raw dot products of long vectors: the bound from the row extreme would underflow in
    # float32, so the exact maximum over the negatives is used
    g = torch.Generator().manual_seed(3)
    x = torch.randn(60, 8, generator=g, dtype=torch.float64) * 4
    y = torch.arange(60) // 4
    loss = pairloss.MultiSimilarityLoss
    dot = DotProductSimilarity(normalize_embeddings=False)
    ref = loss(distance=dot, engine="dense")(x, y)
    xf = x.float().requires_grad_()
    out = loss(distance=dot, engine="blocked", block_size=8)(xf, y)
    out.backward()
    assert torch.isfinite(xf.grad).all()
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=0)


def _masks_from_pairs(pairs, n):
    b = pairs.n_rows
    pos = torch.zeros(b * n, dtype=torch.bool)
    pos[pairs.pos_flat] = True
    void = torch.zeros(b * n, dtype=torch.bool)
    void[pairs.void_flat] = True
    return pos.view(b, n), (~pos & ~void).view(b, n)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("with_ref", [False, True])
def test_label_relation_pairs_match_masks(seed, with_ref):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 12, (45,), generator=g)
    ref = torch.randint(0, 15, (31,), generator=g) if with_ref else None
    rel = LabelRelation(y, ref)
    n = rel.n_candidates
    for start, end in [(0, 45), (0, 7), (7, 14), (40, 45), (30, 31)]:
        pairs = rel.pairs(start, end)
        pos, neg = rel.block(start, end)
        mpos, mneg = _masks_from_pairs(pairs, n)
        assert torch.equal(mpos, pos) and torch.equal(mneg, neg)
        assert torch.equal(pairs.n_pos, pos.sum(1)) and torch.equal(pairs.n_neg, neg.sum(1))
        assert torch.equal(pairs.pos_rows, pairs.pos_flat // n)


def test_diagonal_relation_pairs_match_masks():
    for n_anchors, n_cand in [(9, 9), (9, 6), (5, 8)]:
        rel = DiagonalRelation(n_anchors, n_cand)
        for start, end in [(0, n_anchors), (2, 5), (n_anchors - 1, n_anchors)]:
            pairs = rel.pairs(start, end)
            pos, neg = rel.block(start, end)
            mpos, mneg = _masks_from_pairs(pairs, n_cand)
            assert torch.equal(mpos, pos) and torch.equal(mneg, neg)
            assert torch.equal(pairs.n_neg, neg.sum(1))


def test_label_relation_with_dense_positives_has_no_sparse_form():
    assert LabelRelation(torch.zeros(10, dtype=torch.long)).pairs(0, 10) is None
    ignore = torch.zeros(10, 10, dtype=torch.bool)
    assert LabelRelation(torch.arange(10), ignore=ignore).pairs(0, 10) is None


def test_miner_given_as_indices_tuple_is_applied(fused_calls):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(60, 6, generator=g, dtype=torch.float64)
    y = torch.arange(60) // 4
    miner = pairloss.miners.MultiSimilarityMiner()
    loss = pairloss.MultiSimilarityLoss
    dense = loss(engine="dense")(x, y, miner(x, y))
    blocked = loss(engine="blocked", block_size=8)(x, y, miner(x, y))
    assert not fused_calls
    torch.testing.assert_close(blocked, dense, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(dense, loss(engine="dense")(x, y))


@pytest.mark.parametrize("name", ["ContrastiveLoss", "BinomialDevianceLoss"])
@pytest.mark.parametrize("reduction", ["mean_nonzero", "mean_terms", "mean_valid"])
def test_components_with_own_normalisers_need_no_counting_walk(name, reduction, monkeypatch):
    def no_counting(self):
        raise AssertionError("counting walk ran")

    monkeypatch.setattr(engine_module._FusedWalk, "counts", no_counting)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(45, 6, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.arange(45) // 5
    case = (name, {})
    blocked = _value_and_grads(case, "blocked", x, y, reduction=reduction)
    _assert_same(blocked, _value_and_grads(case, "dense", x, y, reduction=reduction))
    r, ry = make_ref(2, n=20)
    blocked = _value_and_grads(case, "blocked", x, y, r, ry, reduction=reduction)
    _assert_same(blocked, _value_and_grads(case, "dense", x, y, r, ry, reduction=reduction))


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if "BatchHard" in c[0] or "miner" in c[1] and "Triplet" in c[0]],
    ids=_case_id,
)
def test_batch_hard_gradient_goes_by_cells(case, monkeypatch):
    # two cells per row: added by index, not by two dense gradient products
    calls = []
    add = engine_module._FusedWalk._add_cells_

    def counting(self, *args):
        calls.append(1)
        return add(self, *args)

    monkeypatch.setattr(engine_module._FusedWalk, "_add_cells_", counting)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(45, 6, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.arange(45) % 6
    blocked = _value_and_grads(case, "blocked", x, y)
    assert len(calls) == 7  # one per block of 7 rows
    _assert_same(blocked, _value_and_grads(case, "dense", x, y))
