"""The catalogue of losses: name, family, formula, paper and call convention.

``pairloss losses`` prints it; the trainer finds losses in it by name; and the test suite builds
its generated tests (hostile input, dense against blocked, devices) from it, so a loss added here
is covered without new test code. Every entry says how the loss is called (:attr:`LossEntry.inputs`,
a key of :data:`EXAMPLES`), and :func:`example` builds a small valid call for it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class LossEntry:
    """One loss of the catalogue.

    Attributes:
        name: the catalogue name (``pairloss train --loss NAME``).
        family: catalogue family and kind, e.g. ``"metric: pairs"``.
        formula: one line of math.
        paper: the source.
        target: ``"module:Class"``.
        inputs: the call convention, a key of :data:`EXAMPLES` (``"embeddings"``: the
            pytorch-metric-learning call ``loss(embeddings, labels, indices_tuple, ref_emb,
            ref_labels)``; ``"proxies"``: the same call, the constructor takes ``num_classes``
            and ``embedding_size``).
        init: extra constructor arguments for :func:`example` (e.g. a required option).
    """

    name: str
    family: str
    formula: str
    paper: str
    target: str
    inputs: str = "embeddings"
    init: dict = field(default_factory=dict)

    def load(self):
        """The loss class."""
        module, cls = self.target.split(":")
        return getattr(importlib.import_module(module), cls)


@dataclass
class Example:
    """A small valid call of a loss: ``entry.load()(**init)(**call)``.

    ``call`` maps the forward's argument names to values (tensors first of all); the generated
    tests mutate those tensors (shapes, dtypes, NaN/Inf, empty, extreme magnitudes).
    """

    init: dict
    call: dict


def _embeddings_example(n: int, dim: int, g: torch.Generator, dtype: torch.dtype) -> Example:
    x = torch.randn(n, dim, generator=g, dtype=dtype)
    return Example({}, {"embeddings": x, "labels": torch.arange(n) % max(1, n // 3)})


def _proxies_example(n: int, dim: int, g: torch.Generator, dtype: torch.dtype) -> Example:
    ex = _embeddings_example(n, dim, g, dtype)
    classes = max(1, n // 3)
    ex.init.update(num_classes=classes, embedding_size=dim)
    return ex


def _two_views_example(n: int, dim: int, g: torch.Generator, dtype: torch.dtype) -> Example:
    """Two augmented views of one batch, row i of each the same sample:
    ``loss(embeddings, ref_emb=...)`` (pytorch-metric-learning's VICReg call)."""
    x = torch.randn(n, dim, generator=g, dtype=dtype)
    return Example(
        {}, {"embeddings": x, "ref_emb": x + 0.1 * torch.randn(n, dim, generator=g, dtype=dtype)}
    )


def _wrapped_views_example(n: int, dim: int, g: torch.Generator, dtype: torch.dtype) -> Example:
    """:class:`~pairloss.SelfSupervisedLoss`'s call, ``loss(embeddings, ref_emb)``, around an
    NT-Xent loss."""
    from .losses import NTXentLoss

    ex = _two_views_example(n, dim, g, dtype)
    ex.init["loss"] = NTXentLoss()
    return ex


def _several_losses_example(n: int, dim: int, g: torch.Generator, dtype: torch.dtype) -> Example:
    """:class:`~pairloss.MultipleLosses` around a contrastive and a Multi-Similarity loss, the
    latter with its miner."""
    from .losses import ContrastiveLoss, MultiSimilarityLoss
    from .mining import MultiSimilarityMiner

    ex = _embeddings_example(n, dim, g, dtype)
    ex.init.update(
        losses=[ContrastiveLoss(), MultiSimilarityLoss()],
        miners=[None, MultiSimilarityMiner()],
        weights=[1.0, 0.5],
    )
    return ex


def _descriptor_weights_example(
    n: int, dim: int, g: torch.Generator, dtype: torch.dtype
) -> Example:
    """:class:`~pairloss.P2SGradLoss`'s constructor order: ``(descriptors_dim, num_classes)``."""
    ex = _embeddings_example(n, dim, g, dtype)
    ex.init.update(descriptors_dim=dim, num_classes=max(1, n // 3))
    return ex


def _proxy_assignments_example(n: int, dim: int, g: torch.Generator, dtype: torch.dtype) -> Example:
    """:class:`~pairloss.ManifoldLoss`: no labels; ``indices_tuple`` is each sample's proxy
    among K = 3 (``l`` the embedding size)."""
    x = torch.randn(n, dim, generator=g, dtype=dtype)
    k = min(3, n)
    return Example({"l": dim, "K": k}, {"embeddings": x, "indices_tuple": torch.arange(n) % k})


EXAMPLES: dict[str, Callable[[int, int, torch.Generator, torch.dtype], Example]] = {
    "embeddings": _embeddings_example,
    "proxies": _proxies_example,
    # pytorch-metric-learning's other call conventions
    "two_views": _two_views_example,
    "wrapped_views": _wrapped_views_example,
    "several_losses": _several_losses_example,
    "descriptor_weights": _descriptor_weights_example,
    "proxy_assignments": _proxy_assignments_example,
}
"""Builders of a small valid call for each call convention: ``(n, dim, generator, dtype) ->
Example`` with ``n`` samples (rows, pairs, queries or preference pairs) of size ``dim``. A new
convention (two towers, slates, preference log-probabilities, ...) adds its builder here."""


def example(
    entry: LossEntry, n: int = 12, dim: int = 8, seed: int = 0, dtype=torch.float64
) -> Example:
    """A small valid call of ``entry``'s loss (see :class:`Example`); the entry's ``init``
    extends the constructor arguments."""
    ex = EXAMPLES[entry.inputs](n, dim, torch.Generator().manual_seed(seed), dtype)
    ex.init.update(entry.init)
    return ex


LOSSES: tuple[LossEntry, ...] = (
    LossEntry(
        "contrastive",
        "metric: pairs",
        "pos: [d - m_pos]+, neg: [m_neg - d]+",
        "Hadsell, Chopra & LeCun, CVPR 2006",
        "pairloss.losses.metric.contrastive:ContrastiveLoss",
    ),
    LossEntry(
        "triplet_margin",
        "metric: triplets",
        "mean over non-zero [d_ap - d_an + m]+ (batch-all, sort + prefix sums)",
        "Schroff, Kalenichenko & Philbin, CVPR 2015",
        "pairloss.losses.metric.triplet:TripletMarginLoss",
    ),
    LossEntry(
        "batch_hard_triplet",
        "metric: triplets",
        "[m + max_p d_ap - min_n d_an]+",
        "Hermans, Beyer & Leibe, 2017",
        "pairloss.losses.metric.triplet:BatchHardTripletLoss",
    ),
    LossEntry(
        "batch_hard_soft_margin_triplet",
        "metric: triplets",
        "softplus(max_p d_ap - min_n d_an)",
        "Hermans, Beyer & Leibe, 2017",
        "pairloss.losses.metric.triplet:BatchHardSoftMarginTripletLoss",
    ),
    LossEntry(
        "generalized_lifted_structure",
        "metric: pairs",
        "[LSE_p(d - m_pos) + LSE_n(m_neg - d)]+",
        "Oh Song et al., CVPR 2016; Hermans et al. 2017",
        "pairloss.losses.metric.lifted_structure:GeneralizedLiftedStructureLoss",
    ),
    LossEntry(
        "npairs",
        "metric: softmax",
        "-log(e^{s_ip} / (e^{s_ip} + sum_n e^{s_in}))",
        "Sohn, NeurIPS 2016",
        "pairloss.losses.metric.npairs:NPairsLoss",
    ),
    LossEntry(
        "multi_similarity",
        "metric: pairs",
        "1/a log(1 + sum_P e^{-a(s-l)}) + 1/b log(1 + sum_N e^{b(s-l)})",
        "Wang et al., CVPR 2019",
        "pairloss.losses.metric.multi_similarity:MultiSimilarityLoss",
    ),
    LossEntry(
        "circle",
        "metric: pairs",
        "softplus(LSE_n(g a_n (s_n - D_n)) + LSE_p(-g a_p (s_p - D_p)))",
        "Sun et al., CVPR 2020",
        "pairloss.losses.metric.circle:CircleLoss",
    ),
    LossEntry(
        "binomial_deviance",
        "metric: pairs",
        "log(1 + e^{-a(s-l)}) on positives, log(1 + e^{a c (s-l)}) on negatives, balanced",
        "Yi et al., ICPR 2014",
        "pairloss.losses.metric.binomial_deviance:BinomialDevianceLoss",
    ),
    LossEntry(
        "margin",
        "metric: pairs",
        "[a + y (d - beta)]+ with learnable beta",
        "Wu et al., ICCV 2017",
        "pairloss.losses.metric.margin:MarginLoss",
    ),
    LossEntry(
        "supcon",
        "contrastive: softmax",
        "-1/|P(i)| sum_p log(e^{s_ip/t} / sum_{a != i} e^{s_ia/t})",
        "Khosla et al., NeurIPS 2020",
        "pairloss.losses.metric.supcon:SupConLoss",
    ),
    LossEntry(
        "ntxent",
        "contrastive: softmax",
        "-log(e^{s_ip/t} / (e^{s_ip/t} + sum_n e^{s_in/t}))",
        "Chen et al., ICML 2020 (SimCLR); van den Oord et al. 2018",
        "pairloss.losses.metric.ntxent:NTXentLoss",
    ),
    LossEntry(
        "dcl",
        "contrastive: softmax",
        "-s_ip/t + log sum_n e^{s_in/t} (positive left out of the denominator)",
        "Yeh et al., ECCV 2022",
        "pairloss.losses.metric.dcl:DCLLoss",
    ),
    LossEntry(
        "dclw",
        "contrastive: softmax",
        "DCL with the positive term weighted by 2 - e^{s_ip/sigma} / E[e^{s/sigma}]",
        "Yeh et al., ECCV 2022",
        "pairloss.losses.metric.dcl:DCLWLoss",
    ),
    LossEntry(
        "semi_hard_triplet",
        "metric: triplets",
        "[d_ap - d_an + m]+ over negatives with d_ap < d_an < d_ap + m",
        "Schroff, Kalenichenko & Philbin, CVPR 2015",
        "pairloss.losses.metric.triplet:SemiHardTripletLoss",
    ),
    LossEntry(
        "normalized_softmax",
        "proxy: margin softmax",
        "CE on cos(x, w_c) / t",
        "Zhai & Wu, BMVC 2019",
        "pairloss.losses.proxy.margin_softmax:NormalizedSoftmaxLoss",
        inputs="proxies",
    ),
    LossEntry(
        "cosface",
        "proxy: margin softmax",
        "CE on s (cos - m) for the true class",
        "Wang et al., CVPR 2018",
        "pairloss.losses.proxy.margin_softmax:CosFaceLoss",
        inputs="proxies",
    ),
    LossEntry(
        "arcface",
        "proxy: margin softmax",
        "CE on s cos(theta + m) for the true class",
        "Deng et al., CVPR 2019",
        "pairloss.losses.proxy.margin_softmax:ArcFaceLoss",
        inputs="proxies",
    ),
    LossEntry(
        "sub_center_arcface",
        "proxy: margin softmax",
        "ArcFace with the max over k sub-centres per class",
        "Deng et al., ECCV 2020",
        "pairloss.losses.proxy.margin_softmax:SubCenterArcFaceLoss",
        inputs="proxies",
    ),
    LossEntry(
        "large_margin_softmax",
        "proxy: margin softmax",
        "CE on |x||w| psi(m theta) (multiplicative angular margin)",
        "Liu et al., ICML 2016",
        "pairloss.losses.proxy.margin_softmax:LargeMarginSoftmaxLoss",
        inputs="proxies",
    ),
    LossEntry(
        "sphereface",
        "proxy: margin softmax",
        "L-Softmax on normalised class weights",
        "Liu et al., CVPR 2017",
        "pairloss.losses.proxy.margin_softmax:SphereFaceLoss",
        inputs="proxies",
    ),
    LossEntry(
        "proxy_anchor",
        "proxy: pairs",
        "proxies as anchors: log(1 + sum e^{-a(s-d)}) + log(1 + sum e^{a(s+d)})",
        "Kim et al., CVPR 2020",
        "pairloss.losses.proxy.proxy_anchor:ProxyAnchorLoss",
        inputs="proxies",
    ),
    LossEntry(
        "proxy_nca",
        "proxy: softmax",
        "NCA of each embedding against the class proxies",
        "Movshovitz-Attias et al., ICCV 2017",
        "pairloss.losses.proxy.proxy_nca:ProxyNCALoss",
        inputs="proxies",
    ),
    LossEntry(
        "soft_triple",
        "proxy: softmax",
        "relaxed softmax over several centres per class",
        "Qian et al., ICCV 2019",
        "pairloss.losses.proxy.soft_triple:SoftTripleLoss",
        inputs="proxies",
    ),
    LossEntry(
        "proxy_circle",
        "proxy: pairs",
        "Circle loss with own proxy positive, other proxies negative",
        "Sun et al., CVPR 2020",
        "pairloss.losses.proxy.proxy_circle:ProxyCircleLoss",
        inputs="proxies",
    ),
    LossEntry(
        "unpg",
        "proxy: margin softmax",
        "CosFace/ArcFace softmax whose denominator adds the filtered in-batch negative pairs",
        "Jung et al., BMVC 2022",
        "pairloss.losses.proxy.unpg:UNPGLoss",
        inputs="proxies",
    ),
    LossEntry(
        "mean_field_contrastive",
        "proxy: pairs",
        "contrastive hinge against class mean fields: [d_iy - m_p]+ + sum_c [m_n - d_ic]+",
        "Furusawa, ICLR 2024",
        "pairloss.losses.proxy.mean_field:MeanFieldContrastiveLoss",
        inputs="proxies",
    ),
    LossEntry(
        "mean_field_class_wise_multi_similarity",
        "proxy: pairs",
        "class-wise MS with class-to-class terms carried by the class vectors",
        "Furusawa, ICLR 2024",
        "pairloss.losses.proxy.mean_field:MeanFieldClassWiseMultiSimilarityLoss",
        inputs="proxies",
    ),
    LossEntry(
        "ge2e",
        "metric: centroids",
        "S = w cos(e, c_k) + b (own centroid leaves e out); softmax or contrast",
        "Wan et al., ICASSP 2018",
        "pairloss.losses.metric.ge2e:GE2ELoss",
    ),
    LossEntry(
        "proto_triplet",
        "metric: centroids",
        "[d(q, p_y) - min_{c != y} d(q, p_c) + m]+ against class prototypes",
        "Mendez-Ruiz et al., 2023",
        "pairloss.losses.metric.prototypes:ProtoTripletLoss",
    ),
    LossEntry(
        "icnn",
        "metric: neighbours",
        "-log ICNN score (intra/inter-class nearest neighbours)",
        "Mendez-Ruiz et al., 2023",
        "pairloss.losses.metric.prototypes:ICNNLoss",
    ),
    LossEntry(
        "pfid",
        "proxy + pairs",
        "CE(x W^T + b, y) + lambda * contrastive pairs",
        "Shukla et al., PRICAI 2019",
        "pairloss.losses.metric.pfid:PFIDLoss",
        inputs="proxies",
    ),
    # pytorch-metric-learning's other losses, under its names, arguments and results
    LossEntry(
        "angular",
        "metric: triplets",
        "log(1 + sum_n e^{4 tan^2(a) (x_a + x_p).x_n - 2 (1 + tan^2(a)) x_a.x_p}) per positive pair",
        "Wang et al., ICCV 2017",
        "pairloss.losses.metric.angular:AngularLoss",
    ),
    LossEntry(
        "dynamic_soft_margin",
        "metric: triplets",
        "mean over triplets of CDF(d_ap - d_an) (d_ap - d_an), CDF from a running histogram",
        "Zhang & Rusinkiewicz, ICCV 2019",
        "pairloss.losses.metric.dynamic_soft_margin:DynamicSoftMarginLoss",
    ),
    LossEntry(
        "fast_ap",
        "metric: ranking",
        "1 - sum_k h+_k H+_k / H_k / |P| from soft distance histograms",
        "Cakir et al., CVPR 2019",
        "pairloss.losses.metric.fast_ap:FastAPLoss",
    ),
    LossEntry(
        "histogram",
        "metric: pairs",
        "sum_r p-_r cumsum(p+)_r over soft histograms of pair similarities",
        "Ustinova & Lempitsky, NeurIPS 2016",
        "pairloss.losses.metric.histogram:HistogramLoss",
    ),
    LossEntry(
        "instance",
        "metric: softmax",
        "CE of gamma cos(x_i, x_j) over the batch, target the class's index",
        "Zheng et al., ACM TOMM 2020",
        "pairloss.losses.metric.instance:InstanceLoss",
    ),
    LossEntry(
        "intra_pair_variance",
        "metric: pairs",
        "[(1 - e) mu+ - s_p]+^2 + [s_n - (1 + e) mu-]+^2, mu the pairs' mean scores",
        "Yu & Tao, ICCV 2019",
        "pairloss.losses.metric.intra_pair_variance:IntraPairVarianceLoss",
    ),
    LossEntry(
        "lifted_structure",
        "metric: pairs",
        "[log(sum_{N(a) u N(p)} e^{m - d}) + d_ap - m+]+^2 / 2 per positive pair",
        "Oh Song et al., CVPR 2016",
        "pairloss.losses.metric.lifted_structure:LiftedStructureLoss",
    ),
    LossEntry(
        "manifold",
        "proxy: graph",
        "hinge on random-walk affinities F = (1 - a)(I - a S)^-1 to K proxies, plus context",
        "Aziere & Todorovic, CVPR 2019",
        "pairloss.losses.proxy.manifold:ManifoldLoss",
        inputs="proxy_assignments",
    ),
    LossEntry(
        "multiple_losses",
        "combination",
        "sum_k w_k L_k(embeddings, labels, miner_k(...))",
        "pytorch-metric-learning (Musgrave et al., ECCV 2020)",
        "pairloss.losses.metric.wrappers:MultipleLosses",
        inputs="several_losses",
    ),
    LossEntry(
        "nca",
        "metric: softmax",
        "-log(sum_p e^{-t d_ip} / sum_{c != i} e^{-t d_ic})",
        "Goldberger et al., NeurIPS 2004",
        "pairloss.losses.metric.nca:NCALoss",
    ),
    LossEntry(
        "p2s_grad",
        "proxy: regression",
        "mean over cells of (cos(x_i, w_c) - [c = y_i])^2",
        "Zhang et al., CVPR 2019",
        "pairloss.losses.proxy.p2s_grad:P2SGradLoss",
        inputs="descriptor_weights",
    ),
    LossEntry(
        "pnp",
        "metric: ranking",
        "mean_i mean_{j in P(i)+i} f(sum_n sigmoid((s_in - s_ij) / t))",
        "Li et al., AAAI 2022",
        "pairloss.losses.metric.pnp:PNPLoss",
    ),
    LossEntry(
        "ranked_list",
        "metric: pairs",
        "(1 - l) weighted [d_p - (a - m)]+ mean + l weighted [a - d_n]+ mean",
        "Wang et al., CVPR 2019",
        "pairloss.losses.metric.ranked_list:RankedListLoss",
        init={"margin": 0.4, "Tn": 5.0},
    ),
    LossEntry(
        "self_supervised",
        "contrastive: views",
        "L(cat(x, x'), cat(ids, ids)) for two views x, x' labelled by sample",
        "pytorch-metric-learning (Musgrave et al., ECCV 2020)",
        "pairloss.losses.metric.wrappers:SelfSupervisedLoss",
        inputs="wrapped_views",
    ),
    LossEntry(
        "signal_to_noise_ratio_contrastive",
        "metric: pairs",
        "contrastive hinge in d = Var(a - c) / Var(a)",
        "Yuan et al., CVPR 2019",
        "pairloss.losses.metric.signal_to_noise:SignalToNoiseRatioContrastiveLoss",
    ),
    LossEntry(
        "smooth_ap",
        "metric: ranking",
        "1 - mean_{j in G} (1 + sum_G sig) / (1 + sum_all sig), sig = sigmoid((s_k - s_j) / t)",
        "Brown et al., ECCV 2020",
        "pairloss.losses.metric.smooth_ap:SmoothAPLoss",
    ),
    LossEntry(
        "threshold_consistent_margin",
        "metric: pairs",
        "l+ mean_{s_p <= m+}(m+ - s_p) + l- mean_{s_n >= m-}(s_n - m-)",
        "Zhang et al., ICLR 2024",
        "pairloss.losses.metric.threshold_margin:ThresholdConsistentMarginLoss",
    ),
    LossEntry(
        "tuplet_margin",
        "metric: pairs",
        "log(1 + sum_n e^{s (cos t_an - cos(t_ap - b))}) per positive pair",
        "Yu & Tao, ICCV 2019",
        "pairloss.losses.metric.tuplet_margin:TupletMarginLoss",
    ),
    LossEntry(
        "vicreg",
        "self-supervised: views",
        "l s(Z, Z') + m [v(Z) + v(Z')] + n [c(Z) + c(Z')]",
        "Bardes, Ponce & LeCun, ICLR 2022",
        "pairloss.losses.metric.vicreg:VICRegLoss",
        inputs="two_views",
    ),
)


ALIASES = {
    "ms": "multi_similarity",
    "triplet": "triplet_margin",
    "lifted": "generalized_lifted_structure",
}


def name_key(name: str, suffix: str = "loss") -> str:
    """``name`` lower-cased without ``-``, ``_``, spaces and a trailing ``suffix``: the key that
    makes ``multi_similarity``, ``MultiSimilarityLoss`` and ``multi-similarity`` one name."""
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    return key[: -len(suffix)] if key.endswith(suffix) and key != suffix else key


def find(name: str) -> LossEntry:
    """The entry called ``name``: its catalogue name, its class name or an alias (:data:`ALIASES`),
    matched by :func:`name_key`; raises PairLossError suggesting close names."""
    import difflib

    from .errors import PairLossError

    if not isinstance(name, str) or not name.strip():
        raise PairLossError(f"loss: expected a loss name, got {name!r}")
    by_key = {}
    for entry in LOSSES:
        by_key[name_key(entry.name)] = entry
        by_key[name_key(entry.target.split(":")[1])] = entry
    for alias, target in ALIASES.items():
        by_key[name_key(alias)] = by_key[name_key(target)]
    entry = by_key.get(name_key(name))
    if entry is not None:
        return entry
    names = [e.name for e in LOSSES]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    close += [n for n in names if name_key(name) in name_key(n) and n not in close]
    hint = f"; did you mean {', '.join(close[:4])}?" if close else ""
    raise PairLossError(f"loss: unknown loss {name!r}{hint} (see `pairloss losses`)")
