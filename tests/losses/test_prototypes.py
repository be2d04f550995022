"""Proto-Triplet and ICNN losses: loop-based references of the formulas, identities, degenerate
input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pairloss.errors import PairLossError
from pairloss.losses.metric.prototypes import ICNNLoss, ProtoTripletLoss, icnn, proto_triplet
from tests.layouts import LAYOUTS, SEEDS, assert_close, make_batch, make_ref, value_and_grads


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _key(t):
    return float(torch.as_tensor(t).detach())


def dist(a, b):
    return torch.sqrt(((a - b) ** 2).sum() + 1e-6)


# ------------------------------------------------------------------------------ references


def proto_reference(x, y, ref=None, ry=None, margin=0.5, reduction="mean"):
    """One query at a time: own prototype (leave-one-out in a flat batch), closest other one."""
    n = x.shape[0]
    src, sy = (x, y) if ref is None else (ref, ry)
    classes = sorted(set(sy.tolist()))
    rows, n_valid = [], 0
    for i in range(n):
        c = int(y[i])
        if ref is None:
            own = [x[j] for j in range(n) if j != i and int(y[j]) == c]
        else:
            own = [ref[j] for j in range(ref.shape[0]) if int(ry[j]) == c]
        others = [k for k in classes if k != c]
        if not own or not others:
            rows.append(x[i].sum() * 0.0)
            continue
        n_valid += 1
        d_pos = dist(x[i], sum(own) / len(own))
        d_neg = min(
            dist(
                x[i], sum(src[j] for j in range(len(sy)) if int(sy[j]) == k) / int((sy == k).sum())
            )
            for k in others
        )
        rows.append(torch.clamp(d_pos - d_neg + margin, min=0))
    rows = torch.stack(rows)
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    return rows.sum() / n_valid if n_valid else rows.sum() * 0.0


def icnn_reference(x, y, ref=None, ry=None, k=4, n_neighbors=None, eps=1e-7, parts=False):
    """The ICNN score anchor by anchor, from sorted neighbour lists."""
    n = x.shape[0]
    if ref is None:
        cands = [[(dist(x[i], x[j]), int(y[j])) for j in range(n) if j != i] for i in range(n)]
    else:
        cands = [[(dist(x[i], ref[j]), int(ry[j])) for j in range(ref.shape[0])] for i in range(n)]
    avail = len(cands[0])
    if avail == 0:
        return None
    L = min(k + 1 if n_neighbors is None else n_neighbors, avail)
    kk = min(k, L)
    neigh = [sorted(c, key=lambda t: _key(t[0]))[:L] for c in cands]
    intra_sum, n_p, p_total, inter_rows, n_q = 0.0, 0, 0, [], 0
    delta_max = 0.0
    for i in range(n):
        for d, lab in neigh[i][:kk]:
            if lab != int(y[i]):
                delta_max = torch.maximum(torch.as_tensor(delta_max, dtype=x.dtype), d)
    for i in range(n):
        same = [lab == int(y[i]) for _, lab in neigh[i]]
        dc = [d for (d, lab), s in zip(neigh[i], same) if not s]
        first = neigh[i][:kk]
        if dc:
            nu = min(dc, key=_key)
            r = [d / (nu + eps) for d, _ in first]
        else:
            r = [d * 0.0 for d, _ in first]
        top = max(r, key=_key)
        r = [v / torch.clamp(top, min=1.0) for v in r]
        p = sum(same[:kk])
        q = kk - p
        p_total += p
        intra_sum = intra_sum + sum(v for v, s in zip(r, same[:kk]) if s) / (p + eps)
        n_p += p > 0
        inter_i = sum(d / (delta_max + eps) for (d, lab) in first if lab != int(y[i]))
        inter_rows.append(inter_i / (q + eps))
        n_q += q > 0
    intra = 1 - intra_sum / (n_p + eps)
    inter = sum(inter_rows) / (n_q + eps)
    if n_q == 0:
        inter = abs(inter - 1)
    gamma = p_total / kk / n
    score = ((intra + inter) / 2 + gamma) / 2
    if parts:
        return {"score": score, "intra": intra, "inter": inter, "gamma": gamma}
    return -torch.log(score)


# ------------------------------------------------------------------------------ Proto-Triplet


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", SEEDS)
def test_proto_triplet_matches_reference(seed, layout):
    x, y = make_batch(seed, layout)
    assert_close(
        value_and_grads(lambda: proto_triplet(x, y), [x]),
        value_and_grads(lambda: proto_reference(x, y), [x]),
    )
    r, ry = make_ref(seed)
    assert_close(
        value_and_grads(lambda: proto_triplet(x, y % 5, ref_emb=r, ref_labels=ry), [x, r]),
        value_and_grads(lambda: proto_reference(x, y % 5, r, ry), [x, r]),
    )


@pytest.mark.parametrize("reduction", ["sum", "none"])
@pytest.mark.parametrize("margin", [0.0, 2.0])
def test_proto_triplet_margin_and_reductions(margin, reduction):
    x, y = make_batch(4, "unbalanced")
    ours = ProtoTripletLoss(margin=margin, reduction=reduction)(x, y)
    torch.testing.assert_close(ours, proto_reference(x, y, margin=margin, reduction=reduction))


def test_proto_triplet_hand_computed():
    # support: class 0 at (0,0),(2,0) -> prototype (1,0); class 1 at (4,0) -> (4,0)
    r = torch.tensor([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0]], dtype=torch.float64)
    ry = torch.tensor([0, 0, 1])
    q = torch.tensor([[2.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    qy = torch.tensor([0, 1])
    rows = proto_triplet(q, qy, ref_emb=r, ref_labels=ry, reduction="none")
    d = lambda v: math.sqrt(v * v + 1e-6)  # noqa: E731
    # query 0: d(q, p0) = 1, d(q, p1) = 2 -> 1 - 2 + 0.5 < 0; query 1: 1 - 2 + 0.5 < 0
    assert rows.tolist() == [0.0, 0.0]
    rows = proto_triplet(q, qy, ref_emb=r, ref_labels=ry, margin=1.5, reduction="none")
    assert math.isclose(float(rows[0]), d(1) - d(2) + 1.5, rel_tol=1e-12)
    assert math.isclose(float(rows[1]), d(1) - d(2) + 1.5, rel_tol=1e-12)


def test_proto_triplet_normalize_embeddings():
    x, y = make_batch(0, "balanced")
    xn = torch.nn.functional.normalize(x, dim=1)
    torch.testing.assert_close(
        proto_triplet(x, y, normalize_embeddings=True), proto_reference(xn, y)
    )


# ------------------------------------------------------------------------------------- ICNN


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", SEEDS)
def test_icnn_matches_reference(seed, layout):
    x, y = make_batch(seed, layout)
    for kw in ({"k": 4}, {"k": 3, "n_neighbors": 8}):
        assert_close(
            value_and_grads(lambda kw=kw: icnn(x, y, **kw), [x]),
            value_and_grads(lambda kw=kw: icnn_reference(x, y, **kw), [x]),
        )
    r, ry = make_ref(seed)
    assert_close(
        value_and_grads(lambda: icnn(x, y % 5, ref_emb=r, ref_labels=ry), [x, r]),
        value_and_grads(lambda: icnn_reference(x, y % 5, r, ry), [x, r]),
    )


def test_icnn_score_parts_and_clipping():
    x, y = make_batch(1, "unbalanced", n=7)
    # k and n_neighbors larger than the 6 available neighbours are clipped to them
    ours = ICNNLoss(k=10, n_neighbors=20).score(x, y)
    ref = icnn_reference(x, y, k=6, n_neighbors=6, parts=True)
    for key in ("score", "intra", "inter", "gamma"):
        torch.testing.assert_close(ours[key], torch.as_tensor(ref[key], dtype=x.dtype))
        assert 0.0 <= ours[key].item() <= 1.0


def test_icnn_separated_clusters_score_one():
    """Tight, far-apart classes with more than k members: every k-neighbourhood is pure
    (gamma = 1, no other-class neighbour so lambda_inter = 1, ratios 0 so lambda_intra = 1)."""
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(3, dtype=torch.float64) * 100
    y = torch.arange(18) % 3
    x = (centres[y] + 0.01 * torch.randn(18, 3, generator=g, dtype=torch.float64)).requires_grad_()
    parts = ICNNLoss(k=4).score(x, y)
    assert parts["gamma"].item() == 1.0 and parts["inter"].item() == 1.0
    assert math.isclose(parts["intra"].item(), 1.0, abs_tol=1e-12)
    loss = icnn(x, y)
    assert abs(loss.item()) < 1e-6
    # mixing the classes lowers the score
    y_mixed = torch.arange(18) // 6
    assert icnn(x, y_mixed).item() > 0.5


# ------------------------------------------------------------------------- shared properties


LOSSES = {
    "proto_triplet": lambda x, y, **kw: proto_triplet(x, y, **kw),
    "icnn": lambda x, y, **kw: icnn(x, y, **kw),
}


@pytest.mark.parametrize("name", LOSSES)
def test_rigid_motion_invariance(name):
    x, y = make_batch(2, "unbalanced")
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    moved = x.detach() @ q + 3.0
    torch.testing.assert_close(LOSSES[name](moved, y), LOSSES[name](x, y).detach())


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("with_ref", [False, True])
def test_gradcheck(name, with_ref):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    if with_ref:
        r = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
        ry = torch.tensor([0, 0, 1, 1, 2, 2])
        fn = LOSSES[name]
        assert torch.autograd.gradcheck(lambda x, r: fn(x, y, ref_emb=r, ref_labels=ry), (x, r))
    else:
        assert torch.autograd.gradcheck(lambda x: LOSSES[name](x, y), (x,))


@settings(deadline=None, max_examples=25)
@given(
    st.integers(1, 12),
    st.integers(1, 4),
    st.integers(1, 5),
    st.integers(0, 2**16),
    st.sampled_from([1e-3, 1.0, 1e3]),
    st.sampled_from(list(LOSSES)),
)
def test_finite_on_random_input(n, n_cls, dim, seed, scale, name):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, dim, generator=g, dtype=torch.float64) * scale).requires_grad_(True)
    y = torch.randint(0, n_cls, (n,), generator=g)
    loss = LOSSES[name](x, y)
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    if name == "icnn" and n > 1:
        score = ICNNLoss().score(x, y)["score"]
        assert 0.0 <= score.item() <= 1.0


@pytest.mark.parametrize("name", LOSSES)
def test_half_input(name):
    x, y = make_batch(0, "balanced", dtype=torch.float16)
    out = LOSSES[name](x, y)
    assert out.dtype == torch.float16 and torch.isfinite(out)


def test_degenerate_proto_triplet():
    x, _ = make_batch(0, "balanced", n=6)
    for y in (torch.zeros(6, dtype=torch.long), torch.arange(6)):
        loss = proto_triplet(x, y)
        (g,) = torch.autograd.grad(loss, x)
        assert loss.item() == 0.0 and float(g.abs().max()) == 0.0
    one = x[:1].detach().requires_grad_(True)
    loss = proto_triplet(one, torch.tensor([0]))
    (g,) = torch.autograd.grad(loss, one)
    assert loss.item() == 0.0 and float(g.abs().max()) == 0.0
    # queries whose class is absent from the support are left out
    r, ry = make_ref(0)
    loss = proto_triplet(x, torch.full((6,), 99), ref_emb=r, ref_labels=ry)
    assert loss.item() == 0.0


def test_degenerate_icnn():
    x, _ = make_batch(0, "balanced", n=6)
    # one class: pure neighbourhoods, no other class -> score 1, loss 0
    loss = icnn(x, torch.zeros(6, dtype=torch.long))
    (g,) = torch.autograd.grad(loss, x)
    assert abs(loss.item()) < 1e-12 and torch.isfinite(g).all()
    # all-distinct labels: no same-class neighbour, gamma = 0; finite
    parts = ICNNLoss().score(x, torch.arange(6))
    assert parts["gamma"].item() == 0.0 and parts["intra"].item() == 1.0
    loss = icnn(x, torch.arange(6))
    (g,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(loss) and torch.isfinite(g).all()
    # batch of one: no neighbour -> 0 with zero gradient
    one = x[:1].detach().requires_grad_(True)
    loss = icnn(one, torch.tensor([0]))
    (g,) = torch.autograd.grad(loss, one)
    assert loss.item() == 0.0 and float(g.abs().max()) == 0.0
    assert ICNNLoss().score(one, torch.tensor([0])) is None
    # duplicate embeddings stay finite
    dup = torch.zeros(5, 2, dtype=torch.float64, requires_grad=True)
    loss = icnn(dup, torch.tensor([0, 0, 1, 1, 2]))
    (g,) = torch.autograd.grad(loss, dup)
    assert torch.isfinite(loss) and torch.isfinite(g).all()


@pytest.mark.parametrize(
    "factory, name",
    [
        (lambda: ProtoTripletLoss(margin=float("nan")), "margin"),
        (lambda: ProtoTripletLoss(margin="a"), "margin"),
        (lambda: ProtoTripletLoss(reduction="mean_nonzero"), "reduction"),
        (lambda: ProtoTripletLoss(normalize_embeddings=None), "normalize_embeddings"),
        (lambda: ICNNLoss(k=0), "k"),
        (lambda: ICNNLoss(k=True), "k"),
        (lambda: ICNNLoss(k=4, n_neighbors=3), "n_neighbors"),
        (lambda: ICNNLoss(eps=0.0), "eps"),
        (lambda: ICNNLoss(normalize_embeddings="yes"), "normalize_embeddings"),
    ],
)
def test_bad_hyperparameters(factory, name):
    with pytest.raises(PairLossError, match=name):
        factory()


@pytest.mark.parametrize("name", LOSSES)
def test_bad_call_arguments(name):
    x, y = make_batch(0, "balanced", n=6)
    fn = LOSSES[name]
    with pytest.raises(PairLossError, match="labels"):
        fn(x, None)
    with pytest.raises(PairLossError, match="indices_tuple"):
        fn(x, y, indices_tuple=(torch.tensor([0]), torch.tensor([1])))
    with pytest.raises(PairLossError, match="ref_labels"):
        fn(x, y, ref_emb=x)
    with pytest.raises(PairLossError, match="ref_emb"):
        fn(x, y, ref_emb=torch.randn(4, 3, dtype=x.dtype), ref_labels=torch.arange(4))
