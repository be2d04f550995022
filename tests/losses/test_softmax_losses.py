"""SupCon, NT-Xent (InfoNCE), DCL and DCLW."""

from __future__ import annotations

import math
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from pairloss.errors import PairLossError
from pairloss.losses.metric.dcl import DCLLoss, DCLWLoss, dcl, dclw
from pairloss.losses.metric.ntxent import InfoNCELoss, NTXentLoss, ntxent
from pairloss.losses.metric.supcon import SupConLoss, supcon
from pairloss.similarity import DotProductSimilarity, LpDistance
from tests.layouts import LAYOUTS, SEEDS, assert_close, make_batch, make_ref, value_and_grads

TWINS = {
    "supcon": (SupConLoss, pml_losses.SupConLoss),
    "ntxent": (NTXentLoss, pml_losses.NTXentLoss),
}
ALL = {
    "supcon": SupConLoss,
    "ntxent": NTXentLoss,
    "dcl": DCLLoss,
    "dclw": DCLWLoss,
}


# ---------------------------------------------------------------- PML oracle


@pytest.mark.parametrize("name", sorted(TWINS))
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("with_ref", [False, True])
def test_pml_oracle_labels(name, seed, layout, with_ref):
    ours_cls, theirs_cls = TWINS[name]
    x, y = make_batch(seed, layout)
    if with_ref:
        r, ry = make_ref(seed)
        inputs, args = [x, r], dict(ref_emb=r, ref_labels=ry)
    else:
        inputs, args = [x], {}
    ours = value_and_grads(lambda: ours_cls(engine="dense")(x, y, **args), inputs)
    theirs = value_and_grads(lambda: theirs_cls()(x, y, **args), inputs)
    assert_close(ours, theirs)


@pytest.mark.parametrize("name", sorted(TWINS))
def test_pml_oracle_hyperparams_and_distances(name):
    ours_cls, theirs_cls = TWINS[name]
    x, y = make_batch(4, "unbalanced")
    cases = [
        (dict(temperature=0.5), dict(temperature=0.5)),
        (
            dict(temperature=0.3, distance=LpDistance()),
            dict(temperature=0.3, distance=pml_distances.LpDistance()),
        ),
        (
            dict(distance=DotProductSimilarity(normalize_embeddings=False)),
            dict(distance=pml_distances.DotProductSimilarity(normalize_embeddings=False)),
        ),
    ]
    for ours_kw, theirs_kw in cases:
        ours = value_and_grads(lambda kw=ours_kw: ours_cls(**kw)(x, y), [x])
        theirs = value_and_grads(lambda kw=theirs_kw: theirs_cls(**kw)(x, y), [x])
        assert_close(ours, theirs)


def _unique_triplets(labels: torch.Tensor, seed: int):
    """One (a, p, n) per anchor that has both, so no pair repeats."""
    g = torch.Generator().manual_seed(seed)
    a, p, n = [], [], []
    for i in range(labels.shape[0]):
        same = (labels == labels[i]).nonzero().flatten()
        same = same[same != i]
        diff = (labels != labels[i]).nonzero().flatten()
        if len(same) and len(diff):
            a.append(i)
            p.append(int(same[torch.randint(len(same), (1,), generator=g)]))
            n.append(int(diff[torch.randint(len(diff), (1,), generator=g)]))
    return torch.tensor(a), torch.tensor(p), torch.tensor(n)


def _random_pairs(n: int, seed: int, count: int = 60):
    """Random distinct off-diagonal cells, split into positive and negative pairs."""
    g = torch.Generator().manual_seed(seed)
    cells = torch.randperm(n * n, generator=g)
    cells = cells[(cells // n) != (cells % n)][:count]
    rows, cols = cells // n, cells % n
    half = count // 3
    return rows[:half], cols[:half], rows[half:], cols[half:]


@pytest.mark.parametrize("name", sorted(TWINS))
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("engine", ["dense", "blocked"])
def test_pml_oracle_indices_tuple(name, seed, engine):
    ours_cls, theirs_cls = TWINS[name]
    x, y = make_batch(seed, "unbalanced")
    tuples = [
        pml_miners.MultiSimilarityMiner()(x, y),
        pml_miners.PairMarginMiner(pos_margin=0.2, neg_margin=0.8)(x, y),
        _unique_triplets(y, seed),
        _random_pairs(x.shape[0], seed),
    ]
    if name == "supcon":
        # mask-based: repeated pairs are harmless, so PML's triplet miner output works as is
        tuples.append(pml_miners.TripletMarginMiner(margin=0.2)(x, y))
    for t in tuples:
        ours = value_and_grads(lambda t=t: ours_cls(engine=engine, block_size=5)(x, y, t), [x])
        theirs = value_and_grads(lambda t=t: theirs_cls()(x, y, t), [x])
        assert_close(ours, theirs)


@pytest.mark.parametrize("name", sorted(TWINS))
@pytest.mark.parametrize("seed", SEEDS)
def test_pml_oracle_multiview(name, seed):
    """Two views per sample, labels = sample ids."""
    ours_cls, theirs_cls = TWINS[name]
    g = torch.Generator().manual_seed(seed)
    b = 16
    x = torch.randn(b, 5, generator=g, dtype=torch.float64).requires_grad_(True)
    y = torch.arange(b // 2).repeat(2)
    for engine in ("dense", "blocked"):
        ours = value_and_grads(lambda e=engine: ours_cls(engine=e, block_size=3)(x, y), [x])
        theirs = value_and_grads(lambda: theirs_cls()(x, y), [x])
        assert_close(ours, theirs)


def _simclr_reference(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    """SimCLR's NT-Xent over all 2N anchors, one loop iteration per anchor."""
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    total = z.new_zeros(())
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        logits = torch.stack([z[i] @ z[k] / t for k in range(2 * n) if k != i])
        pos = z[i] @ z[j] / t
        total = total - (pos - torch.logsumexp(logits, 0))
    return total / (2 * n)


def test_ntxent_multiview_matches_simclr_reference():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(2, 6, 4, generator=g, dtype=torch.float64)
    x = torch.cat([z1, z2]).requires_grad_(True)
    y = torch.arange(6).repeat(2)
    for loss in (NTXentLoss(temperature=0.2), InfoNCELoss(temperature=0.2)):
        ours = value_and_grads(lambda f=loss: f(x, y), [x])
        ref = value_and_grads(lambda: _simclr_reference(x[:6], x[6:], 0.2), [x])
        assert_close(ours, ref)


def test_supcon_multiview_matches_loop_reference():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(12, 4, generator=g, dtype=torch.float64)
    y = torch.arange(6).repeat(2)
    z = torch.nn.functional.normalize(x, dim=1)
    t = 0.1
    expected = 0.0
    for i in range(12):
        j = (i + 6) % 12
        denom = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(12) if k != i)
        expected += -math.log(math.exp(float(z[i] @ z[j]) / t) / denom)
    assert supcon(x, y).item() == pytest.approx(expected / 12, rel=1e-10)


# ---------------------------------------------------------------- dense vs blocked


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("block_size", [1, 5, 7])
@pytest.mark.parametrize("with_ref", [False, True])
def test_dense_vs_blocked(name, block_size, with_ref):
    cls = ALL[name]
    for seed, layout in ((0, "balanced"), (1, "singletons"), (2, "two_classes")):
        x, y = make_batch(seed, layout, n=23)
        if with_ref:
            r, ry = make_ref(seed)
            inputs, args = [x, r], dict(ref_emb=r, ref_labels=ry)
        else:
            inputs, args = [x], {}
        dense = value_and_grads(
            lambda x=x, y=y, args=args: cls(engine="dense")(x, y, **args), inputs
        )
        blocked = value_and_grads(
            lambda x=x, y=y, args=args: cls(engine="blocked", block_size=block_size)(x, y, **args),
            inputs,
        )
        assert_close(blocked, dense, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("name", sorted(ALL))
def test_reduction_none_dense_vs_blocked(name):
    x, y = make_batch(1, "unbalanced", n=17)
    w = torch.linspace(0.5, 2.0, 17, dtype=torch.float64)
    cls = ALL[name]
    dense = value_and_grads(lambda: (cls(engine="dense", reduction="none")(x, y) * w).sum(), [x])
    blocked = value_and_grads(
        lambda: (cls(engine="blocked", block_size=4, reduction="none")(x, y) * w).sum(), [x]
    )
    assert_close(blocked, dense, rtol=1e-6, atol=1e-10)


# ---------------------------------------------------------------- gradcheck


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("engine", ["dense", "blocked"])
def test_gradcheck(name, engine):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(8, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])
    loss = ALL[name](engine=engine, block_size=3)
    assert torch.autograd.gradcheck(lambda e: loss(e, y), (x,))


# ---------------------------------------------------------------- properties


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(sorted(ALL)),
    n=st.integers(1, 12),
    dim=st.integers(1, 5),
    n_classes=st.integers(1, 5),
    seed=st.integers(0, 10_000),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    engine=st.sampled_from(["dense", "blocked"]),
    dot=st.booleans(),
)
def test_property_finite(name, n, dim, n_classes, seed, scale, engine, dot):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, dim, generator=g, dtype=torch.float64) * scale).requires_grad_(True)
    y = torch.randint(0, n_classes, (n,), generator=g)
    kwargs = dict(engine=engine, block_size=3)
    if dot:
        kwargs["distance"] = DotProductSimilarity(normalize_embeddings=False)
    loss = ALL[name](**kwargs)(x, y)
    (grad,) = torch.autograd.grad(loss, [x], allow_unused=True)
    assert torch.isfinite(loss)
    assert grad is None or bool(torch.isfinite(grad).all())


# ---------------------------------------------------------------- degenerate input


def _grad_of(loss, x):
    (g,) = torch.autograd.grad(loss, [x], allow_unused=True)
    return torch.zeros_like(x) if g is None else g


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("engine", ["dense", "blocked"])
def test_degenerate_no_positives_and_single(name, engine):
    cls = ALL[name]
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    for xs, ys in ((x, torch.arange(6)), (x[:1], torch.zeros(1, dtype=torch.long))):
        loss = cls(engine=engine, block_size=4)(xs, ys)
        assert loss.item() == 0.0
        assert bool((_grad_of(loss, x) == 0).all())


@pytest.mark.parametrize("name", ["ntxent", "dcl", "dclw"])
@pytest.mark.parametrize("engine", ["dense", "blocked"])
def test_degenerate_one_class_is_zero(name, engine):
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    loss = ALL[name](engine=engine, block_size=4)(x, torch.zeros(6, dtype=torch.long))
    assert loss.item() == 0.0
    assert bool(torch.isfinite(_grad_of(loss, x)).all())


@pytest.mark.parametrize("engine", ["dense", "blocked"])
def test_supcon_one_class_documented(engine):
    """A batch without negatives gives 0, as PML; with zero_without_negatives=False each anchor
    keeps LSE_p z - mean_p z."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.zeros(5, dtype=torch.long)
    assert SupConLoss(engine=engine, block_size=2)(x, y).item() == 0.0
    loss = SupConLoss(zero_without_negatives=False, engine=engine, block_size=2)(x, y)
    z = torch.nn.functional.normalize(x.detach(), dim=1)
    t = 0.1
    rows = []
    for i in range(5):
        logits = [float(z[i] @ z[k]) / t for k in range(5) if k != i]
        lse = math.log(sum(math.exp(v) for v in logits))
        rows.append(lse - sum(logits) / len(logits))
    expected = sum(rows) / sum(r > 0 for r in rows)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    assert bool(torch.isfinite(_grad_of(loss, x)).all())
    assert pml_losses.SupConLoss()(x, y).item() == 0.0
    # two samples of one class: one positive each and nothing else -> exactly 0
    two = SupConLoss(zero_without_negatives=False, engine=engine)(x[:2], y[:2])
    assert two.item() == 0.0


def test_supcon_anchor_without_negative_among_others_matches_pml():
    x, _ = make_batch(0, "balanced", n=9)
    y = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 1])  # the single 1 has no positive
    ours = value_and_grads(lambda: SupConLoss()(x, y), [x])
    theirs = value_and_grads(lambda: pml_losses.SupConLoss()(x, y), [x])
    assert_close(ours, theirs)


# ---------------------------------------------------------------- large batch


@pytest.mark.parametrize("cls", [SupConLoss, NTXentLoss])
def test_large_batch_blocked_no_grad(cls):
    g = torch.Generator().manual_seed(0)
    b = 8192
    x = torch.randn(b, 64, generator=g)
    y = torch.arange(b // 2).repeat(2)
    start = time.perf_counter()
    with torch.no_grad():
        loss = cls(engine="blocked")(x, y)
    assert time.perf_counter() - start < 20
    assert torch.isfinite(loss)


@pytest.mark.parametrize("cls", [SupConLoss, NTXentLoss])
def test_blocked_equals_dense_at_1024(cls):
    g = torch.Generator().manual_seed(1)
    b = 1024
    x = torch.randn(b, 64, generator=g)
    y = torch.arange(b // 2).repeat(2)
    with torch.no_grad():
        dense = cls(engine="dense")(x, y)
        blocked = cls(engine="blocked", block_size=100)(x, y)
    torch.testing.assert_close(blocked, dense, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- DCL / DCLW references


def _dcl_loop(z: torch.Tensor, y: torch.Tensor, t: float, weight=None) -> float:
    """Mean over positive pairs (i, p), i having negatives, of -w s_ip/t + log sum_n e^{s_in/t}."""
    z = torch.nn.functional.normalize(z.detach(), dim=1)
    n = z.shape[0]
    total, count = 0.0, 0
    for i in range(n):
        negs = [k for k in range(n) if y[k] != y[i]]
        if not negs:
            continue
        lse = math.log(sum(math.exp(float(z[i] @ z[k]) / t) for k in negs))
        for p in range(n):
            if p != i and y[p] == y[i]:
                w = 1.0 if weight is None else weight(i, p)
                total += -w * float(z[i] @ z[p]) / t + lse
                count += 1
    return total / count if count else 0.0


def test_dcl_loop_reference():
    for seed, layout in ((0, "balanced"), (1, "unbalanced"), (2, "singletons")):
        x, y = make_batch(seed, layout, n=14)
        for t in (0.1, 0.5):
            assert dcl(x, y, temperature=t).item() == pytest.approx(_dcl_loop(x, y, t), rel=1e-10)


def test_dcl_tiny_hand_case():
    # unit vectors at 0, 90 and 180 degrees; classes {0, 1} and {2}
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1])
    t = 0.5
    # anchor 0: s_01 = 0, negative s_02 = -1 -> 0 + (-1/t); anchor 1: s_10 = 0, s_12 = 0 -> 0
    expected = ((0.0 - 1.0 / t) + (0.0 + 0.0)) / 2
    assert dcl(x, y, temperature=t).item() == pytest.approx(expected, rel=1e-12)


def test_dcl_weight_fn():
    x, y = make_batch(0, "balanced", n=12)

    def weight_fn(s):
        return 1.0 + s**2

    z = torch.nn.functional.normalize(x.detach(), dim=1)
    expected = _dcl_loop(x, y, 0.2, weight=lambda i, p: 1.0 + float(z[i] @ z[p]) ** 2)
    for engine in ("dense", "blocked"):
        loss = DCLLoss(temperature=0.2, weight_fn=weight_fn, engine=engine, block_size=5)(x, y)
        assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_dcl_below_ntxent_identity():
    """Per pair: DCL = NT-Xent - log(1 + e^{z_p} / sum_n e^{z_n})."""
    x, y = make_batch(1, "unbalanced", n=16)
    t = 0.1
    z = torch.nn.functional.normalize(x.detach(), dim=1)
    gap = 0.0
    for i in range(16):
        negs = [k for k in range(16) if y[k] != y[i]]
        if not negs:
            continue
        sum_n = sum(math.exp(float(z[i] @ z[k]) / t) for k in negs)
        for p in range(16):
            if p != i and y[p] == y[i]:
                gap += math.log1p(math.exp(float(z[i] @ z[p]) / t) / sum_n)
    d = dcl(x, y, temperature=t, reduction="sum").item()
    n = ntxent(x, y, temperature=t, reduction="sum").item()
    assert d < n
    assert n - d == pytest.approx(gap, rel=1e-10)


def _dcl_two_view_reference(z1, z2, t, sigma=None):
    """The authors' one-way formulation, both ways averaged: anchors z1 against z1 and z2."""
    z1 = torch.nn.functional.normalize(z1, dim=1)
    z2 = torch.nn.functional.normalize(z2, dim=1)

    def one_way(a, b):
        cross = a @ b.T
        positive = -torch.diag(cross) / t
        if sigma is not None:
            positive = positive * (2 - a.shape[0] * torch.softmax((a * b).sum(1) / sigma, 0))
        eye = torch.eye(a.shape[0], dtype=torch.bool)
        logits = torch.cat([a @ a.T, cross], dim=1) / t
        logits = logits.masked_fill(eye.repeat(1, 2), float("-inf"))
        return (positive + torch.logsumexp(logits, dim=1)).mean()

    return (one_way(z1, z2) + one_way(z2, z1)) / 2


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("engine", ["dense", "blocked"])
def test_dcl_dclw_two_view_reference(weighted, engine):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(14, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.arange(7).repeat(2)
    if weighted:
        loss = DCLWLoss(sigma=0.5, temperature=0.1, engine=engine, block_size=4)
    else:
        loss = DCLLoss(temperature=0.1, engine=engine, block_size=4)
    sigma = 0.5 if weighted else None
    ours = value_and_grads(lambda f=loss: f(x, y), [x])
    ref = value_and_grads(lambda: _dcl_two_view_reference(x[:7], x[7:], 0.1, sigma), [x])
    assert_close(ours, ref)


def test_dclw_equals_dcl_when_positive_scores_are_equal():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(6, 5, generator=g, dtype=torch.float64)
    x = torch.cat([z, z]).requires_grad_(True)  # every positive pair has cosine 1
    y = torch.arange(6).repeat(2)
    assert dclw(x, y).item() == pytest.approx(dcl(x, y).item(), rel=1e-12)


def test_dclw_with_ref_and_indices():
    x, y = make_batch(0, "unbalanced")
    r, ry = make_ref(0)
    for args in (dict(ref_emb=r, ref_labels=ry), dict(indices_tuple=_random_pairs(24, 0))):
        inputs = [x, r] if "ref_emb" in args else [x]
        dense = value_and_grads(lambda args=args: DCLWLoss(engine="dense")(x, y, **args), inputs)
        blocked = value_and_grads(
            lambda args=args: DCLWLoss(engine="blocked", block_size=5)(x, y, **args), inputs
        )
        assert_close(blocked, dense, rtol=1e-6, atol=1e-10)
        assert torch.isfinite(dense[0])


# ---------------------------------------------------------------- bad hyper-parameters


@pytest.mark.parametrize(
    "make, arg",
    [
        (lambda: SupConLoss(temperature=0), "temperature"),
        (lambda: NTXentLoss(temperature=-1), "temperature"),
        (lambda: NTXentLoss(temperature=float("inf")), "temperature"),
        (lambda: DCLLoss(temperature="x"), "temperature"),
        (lambda: DCLLoss(weight_fn=3), "weight_fn"),
        (lambda: DCLWLoss(sigma=0), "sigma"),
        (lambda: DCLWLoss(weight_fn=abs), "weight_fn"),
        (lambda: DCLLoss(reduction="mean_nonzero"), "reduction"),
    ],
)
def test_bad_hyperparameters(make, arg):
    with pytest.raises(PairLossError, match=arg):
        make()


def test_functional_forms_match_modules():
    x, y = make_batch(2, "balanced")
    assert supcon(x, y, temperature=0.3).item() == SupConLoss(temperature=0.3)(x, y).item()
    assert ntxent(x, y, temperature=0.3).item() == NTXentLoss(temperature=0.3)(x, y).item()
    assert dcl(x, y).item() == DCLLoss()(x, y).item()
    assert dclw(x, y, sigma=0.7).item() == DCLWLoss(sigma=0.7)(x, y).item()
