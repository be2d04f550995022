"""pytorch-metric-learning (PML) objects inside pairloss.

A PML distance, reducer, regularizer or miner passed to a pairloss loss, miner, reducer or
regularizer is translated here into the pairloss object of the same name and settings, so that
code in the middle of a migration keeps working and runs on pairloss's engine. An instance of a
user's own PML subclass (one pairloss has no class for) is kept working as it is: a distance is
wrapped (:class:`PMLDistance`: its ``compute_mat``, ``pairwise_distance`` and ``normalize`` are
called, through the engine's generic path), a reducer or regularizer is called as it is (on the
loss's terms as a dictionary, or on the tensor), a miner is wrapped (:class:`PMLMiner`: its
indices are used). Each function returns None for an object that is not PML's, so that the
caller can name what it expected.
"""

from __future__ import annotations

import math

from ..similarity import (
    BaseDistance,
    BatchedDistance,
    CosineSimilarity,
    DotProductSimilarity,
    LpDistance,
    SNRDistance,
)


def _pml(module: str):
    """``pytorch_metric_learning.<module>``, or None when PML is not installed."""
    try:
        import importlib

        return importlib.import_module(f"pytorch_metric_learning.{module}")
    except ImportError:
        return None


def _is_instance(obj: object, module: str, name: str) -> bool:
    mod = _pml(module)
    return mod is not None and isinstance(obj, getattr(mod, name))


class PMLDistance(BaseDistance):
    """A user's pytorch-metric-learning distance (a subclass pairloss has no class for), used as
    a pairloss similarity: its own ``compute_mat``, ``pairwise_distance`` and ``normalize`` are
    called, with its ``normalize_embeddings``, ``p``, ``power`` and ``is_inverted``."""

    def __init__(self, pml_distance) -> None:
        super().__init__(
            normalize_embeddings=bool(pml_distance.normalize_embeddings),
            p=pml_distance.p,
            power=pml_distance.power,
            is_inverted=bool(pml_distance.is_inverted),
        )
        self.pml = pml_distance

    def normalize(self, embeddings, dim=1, **kwargs):
        return self.pml.normalize(embeddings, dim=dim, **kwargs)

    def compute_mat(self, query_emb, ref_emb):
        return self.pml.compute_mat(query_emb, ref_emb)

    def pairwise_distance(self, query_emb, ref_emb):
        return self.pml.pairwise_distance(query_emb, ref_emb)


def similarity_from_pml(obj: object):
    """The pairloss similarity for a PML distance ``obj`` (None if ``obj`` is not one)."""
    D = _pml("distances")
    if D is None or not isinstance(obj, (D.BaseDistance, D.BatchedDistance)):
        return None
    kind = type(obj)
    if kind is D.BatchedDistance:
        return BatchedDistance(similarity_from_pml(obj.distance), obj.iter_fn, obj.batch_size)
    settings = {"p": obj.p, "power": obj.power}
    if kind is D.CosineSimilarity:
        return CosineSimilarity(**settings)
    if kind is D.DotProductSimilarity:
        return DotProductSimilarity(normalize_embeddings=obj.normalize_embeddings, **settings)
    if kind is D.LpDistance:
        return LpDistance(normalize_embeddings=obj.normalize_embeddings, **settings)
    if kind is D.SNRDistance:
        return SNRDistance(normalize_embeddings=obj.normalize_embeddings, **settings)
    return PMLDistance(obj)


def reducer_from_pml(obj: object):
    """The pairloss reducer for a PML reducer ``obj``; a user's own PML reducer is returned as it
    is (it is called on the loss's terms as a dictionary); None if ``obj`` is not a PML
    reducer."""
    from .. import reducers as ours

    R = _pml("reducers")
    if R is None or not isinstance(obj, R.BaseReducer):
        return None
    kind = type(obj)
    simple = {
        R.MeanReducer: ours.MeanReducer,
        R.SumReducer: ours.SumReducer,
        R.AvgNonZeroReducer: ours.AvgNonZeroReducer,
        R.DivisorReducer: ours.DivisorReducer,
        R.DoNothingReducer: ours.DoNothingReducer,
    }
    if kind in simple:
        return simple[kind]()
    if kind is R.ThresholdReducer:
        return ours.ThresholdReducer(low=obj.low, high=obj.high)
    if kind is R.ClassWeightedReducer:
        return ours.ClassWeightedReducer(obj.weights)
    if kind is R.PerAnchorReducer:
        return ours.PerAnchorReducer(ours.reducer_from(obj.reducer), obj.aggregation_func)
    if kind is R.MultipleReducers:
        inner = {k: ours.reducer_from(v) for k, v in obj.reducers.items()}
        return ours.MultipleReducers(inner, ours.reducer_from(obj.default_reducer))
    return obj


def regularizer_from_pml(obj: object):
    """The pairloss regularizer for a PML regularizer ``obj``; a user's own PML regularizer is
    returned as it is (it is called on the tensor); None if ``obj`` is not a PML regularizer."""
    from .. import reducers as ours_r
    from .. import regularizers as ours

    G = _pml("regularizers")
    if G is None or not isinstance(obj, G.BaseRegularizer):
        return None
    kind = type(obj)
    common = {
        "distance": similarity_from_pml(obj.distance),
        "reducer": ours_r.reducer_from(obj.reducer),
    }
    if kind is G.LpRegularizer:
        return ours.LpRegularizer(p=obj.p, power=obj.power, **common)
    if kind is G.ZeroMeanRegularizer:
        return ours.ZeroMeanRegularizer(**common)
    if kind is G.CenterInvariantRegularizer:
        return ours.CenterInvariantRegularizer(**common)
    if kind is G.RegularFaceRegularizer:
        return ours.RegularFaceRegularizer(**common)
    if kind is G.SparseCentersRegularizer:
        same = obj.same_class_mask
        per_class = int(same[0].sum()) + 1
        return ours.SparseCentersRegularizer(same.shape[0] // per_class, per_class, **common)
    return obj


def miner_from_pml(obj: object):
    """The pairloss miner for a PML miner ``obj`` (a user's own PML miner is wrapped in
    :class:`pairloss.mining.PMLMiner`); None if ``obj`` is not a PML miner."""
    from .. import mining as ours

    M = _pml("miners")
    if M is None or not isinstance(obj, M.BaseMiner):
        return None
    kind = type(obj)
    distance = similarity_from_pml(obj.distance)
    if kind is M.MultiSimilarityMiner:
        return ours.MultiSimilarityMiner(obj.epsilon, distance=distance)
    if kind is M.PairMarginMiner:
        return ours.PairMarginMiner(obj.pos_margin, obj.neg_margin, distance=distance)
    if kind is M.TripletMarginMiner:
        return ours.TripletMarginMiner(obj.margin, obj.type_of_triplets, distance=distance)
    if kind is M.BatchHardMiner:
        return ours.BatchHardMiner(
            allowed_pos_range=obj.allowed_pos_range,
            allowed_neg_range=obj.allowed_neg_range,
            distance=distance,
        )
    if kind is M.BatchEasyHardMiner:
        return ours.BatchEasyHardMiner(
            obj.pos_strategy,
            obj.neg_strategy,
            obj.allowed_pos_range,
            obj.allowed_neg_range,
            distance=distance,
        )
    if kind is M.AngularMiner:
        return ours.AngularMiner(math.degrees(obj.angle), distance=distance)
    if kind is M.DistanceWeightedMiner:
        return ours.DistanceWeightedMiner(obj.cutoff, obj.nonzero_loss_cutoff, distance=distance)
    if kind is M.HDCMiner:
        return ours.HDCMiner(obj.filter_percentage, distance=distance)
    if kind is M.UniformHistogramMiner:
        return ours.UniformHistogramMiner(
            obj.num_bins, obj.pos_per_bin, obj.neg_per_bin, distance=distance
        )
    if kind is M.EmbeddingsAlreadyPackagedAsTriplets:
        return ours.EmbeddingsAlreadyPackagedAsTriplets()
    return ours.PMLMiner(obj)


__all__ = [
    "PMLDistance",
    "miner_from_pml",
    "reducer_from_pml",
    "regularizer_from_pml",
    "similarity_from_pml",
]
