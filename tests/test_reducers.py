"""Reducers: pytorch-metric-learning's semantics on loss dictionaries, and inside pairloss losses
(the engine's count rules and the listed terms) with its results."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

import pairloss
from pairloss import reducers
from pairloss.errors import PairLossError

from .layouts import assert_close, make_batch, value_and_grads

PAIRS = [
    ("MeanReducer", {}),
    ("SumReducer", {}),
    ("AvgNonZeroReducer", {}),
    ("ThresholdReducer", {"low": 0.3}),
    ("ThresholdReducer", {"high": 0.5}),
    ("ThresholdReducer", {"low": -0.5, "high": 0.8}),
    ("PerAnchorReducer", {}),
    ("DivisorReducer", {}),
    ("ClassWeightedReducer", {"weights": "w"}),
]


def _make(module, name, kwargs, weights):
    kw = {k: (weights if v == "w" else v) for k, v in kwargs.items()}
    return getattr(module, name)(**kw)


def _dicts(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(30, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (30,), generator=g)
    a1, p, a2, n = lmu.get_all_pairs_indices(y)
    trip = lmu.get_all_triplets_indices(y)
    out = []
    for kind, idx in (
        ("element", torch.arange(30)),
        ("pos_pair", (a1, p)),
        ("neg_pair", (a2, n)),
        ("triplet", trip),
    ):
        size = idx.shape[0] if kind == "element" else idx[0].shape[0]
        losses = torch.randn(size, generator=g, dtype=torch.float64).requires_grad_(True)
        entry = {"losses": losses, "indices": idx, "reduction_type": kind, "divisor": 7}
        out.append((x, y, losses, entry))
    return out


@pytest.mark.parametrize("seed", (0, 1))
@pytest.mark.parametrize("case", range(len(PAIRS)))
def test_reducers_on_loss_dicts_match_pml(case, seed):
    name, kwargs = PAIRS[case]
    w = torch.rand(5, dtype=torch.float64)
    for x, y, losses, entry in _dicts(seed):
        ours = _make(reducers, name, kwargs, w)
        theirs = _make(pml_reducers, name, kwargs, w)
        if name == "PerAnchorReducer" and entry["reduction_type"] == "triplet":
            with pytest.raises(NotImplementedError):
                ours({"loss": entry}, x, y)
            continue
        a = value_and_grads(partial(ours, {"loss": entry}, x, y), [losses])
        b = value_and_grads(partial(theirs, {"loss": entry}, x, y), [losses])
        assert_close(a, b)


def test_multiple_do_nothing_and_zero_losses():
    x, y, losses, entry = _dicts(0)[1]
    d = {
        "pos_loss": entry,
        "neg_loss": {"losses": 0, "indices": None, "reduction_type": "neg_pair"},
    }
    ours = reducers.MultipleReducers({"pos_loss": reducers.SumReducer()}, reducers.MeanReducer())
    theirs = pml_reducers.MultipleReducers({"pos_loss": pml_reducers.SumReducer()})
    torch.testing.assert_close(ours(d, x, y), theirs(d, x, y))
    assert reducers.DoNothingReducer()(d, x, y) is d
    already = {
        "loss": {"losses": torch.tensor(2.5), "indices": None, "reduction_type": "already_reduced"}
    }
    assert float(reducers.MeanReducer()(already, x, y)) == 2.5


# a loss, its PML twin, and reducers to try on both (every kind of sub-loss term)
LOSS_CASES = [
    ("ContrastiveLoss", {}),
    ("TripletMarginLoss", {"margin": 0.2}),
    ("MultiSimilarityLoss", {}),
    ("NTXentLoss", {}),
    ("CircleLoss", {}),
    ("MarginLoss", {}),
    ("TupletMarginLoss", {}),
    ("IntraPairVarianceLoss", {}),
    ("FastAPLoss", {}),
]
REDUCER_CASES = [
    ("MeanReducer", {}),
    ("SumReducer", {}),
    ("AvgNonZeroReducer", {}),
    ("ThresholdReducer", {"low": 0.05, "high": 2.0}),
    ("ClassWeightedReducer", {"weights": "w"}),
    ("PerAnchorReducer", {}),
    ("DivisorReducer", {}),
]


def _pml_reference(loss_name, loss_kw, reducer, x, y):
    """pytorch-metric-learning's reducer on its own loss's terms (listed by its
    DoNothingReducer, flattened where a loss keeps [P, 1] terms, which some of its reducers
    would broadcast); None where it refuses the combination."""
    terms = getattr(pml_losses, loss_name)(reducer=pml_reducers.DoNothingReducer(), **loss_kw)
    d = terms(x, y)
    for v in d.values():
        if torch.is_tensor(v["losses"]) and v["losses"].dim() == 2:
            v["losses"] = v["losses"].reshape(-1)
    if len(d) > 1:
        reducer = pml_reducers.MultipleReducers({k: copy.deepcopy(reducer) for k in d})
    try:
        return reducer(d, x, y)
    except (NotImplementedError, KeyError):
        return None


@pytest.mark.parametrize("loss_case", range(len(LOSS_CASES)))
@pytest.mark.parametrize("engine", ("dense", "blocked"))
def test_losses_with_reducers_match_pml(loss_case, engine):
    """Where pytorch-metric-learning computes the combination (it refuses a divisor that the
    loss does not give and per-anchor triplets)."""
    loss_name, loss_kw = LOSS_CASES[loss_case]
    x, y = make_batch(0, "unbalanced", n=20)
    w = torch.rand(5, dtype=torch.float64)
    checked = 0
    for red_name, red_kw in REDUCER_CASES:
        red = _make(pml_reducers, red_name, red_kw, w)
        if _pml_reference(loss_name, loss_kw, red, x, y) is None:
            continue
        want = value_and_grads(lambda r=red: _pml_reference(loss_name, loss_kw, r, x, y), [x])
        ours = getattr(pairloss, loss_name)(
            reducer=_make(reducers, red_name, red_kw, w), engine=engine, block_size=7, **loss_kw
        )
        assert_close(value_and_grads(lambda o=ours: o(x, y), [x]), want)
        checked += 1
    assert checked >= 3


def test_pml_reducer_objects_are_accepted_and_stored_as_pml_does():
    loss = pairloss.ContrastiveLoss(reducer=pml_reducers.MeanReducer())
    assert isinstance(loss.reducer, reducers.MultipleReducers)
    assert all(isinstance(r, reducers.MeanReducer) for r in loss.reducer.reducers.values())
    single = pairloss.TripletMarginLoss(reducer=reducers.ThresholdReducer(low=0))
    assert type(single.reducer) is reducers.ThresholdReducer
    default = pairloss.ContrastiveLoss()
    assert not default.uses_reducer() and isinstance(default.reducer, reducers.MultipleReducers)
    x, y = make_batch(1, "balanced", n=16)
    out = pairloss.ContrastiveLoss(reducer=reducers.DoNothingReducer())(x, y)
    want = pml_losses.ContrastiveLoss(reducer=pml_reducers.DoNothingReducer())(x, y)
    assert set(out) == set(want)
    for k in out:
        torch.testing.assert_close(out[k]["losses"], want[k]["losses"])
    custom = type(
        "Half", (pml_reducers.MeanReducer,), {"element_reduction": lambda s, l, *a: l.mean() / 2}
    )
    torch.testing.assert_close(
        pairloss.TupletMarginLoss(reducer=custom())(x, y),
        pml_losses.TupletMarginLoss(reducer=custom())(x, y),
    )
    loss.set_reducer(reducers.SumReducer())
    assert loss.uses_reducer()


def test_bad_reducers_raise():
    with pytest.raises(PairLossError, match="low, high"):
        reducers.ThresholdReducer()
    with pytest.raises(PairLossError, match="reducer"):
        pairloss.ContrastiveLoss(reducer="mean")
    with pytest.raises(PairLossError, match="DivisorReducer"):
        x, y = make_batch(0, "balanced", n=12)
        pairloss.TripletMarginLoss(reducer=reducers.DivisorReducer())(x, y)
    with pytest.raises(PairLossError, match="weights"):
        reducers.ClassWeightedReducer(torch.ones(2, 2))
