"""Regularizers: pytorch-metric-learning's values and gradients, alone and inside losses."""

from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning import regularizers as pml

import pairloss
from pairloss import regularizers

from .layouts import assert_close, make_batch, value_and_grads

CASES = [
    ("LpRegularizer", {}),
    ("LpRegularizer", {"p": 1, "power": 2}),
    ("ZeroMeanRegularizer", {}),
    ("CenterInvariantRegularizer", {}),
    ("RegularFaceRegularizer", {}),
    ("SparseCentersRegularizer", {"num_classes": 4, "centers_per_class": 3}),
    ("LpRegularizer", {"reducer": "sum"}),
    ("RegularFaceRegularizer", {"reducer": "sum"}),
]


def _build(module, reducers_module, name, kw):
    kw = dict(kw)
    if kw.get("reducer") == "sum":
        kw["reducer"] = reducers_module.SumReducer()
    return getattr(module, name)(**kw)


@pytest.mark.parametrize("seed", (0, 1))
@pytest.mark.parametrize("case", range(len(CASES)))
def test_regularizers_match_pml(case, seed):
    name, kw = CASES[case]
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(12, 5, generator=g, dtype=torch.float64, requires_grad=True)
    ours = _build(regularizers, pairloss.reducers, name, kw)
    theirs = _build(pml, pml_reducers, name, kw)
    assert_close(value_and_grads(lambda: ours(w), [w]), value_and_grads(lambda: theirs(w), [w]))


def test_regularizers_inside_losses_match_pml():
    x, y = make_batch(0, "balanced", n=16)
    ours = pairloss.TupletMarginLoss(
        embedding_regularizer=regularizers.LpRegularizer(), embedding_reg_weight=0.3
    )
    theirs = pml_losses.TupletMarginLoss(
        embedding_regularizer=pml.LpRegularizer(), embedding_reg_weight=0.3
    )
    assert_close(
        value_and_grads(lambda: ours(x, y), [x]), value_and_grads(lambda: theirs(x, y), [x])
    )
    # pytorch-metric-learning's regularizer object inside a pairloss proxy loss
    torch.manual_seed(0)
    ours = pairloss.CosFaceLoss(
        4, 6, weight_regularizer=pml.RegularFaceRegularizer(), weight_reg_weight=0.5
    ).double()
    torch.manual_seed(0)
    theirs = pml_losses.CosFaceLoss(
        4, 6, weight_regularizer=pml.RegularFaceRegularizer(), weight_reg_weight=0.5
    ).double()
    yc = y % 4
    assert_close(
        value_and_grads(lambda: ours(x, yc), [x, ours.W]),
        value_and_grads(lambda: theirs(x, yc), [x, theirs.W]),
    )
    torch.manual_seed(0)
    ours = pairloss.SoftTripleLoss(
        4, 6, centers_per_class=3,
        weight_regularizer=regularizers.SparseCentersRegularizer(4, 3), weight_reg_weight=0.2,
    ).double()  # fmt: skip
    torch.manual_seed(0)
    theirs = pml_losses.SoftTripleLoss(
        4, 6, centers_per_class=3,
        weight_regularizer=pml.SparseCentersRegularizer(4, 3), weight_reg_weight=0.2,
    ).double()  # fmt: skip
    assert_close(
        value_and_grads(lambda: ours(x, yc), [x, ours.fc]),
        value_and_grads(lambda: theirs(x, yc), [x, theirs.fc]),
    )


def test_regularizer_distances_are_checked():
    with pytest.raises(pairloss.PairLossError, match="CenterInvariant"):
        regularizers.CenterInvariantRegularizer(distance=pml_distances.LpDistance())
    with pytest.raises(pairloss.PairLossError, match="similarity"):
        regularizers.RegularFaceRegularizer(distance=pairloss.LpDistance())
    with pytest.raises(pairloss.PairLossError, match="centers_per_class"):
        regularizers.SparseCentersRegularizer(3, 1)
