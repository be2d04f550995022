"""Classification losses on logits: identities with cross-entropy / BCE / scikit-learn metrics,
loop references written from the formulas, gradchecks, finiteness and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from pairloss.errors import PairLossError
from pairloss.losses import classification as C

# ---------------------------------------------------------------- loop references (floats)


def _softmax(row: list[float]) -> list[float]:
    top = max(row)
    e = [math.exp(v - top) for v in row]
    total = sum(e)
    return [v / total for v in e]


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def _softplus(v: float) -> float:
    return max(v, 0.0) + math.log1p(math.exp(-abs(v)))


def ref_ls_ce(x, y, eps):
    out = []
    for row, t in zip(x, y):
        p = _softmax(row)
        k = len(row)
        q = [(1 - eps) * (j == t) + eps / k for j in range(k)]
        out.append(-sum(qj * math.log(pj) for qj, pj in zip(q, p)))
    return out


def ref_focal(x, y, gamma, alpha=None):
    out = []
    for row, t in zip(x, y):
        pt = _softmax(row)[t]
        w = 1.0 if alpha is None else alpha[t]
        out.append(-w * (1 - pt) ** gamma * math.log(pt))
    return out


def ref_poly1(x, y, eps):
    return [-math.log(_softmax(r)[t]) + eps * (1 - _softmax(r)[t]) for r, t in zip(x, y)]


def ref_asl(x, targets, gp, gn, m, eps):
    out = []
    for row, trow in zip(x, targets):
        total = 0.0
        for o, t in zip(row, trow):
            p = _sigmoid(o)
            if t:
                total -= (1 - p) ** gp * math.log(max(p, eps))
            else:
                pm = max(p - m, 0.0)
                total -= pm**gn * math.log(max(1 - pm, eps))
        out.append(total)
    return out


def ref_z(x, y, a, b):
    out = []
    for row, t in zip(x, y):
        d = len(row)
        mu = sum(row) / d
        sigma = math.sqrt(sum(v * v for v in row) / d - mu * mu)
        z = (row[t] - mu) / sigma
        out.append(_softplus(a * (b - z)) / a)
    return out


def ref_comp_sum(x, y, tau):
    out = []
    for row, t in zip(x, y):
        u = sum(math.exp(row[j] - row[t]) for j in range(len(row)) if j != t)
        if tau == 1:
            out.append(math.log1p(u))
        else:
            out.append(((1 + u) ** (1 - tau) - 1) / (1 - tau))
    return out


def ref_ldr(x, y, lam, c):
    out = []
    for row, t in zip(x, y):
        k = len(row)
        terms = [math.exp((row[j] - row[t] + c * (j != t)) / lam) for j in range(k)]
        out.append(lam * math.log(sum(terms) / k))
    return out


def ref_squentropy(x, y):
    out = []
    for row, t in zip(x, y):
        k = len(row)
        ce = -math.log(_softmax(row)[t])
        out.append(ce + sum(row[j] ** 2 for j in range(k) if j != t) / (k - 1))
    return out


def ref_anyloss(logits, y, metric, beta=1.0, amp=73.0, eps=1e-7):
    a = [_sigmoid(amp * (_sigmoid(o) - 0.5)) for o in logits]
    tp = sum(ai for ai, yi in zip(a, y) if yi)
    fn = sum(1 - ai for ai, yi in zip(a, y) if yi)
    fp = sum(ai for ai, yi in zip(a, y) if not yi)
    tn = sum(1 - ai for ai, yi in zip(a, y) if not yi)
    tpr, tnr = tp / (tp + fn + eps), tn / (tn + fp + eps)
    value = {
        "accuracy": (tp + tn) / len(y),
        "f1": 2 * tp / (2 * tp + fn + fp + eps),
        "fbeta": (1 + beta**2) * tp / ((1 + beta**2) * tp + beta**2 * fn + fp + eps),
        "balanced_accuracy": (tpr + tnr) / 2,
        "gmean": math.sqrt(max(tpr * tnr, eps)),
    }[metric]
    return 1 - value


def ref_mw(scores, y):
    pos = [s for s, t in zip(scores, y) if t]
    neg = [s for s, t in zip(scores, y) if not t]
    per_pos = [sum(_softplus(n - p) for n in neg) for p in pos]
    return per_pos, len(pos) * len(neg)


# ---------------------------------------------------------------- fixtures


def _batch(seed: int = 0, b: int = 7, c: int = 5, scale: float = 2.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(b, c, generator=g, dtype=torch.float64) * scale).to(dtype)
    y = torch.randint(0, c, (b,), generator=g)
    return x, y


def _close(a: torch.Tensor, b, rtol: float = 1e-10, atol: float = 1e-12) -> None:
    torch.testing.assert_close(a, torch.as_tensor(b, dtype=a.dtype), rtol=rtol, atol=atol)


def _multihot(seed: int, b: int, c: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, generator=g) < 0.4


# Multi-class losses taking (logits, targets): name -> (function, kwargs, loop reference)
MULTICLASS = {
    "ls_ce": (
        C.label_smoothing_cross_entropy,
        {"smoothing": 0.2},
        lambda x, y: ref_ls_ce(x, y, 0.2),
    ),
    "focal": (C.focal_loss, {}, lambda x, y: ref_focal(x, y, 2.0)),
    "focal_alpha": (
        C.focal_loss,
        {"gamma": 1.5, "alpha": [0.5, 1.0, 2.0, 0.25, 1.5]},
        lambda x, y: ref_focal(x, y, 1.5, [0.5, 1.0, 2.0, 0.25, 1.5]),
    ),
    "poly1": (C.poly1_loss, {}, lambda x, y: ref_poly1(x, y, 1.0)),
    "z": (C.spherical_z_loss, {"a": 0.7, "b": 1.5}, lambda x, y: ref_z(x, y, 0.7, 1.5)),
    "comp_sum_0": (C.comp_sum_loss, {"tau": 0.0}, lambda x, y: ref_comp_sum(x, y, 0.0)),
    "comp_sum_0.5": (C.comp_sum_loss, {"tau": 0.5}, lambda x, y: ref_comp_sum(x, y, 0.5)),
    "comp_sum_1.5": (C.comp_sum_loss, {"tau": 1.5}, lambda x, y: ref_comp_sum(x, y, 1.5)),
    "comp_sum_2": (C.comp_sum_loss, {"tau": 2.0}, lambda x, y: ref_comp_sum(x, y, 2.0)),
    "ldr": (C.ldr_kl_loss, {"lam": 0.7, "margin": 0.5}, lambda x, y: ref_ldr(x, y, 0.7, 0.5)),
    "squentropy": (C.squentropy_loss, {}, ref_squentropy),
}


# ---------------------------------------------------------------- identities


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_label_smoothing_equals_torch(eps, reduction):
    x, y = _batch(1)
    ours = C.label_smoothing_cross_entropy(x, y, smoothing=eps, reduction=reduction)
    theirs = F.cross_entropy(x, y, label_smoothing=eps, reduction=reduction)
    _close(ours, theirs)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, y: C.focal_loss(x, y, gamma=0.0, reduction="none"),
        lambda x, y: C.poly1_loss(x, y, epsilon=0.0, reduction="none"),
        lambda x, y: C.comp_sum_loss(x, y, tau=1.0, reduction="none"),
        lambda x, y: C.label_smoothing_cross_entropy(x, y, reduction="none"),
    ],
    ids=["focal_gamma0", "poly_eps0", "comp_sum_tau1", "ls_eps0"],
)
def test_reduces_to_cross_entropy(fn):
    x, y = _batch(2, b=9, c=6, scale=4.0)
    _close(fn(x, y), F.cross_entropy(x, y, reduction="none"))


def test_comp_sum_members():
    x, y = _batch(3)
    p_y = torch.softmax(x, 1).gather(1, y[:, None])[:, 0]
    _close(C.comp_sum_loss(x, y, tau=2.0, reduction="none"), 1 - p_y)  # MAE
    q = 0.4
    _close(C.comp_sum_loss(x, y, tau=1 + q, reduction="none"), (1 - p_y**q) / q)  # GCE
    gaps = (x - x.gather(1, y[:, None])).exp().sum(1) - 1
    _close(C.comp_sum_loss(x, y, tau=0.0, reduction="none"), gaps)  # sum-exponential
    # continuity at tau = 1 and boundedness for tau > 1
    near = C.comp_sum_loss(x, y, tau=1 + 1e-9, reduction="none")
    _close(near, F.cross_entropy(x, y, reduction="none"), rtol=1e-7, atol=1e-8)
    big = torch.tensor([[-50.0, 50.0]], dtype=torch.float64)
    assert float(C.comp_sum_loss(big, torch.tensor([0]), tau=3.0)) <= 0.5


def test_ldr_limits():
    x, y = _batch(4)
    k = x.shape[1]
    ce = F.cross_entropy(x, y, reduction="none")
    _close(C.ldr_kl_loss(x, y, lam=1.0, margin=0.0, reduction="none"), ce - math.log(k))
    gaps = x - x.gather(1, y[:, None]) + 1.0
    gaps = gaps.scatter(1, y[:, None], 0.0)
    hinge = C.ldr_kl_loss(x, y, lam=1e-4, margin=1.0, reduction="none")
    _close(hinge, gaps.max(1).values, rtol=0, atol=1e-3)
    flat = C.ldr_kl_loss(x, y, lam=1e6, margin=1.0, reduction="none")
    _close(flat, gaps.mean(1), rtol=0, atol=1e-4)


def test_adaptive_ldr_lambda_and_bound():
    x, y = _batch(5, b=12, c=6, scale=3.0)
    lam0, alpha = 1.0, 2.0
    lam = C.adaptive_ldr_lambdas(x, y, lambda0=lam0, alpha=alpha, margin=1.0)
    assert bool((lam <= lam0).all()) and bool((lam >= lam0 * (1 - 1 / alpha)).all())
    # fixed point of the update
    z = (x - x.gather(1, y[:, None]) + 1.0).scatter(1, y[:, None], 0.0)
    q = torch.softmax(z / lam[:, None], 1)
    kl = (q * q.log()).sum(1) + math.log(6)
    _close(lam, lam0 * (1 - kl / (alpha * math.log(6))), rtol=1e-9, atol=1e-9)
    # lambda decreases from lambda0 along an increasing objective: the loss is >= LDR-KL(lambda0)
    ours = C.adaptive_ldr_kl_loss(x, y, lambda0=lam0, alpha=alpha, reduction="none")
    assert bool((ours >= C.ldr_kl_loss(x, y, lam=lam0, reduction="none") - 1e-12).all())
    # the value is the objective at the returned lambda
    penalty = alpha * math.log(6) / (2 * lam0) * (lam - lam0) ** 2
    _close(ours, _ldr_at(z, lam) - penalty)


def _ldr_at(z: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    return torch.stack(
        [lam[i] * torch.log(torch.exp(z[i] / lam[i]).mean()) for i in range(z.shape[0])]
    )


def test_asymmetric_reduces_to_bce():
    x, _ = _batch(6, b=8, c=7, scale=3.0)
    t = _multihot(6, 8, 7)
    ours = C.asymmetric_loss(x, t, gamma_pos=0, gamma_neg=0, margin=0, eps=0, reduction="none")
    bce = F.binary_cross_entropy_with_logits(x, t.double(), reduction="none").sum(1)
    _close(ours, bce)
    for target in (t.float(), t.long()):  # float and integer 0/1 targets are accepted
        _close(C.asymmetric_loss(x, target.to(x.device)), C.asymmetric_loss(x, t))


@pytest.mark.parametrize("metric", C.METRICS)
def test_anyloss_confident_tends_to_one_minus_metric(metric):
    g = torch.Generator().manual_seed(7)
    y = torch.randint(0, 2, (40,), generator=g)
    hard = torch.where(torch.rand(40, generator=g) < 0.75, y, 1 - y)  # 75% correct
    logits = (hard.double() * 2 - 1) * 12.0  # confident: p ~ 1 - 6e-6
    yn, hn = y.numpy(), hard.numpy()
    ref = {
        "accuracy": skm.accuracy_score(yn, hn),
        "f1": skm.f1_score(yn, hn),
        "fbeta": skm.fbeta_score(yn, hn, beta=2.0),
        "balanced_accuracy": skm.balanced_accuracy_score(yn, hn),
        "gmean": math.sqrt(skm.recall_score(yn, hn) * skm.recall_score(1 - yn, 1 - hn)),
    }[metric]
    loss = C.any_loss(logits, y, metric=metric, beta=2.0)
    assert abs(float(loss) - (1 - ref)) < 1e-5


@pytest.mark.parametrize("chunk", [1, 3, 1024])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mann_whitney_matches_loop(chunk, reduction):
    g = torch.Generator().manual_seed(8)
    s = torch.randn(23, generator=g, dtype=torch.float64) * 3
    y = torch.rand(23, generator=g) < 0.4
    per_pos, n_pairs = ref_mw(s.tolist(), y.tolist())
    expected = {"none": per_pos, "sum": sum(per_pos), "mean": sum(per_pos) / n_pairs}[reduction]
    _close(C.mann_whitney_loss(s, y, reduction=reduction, chunk_size=chunk), expected)


def test_mann_whitney_gradient_matches_dense_autograd():
    g = torch.Generator().manual_seed(9)
    s = torch.randn(30, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.arange(30) % 3 == 0
    C.mann_whitney_loss(s, y, chunk_size=4).backward()
    s2 = s.detach().clone().requires_grad_(True)
    F.softplus(s2[~y][None, :] - s2[y][:, None]).mean().backward()
    _close(s.grad, s2.grad)


def test_mann_whitney_one_class_is_zero():
    s = torch.randn(5, dtype=torch.float64, requires_grad=True)
    for y in (torch.ones(5), torch.zeros(5)):
        loss = C.mann_whitney_loss(s, y)
        loss.backward()
        assert float(loss.detach()) == 0.0 and float(s.grad.abs().sum()) == 0.0


def test_z_loss_shift_scale_invariant():
    x, y = _batch(10)
    base = C.spherical_z_loss(x, y, a=1.0, b=2.0, reduction="none")
    _close(C.spherical_z_loss(3.5 * x - 7.0, y, a=1.0, b=2.0, reduction="none"), base)
    flat = torch.zeros(2, 4, dtype=torch.float64, requires_grad=True)
    out = C.spherical_z_loss(flat, torch.tensor([0, 3]), a=1.0, b=1.0)
    out.backward()
    assert torch.isfinite(out) and bool(torch.isfinite(flat.grad).all())


# ---------------------------------------------------------------- loop references


@pytest.mark.parametrize("name", sorted(MULTICLASS))
def test_multiclass_matches_loop_reference(name):
    fn, kwargs, ref = MULTICLASS[name]
    x, y = _batch(11, b=6, c=5)
    expected = ref(x.tolist(), y.tolist())
    _close(fn(x, y, reduction="none", **kwargs), expected)
    _close(fn(x, y, reduction="sum", **kwargs), sum(expected))
    _close(fn(x, y, **kwargs), sum(expected) / len(expected))


@pytest.mark.parametrize(
    ("gp", "gn", "m", "eps"), [(0.0, 4.0, 0.05, 1e-8), (1.0, 2.0, 0.2, 1e-8), (0.5, 0.5, 0.0, 1e-3)]
)
def test_asymmetric_matches_loop_reference(gp, gn, m, eps):
    x, _ = _batch(12, b=6, c=5, scale=4.0)
    t = _multihot(12, 6, 5)
    expected = ref_asl(x.tolist(), t.tolist(), gp, gn, m, eps)
    ours = C.asymmetric_loss(x, t, gp, gn, m, eps, reduction="none")
    _close(ours, expected, rtol=1e-9, atol=1e-12)


def test_anyloss_matches_loop_reference():
    g = torch.Generator().manual_seed(13)
    o = torch.randn(15, generator=g, dtype=torch.float64) * 0.05  # p near 0.5: A is not saturated
    y = torch.rand(15, generator=g) < 0.5
    for metric in C.METRICS:
        expected = ref_anyloss(o.tolist(), y.tolist(), metric, beta=0.5)
        _close(C.any_loss(o, y, metric=metric, beta=0.5), expected)


def test_tiny_hand_case():
    # two classes, logits (0, log 3): p = (1/4, 3/4), target 1
    x = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    y = torch.tensor([1])
    _close(C.focal_loss(x, y), -(0.25**2) * math.log(0.75))
    _close(C.poly1_loss(x, y), -math.log(0.75) + 0.25)
    _close(C.comp_sum_loss(x, y, tau=2.0), 0.25)
    _close(C.squentropy_loss(x, y), -math.log(0.75))
    _close(C.spherical_z_loss(x, y, a=1.0, b=0.0), math.log1p(math.exp(-1.0)))  # z_y = 1


# ---------------------------------------------------------------- modules, dtypes


def test_modules_match_functions():
    x, y = _batch(14)
    t = _multihot(14, 7, 5)
    pairs = [
        (C.LabelSmoothingCrossEntropyLoss(0.1), C.label_smoothing_cross_entropy(x, y, 0.1)),
        (C.FocalLoss(1.0, [1.0, 2.0, 1.0, 1.0, 0.5]), C.focal_loss(x, y, 1.0, [1, 2, 1, 1, 0.5])),
        (C.Poly1Loss(2.0), C.poly1_loss(x, y, 2.0)),
        (C.SphericalZLoss(1.0, 1.0), C.spherical_z_loss(x, y, 1.0, 1.0)),
        (C.CompSumLoss(0.5), C.comp_sum_loss(x, y, 0.5)),
        (C.LDRKLLoss(2.0, 0.5), C.ldr_kl_loss(x, y, 2.0, 0.5)),
        (C.AdaptiveLDRKLLoss(), C.adaptive_ldr_kl_loss(x, y)),
        (C.SquentropyLoss(), C.squentropy_loss(x, y)),
    ]
    for module, expected in pairs:
        _close(module(x, y), expected)
    _close(C.AsymmetricLoss()(x, t), C.asymmetric_loss(x, t))
    s, yb = x[:, 0], y % 2
    _close(C.AnyLoss("gmean")(s, yb), C.any_loss(s, yb, "gmean"))
    _close(C.MannWhitneyLoss(chunk_size=2)(s, yb), C.mann_whitney_loss(s, yb))


def _all_losses(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {
        name: fn(x, y, **kw)
        for name, (fn, kw, _) in MULTICLASS.items()
        if "alpha" not in kw or len(kw["alpha"]) == x.shape[1]
    }
    out["aldr"] = C.adaptive_ldr_kl_loss(x, y)
    out["asl"] = C.asymmetric_loss(x, t)
    out["asl_fractional_gamma"] = C.asymmetric_loss(x, t, gamma_pos=0.5, gamma_neg=0.5)
    for metric in C.METRICS:
        out[f"any_{metric}"] = C.any_loss(x[:, 0], y % 2, metric=metric)
    out["mw"] = C.mann_whitney_loss(x[:, 0], y % 2)
    return out


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computed_in_float32(dtype):
    x, y = _batch(15, dtype=torch.float32)
    t = _multihot(15, 7, 5)
    low = x.to(dtype)
    reference = _all_losses(low.float(), y, t)
    for name, value in _all_losses(low, y, t).items():
        assert value.dtype == dtype, name
        torch.testing.assert_close(value.float(), reference[name].to(dtype).float(), msg=name)


# ---------------------------------------------------------------- gradcheck


def _bind(fn, kwargs):
    return lambda x, y, t: fn(x, y, reduction="none", **kwargs)


GRAD_CASES = {
    **{name: _bind(fn, kw) for name, (fn, kw, _) in MULTICLASS.items()},
    "asl": lambda x, y, t: C.asymmetric_loss(x, t, 1.0, 4.0, 0.05, 1e-8, reduction="none"),
    "any_f1": lambda x, y, t: C.any_loss(x[:, 0] * 0.05, y % 2, amplify=10.0),
    "any_gmean": lambda x, y, t: C.any_loss(x[:, 0] * 0.05, y % 2, "gmean", amplify=10.0),
    "any_bacc": lambda x, y, t: C.any_loss(x[:, 0] * 0.05, y % 2, "balanced_accuracy"),
    "mw": lambda x, y, t: C.mann_whitney_loss(x[:, 0], y % 2, reduction="none", chunk_size=2),
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_gradcheck(name):
    x, _ = _batch(16, b=4, c=5, scale=1.5)
    y = torch.tensor([0, 1, 4, 3])
    t = _multihot(16, 4, 5)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda inp: GRAD_CASES[name](inp, y, t), (x,))


def test_gradcheck_adaptive_ldr():
    # lambda is solved without gradient; at the fixed point this is the exact gradient
    x = torch.tensor([[0.3, -1.2, 2.0, 0.1], [1.5, 0.2, -0.4, -2.2]], dtype=torch.float64)
    y = torch.tensor([2, 1])
    x.requires_grad_(True)
    fn = lambda inp: C.adaptive_ldr_kl_loss(inp, y, reduction="none")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))


# ---------------------------------------------------------------- finiteness


@settings(max_examples=12, deadline=None)
@given(
    b=st.integers(1, 6),
    c=st.integers(2, 6),
    scale=st.sampled_from([1e-4, 1.0, 10.0, 30.0]),
    seed=st.integers(0, 10_000),
)
def test_finite_values_and_gradients(b, c, scale, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(b, c, generator=g) * scale).requires_grad_(True)
    y = torch.randint(0, c, (b,), generator=g)
    y[0] = 0
    t = torch.rand(b, c, generator=g) < 0.5
    for name, value in _all_losses(x, y, t).items():
        if name in ("comp_sum_0", "comp_sum_0.5") and scale > 1.0:
            continue  # tau < 1 grows like exp((1 - tau) gap): a true overflow, documented
        assert bool(torch.isfinite(value).all()), name
        (grad,) = torch.autograd.grad(value.sum(), x, allow_unused=True)
        assert grad is None or bool(torch.isfinite(grad).all()), name


# ---------------------------------------------------------------- bad input


def _raises(fn, *words):
    with pytest.raises(PairLossError) as info:
        fn()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_bad_input_names_the_argument():
    x, y = _batch(17)
    t = _multihot(17, 7, 5)
    _raises(lambda: C.focal_loss(x[0], y), "logits")
    _raises(lambda: C.focal_loss(x[:, :1], y), "logits")
    _raises(lambda: C.focal_loss(x.long(), y), "logits")
    bad = x.clone()
    bad[2, 1] = float("nan")
    _raises(lambda: C.poly1_loss(bad, y), "logits", "NaN")
    bad[2, 1] = float("inf")
    _raises(lambda: C.squentropy_loss(bad, y), "logits")
    _raises(lambda: C.comp_sum_loss(x, torch.full_like(y, 5)), "targets", "range")
    _raises(lambda: C.comp_sum_loss(x, torch.full_like(y, -1)), "targets", "range")
    _raises(lambda: C.comp_sum_loss(x, y[:3]), "targets")
    _raises(lambda: C.comp_sum_loss(x, y.double()), "targets")
    _raises(lambda: C.asymmetric_loss(x, t[:, :3]), "targets", "shape")
    _raises(lambda: C.asymmetric_loss(x, t.double() * 2), "targets", "0 and 1")
    _raises(lambda: C.focal_loss(x, y, gamma=-1.0), "gamma")
    _raises(lambda: C.focal_loss(x, y, alpha=[1.0, 2.0]), "alpha")
    _raises(lambda: C.focal_loss(x, y, alpha=[1.0, -2.0, 1.0, 1.0, 1.0]), "alpha")
    _raises(lambda: C.poly1_loss(x, y, epsilon=-2.0), "epsilon")
    _raises(lambda: C.label_smoothing_cross_entropy(x, y, smoothing=1.5), "smoothing")
    _raises(lambda: C.asymmetric_loss(x, t, gamma_neg=-1.0), "gamma_neg")
    _raises(lambda: C.asymmetric_loss(x, t, margin=1.0), "margin")
    _raises(lambda: C.asymmetric_loss(x, t, eps=-1e-8), "eps")
    _raises(lambda: C.spherical_z_loss(x, y, a=0.0, b=1.0), "a:")
    _raises(lambda: C.spherical_z_loss(x, y, a=1.0, b=float("nan")), "b:")
    _raises(lambda: C.comp_sum_loss(x, y, tau=-0.5), "tau")
    _raises(lambda: C.ldr_kl_loss(x, y, lam=0.0), "lam")
    _raises(lambda: C.ldr_kl_loss(x, y, margin=-1.0), "margin")
    _raises(lambda: C.adaptive_ldr_kl_loss(x, y, alpha=1.0), "alpha")
    _raises(lambda: C.adaptive_ldr_kl_loss(x, y, lambda0=-1.0), "lambda0")
    _raises(lambda: C.adaptive_ldr_kl_loss(x, y, max_iter=0), "max_iter")
    _raises(lambda: C.focal_loss(x, y, reduction="avg"), "reduction")
    _raises(lambda: C.any_loss(x[:, 0], y % 2, metric="auc"), "metric")
    _raises(lambda: C.any_loss(x[:, 0], y % 2, metric="fbeta", beta=0.0), "beta")
    _raises(lambda: C.any_loss(x[:, 0], y % 2, amplify=-73.0), "amplify")
    _raises(lambda: C.any_loss(x, y % 2), "logits")
    _raises(lambda: C.any_loss(x[:, 0], y), "targets", "0 and 1")
    _raises(lambda: C.mann_whitney_loss(x[:, 0], y), "targets")
    _raises(lambda: C.mann_whitney_loss(x[:, 0], y % 2, chunk_size=0), "chunk_size")
    _raises(lambda: C.mann_whitney_loss(bad[:, 1], y % 2), "scores", "NaN")
    _raises(lambda: C.FocalLoss(gamma=-0.5), "gamma")
    _raises(lambda: C.SphericalZLoss(a=-1.0, b=0.0), "a:")
    _raises(lambda: C.AsymmetricLoss(gamma_pos=-1), "gamma_pos")
    assert issubclass(PairLossError, ValueError)
