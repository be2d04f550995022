"""GE2E loss: a loop-based reference of the paper's formulas, identities, degenerate input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pairloss.errors import PairLossError
from pairloss.losses.metric.ge2e import GE2ELoss, ge2e
from tests.layouts import SEEDS, assert_close, make_batch, value_and_grads


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# every speaker has at least two utterances; labels need not be contiguous or sorted
GE2E_LAYOUTS = ("balanced", "unequal", "scattered", "two_speakers")


def ge2e_labels(layout: str, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(500 + seed)
    if layout == "balanced":
        return torch.arange(n) // 4
    if layout == "unequal":  # counts 2, 3, 5, 6, 8
        return torch.repeat_interleave(torch.arange(5), torch.tensor([2, 3, 5, 6, 8]))
    if layout == "scattered":  # shuffled, non-contiguous ids, unequal counts
        base = torch.repeat_interleave(torch.tensor([7, 42, 3, 100]), torch.tensor([4, 9, 2, 9]))
        return base[torch.randperm(n, generator=g)]
    if layout == "two_speakers":
        return (torch.arange(n) % 2) * 11
    raise ValueError(layout)


def reference(x, labels, w, b, method, reduction="mean", normalize=True):
    """Direct transcription of the paper, one utterance and one speaker at a time."""
    rows = []
    xs = [x[i] / x[i].norm() if normalize else x[i] for i in range(x.shape[0])]
    speakers = sorted(set(labels.tolist()))
    w_eff = torch.clamp(w, min=1e-6)

    def cos(a, c):
        return (a @ c) / (a.norm() * c.norm())

    for i in range(x.shape[0]):
        scores = {}
        for k in speakers:
            members = [xs[m] for m in range(x.shape[0]) if int(labels[m]) == k]
            if k == int(labels[i]):
                members = [xs[m] for m in range(x.shape[0]) if int(labels[m]) == k and m != i]
            centroid = sum(members) / len(members)
            scores[k] = w_eff * cos(xs[i], centroid) + b
        own = scores[int(labels[i])]
        if method == "softmax":
            rows.append(-own + torch.log(sum(torch.exp(s) for s in scores.values())))
        else:
            others = [torch.sigmoid(s) for k, s in scores.items() if k != int(labels[i])]
            rows.append(1 - torch.sigmoid(own) + (max(others) if others else 0.0))
    rows = torch.stack(rows)
    if reduction == "none":
        return rows
    return rows.sum() if reduction == "sum" else rows.mean()


@pytest.mark.parametrize("method", ["softmax", "contrast"])
@pytest.mark.parametrize("layout", GE2E_LAYOUTS)
@pytest.mark.parametrize("seed", SEEDS)
def test_matches_loop_reference(seed, layout, method):
    x, _ = make_batch(seed, "balanced")
    y = ge2e_labels(layout, x.shape[0], seed)
    w = torch.tensor(3.0 + seed, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(-1.5, dtype=torch.float64, requires_grad=True)
    inputs = [x, w, b]

    def ours():
        return ge2e(x, y, w=w, b=b, loss_method=method)

    def theirs():
        return reference(x, y, w, b, method)

    assert_close(value_and_grads(ours, inputs), value_and_grads(theirs, inputs))


@pytest.mark.parametrize("method", ["softmax", "contrast"])
def test_module_parameters_and_reductions(method):
    x, _ = make_batch(3, "balanced")
    y = ge2e_labels("scattered", x.shape[0], 3)
    mod = GE2ELoss(method).double()
    assert mod.w.item() == 10.0 and mod.b.item() == -5.0
    value = mod(x, y)
    value.backward()
    ref_w = mod.w.detach().clone().requires_grad_(True)
    ref_b = mod.b.detach().clone().requires_grad_(True)
    expected = reference(x.detach(), y, ref_w, ref_b, method)
    expected.backward()
    torch.testing.assert_close(value.detach(), expected.detach(), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(mod.w.grad, ref_w.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(mod.b.grad, ref_b.grad, rtol=1e-9, atol=1e-12)
    rows = GE2ELoss(method, reduction="none").double()(x, y)
    assert rows.shape == (x.shape[0],)
    total = GE2ELoss(method, reduction="sum").double()(x, y)
    torch.testing.assert_close(total, rows.sum())
    torch.testing.assert_close(value, rows.mean())


def test_float32_parameters_and_half_input():
    mod = GE2ELoss()
    assert mod.w.dtype == torch.float32 and mod.b.dtype == torch.float32
    x, _ = make_batch(0, "balanced", dtype=torch.float16)
    y = ge2e_labels("balanced", x.shape[0], 0)
    out = mod(x, y)
    assert out.dtype == torch.float16 and torch.isfinite(out)
    out.backward()
    assert mod.w.grad.dtype == torch.float32 and torch.isfinite(mod.w.grad)


def test_softmax_is_cross_entropy_over_scores():
    """Paper eq. 6: the softmax variant is the cross-entropy of the score row against the own
    speaker; with no exclusion (a speaker's centroid is far from the others) it is close."""
    x, _ = make_batch(1, "balanced")
    y = ge2e_labels("balanced", x.shape[0], 1)
    rows = ge2e(x, y, reduction="none").detach()
    # recompute with torch's cross-entropy on the reference scores
    xs = torch.nn.functional.normalize(x.detach(), dim=1)
    scores = torch.empty(x.shape[0], 6, dtype=x.dtype)
    for i in range(x.shape[0]):
        for k in range(6):
            m = (y == k).clone()
            if k == int(y[i]):
                m[i] = False
            c = xs[m].mean(0)
            scores[i, k] = 10 * torch.nn.functional.cosine_similarity(xs[i], c, dim=0) - 5
    ce = torch.nn.functional.cross_entropy(scores, y, reduction="none")
    torch.testing.assert_close(rows, ce, rtol=1e-9, atol=1e-12)


def test_invariances():
    x, _ = make_batch(2, "balanced")
    y = ge2e_labels("unequal", x.shape[0], 2)
    base = ge2e(x, y, reduction="none")
    # relabelling speakers and permuting rows
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    relabelled = ge2e(x[perm], (y * 13 + 5)[perm], reduction="none")
    torch.testing.assert_close(relabelled, base[perm])
    # positive rescaling of each row does not change unit d-vectors
    scale = torch.rand(x.shape[0], 1, dtype=x.dtype) + 0.5
    torch.testing.assert_close(ge2e(x * scale, y, reduction="none"), base)


def test_w_is_clamped_positive():
    x, _ = make_batch(0, "balanced")
    y = ge2e_labels("balanced", x.shape[0], 0)
    w = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    low = ge2e(x, y, w=w)
    tiny = ge2e(x, y, w=torch.tensor(1e-6, dtype=torch.float64))
    torch.testing.assert_close(low, tiny)
    low.backward()
    assert float(w.grad) == 0.0


def test_exclusive_centroid_with_two_utterances():
    """With two utterances per speaker the own centroid is the other utterance."""
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    rows = ge2e(x, y, w=1.0, b=0.0, reduction="none")
    # utterance 0: own centroid = (0, 1): cos 0; other centroid = (-0.5, -0.5): cos -1/sqrt(2)
    expected0 = -0.0 + math.log(math.exp(0.0) + math.exp(-1 / math.sqrt(2)))
    assert math.isclose(float(rows[0]), expected0, rel_tol=1e-12)
    rows_c = ge2e(x, y, w=1.0, b=0.0, loss_method="contrast", reduction="none")
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    assert math.isclose(float(rows_c[0]), 1 - sig(0.0) + sig(-1 / math.sqrt(2)), rel_tol=1e-12)


@pytest.mark.parametrize("method", ["softmax", "contrast"])
def test_gradcheck(method):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 0, 2, 1, 2, 2])
    w = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(-0.5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: ge2e(x, y, w=w, b=b, loss_method=method), (x, w, b)
    )


@st.composite
def ge2e_inputs(draw):
    n_spk = draw(st.integers(1, 4))
    counts = [draw(st.integers(2, 4)) for _ in range(n_spk)]
    dim = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**16))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    return counts, dim, seed, scale


@settings(deadline=None, max_examples=25)
@given(ge2e_inputs(), st.sampled_from(["softmax", "contrast"]), st.sampled_from([1.0, 1e4]))
def test_finite_on_random_input(inputs, method, w):
    counts, dim, seed, scale = inputs
    g = torch.Generator().manual_seed(seed)
    y = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    x = (torch.randn(len(y), dim, generator=g) * scale).requires_grad_(True)
    loss = ge2e(x, y, w=w, loss_method=method)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_duplicate_and_zero_embeddings_are_finite():
    x = torch.zeros(6, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    for method in ("softmax", "contrast"):
        loss = ge2e(x, y, loss_method=method)
        (g,) = torch.autograd.grad(loss, x)
        assert torch.isfinite(loss) and torch.isfinite(g).all()


def test_one_speaker():
    x, _ = make_batch(0, "balanced", n=6)
    y = torch.full((6,), 3)
    loss = ge2e(x, y)
    (g,) = torch.autograd.grad(loss, x)
    assert loss.item() == 0.0 and float(g.abs().max()) == 0.0
    rows = ge2e(x, y, loss_method="contrast", reduction="none")
    assert torch.isfinite(rows).all() and bool((rows > 0).all() and (rows < 1).all())


@pytest.mark.parametrize(
    "labels",
    [torch.tensor([0]), torch.tensor([0, 0, 1, 2, 2]), torch.arange(5)],
    ids=["batch_of_one", "one_singleton", "all_distinct"],
)
def test_speakers_with_one_utterance_are_refused(labels):
    x = torch.randn(len(labels), 4, dtype=torch.float64)
    with pytest.raises(PairLossError, match="labels"):
        ge2e(x, labels)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"loss_method": "triplet"}, "loss_method"),
        ({"init_w": 0.0}, "init_w"),
        ({"init_w": -1.0}, "init_w"),
        ({"init_w": float("nan")}, "init_w"),
        ({"init_b": float("inf")}, "init_b"),
        ({"reduction": "mean_nonzero"}, "reduction"),
        ({"normalize_embeddings": 1}, "normalize_embeddings"),
    ],
)
def test_bad_hyperparameters(kwargs, name):
    with pytest.raises(PairLossError, match=name):
        GE2ELoss(**kwargs)


def test_bad_call_arguments():
    x = torch.randn(6, 3)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(PairLossError, match="labels"):
        GE2ELoss()(x)
    with pytest.raises(PairLossError, match="indices_tuple"):
        GE2ELoss()(x, y, indices_tuple=(torch.tensor([0]), torch.tensor([1])))
    with pytest.raises(PairLossError, match="ref_emb"):
        GE2ELoss()(x, y, ref_emb=x, ref_labels=y)
    with pytest.raises(PairLossError, match="w"):
        ge2e(x, y, w=0.0)
    with pytest.raises(PairLossError, match="w"):
        ge2e(x, y, w=torch.tensor([1.0, 2.0]))
    with pytest.raises(PairLossError, match="loss_method"):
        ge2e(x, y, loss_method="x")
    with pytest.raises(PairLossError, match="embeddings"):
        ge2e(torch.randn(6), y)
