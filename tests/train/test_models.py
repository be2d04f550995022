"""Embedding models: output shapes, normalisation, input handling, gradients, bad arguments."""

from __future__ import annotations

import pytest
import torch

from pairloss.errors import PairLossError
from pairloss.train.models import MODELS, FaceCNN, MLPHead, SmallCNN, build_model


def _unit_rows(out: torch.Tensor) -> bool:
    return torch.allclose(out.norm(dim=1), torch.ones(out.shape[0]), atol=1e-5)


@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (5, 28, 28)])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_small_cnn_shapes_and_normalisation(shape, dtype):
    torch.manual_seed(0)
    model = SmallCNN(embedding_size=16).eval()
    x = torch.randint(0, 256, shape, dtype=torch.uint8)
    x = x if dtype == torch.uint8 else x.float() / 255
    out = model(x)
    assert out.shape == (5, 16) and out.dtype == torch.float32
    assert model.embedding_size == 16
    assert _unit_rows(out)


def test_uint8_is_scaled_like_float_in_unit_range():
    torch.manual_seed(0)
    model = SmallCNN(embedding_size=8).eval()
    x = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    assert torch.allclose(model(x), model(x.float() / 255), atol=1e-6)


def test_unnormalised_output_is_not_unit_length():
    torch.manual_seed(0)
    out = SmallCNN(embedding_size=8, normalize=False)(torch.rand(4, 1, 28, 28))
    assert not _unit_rows(out)


def test_small_cnn_multichannel_and_width():
    out = SmallCNN(embedding_size=8, in_channels=3)(torch.rand(2, 3, 28, 28))
    assert out.shape == (2, 8)
    narrow = SmallCNN(embedding_size=8, width=16)
    assert narrow.head.in_features == 32 * 7 * 7 and narrow(torch.rand(2, 28, 28)).shape == (2, 8)
    other = SmallCNN(embedding_size=8, input_size=(32, 24))
    assert other.backbone(torch.rand(2, 32, 24)).shape == (2, 64 * 8 * 6)
    with pytest.raises(PairLossError, match="expected 32x24 images"):
        other(torch.rand(2, 28, 28))
    with pytest.raises(PairLossError, match="multiples of 4"):
        SmallCNN(input_size=(30, 28))


@pytest.mark.parametrize(
    "model, x",
    [
        (SmallCNN(8), torch.rand(3, 28, 28)),
        (FaceCNN(8), torch.rand(3, 112, 92)),
        (MLPHead(12, 8, hidden=(6,)), torch.rand(3, 12)),
        (MLPHead(12, 8, hidden=()), torch.rand(3, 12)),
    ],
)
def test_forward_is_the_head_applied_to_the_backbone(model, x):
    model.eval()
    with torch.no_grad():
        expected = torch.nn.functional.normalize(_last_layer(model)(model.backbone(x)), dim=1)
        torch.testing.assert_close(model(x), expected)


def _last_layer(model):
    return model.net[-1] if isinstance(model, MLPHead) else model.head


@pytest.mark.parametrize("hw", [(112, 92), (56, 46), (64, 64)])
def test_face_cnn_any_size(hw):
    torch.manual_seed(0)
    model = FaceCNN(embedding_size=32).eval()
    out = model(torch.randint(0, 256, (3, *hw), dtype=torch.uint8))
    assert out.shape == (3, 32) and model.embedding_size == 32
    assert _unit_rows(out)


def test_mlp_head():
    torch.manual_seed(0)
    model = MLPHead(20, embedding_size=6, hidden=(16, 8), dropout=0.1)
    out = model(torch.randn(7, 20))
    assert out.shape == (7, 6) and _unit_rows(out)
    assert MLPHead(20, 6, hidden=())(torch.randn(2, 20)).shape == (2, 6)
    assert not _unit_rows(MLPHead(20, 6, normalize=False)(torch.randn(5, 20)))


@pytest.mark.parametrize(
    "model, x",
    [
        (SmallCNN(8), torch.rand(4, 1, 28, 28)),
        (FaceCNN(8, input_size=(28, 24)), torch.rand(4, 1, 30, 25)),
        (MLPHead(10, 8), torch.randn(4, 10)),
    ],
)
def test_gradients_reach_every_parameter(model, x):
    model.train()
    out = model(x)
    # a loss that depends on the pairwise similarities, as the pair losses do
    (out @ out.T).triu(1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_build_model_by_name():
    assert isinstance(build_model("cnn28", 16), SmallCNN)
    face = build_model("face", 24, input_size=(32, 32))
    assert isinstance(face, FaceCNN) and face.embedding_size == 24 and face.input_size == (32, 32)
    mlp = build_model("mlp", 8, in_features=12, hidden=(4,))
    assert isinstance(mlp, MLPHead) and mlp(torch.randn(2, 12)).shape == (2, 8)
    assert set(MODELS) == {"cnn28", "face", "mlp", "scorer", "minilm"}


def test_build_model_unknown_name_suggests():
    with pytest.raises(PairLossError, match=r"model: unknown model 'cnn2'.*did you mean cnn28"):
        build_model("cnn2", 16)
    with pytest.raises(PairLossError, match="expected one of cnn28, face, mlp, scorer, minilm"):
        build_model("resnet", 16)


def test_build_model_bad_keywords():
    with pytest.raises(PairLossError, match="in_features"):
        build_model("mlp", 8)
    with pytest.raises(PairLossError, match=r"in_chanels.*did you mean in_channels"):
        build_model("cnn28", 8, in_chanels=3)


@pytest.mark.parametrize(
    "make, arg",
    [
        (lambda: SmallCNN(embedding_size=0), "embedding_size"),
        (lambda: SmallCNN(embedding_size=2.5), "embedding_size"),
        (lambda: SmallCNN(in_channels=0), "in_channels"),
        (lambda: SmallCNN(width=0), "width"),
        (lambda: FaceCNN(input_size=(56,)), "input_size"),
        (lambda: FaceCNN(input_size=(0, 4)), "input_size"),
        (lambda: MLPHead(0), "in_features"),
        (lambda: MLPHead(4, hidden=(8, -1)), "hidden"),
        (lambda: MLPHead(4, dropout=1.0), "dropout"),
    ],
)
def test_bad_constructor_arguments(make, arg):
    with pytest.raises(PairLossError, match=f"^{arg}: "):
        make()


@pytest.mark.parametrize(
    "model, x",
    [
        (SmallCNN(4), torch.rand(2, 3, 28, 28)),
        (SmallCNN(4), torch.rand(28, 28)),
        (SmallCNN(4), torch.randint(0, 5, (2, 28, 28), dtype=torch.int64)),
        (SmallCNN(4), [[0.0]]),
        (FaceCNN(4, in_channels=3), torch.rand(2, 56, 46)),
        (MLPHead(5, 4), torch.randn(2, 6)),
        (MLPHead(5, 4), torch.randn(5)),
    ],
)
def test_bad_inputs(model, x):
    with pytest.raises(PairLossError, match="expected"):
        model(x)
