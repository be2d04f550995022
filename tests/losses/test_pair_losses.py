"""Contrastive, generalized lifted structure, N-pair, margin and binomial deviance losses."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from pairloss.errors import PairLossError
from pairloss.losses.metric.binomial_deviance import BinomialDevianceLoss, binomial_deviance
from pairloss.losses.metric.contrastive import ContrastiveLoss, contrastive
from pairloss.losses.metric.lifted_structure import (
    GeneralizedLiftedStructureLoss,
    generalized_lifted_structure,
)
from pairloss.losses.metric.margin import MarginLoss, margin_loss
from pairloss.losses.metric.npairs import NPairsLoss, npairs
from pairloss.mining import MultiSimilarityMiner
from pairloss.objectives.pair_margins import binomial_deviance_rows
from pairloss.similarity import CosineSimilarity, LpDistance
from tests.layouts import LAYOUTS, SEEDS, assert_close, make_batch, make_ref, value_and_grads

# name -> (pairloss factory, PML factory); kwargs go to both
TWINS = {
    "contrastive": (ContrastiveLoss, pml_losses.ContrastiveLoss, {}),
    "contrastive_margins": (
        ContrastiveLoss,
        pml_losses.ContrastiveLoss,
        {"pos_margin": 0.3, "neg_margin": 0.9},
    ),
    "lifted": (GeneralizedLiftedStructureLoss, pml_losses.GeneralizedLiftedStructureLoss, {}),
    "lifted_margins": (
        GeneralizedLiftedStructureLoss,
        pml_losses.GeneralizedLiftedStructureLoss,
        {"pos_margin": 0.2, "neg_margin": 0.7},
    ),
    "npairs": (NPairsLoss, pml_losses.NPairsLoss, {}),
    "margin": (MarginLoss, pml_losses.MarginLoss, {}),
    "margin_learn": (
        MarginLoss,
        pml_losses.MarginLoss,
        {"learn_beta": True, "nu": 0.1, "beta": 1.1, "margin": 0.3},
    ),
    "margin_classes": (
        MarginLoss,
        pml_losses.MarginLoss,
        {"learn_beta": True, "nu": 0.05, "num_classes": 128},
    ),
}
REF_TWINS = [k for k in TWINS if k != "npairs"]

ALL = {
    "contrastive": lambda **kw: ContrastiveLoss(**kw),
    "lifted": lambda **kw: GeneralizedLiftedStructureLoss(**kw),
    "npairs": lambda **kw: NPairsLoss(**kw),
    "npairs_all": lambda **kw: NPairsLoss(pairs="all", **kw),
    "margin": lambda **kw: MarginLoss(**kw),
    "margin_learn": lambda **kw: MarginLoss(learn_beta=True, nu=0.1, **kw),
    "margin_classes": lambda **kw: MarginLoss(learn_beta=True, nu=0.1, num_classes=128, **kw),
    "binomial": lambda **kw: BinomialDevianceLoss(**kw),
}
NO_REF = ("npairs",)


def _pair(name, **kw):
    ours, theirs, extra = TWINS[name]
    a = ours(**extra, **kw).double()
    b = theirs(**extra).double()
    return a, b


def _inputs(loss, x, r=None):
    extra = [p for p in loss.parameters() if p.requires_grad]
    return [x] + ([r] if r is not None else []) + extra


def _labels_for(name, y):
    # per-class beta needs labels in [0, num_classes)
    return y % 128 if name == "margin_classes" else y


def _compare(name, call_ours, call_theirs, ours, theirs, x, r=None, rtol=1e-9):
    got = value_and_grads(call_ours, _inputs(ours, x, r))
    want = value_and_grads(call_theirs, _inputs(theirs, x, r))
    assert torch.isfinite(got[0])
    assert_close(got, want, rtol=rtol, atol=1e-12)


# ---------------------------------------------------------------- PML oracle


# the oracle runs on the blocked engine, alternating with dense by seed; test_dense_vs_blocked
# checks that both engines agree
def _engine(seed):
    return "dense" if seed % 2 else "blocked"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(TWINS))
def test_pml_labels(name, seed, layout):
    engine = _engine(seed)
    x, y = make_batch(seed, layout)
    y = _labels_for(name, y)
    ours, theirs = _pair(name, engine=engine, block_size=5)
    _compare(name, lambda: ours(x, y), lambda: theirs(x, y), ours, theirs, x)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", REF_TWINS)
def test_pml_ref(name, seed, layout):
    engine = _engine(seed + 1)
    x, y = make_batch(seed, layout)
    r, ry = make_ref(seed)
    y = _labels_for(name, y)
    ours, theirs = _pair(name, engine=engine, block_size=7)
    _compare(
        name,
        lambda: ours(x, y, ref_emb=r, ref_labels=ry),
        lambda: theirs(x, y, ref_emb=r, ref_labels=ry),
        ours,
        theirs,
        x,
        r,
    )


def _one_triplet_per_anchor(y, seed):
    """(a, p, n) with each anchor at most once: no pair repeats."""
    g = torch.Generator().manual_seed(seed)
    a, p, n = [], [], []
    for i in range(len(y)):
        ps = [j for j in range(len(y)) if j != i and y[j] == y[i]]
        ns = [j for j in range(len(y)) if y[j] != y[i]]
        if ps and ns and torch.rand((), generator=g) < 0.8:
            a.append(i)
            p.append(ps[int(torch.randint(len(ps), (), generator=g))])
            n.append(ns[int(torch.randint(len(ns), (), generator=g))])
    return tuple(torch.tensor(v, dtype=torch.long) for v in (a, p, n))


def _product_triplets(y, seed):
    """Per anchor: all combinations of a random subset of positives and of negatives."""
    g = torch.Generator().manual_seed(seed)
    a, p, n = [], [], []
    for i in range(len(y)):
        ps = [j for j in range(len(y)) if j != i and y[j] == y[i]]
        ns = [j for j in range(len(y)) if y[j] != y[i]]
        ps = [j for j in ps if torch.rand((), generator=g) < 0.6]
        ns = [j for j in ns if torch.rand((), generator=g) < 0.4]
        for j in ps:
            for k in ns:
                a.append(i)
                p.append(j)
                n.append(k)
    return tuple(torch.tensor(v, dtype=torch.long) for v in (a, p, n))


def _ms_pairs(x, y):
    return pml_miners.MultiSimilarityMiner(epsilon=0.3)(x.detach(), y)


TUPLES = {
    "ms_pairs": (lambda x, y, seed: _ms_pairs(x, y), list(TWINS)),
    "one_triplet": (lambda x, y, seed: _one_triplet_per_anchor(y, seed), list(TWINS)),
    "product_triplets": (
        lambda x, y, seed: _product_triplets(y, seed),
        ["lifted", "lifted_margins", "npairs", "margin", "margin_learn", "margin_classes"],
    ),
}
TUPLE_CASES = [(t, n) for t, (_, names) in TUPLES.items() for n in names]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind,name", TUPLE_CASES)
def test_pml_indices_tuple(kind, name, seed):
    engine = _engine(seed)
    x, y = make_batch(seed, "unbalanced")
    y = _labels_for(name, y)
    tup = TUPLES[kind][0](x, y, seed)
    ours, theirs = _pair(name, engine=engine, block_size=5)
    _compare(name, lambda: ours(x, y, tup), lambda: theirs(x, y, tup), ours, theirs, x)


@pytest.mark.parametrize("engine", ["dense", "blocked"])
def test_pml_indices_tuple_with_ref(engine):
    x, y = make_batch(0, "unbalanced")
    r, ry = make_ref(0)
    g = torch.Generator().manual_seed(3)
    a = torch.randint(0, 24, (30,), generator=g)
    c = torch.randint(0, 10, (30,), generator=g)
    same = y[a] == ry[c]
    cells = torch.unique(a * 10 + c)
    a, c = cells // 10, cells % 10
    same = y[a] == ry[c]
    tup = (a[same], c[same], a[~same], c[~same])
    for name in ("contrastive", "lifted", "margin"):
        ours, theirs = _pair(name, engine=engine, block_size=4)
        _compare(
            name,
            lambda ours=ours: ours(x, y, tup, ref_emb=r, ref_labels=ry),
            lambda theirs=theirs: theirs(x, y, tup, ref_emb=r, ref_labels=ry),
            ours,
            theirs,
            x,
            r,
        )


@pytest.mark.parametrize("name", ["contrastive", "lifted", "margin"])
def test_pml_cosine(name):
    from pytorch_metric_learning.distances import CosineSimilarity as PCos

    x, y = make_batch(1, "balanced")
    ours_cls, theirs_cls, _ = TWINS[name]
    kw = {"pos_margin": 0.8, "neg_margin": 0.3} if name != "margin" else {"beta": 0.5}
    ours = ours_cls(distance=CosineSimilarity(), **kw)
    theirs = theirs_cls(distance=PCos(), **kw)
    _compare(name, lambda: ours(x, y), lambda: theirs(x, y), ours, theirs, x)


def test_pml_npairs_distance():
    from pytorch_metric_learning.distances import LpDistance as PLp

    x, y = make_batch(2, "balanced")
    ours, theirs = NPairsLoss(distance=LpDistance()), pml_losses.NPairsLoss(distance=PLp())
    _compare("npairs", lambda: ours(x, y), lambda: theirs(x, y), ours, theirs, x)


@pytest.mark.parametrize("engine", ["dense", "blocked"])
@pytest.mark.parametrize("name", ["contrastive", "lifted", "margin_learn"])
def test_pairloss_miner_matches_pml_on_mined_pairs(name, engine):
    x, y = make_batch(1, "unbalanced")
    miner = MultiSimilarityMiner(epsilon=0.3)
    tup = miner.indices(x.detach(), y)
    ours, theirs = _pair(name, engine=engine, block_size=5)
    _compare(name, lambda: ours(x, y, miner(x, y)), lambda: theirs(x, y, tup), ours, theirs, x)


def test_npairs_pairloss_miner_matches_explicit_tuple():
    x, y = make_batch(0, "unbalanced")
    miner = MultiSimilarityMiner(epsilon=0.3)
    tup = miner.indices(x.detach(), y)
    ours = NPairsLoss()
    theirs = pml_losses.NPairsLoss()
    _compare("npairs", lambda: ours(x, y, miner(x, y)), lambda: theirs(x, y, tup), ours, theirs, x)
    with_miner = NPairsLoss(miner=miner)
    torch.testing.assert_close(with_miner(x, y), theirs(x, y, tup), rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- engines


@pytest.mark.parametrize("seed,layout", [(0, "unbalanced"), (1, "singletons")])
@pytest.mark.parametrize("block_size", [1, 5, 7])
@pytest.mark.parametrize("name", list(ALL))
def test_dense_vs_blocked(name, block_size, seed, layout):
    x, y = make_batch(seed, layout)
    d = ALL[name](engine="dense").double()
    b = ALL[name](engine="blocked", block_size=block_size).double()
    got = value_and_grads(lambda: b(x, y), _inputs(b, x))
    want = value_and_grads(lambda: d(x, y), _inputs(d, x))
    assert_close(got, want, rtol=1e-6, atol=1e-10)
    if name in NO_REF:
        return
    r, ry = make_ref(seed)
    got = value_and_grads(lambda: b(x, y, ref_emb=r, ref_labels=ry), _inputs(b, x, r))
    want = value_and_grads(lambda: d(x, y, ref_emb=r, ref_labels=ry), _inputs(d, x, r))
    assert_close(got, want, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("engine", ["dense", "blocked"])
@pytest.mark.parametrize("name", list(ALL))
def test_gradcheck(name, engine):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(8, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])
    loss = ALL[name](engine=engine, block_size=3).double()
    if name == "binomial":
        loss = BinomialDevianceLoss(beta=10.0, engine=engine, block_size=3)
    assert torch.autograd.gradcheck(lambda x: loss(x, y), (x,), eps=1e-6, atol=1e-5)


# ---------------------------------------------------------------- properties


@settings(deadline=None, max_examples=25)
@given(
    name=st.sampled_from(list(ALL)),
    n=st.integers(1, 9),
    dim=st.integers(1, 4),
    n_classes=st.integers(1, 4),
    seed=st.integers(0, 10_000),
    engine=st.sampled_from(["dense", "blocked"]),
    scale=st.sampled_from([1e-3, 1.0, 30.0]),
)
def test_finite_property(name, n, dim, n_classes, seed, engine, scale):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, dim, generator=g, dtype=torch.float64) * scale).requires_grad_(True)
    y = torch.randint(0, n_classes, (n,), generator=g)
    loss = ALL[name](engine=engine, block_size=2).double()
    value, grads = value_and_grads(lambda: loss(x, y), _inputs(loss, x))
    assert torch.isfinite(value)
    assert all(torch.isfinite(gr).all() for gr in grads)


# ---------------------------------------------------------------- degenerate input


@pytest.mark.parametrize("engine", ["dense", "blocked"])
@pytest.mark.parametrize("name", list(ALL))
def test_degenerate(name, engine):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    cases = {
        "one_class": torch.zeros(6, dtype=torch.long),
        "distinct": torch.arange(6),
    }
    for case, y in cases.items():
        loss = ALL[name](engine=engine, block_size=4).double()
        value, grads = value_and_grads(lambda loss=loss, y=y: loss(x, y), _inputs(loss, x))
        assert torch.isfinite(value), case
        assert all(torch.isfinite(gr).all() for gr in grads), case
        no_triplet_or_pair = name.startswith(("margin", "npairs"))
        if no_triplet_or_pair or case == "distinct" and name == "npairs_all":
            assert value.item() == 0.0, case
            assert all(gr.abs().max() == 0 for gr in grads), case
    x1 = torch.randn(1, 3, dtype=torch.float64, requires_grad=True)
    loss = ALL[name](engine=engine).double()
    value, grads = value_and_grads(lambda: loss(x1, torch.tensor([3])), _inputs(loss, x1))
    assert value.item() == 0.0
    assert all(gr.abs().max() == 0 for gr in grads)


def test_degenerate_documented_values():
    x, _ = make_batch(0, "balanced", n=6)
    one = torch.zeros(6, dtype=torch.long)
    distinct = torch.arange(6)
    d = LpDistance()(x.detach())
    off = ~torch.eye(6, dtype=torch.bool)
    # contrastive: one class -> positive part only; distinct -> negative part only
    pos = d[off]
    torch.testing.assert_close(contrastive(x, one), pos[pos > 0].mean())
    neg = torch.relu(1.5 - d[off])
    assert (neg > 0).any()
    torch.testing.assert_close(contrastive(x, distinct, neg_margin=1.5), neg[neg > 0].mean())
    # lifted: one class -> mean_i LSE_p d_ip
    lse = torch.logsumexp(d.masked_fill(~off, -math.inf), dim=1)
    torch.testing.assert_close(generalized_lifted_structure(x, one), torch.relu(lse).mean())
    # binomial: one class -> positive part only
    s = CosineSimilarity()(x.detach())[off]
    torch.testing.assert_close(
        binomial_deviance(x, one), torch.nn.functional.softplus(-2 * (s - 0.5)).mean()
    )


# ---------------------------------------------------------------- references (no PML twin)


def _binomial_reference(x, y, alpha, beta, base, ref=None, ref_y=None):
    """Loop over pairs, straight from the docstring formula (cosine similarity)."""
    cands = x if ref is None else ref
    cand_y = y if ref_y is None else ref_y
    pos_terms, neg_terms = [], []
    for i in range(x.shape[0]):
        for j in range(cands.shape[0]):
            if ref is None and i == j:
                continue
            s = float(torch.nn.functional.cosine_similarity(x[i], cands[j], dim=0))
            if int(y[i]) == int(cand_y[j]):
                pos_terms.append(math.log1p(math.exp(-alpha * (s - base))))
            else:
                neg_terms.append(math.log1p(math.exp(beta * (s - base))))
    mean = lambda t: sum(t) / len(t) if t else 0.0  # noqa: E731
    return mean(pos_terms) + mean(neg_terms)


@pytest.mark.parametrize("engine", ["dense", "blocked"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_binomial_reference(layout, engine):
    x, y = make_batch(0, layout, n=10, dim=4)
    for alpha, beta, base in ((2.0, 50.0, 0.5), (1.5, 7.0, 0.1)):
        got = binomial_deviance(
            x, y, alpha=alpha, beta=beta, base=base, engine=engine, block_size=3
        )
        want = _binomial_reference(x.detach(), y, alpha, beta, base)
        assert got.item() == pytest.approx(want, rel=1e-10, abs=1e-12)
    r, ry = make_ref(0, dim=4)
    got = binomial_deviance(x, y, ref_emb=r, ref_labels=ry, engine=engine, block_size=3)
    want = _binomial_reference(x.detach(), y, 2.0, 50.0, 0.5, r.detach(), ry)
    assert got.item() == pytest.approx(want, rel=1e-10, abs=1e-12)


def test_binomial_tiny_hand_case():
    # three unit vectors in the plane, labels 0, 0, 1
    x = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1])
    # positive pair cos = 0.6 (both orders); negatives: cos(x0, x2) = 0, cos(x1, x2) = 0.8
    pos = math.log1p(math.exp(-2 * (0.6 - 0.5)))
    neg = (2 * math.log1p(math.exp(50 * (0 - 0.5))) + 2 * math.log1p(math.exp(50 * 0.3))) / 4
    assert binomial_deviance(x, y).item() == pytest.approx(pos + neg, rel=1e-12)


def test_binomial_identities():
    # at s = base every pair costs log 2 -> the loss is 2 log 2 whatever alpha and beta
    s = torch.full((3, 5), 0.5, dtype=torch.float64)
    pos = torch.zeros(3, 5, dtype=torch.bool)
    pos[:, :2] = True
    neg = ~pos
    for alpha, beta in ((2.0, 50.0), (0.3, 4.0)):
        terms = binomial_deviance_rows(s, pos, neg, alpha, beta, 0.5)
        total = sum(t.values.sum() / t.n_terms.sum() for t in terms)
        assert total.item() == pytest.approx(2 * math.log(2))
    # the paper's cost parameter c is beta / alpha: M = -c on negatives
    x, y = make_batch(1, "balanced", n=8, dim=3)
    alpha, c = 2.0, 25.0
    sim = CosineSimilarity()(x.detach())
    m = torch.where(y[:, None] == y[None, :], 1.0, -c).double()
    off = ~torch.eye(8, dtype=torch.bool)
    is_pos = (y[:, None] == y[None, :]) & off
    is_neg = y[:, None] != y[None, :]
    w = is_pos / is_pos.sum() + is_neg / is_neg.sum()
    paper = (w * torch.log1p(torch.exp(-alpha * (sim - 0.5) * m))).sum()
    ours = binomial_deviance(x, y, alpha=alpha, beta=alpha * c, base=0.5)
    torch.testing.assert_close(ours, paper)
    # a distance flips the signs: LpDistance with base b equals the similarity -d with base -b
    d = LpDistance()(x.detach())
    flip = binomial_deviance_rows(-d, is_pos, is_neg, 2.0, 50.0, -1.0)
    direct = binomial_deviance_rows(d, is_pos, is_neg, 2.0, 50.0, 1.0, is_distance=True)
    for a, b in zip(flip, direct):
        torch.testing.assert_close(a.values, b.values)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    x, y = make_batch(0, "unbalanced")
    xh = (x.detach() * 100).to(dtype).requires_grad_(True)
    for engine in ("dense", "blocked"):
        loss = binomial_deviance(xh, y, beta=500.0, base=-0.9, engine=engine, block_size=5)
        (g,) = torch.autograd.grad(loss, xh)
        assert loss.dtype == dtype
        assert torch.isfinite(loss) and torch.isfinite(g).all()
        for name, make in ALL.items():
            loss = make(
                engine=engine, block_size=5, distance=LpDistance(normalize_embeddings=False)
            )
            value = loss(xh, y % 128)
            (g,) = torch.autograd.grad(value, xh)
            assert torch.isfinite(value) and torch.isfinite(g).all(), name


def _npairs_all_reference(x, y, ref=None, ref_y=None):
    """Loop: mean over positive pairs of -log(e^{s_ip} / (e^{s_ip} + sum_n e^{s_in}))."""
    xn = torch.nn.functional.normalize(x, dim=1)
    cn = xn if ref is None else torch.nn.functional.normalize(ref, dim=1)
    cy = y if ref_y is None else ref_y
    terms = []
    for i in range(xn.shape[0]):
        negs = [float(xn[i] @ cn[n]) for n in range(cn.shape[0]) if int(cy[n]) != int(y[i])]
        for p in range(cn.shape[0]):
            if (ref is None and p == i) or int(cy[p]) != int(y[i]):
                continue
            sp = float(xn[i] @ cn[p])
            terms.append(-sp + math.log(math.exp(sp) + sum(math.exp(v) for v in negs)))
    return sum(terms) / len(terms) if terms else 0.0


@pytest.mark.parametrize("engine", ["dense", "blocked"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_npairs_all_reference(layout, engine):
    x, y = make_batch(2, layout, n=10, dim=4)
    got = npairs(x, y, pairs="all", engine=engine, block_size=3)
    assert got.item() == pytest.approx(_npairs_all_reference(x.detach(), y), rel=1e-10)
    r, ry = make_ref(2, dim=4)
    got = npairs(x, y, ref_emb=r, ref_labels=ry, pairs="all", engine=engine, block_size=3)
    want = _npairs_all_reference(x.detach(), y, r.detach(), ry)
    assert got.item() == pytest.approx(want, rel=1e-10)


def test_npairs_all_equals_pml_on_one_pair_per_class():
    # two samples per class: PML's N-pair tuple uses the first sample of each class as anchor
    # and the second as the positive; the 'all' form on exactly those pairs is the same loss
    x, _ = make_batch(0, "balanced", n=12)
    y = torch.arange(12) // 2
    anchors, positives = torch.arange(0, 12, 2), torch.arange(1, 12, 2)
    k = len(anchors)
    other = ~torch.eye(k, dtype=torch.bool)
    rows, cols = other.nonzero(as_tuple=True)
    tup = (anchors, positives, anchors[rows], positives[cols])
    got = npairs(x, y, tup, pairs="all")
    torch.testing.assert_close(got, pml_losses.NPairsLoss()(x, y), rtol=1e-9, atol=1e-12)


def test_margin_row_form_counts():
    # P positives and N negatives per row: each positive term is repeated N times
    x, y = make_batch(0, "balanced", n=8)
    d = LpDistance()(x.detach())
    beta = float(torch.tensor(1.2))  # beta is stored in the default dtype, as in PML
    total, nonzero = 0.0, 0
    for a in range(8):
        for p in range(8):
            if p == a or y[p] != y[a]:
                continue
            for n in range(8):
                if y[n] == y[a]:
                    continue
                lp = max(0.0, float(d[a, p]) - beta + 0.2)
                ln = max(0.0, beta - float(d[a, n]) + 0.2)
                total += lp + ln
                nonzero += (lp > 0) + (ln > 0)
    assert margin_loss(x, y).item() == pytest.approx(total / nonzero, rel=1e-12)


def test_margin_beta_gradient_and_reg():
    x, y = make_batch(1, "unbalanced")
    for kw in ({}, {"num_classes": 5}):
        ours = MarginLoss(learn_beta=True, nu=0.2, **kw).double()
        theirs = pml_losses.MarginLoss(learn_beta=True, nu=0.2, **kw).double()
        for engine in ("dense", "blocked"):
            ours.engine, ours.block_size = engine, 5
            lo = ours(x, y)
            (go,) = torch.autograd.grad(lo, ours.beta)
            lt = theirs(x, y)
            (gt,) = torch.autograd.grad(lt, theirs.beta)
            torch.testing.assert_close(lo, lt, rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(go, gt, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "make,arg",
    [
        (lambda: ContrastiveLoss(pos_margin=float("nan")), "pos_margin"),
        (lambda: ContrastiveLoss(neg_margin="x"), "neg_margin"),
        (lambda: GeneralizedLiftedStructureLoss(neg_margin=float("inf")), "neg_margin"),
        (lambda: NPairsLoss(pairs="some"), "pairs"),
        (lambda: MarginLoss(triplets_per_anchor=0), "triplets_per_anchor"),
        (lambda: MarginLoss(nu=-1), "nu"),
        (lambda: MarginLoss(num_classes=0), "num_classes"),
        (lambda: MarginLoss(margin=float("nan")), "margin"),
        (lambda: BinomialDevianceLoss(alpha=0), "alpha"),
        (lambda: BinomialDevianceLoss(beta=-1), "beta"),
        (lambda: BinomialDevianceLoss(base=float("nan")), "base"),
    ],
)
def test_bad_hyperparameters(make, arg):
    with pytest.raises(PairLossError, match=arg):
        make()


def test_bad_calls():
    x, y = make_batch(0, "balanced")
    r, ry = make_ref(0)
    with pytest.raises(PairLossError, match="ref_emb"):
        NPairsLoss()(x, y, ref_emb=r, ref_labels=ry)
    with pytest.raises(PairLossError, match="labels"):
        NPairsLoss()(x, None, _one_triplet_per_anchor(y, 0))
    with pytest.raises(PairLossError, match="labels"):
        MarginLoss(num_classes=3)(x, y)
    with pytest.raises(PairLossError, match="labels"):
        MarginLoss(num_classes=3)(x, None, _one_triplet_per_anchor(y, 0))
