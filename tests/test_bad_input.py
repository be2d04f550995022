"""Bad input raises PairLossError naming the argument; never NaN, never a deep torch error."""

import pytest
import torch

import pairloss
from pairloss.errors import PairLossError
from pairloss.losses.metric.multi_similarity import MultiSimilarityLoss

LOSS = MultiSimilarityLoss()
X = torch.randn(6, 4)
Y = torch.tensor([0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"embeddings": torch.randn(6)}, "embeddings"),
        ({"embeddings": torch.randn(6, 4, 2)}, "embeddings"),
        ({"embeddings": torch.randint(0, 3, (6, 4))}, "embeddings"),
        ({"embeddings": torch.randn(0, 4), "labels": torch.zeros(0, dtype=torch.long)}, "empty"),
        ({"labels": torch.tensor([0, 1, 2])}, "labels"),
        ({"labels": Y.reshape(2, 3)}, "labels"),
        ({"labels": torch.tensor([0.0, 0.5, 1.0, 1.0, 2.0, 2.0])}, "fractional"),
        ({"labels": None}, "labels"),
        ({"ref_emb": torch.randn(3, 4)}, "ref_labels"),
        ({"ref_emb": torch.randn(3, 5), "ref_labels": torch.tensor([0, 1, 2])}, "ref_emb"),
        ({"ref_emb": torch.randn(3, 4, dtype=torch.float64), "ref_labels": Y[:3]}, "dtype"),
        ({"ref_emb": torch.randn(3, 4), "ref_labels": Y}, "ref_labels"),
        ({"ref_labels": Y}, "ref_labels"),
        ({"indices_tuple": (torch.tensor([0]), torch.tensor([9]), torch.tensor([0]))}, "range"),
        ({"indices_tuple": (torch.tensor([0]),)}, "indices_tuple"),
        (
            {
                "indices_tuple": (
                    torch.tensor([0]),
                    torch.tensor([1]),
                    torch.tensor([0]),
                    torch.tensor([1]),
                )
            },
            "both positive and negative",
        ),
    ],
)
def test_bad_arguments_are_named(kwargs, name):
    args = {"embeddings": X, "labels": Y}
    args.update(kwargs)
    with pytest.raises(PairLossError, match=name):
        LOSS(**args)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_embeddings_name_the_rows(bad):
    x = X.clone()
    x[3, 1] = bad
    with pytest.raises(PairLossError, match=r"embeddings: contains NaN or Inf in row\(s\) 3"):
        LOSS(x, Y)
    r = X.clone()
    r[0, 0] = bad
    with pytest.raises(PairLossError, match="ref_emb"):
        LOSS(X, Y, ref_emb=r, ref_labels=Y)


def test_integral_float_labels_are_accepted():
    torch.testing.assert_close(LOSS(X, Y.double()), LOSS(X, Y))


def test_bad_reduction_engine_and_block_size():
    with pytest.raises(PairLossError, match="reduction"):
        MultiSimilarityLoss(reduction="avg")
    with pytest.raises(PairLossError, match="engine"):
        MultiSimilarityLoss(engine="fast")(X, Y)
    with pytest.raises(PairLossError, match="block_size"):
        MultiSimilarityLoss(engine="blocked", block_size=0)(X, Y)


def test_bad_distance_name():
    with pytest.raises(PairLossError, match="distance"):
        MultiSimilarityLoss(distance="manhattan")


def test_error_is_a_value_error():
    assert issubclass(PairLossError, ValueError)


def test_mixed_devices_are_named():
    with pytest.raises(PairLossError, match="ref_emb: is on device meta"):
        LOSS(X, Y, ref_emb=torch.randn(3, 4, device="meta"), ref_labels=Y[:3])


@pytest.mark.parametrize(
    "make",
    [
        lambda: pairloss.ArcFaceLoss(3, 4),
        lambda: pairloss.ProxyAnchorLoss(3, 4),
        lambda: pairloss.MarginLoss(learn_beta=True),
    ],
)
def test_parameters_on_another_device_are_named(make):
    loss = make().to("meta")
    with pytest.raises(PairLossError, match=r"embeddings: are on device cpu .*\(move the loss"):
        loss(X, Y)


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: MultiSimilarityLoss(beta=float("nan")), "beta"),
        (lambda: MultiSimilarityLoss(alpha=0), "alpha"),
        (lambda: MultiSimilarityLoss(miner="batch_hard"), "miner"),
        (lambda: MultiSimilarityLoss(block_size=True), "block_size"),
        (lambda: MultiSimilarityLoss(engine="fast"), "engine"),
        (lambda: pairloss.TripletMarginLoss(swap="yes"), "swap"),
        (lambda: pairloss.LargeMarginSoftmaxLoss(3, 4, margin=2.5), "margin"),
        (lambda: pairloss.CosFaceLoss(3, 4, scale=True), "scale"),
        (lambda: pairloss.ArcFaceLoss(3, 4, init=lambda w: w.fill_(float("nan"))), "init"),
    ],
)
def test_hyper_parameters_are_checked_at_construction(make, name):
    with pytest.raises(PairLossError, match=name):
        make()


def test_an_init_that_does_not_fill_the_weights_leaves_zeros():
    # ArcFaceLoss(num_classes=3, embedding_size=4) keeps pytorch-metric-learning's W [D, C]
    loss = pairloss.ArcFaceLoss(3, 4, init=lambda w: None)
    assert torch.equal(loss.W, torch.zeros(4, 3))
    assert torch.equal(loss.proxy_weights(), torch.zeros(3, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e-30, 1e20, 1e30])
def test_cosine_losses_do_not_depend_on_the_scale(dtype, scale):
    x = X.to(dtype)
    for engine in ("dense", "blocked"):
        loss = MultiSimilarityLoss(engine=engine, block_size=4)
        torch.testing.assert_close(loss(x * scale, Y), loss(x, Y), rtol=1e-4, atol=1e-6)


def test_overflowing_raw_scores_are_named():
    with pytest.raises(PairLossError, match="embeddings: the scores overflow"):
        MultiSimilarityLoss(distance="dot")(X * 1e20, Y)
