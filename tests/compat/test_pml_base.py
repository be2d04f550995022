"""pytorch-metric-learning's loss base classes: a user's own losses, written once against PML's
base classes and once against pairloss's (the same code, only the import differs), give the same
values and gradients with every reducer, distance, regularizer, reference set, index tuple and
miner; isinstance answers as for PML's classes; bad input is refused by name."""

from __future__ import annotations

import copy
from functools import partial
from types import SimpleNamespace

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning import regularizers as pml_regularizers
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

import pairloss
from pairloss import distances, losses, miners, reducers, regularizers
from pairloss.compat import pml_base
from pairloss.errors import PairLossError

from ..layouts import LAYOUTS, SEEDS, assert_close, make_batch, make_ref, value_and_grads

PML = SimpleNamespace(
    losses=pml_losses,
    reducers=pml_reducers,
    distances=pml_distances,
    regularizers=pml_regularizers,
)
OURS = SimpleNamespace(
    losses=losses, reducers=reducers, distances=distances, regularizers=regularizers
)


def define(lib: SimpleNamespace) -> SimpleNamespace:
    """A user's custom losses on ``lib``'s base classes (the code is the same for both)."""
    L, R = lib.losses, lib.reducers

    class PairMargin(L.GenericPairLoss):
        """Contrastive-like, pair-based, two sub-losses."""

        def __init__(self, pos_margin=0.0, neg_margin=1.0, **kwargs):
            super().__init__(mat_based_loss=False, **kwargs)
            self.pos_margin, self.neg_margin = pos_margin, neg_margin

        def get_default_reducer(self):
            return R.AvgNonZeroReducer()

        def _sub_loss_names(self):
            return ["pos_loss", "neg_loss"]

        def _compute_loss(self, pos_pair, neg_pair, indices_tuple):
            pos_loss = neg_loss = 0
            if len(pos_pair) > 0:
                pos_loss = torch.relu(self.distance.margin(pos_pair, self.pos_margin)) ** 2
            if len(neg_pair) > 0:
                neg_loss = torch.relu(self.distance.margin(self.neg_margin, neg_pair))
            return {
                "pos_loss": {
                    "losses": pos_loss,
                    "indices": lmu.pos_pairs_from_tuple(indices_tuple),
                    "reduction_type": "pos_pair",
                },
                "neg_loss": {
                    "losses": neg_loss,
                    "indices": lmu.neg_pairs_from_tuple(indices_tuple),
                    "reduction_type": "neg_pair",
                },
            }

    class SoftMat(L.GenericPairLoss):
        """Matrix-based: a soft positive and negative term per anchor row."""

        def __init__(self, alpha=2.0, beta=10.0, base=0.5, **kwargs):
            super().__init__(mat_based_loss=True, **kwargs)
            self.alpha, self.beta, self.base = alpha, beta, base

        def get_default_distance(self):
            return lib.distances.CosineSimilarity()

        def _compute_loss(self, mat, pos_mask, neg_mask):
            s = mat if self.distance.is_inverted else -mat
            pos = torch.log1p((torch.exp(-self.alpha * (s - self.base)) * pos_mask).sum(1))
            neg = torch.log1p((torch.exp(self.beta * (s - self.base)) * neg_mask).sum(1))
            losses = pos / self.alpha + neg / self.beta
            return {
                "loss": {
                    "losses": losses,
                    "indices": torch.arange(mat.shape[0], device=mat.device),
                    "reduction_type": "element",
                }
            }

    class Mixed(L.BaseMetricLossFunction):
        """Its own compute_loss: triplet, element and already-reduced sub-losses, and a
        statistic."""

        def __init__(self, margin=0.2, **kwargs):
            super().__init__(**kwargs)
            self.margin = margin
            self.add_to_recordable_attributes(name="num_triplets", is_stat=True)

        def _sub_loss_names(self):
            return ["triplet_loss", "centre_loss", "spread_loss"]

        def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
            a, p, n = lmu.convert_to_triplets(indices_tuple, labels, ref_labels, "all")
            self.num_triplets = len(a)
            if len(a) == 0:
                return self.zero_losses()
            mat = self.distance(embeddings, ref_emb)
            triplet = torch.relu(self.distance.margin(mat[a, p], mat[a, n]) + self.margin)
            rows = torch.unique(a)
            centre = (embeddings[rows] - ref_emb[p].mean(0)).pow(2).sum(1)
            return {
                "triplet_loss": {
                    "losses": triplet,
                    "indices": (a, p, n),
                    "reduction_type": "triplet",
                },
                "centre_loss": {"losses": centre, "indices": rows, "reduction_type": "element"},
                "spread_loss": {
                    "losses": embeddings.norm(dim=1).std(),
                    "indices": None,
                    "reduction_type": "already_reduced",
                },
            }

    class WithWeights(L.WeightRegularizerMixin, L.BaseMetricLossFunction):
        """A learnable class-weight matrix [D, C] (PML's layout), a weight regularizer."""

        def __init__(self, num_classes, embedding_size, scale=4.0, **kwargs):
            super().__init__(**kwargs)
            self.scale = scale
            self.W = torch.nn.Parameter(torch.empty(embedding_size, num_classes))
            self.weight_init_func(self.W)

        def get_default_distance(self):
            return lib.distances.CosineSimilarity()

        def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
            logits = self.distance(embeddings, self.W.t().to(embeddings.dtype)) * self.scale
            losses = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
            loss_dict = {
                "loss": {
                    "losses": losses,
                    "indices": torch.arange(len(labels)),
                    "reduction_type": "element",
                }
            }
            self.add_weight_regularization_to_loss_dict(loss_dict, self.W.t())
            return loss_dict

    return SimpleNamespace(
        PairMargin=PairMargin, SoftMat=SoftMat, Mixed=Mixed, WithWeights=WithWeights
    )


THEIRS, MINE = define(PML), define(OURS)
KINDS = ("PairMargin", "SoftMat", "Mixed")


def both(kind: str, theirs_kw: dict | None = None, ours_kw: dict | None = None, **kw):
    """The custom loss ``kind`` on PML's and on pairloss's base classes."""
    return getattr(THEIRS, kind)(**kw, **(theirs_kw or {})), getattr(MINE, kind)(
        **kw, **(ours_kw or {})
    )


def compare(theirs, ours, args, inputs, rtol=1e-9):
    """Values and gradients (w.r.t. ``inputs``) of both losses on the same call."""
    want = value_and_grads(lambda: theirs(*args), inputs)
    got = value_and_grads(lambda: ours(*args), inputs)
    assert_close(got, want, rtol=rtol)
    return got


def pml_and_ours(name: str, *args, **kwargs):
    """A reducer / distance / regularizer of PML and pairloss's of the same name."""
    module = name.split(".")[0]
    cls = name.split(".")[1]
    theirs = getattr(getattr(PML, module), cls)
    ours = getattr(getattr(OURS, module), cls)
    return theirs(*args, **kwargs), ours(*args, **kwargs)


@pytest.mark.parametrize("kind", KINDS)
def test_labels_over_seeds_and_layouts(kind):
    for seed in SEEDS:
        for layout in LAYOUTS:
            x, y = make_batch(seed, layout)
            theirs, ours = both(kind)
            compare(theirs, ours, (x, y), [x])


REDUCERS = [
    ("MeanReducer", (), {}),
    ("AvgNonZeroReducer", (), {}),
    ("ThresholdReducer", (), {"low": 0.05, "high": 0.9}),
    ("SumReducer", (), {}),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name,args,kw", REDUCERS, ids=[r[0] for r in REDUCERS])
def test_reducers_pairloss_and_pml_objects(kind, name, args, kw):
    x, y = make_batch(1, "unbalanced")
    theirs_r, ours_r = pml_and_ours(f"reducers.{name}", *args, **kw)
    theirs, ours = both(kind, {"reducer": theirs_r}, {"reducer": ours_r})
    compare(theirs, ours, (x, y), [x])
    # PML's reducer object passed to the loss on pairloss's base class is translated
    translated = getattr(MINE, kind)(reducer=copy.deepcopy(theirs_r))
    compare(theirs, translated, (x, y), [x])
    inner = translated.reducer
    if isinstance(inner, reducers.MultipleReducers):
        inner = inner.reducers[translated.sub_loss_names()[0]]
    assert isinstance(inner, getattr(reducers, name))


def test_per_anchor_and_multiple_reducers():
    x, y = make_batch(2, "balanced")
    for inner in ("MeanReducer", "AvgNonZeroReducer"):
        theirs_i, ours_i = pml_and_ours(f"reducers.{inner}")
        for kind in ("PairMargin", "SoftMat"):
            theirs, ours = both(
                kind,
                {"reducer": pml_reducers.PerAnchorReducer(theirs_i)},
                {"reducer": reducers.PerAnchorReducer(ours_i)},
            )
            compare(theirs, ours, (x, y), [x])
    theirs_m = pml_reducers.MultipleReducers(
        {
            "pos_loss": pml_reducers.ThresholdReducer(low=0.01),
            "neg_loss": pml_reducers.MeanReducer(),
        }
    )
    ours_m = reducers.MultipleReducers(
        {"pos_loss": reducers.ThresholdReducer(low=0.01), "neg_loss": reducers.MeanReducer()}
    )
    theirs, ours = both("PairMargin", {"reducer": theirs_m}, {"reducer": ours_m})
    assert ours.reducer is ours_m  # a MultipleReducers is kept as it is, as in PML
    compare(theirs, ours, (x, y), [x])
    mixed = both(
        "Mixed",
        {"reducer": pml_reducers.MultipleReducers({"triplet_loss": pml_reducers.SumReducer()})},
        {"reducer": reducers.MultipleReducers({"triplet_loss": reducers.SumReducer()})},
    )
    compare(*mixed, (x, y), [x])


def test_do_nothing_reducer_gives_pmls_dictionary():
    x, y = make_batch(0, "balanced", n=12)
    theirs, ours = both(
        "PairMargin",
        {"reducer": pml_reducers.DoNothingReducer()},
        {"reducer": reducers.DoNothingReducer()},
    )
    want, got = theirs(x, y), ours(x, y)
    assert list(got) == list(want) == ["pos_loss", "neg_loss"]
    for name in want:
        assert got[name]["reduction_type"] == want[name]["reduction_type"]
        torch.testing.assert_close(got[name]["losses"], want[name]["losses"])
        for a, b in zip(got[name]["indices"], want[name]["indices"]):
            assert torch.equal(a, b)


DISTANCES = [
    ("LpDistance", {}, {}),
    ("LpDistance", {"power": 2, "normalize_embeddings": False}, {"neg_margin": 4.0}),
    ("CosineSimilarity", {}, {"pos_margin": 0.5, "neg_margin": 0.2}),
    ("DotProductSimilarity", {"normalize_embeddings": False}, {"pos_margin": 1.0}),
]


@pytest.mark.parametrize(
    "name,dist_kw,loss_kw", DISTANCES, ids=["lp", "sq_lp_raw", "cosine", "dot"]
)
def test_distances_pairloss_and_pml_objects(name, dist_kw, loss_kw):
    theirs_d, ours_d = pml_and_ours(f"distances.{name}", **dist_kw)
    for seed in SEEDS:
        x, y = make_batch(seed, "two_classes")
        for kind in KINDS:
            kw = loss_kw if kind == "PairMargin" else {}
            theirs, ours = both(kind, {"distance": theirs_d}, {"distance": ours_d}, **kw)
            compare(theirs, ours, (x, y), [x])
            assert isinstance(ours.distance, getattr(distances, name))
            # PML's distance object passed to the loss on pairloss's base class
            translated = getattr(MINE, kind)(distance=theirs_d, **kw)
            assert isinstance(translated.distance, getattr(distances, name))
            compare(theirs, translated, (x, y), [x])


def test_a_users_own_pml_distance_is_called_as_it_is():
    class Halved(pml_distances.LpDistance):
        def compute_mat(self, query_emb, ref_emb):
            return super().compute_mat(query_emb, ref_emb) / 2

    x, y = make_batch(0, "balanced")
    theirs, ours = both("PairMargin", distance=Halved())
    compare(theirs, ours, (x, y), [x])


@pytest.mark.parametrize("kind", KINDS)
def test_embedding_regularizers(kind):
    x, y = make_batch(0, "unbalanced")
    for name, weight in (("LpRegularizer", 0.3), ("ZeroMeanRegularizer", 2)):
        theirs_g, ours_g = pml_and_ours(f"regularizers.{name}")
        common = {"embedding_reg_weight": weight}
        theirs, ours = both(
            kind, {"embedding_regularizer": theirs_g}, {"embedding_regularizer": ours_g}, **common
        )
        assert ours.sub_loss_names() == theirs.sub_loss_names()
        assert ours.sub_loss_names()[-1] == "embedding_reg_loss"
        compare(theirs, ours, (x, y), [x])
        translated = getattr(MINE, kind)(embedding_regularizer=copy.deepcopy(theirs_g), **common)
        assert isinstance(translated.embedding_regularizer, getattr(regularizers, name))
        compare(theirs, translated, (x, y), [x])


def test_weight_regularizer_mixin_with_a_learnable_weight():
    for seed in SEEDS:
        torch.manual_seed(seed)
        theirs = THEIRS.WithWeights(5, 6, weight_regularizer=pml_regularizers.LpRegularizer())
        torch.manual_seed(seed)
        ours = MINE.WithWeights(5, 6, weight_regularizer=regularizers.LpRegularizer())
        torch.testing.assert_close(ours.W, theirs.W)  # the default init draws the same weights
        assert ours.sub_loss_names() == theirs.sub_loss_names() == ["loss", "weight_reg_loss"]
        assert isinstance(ours.reducer, reducers.MultipleReducers)
        theirs, ours = theirs.double(), ours.double()
        x, _ = make_batch(seed, "balanced")
        y = torch.arange(x.shape[0]) % 5
        compare(theirs, ours, (x, y), [x])
        want = value_and_grads(partial(theirs, x, y), [theirs.W])
        got = value_and_grads(partial(ours, x, y), [ours.W])
        assert_close(got, want)
    # RegularFace on the class weights, given as PML's object, and an init function
    init = c_f.TorchInitWrapper(torch.nn.init.xavier_uniform_)  # PML's init wrapper
    theirs = THEIRS.WithWeights(
        4, 6, weight_regularizer=pml_regularizers.RegularFaceRegularizer(), weight_init_func=init
    ).double()
    ours = MINE.WithWeights(
        4,
        6,
        weight_regularizer=pml_regularizers.RegularFaceRegularizer(),
        weight_init_func=init,
        weight_reg_weight=1,
    ).double()
    assert isinstance(ours.weight_regularizer, regularizers.RegularFaceRegularizer)
    ours.load_state_dict(theirs.state_dict())
    x, y = make_batch(3, "balanced", n=16)
    y = y % 4
    compare(theirs, ours, (x, y), [x])
    want = value_and_grads(partial(theirs, x, y), [theirs.W])
    got = value_and_grads(partial(ours, x, y), [ours.W])
    assert_close(got, want)


@pytest.mark.parametrize("kind", KINDS)
def test_reference_sets(kind):
    for seed in SEEDS:
        x, y = make_batch(seed, "unbalanced")
        r, ry = make_ref(seed)
        theirs, ours = both(kind)
        compare(theirs, ours, (x, y, None, r, ry), [x, r])
        # the batch's own labels as ref_labels: the self pairs are left out, as in PML
        twin = x.detach().clone().requires_grad_(True)
        compare(theirs, ours, (x, y, None, twin, y), [x, twin])


@pytest.mark.parametrize("kind", KINDS)
def test_index_tuples_pairs_triplets_and_miners(kind):
    x, y = make_batch(4, "balanced")
    emb = x.detach()
    tuples = [
        pml_miners.MultiSimilarityMiner(0.1)(emb, y),  # pairs
        pml_miners.TripletMarginMiner(0.2, type_of_triplets="all")(emb, y),  # triplets
        miners.MultiSimilarityMiner(0.1)(emb, y),  # pairloss's miners' index tuples
        miners.TripletMarginMiner(0.2, type_of_triplets="semihard")(emb, y),
        lmu.get_all_pairs_indices(y),
    ]
    for it in tuples:
        theirs, ours = both(kind)
        compare(theirs, ours, (x, y, it), [x])
        if kind != "Mixed":  # Mixed reads labels for nothing else: pairs alone suffice
            compare(theirs, ours, (x, None, it), [x])
    r, ry = make_ref(4)
    it = pml_miners.PairMarginMiner(0.2, 0.8)(emb, y, r.detach(), ry)
    theirs, ours = both(kind)
    compare(theirs, ours, (x, y, it, r, ry), [x, r])


@pytest.mark.parametrize("kind", KINDS)
def test_no_pairs_gives_zero_losses(kind):
    x, y = make_batch(0, "balanced", n=8)
    empty = torch.zeros(0, dtype=torch.long)
    theirs, ours = both(kind)
    one = (torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), torch.tensor([5]))
    cases = [(x, y, (empty,) * 4), (x[:1], y[:1]), (x, torch.arange(8), (empty,) * 3)]
    if kind != "Mixed":
        cases.append((x, y, one))  # PML's rule: at most one entry per list is no pair
    for args in cases:
        got = compare(theirs, ours, args, [x])
        assert got[0] == 0 and all(bool((g == 0).all()) for g in got[1])
    reg = {"embedding_regularizer": regularizers.LpRegularizer()}
    theirs_reg = {"embedding_regularizer": pml_regularizers.LpRegularizer()}
    theirs, ours = both(kind, theirs_reg, reg)
    got = compare(theirs, ours, (x, y, (empty,) * 4), [x])
    assert got[0] > 0  # the regularizer is added to the zero losses
    assert ours.zero_losses() == theirs.zero_losses()
    assert ours.zero_loss() == theirs.zero_loss()


def test_records_and_statistics_as_pml():
    x, y = make_batch(0, "balanced")
    for collect in (False, True):
        theirs, ours = both(
            "Mixed",
            {"embedding_regularizer": pml_regularizers.LpRegularizer()},
            {"embedding_regularizer": regularizers.LpRegularizer()},
            collect_stats=collect,
        )
        assert ours.collect_stats is collect
        assert ours._record_these == theirs._record_these == ["embedding_reg_weight"]
        assert hasattr(ours, "_record_these_stats") == hasattr(theirs, "_record_these_stats")
        theirs(x, y)
        ours(x, y)
        assert ours.num_triplets == theirs.num_triplets > 0
        if collect:
            assert ours._record_these_stats == theirs._record_these_stats == ["num_triplets"]
            ours.reset_stats()
            assert ours.num_triplets == 0
    plain_theirs, plain_ours = both("PairMargin")
    assert not hasattr(plain_ours, "_record_these") and not hasattr(plain_theirs, "_record_these")


def test_constructor_state_mirrors_pml():
    for kind in KINDS:
        theirs, ours = both(kind)
        assert ours.sub_loss_names() == theirs.sub_loss_names()
        assert ours.all_regularization_loss_names() == theirs.all_regularization_loss_names() == []
        assert type(ours.reducer).__name__ == type(theirs.reducer).__name__
        assert type(ours.distance).__name__ == type(theirs.distance).__name__
        assert (ours.embedding_regularizer, ours.embedding_reg_weight) == (None, 1)
    base = losses.BaseMetricLossFunction()
    assert isinstance(base.get_default_reducer(), reducers.MeanReducer)
    assert isinstance(base.distance, distances.LpDistance) and base.distance.normalize_embeddings
    pair = MINE.PairMargin()
    assert pair.loss_method == pair.pair_based_loss
    soft = MINE.SoftMat()
    assert soft.loss_method == soft.mat_based_loss
    pair.set_reducer(reducers.MeanReducer())
    assert isinstance(pair.reducer, reducers.MultipleReducers)
    assert set(pair.reducer.reducers) == {"pos_loss", "neg_loss"}
    clone = copy.deepcopy(pair)  # the bound loss_method follows the copy
    assert clone.loss_method.__self__ is clone
    x, y = make_batch(0, "balanced")
    torch.testing.assert_close(clone(x, y), pair(x, y))


def test_isinstance_follows_pmls_class_hierarchy():
    bases = [
        "BaseMetricLossFunction",
        "GenericPairLoss",
        "EmbeddingRegularizerMixin",
        "WeightRegularizerMixin",
        "BaseLossWrapper",
    ]
    checked = 0
    for name in dir(pml_losses):
        theirs = getattr(pml_losses, name)
        if not isinstance(theirs, type) or name in bases:
            continue
        ours = getattr(pairloss, name)
        for base in bases:
            expected = issubclass(theirs, getattr(pml_losses, base))
            assert issubclass(ours, getattr(losses, base)) == expected, (name, base)
            assert (name in pml_base.PML_SUBCLASSES[base]) == expected, (name, base)
        checked += 1
    assert checked == 38  # every loss class of PML 2.9 but its five bases
    assert isinstance(pairloss.TripletMarginLoss(), losses.BaseMetricLossFunction)
    assert not isinstance(pairloss.TripletMarginLoss(), losses.GenericPairLoss)
    assert isinstance(pairloss.ContrastiveLoss(), losses.GenericPairLoss)
    assert isinstance(pairloss.ProxyAnchorLoss(3, 4), losses.WeightRegularizerMixin)
    memory = pairloss.CrossBatchMemory(pairloss.ContrastiveLoss(), 4)
    assert isinstance(memory, losses.BaseLossWrapper)
    assert not isinstance(pairloss.CLIPLoss(), losses.BaseMetricLossFunction)
    for kind in KINDS:
        assert isinstance(getattr(MINE, kind)(), losses.BaseMetricLossFunction)
    assert isinstance(MINE.PairMargin(), losses.GenericPairLoss)
    assert not isinstance(MINE.Mixed(), losses.GenericPairLoss)
    assert isinstance(MINE.WithWeights(2, 3), losses.WeightRegularizerMixin)
    for name in bases:  # the same objects everywhere
        assert getattr(pairloss, name) is getattr(losses, name) is getattr(pairloss.compat, name)


def test_a_users_loss_wrapper():
    class OnlyContrastive(losses.BaseLossWrapper):
        def __init__(self, loss, **kwargs):
            super().__init__(loss, **kwargs)
            self.loss = loss

        @staticmethod
        def supported_losses():
            return ["ContrastiveLoss"]

        @classmethod
        def check_loss_support(cls, loss_name):
            if loss_name not in cls.supported_losses():
                raise Exception(f"{loss_name} not supported")

        def forward(self, embeddings, labels):
            return self.loss(embeddings, labels)

    x, y = make_batch(0, "balanced")
    torch.testing.assert_close(
        OnlyContrastive(pairloss.ContrastiveLoss())(x, y), pml_losses.ContrastiveLoss()(x, y)
    )
    with pytest.raises(Exception, match="TripletMarginLoss not supported"):
        OnlyContrastive(pairloss.TripletMarginLoss())
    with pytest.raises(PairLossError, match="check_loss_support"):
        losses.BaseLossWrapper(pairloss.ContrastiveLoss())
    with pytest.raises(PairLossError, match="supported_losses"):
        losses.BaseLossWrapper.supported_losses()
    with pytest.raises(PairLossError, match="loss"):
        OnlyContrastive(3)
    with pytest.raises(PairLossError, match="margin"):
        OnlyContrastive(pairloss.ContrastiveLoss(), margin=1)


def test_unimplemented_methods_are_named():
    x, y = make_batch(0, "balanced")
    with pytest.raises(PairLossError, match="compute_loss: BaseMetricLossFunction"):
        losses.BaseMetricLossFunction()(x, y)
    with pytest.raises(PairLossError, match="_compute_loss: GenericPairLoss"):
        losses.GenericPairLoss(mat_based_loss=True)(x, y)

    class Half(losses.GenericPairLoss):
        def __init__(self):
            super().__init__(mat_based_loss=False)

    with pytest.raises(PairLossError, match="_compute_loss: Half"):
        Half()(x, y)

    class NoDict(losses.BaseMetricLossFunction):
        def compute_loss(self, *args):
            return torch.tensor(1.0)

    with pytest.raises(PairLossError, match="compute_loss: NoDict.compute_loss returned Tensor"):
        NoDict()(x, y)

    class BadEntry(losses.BaseMetricLossFunction):
        def compute_loss(self, *args):
            return {"loss": {"losses": torch.ones(3), "reduction_type": "element"}}

    with pytest.raises(PairLossError, match="loss_dict"):
        BadEntry()(x, y)


def test_bad_input_names_the_argument():
    x, y = make_batch(0, "balanced")
    r, ry = make_ref(0)
    loss = MINE.PairMargin()
    soft = MINE.SoftMat()
    cases = [
        ("embeddings", lambda: loss(x[0], y)),
        ("embeddings", lambda: loss(x.long(), y)),
        ("embeddings", lambda: loss(torch.full_like(x, float("nan")), y)),
        ("labels", lambda: loss(x, y[:-1])),
        ("labels", lambda: loss(x, y[:, None])),
        ("labels", lambda: loss(x)),
        ("ref_labels", lambda: loss(x, y, None, None, ry)),
        ("ref_labels", lambda: loss(x, y, None, r)),
        ("ref_labels", lambda: loss(x, y, None, r, ry[:-1])),
        ("ref_emb", lambda: loss(x, y, None, r[:, :3], ry)),
        ("ref_emb", lambda: loss(x, y, None, r.float(), ry)),
        ("indices_tuple", lambda: loss(x, y, (torch.tensor([0]), torch.tensor([99])) * 2)),
        ("indices_tuple", lambda: loss(x, y, (torch.tensor([0.0]),) * 3)),
        ("indices_tuple", lambda: loss(x, y, (torch.tensor([0]),) * 2)),
        ("indices_tuple", lambda: soft(x, y, (torch.arange(3), torch.arange(1, 4)) * 2)),
        ("reducer", lambda: MINE.PairMargin(reducer="mean")),
        ("distance", lambda: MINE.PairMargin(distance=3)),
        ("embedding_regularizer", lambda: MINE.PairMargin(embedding_regularizer="l2")),
        ("embedding_reg_weight", lambda: MINE.PairMargin(embedding_reg_weight=float("nan"))),
        ("weight_regularizer", lambda: MINE.WithWeights(2, 3, weight_regularizer=1)),
        ("weight_reg_weight", lambda: MINE.WithWeights(2, 3, weight_reg_weight="1")),
        ("weight_init_func", lambda: MINE.WithWeights(2, 3, weight_init_func=1)),
        ("collect_stats", lambda: MINE.PairMargin(collect_stats="yes")),
        ("mat_based_loss", lambda: losses.GenericPairLoss(mat_based_loss=None)),
        ("reduction", lambda: MINE.PairMargin(reduction="mean")),
        ("name", lambda: MINE.Mixed().add_to_recordable_attributes(name=3)),
    ]
    for name, call in cases:
        with pytest.raises(PairLossError, match=name):
            call()
    batched = pairloss.distances.BatchedDistance(distances.LpDistance(), lambda *a: None)
    with pytest.raises(PairLossError, match="distance"):
        MINE.PairMargin(distance=batched)(x, y)
    assert MINE.PairMargin(distance=batched).distance is batched  # a subclass may call it
