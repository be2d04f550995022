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
            and ``embedding_size``; ``"slates"``: ``loss(scores, relevance, mask=None)`` on
            [Q, L]; ``"preference_pairs"``: ``loss(chosen_logps, rejected_logps,
            ref_chosen_logps, ref_rejected_logps)``, [B] each; ``"preference_pairs_without_
            reference"``: ``loss(chosen_logps, rejected_logps, chosen_tokens,
            rejected_tokens)``; ``"preference_unpaired"``: ``loss(logps, ref_logps, labels,
            kl_logps, ref_kl_logps)``; ``"reward_pairs"``: ``loss(rewards_chosen,
            rewards_rejected)``; ``"preference_lists"``: ``loss(logps, ref_logps, rewards,
            mask=None)`` on [B, K]; ``"preference_matrix"``: ``loss(logps, ref_logps,
            preferences)`` with preferences [B, K, K]).
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


def _slates_example(n: int, dim: int, g: torch.Generator, dtype: torch.dtype) -> Example:
    """``n`` queries of ``dim`` items: scores and graded relevance 0-3 (no padding)."""
    scores = torch.randn(n, dim, generator=g, dtype=dtype)
    relevance = torch.randint(0, 4, (n, dim), generator=g).to(dtype)
    return Example({}, {"scores": scores, "relevance": relevance})


def _logps(shape, g: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Sequence log-probabilities in [-21, -1)."""
    return -1.0 - 20.0 * torch.rand(shape, generator=g, dtype=dtype)


def _preference_pairs_example(n: int, dim: int, g: torch.Generator, dtype) -> Example:
    """``n`` (chosen, rejected) pairs with the reference model's log-probabilities."""
    names = ("chosen_logps", "rejected_logps", "ref_chosen_logps", "ref_rejected_logps")
    return Example({}, {name: _logps(n, g, dtype) for name in names})


def _preference_pairs_without_reference_example(n: int, dim: int, g, dtype) -> Example:
    """``n`` (chosen, rejected) pairs with token counts, no reference model (CPO, ORPO)."""
    call = {"chosen_logps": _logps(n, g, dtype), "rejected_logps": _logps(n, g, dtype)}
    call["chosen_tokens"] = torch.randint(1, dim + 2, (n,), generator=g)
    call["rejected_tokens"] = torch.randint(1, dim + 2, (n,), generator=g)
    return Example({}, call)


def _preference_unpaired_example(n: int, dim: int, g: torch.Generator, dtype) -> Example:
    """``n`` completions labelled desirable or not, with mismatched completions for KL (KTO)."""
    call = {name: _logps(n, g, dtype) for name in ("logps", "ref_logps", "kl_logps")}
    call["ref_kl_logps"] = _logps(n, g, dtype)
    call["labels"] = torch.arange(n) % 2 == 0
    return Example({}, call)


def _reward_pairs_example(n: int, dim: int, g: torch.Generator, dtype) -> Example:
    """``n`` pairs of reward-model scores (chosen, rejected)."""
    return Example(
        {},
        {
            "rewards_chosen": torch.randn(n, generator=g, dtype=dtype),
            "rewards_rejected": torch.randn(n, generator=g, dtype=dtype),
        },
    )


def _preference_lists_example(n: int, dim: int, g: torch.Generator, dtype) -> Example:
    """``n`` prompts with ``dim`` responses each: log-probabilities and rewards in [0, 1)."""
    shape = (n, dim)
    return Example(
        {},
        {
            "logps": _logps(shape, g, dtype),
            "ref_logps": _logps(shape, g, dtype),
            "rewards": torch.rand(shape, generator=g, dtype=dtype),
        },
    )


def _preference_matrix_example(n: int, dim: int, g: torch.Generator, dtype) -> Example:
    """``n`` prompts with ``dim`` responses and a matrix of empirical preference probabilities."""
    shape = (n, dim)
    return Example(
        {},
        {
            "logps": _logps(shape, g, dtype),
            "ref_logps": _logps(shape, g, dtype),
            "preferences": torch.rand((n, dim, dim), generator=g, dtype=dtype),
        },
    )


def _reference_views_example(n: int, dim: int, g: torch.Generator, dtype: torch.dtype) -> Example:
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

    ex = _reference_views_example(n, dim, g, dtype)
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
    "slates": _slates_example,
    "preference_pairs": _preference_pairs_example,
    "preference_pairs_without_reference": _preference_pairs_without_reference_example,
    "preference_unpaired": _preference_unpaired_example,
    "reward_pairs": _reward_pairs_example,
    "preference_lists": _preference_lists_example,
    "preference_matrix": _preference_matrix_example,
    # pytorch-metric-learning's other call conventions
    "reference_views": _reference_views_example,
    "wrapped_views": _wrapped_views_example,
    "several_losses": _several_losses_example,
    "descriptor_weights": _descriptor_weights_example,
    "proxy_assignments": _proxy_assignments_example,
}
"""Builders of a small valid call for each call convention: ``(n, dim, generator, dtype) ->
Example`` with ``n`` samples (rows, pairs, queries or preference pairs) of size ``dim``. A new
convention (two towers, slates, preference log-probabilities, ...) adds its builder here."""


# family D: two towers, views, sentence pairs, self-supervision
def _towers_example(names: tuple[str, str]):
    def build(n: int, dim: int, g: torch.Generator, dtype: torch.dtype) -> Example:
        x = torch.randn(n, dim, generator=g, dtype=dtype)
        y = x + 0.5 * torch.randn(n, dim, generator=g, dtype=dtype)
        return Example({}, {names[0]: x, names[1]: y})

    return build


def _weighted_docs_example(n: int, dim: int, g: torch.Generator, dtype: torch.dtype) -> Example:
    ex = _towers_example(("queries", "docs"))(n, dim, g, dtype)
    ex.call["weights"] = torch.rand(n, n, generator=g, dtype=dtype) + 0.5
    return ex


def _graded_pairs_example(n: int, dim: int, g: torch.Generator, dtype: torch.dtype) -> Example:
    ex = _towers_example(("embeddings_a", "embeddings_b"))(n, dim, g, dtype)
    ex.call["scores"] = torch.randint(0, 6, (n,), generator=g).to(dtype) / 5
    return ex


def _views_example(n: int, dim: int, g: torch.Generator, dtype: torch.dtype) -> Example:
    base = torch.randn(n, dim, generator=g, dtype=dtype)
    views = torch.stack(
        [base + 0.5 * torch.randn(n, dim, generator=g, dtype=dtype) for _ in range(3)]
    )
    return Example({}, {"views": views})


def _whitened_views_example(n: int, dim: int, g: torch.Generator, dtype: torch.dtype) -> Example:
    ex = _views_example(2 * dim + 2, dim, g, dtype)
    ex.init["w_size"] = 2 * dim + 2
    return ex


def _batch_example(n: int, dim: int, g: torch.Generator, dtype: torch.dtype) -> Example:
    return Example({}, {"x": torch.randn(n, dim, generator=g, dtype=dtype)})


def _indexed_views_example(n: int, dim: int, g: torch.Generator, dtype: torch.dtype) -> Example:
    ex = _towers_example(("view_a", "view_b"))(n, dim, g, dtype)
    ex.init["num_samples"] = 2 * n
    ex.call["index"] = torch.randperm(2 * n, generator=g)[:n]
    return ex


def _heads_example(n: int, dim: int, g: torch.Generator, dtype: torch.dtype) -> Example:
    z1 = torch.randn(n, 2, dim, generator=g, dtype=dtype)
    z2 = z1 + 0.5 * torch.randn(n, 2, dim, generator=g, dtype=dtype)
    return Example({"dim": dim, "num_heads": 2, "topk": 4}, {"z1": z1, "z2": z2})


def _view_ids_example(n: int, dim: int, g: torch.Generator, dtype: torch.dtype) -> Example:
    half = max(1, n // 2)
    x = torch.randn(half, dim, generator=g, dtype=dtype)
    x = torch.cat([x, x + 0.5 * torch.randn(half, dim, generator=g, dtype=dtype)])
    return Example({}, {"embeddings": x, "labels": torch.arange(half).repeat(2)})


EXAMPLES.update(
    {
        "image_text": _towers_example(("image_features", "text_features")),
        "queries_docs": _towers_example(("queries", "docs")),
        "weighted_docs": _weighted_docs_example,
        "frozen_towers": _towers_example(("frozen_features", "features")),
        "graded_pairs": _graded_pairs_example,
        "two_views": _towers_example(("z_a", "z_b")),
        "paired": _towers_example(("x", "y")),
        "predictions_targets": _towers_example(("predictions", "targets")),
        "batch": _batch_example,
        "views": _views_example,
        "whitened_views": _whitened_views_example,
        "indexed_views": _indexed_views_example,
        "heads": _heads_example,
        "view_ids": _view_ids_example,
    }
)


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
        inputs="reference_views",
    ),
)


_RANKING = "pairloss.losses.ranking"
_PREFERENCE = "pairloss.losses.preference"

LOSSES += (
    # E. learning to rank on slates [Q, L]
    LossEntry(
        "lambda_loss",
        "ranking: pairwise",
        "-sum_{y_i > y_j} w_ij log2 sigmoid(sigma (s_i - s_j)), NDCG-Loss2++ weights",
        "Wang et al., CIKM 2018",
        f"{_RANKING}.lambda_loss:LambdaLoss",
        inputs="slates",
    ),
    LossEntry(
        "ranknet",
        "ranking: pairwise",
        "mean over y_i > y_j of log(1 + e^{-sigma (s_i - s_j)})",
        "Burges et al., ICML 2005",
        f"{_RANKING}.lambda_loss:RankNetLoss",
        inputs="slates",
    ),
    LossEntry(
        "bpr",
        "ranking: pairwise",
        "mean over (relevant, irrelevant) pairs of -log sigmoid(s_i - s_j)",
        "Rendle et al., UAI 2009",
        f"{_RANKING}.pairwise:BPRLoss",
        inputs="slates",
    ),
    LossEntry(
        "mann_whitney_ranking",
        "ranking: pairwise",
        "per query mean over (relevant, irrelevant) pairs of softplus(s_j - s_i) (1 - AUC)",
        "Optimizing What Matters: AUC-Driven Learning for Robust Neural Retrieval, 2025",
        f"{_RANKING}.pairwise:MannWhitneyRankingLoss",
        inputs="slates",
    ),
    LossEntry(
        "pairwise_softmax",
        "ranking: pairwise",
        "LSE_{j: y_j < y_i} log a(s_j - s_i) / tau, a = tanh + 1, atan + 1 or relu(. + 1)",
        "Yang et al., NeurIPS 2024",
        f"{_RANKING}.pairwise:PairwiseSoftmaxLoss",
        inputs="slates",
    ),
    LossEntry(
        "listnet",
        "ranking: listwise",
        "-sum_i softmax(y)_i log softmax(s)_i",
        "Cao et al., ICML 2007",
        f"{_RANKING}.listwise:ListNetLoss",
        inputs="slates",
    ),
    LossEntry(
        "listmle",
        "ranking: listwise",
        "-log Plackett-Luce likelihood of the relevance order",
        "Xia et al., ICML 2008",
        f"{_RANKING}.listwise:ListMLELoss",
        inputs="slates",
    ),
    LossEntry(
        "plistmle",
        "ranking: listwise",
        "ListMLE with position weights (2^(n-k) - 1), normalised",
        "Lan et al., UAI 2014",
        f"{_RANKING}.listwise:PListMLELoss",
        inputs="slates",
    ),
    LossEntry(
        "listwise_softmax",
        "ranking: listwise",
        "-sum_i (y_i / sum y) log softmax(s)_i",
        "Zhuang et al., SIGIR 2023 (RankT5)",
        f"{_RANKING}.listwise:ListwiseSoftmaxLoss",
        inputs="slates",
    ),
    LossEntry(
        "approx_ndcg",
        "ranking: metric surrogate",
        "-NDCG with positions 1 + sum_j sigmoid(-alpha (s_i - s_j))",
        "Qin, Liu & Li, Information Retrieval 2010",
        f"{_RANKING}.ndcg_surrogates:ApproxNDCGLoss",
        inputs="slates",
    ),
    LossEntry(
        "neural_ndcg",
        "ranking: metric surrogate",
        "-NDCG@k under the Sinkhorn-scaled NeuralSort permutation",
        "Pobrotyn & Bialobrzeski, 2021",
        f"{_RANKING}.ndcg_surrogates:NeuralNDCGLoss",
        inputs="slates",
    ),
    LossEntry(
        "margin_mse",
        "ranking: distillation",
        "mean of ((s_0 - s_j) - (t_0 - t_j))^2 over the negatives j",
        "Hofstaetter et al., 2020",
        f"{_RANKING}.distillation:MarginMSELoss",
        inputs="slates",
    ),
    LossEntry(
        "adr_mse",
        "ranking: distillation",
        "(rank_i - approx_rank_i)^2 / log2(1 + rank_i)",
        "Schlatt et al., 2024 (Rank-DistiLLM)",
        f"{_RANKING}.distillation:ADRMSELoss",
        inputs="slates",
    ),
    LossEntry(
        "plackett_luce_distillation",
        "ranking: distillation",
        "sum_k softmax(t)_{pi*(k)} (log sum_{m >= k} e^{s_pi*(m)} - s_pi*(k))",
        "Bassam, Zhu & Bian, 2025",
        f"{_RANKING}.distillation:PlackettLuceDistillationLoss",
        inputs="slates",
    ),
    # F. preference optimisation on sequence log-probabilities
    LossEntry(
        "dpo",
        "preference: pairs",
        "-log sigmoid(beta h) and every TRL DPO loss_type",
        "Rafailov et al., NeurIPS 2023; TRL",
        f"{_PREFERENCE}.dpo:DPOLoss",
        inputs="preference_pairs",
    ),
    LossEntry(
        "cpo",
        "preference: pairs",
        "-log sigmoid(beta (logp_w - logp_l)) + NLL(y_w)",
        "Xu et al., ICML 2024",
        f"{_PREFERENCE}.odds:CPOLoss",
        inputs="preference_pairs_without_reference",
    ),
    LossEntry(
        "simpo",
        "preference: pairs",
        "-log sigmoid(beta (logp_w/|y_w| - logp_l/|y_l|) - gamma)",
        "Meng, Xia & Chen, NeurIPS 2024",
        f"{_PREFERENCE}.odds:SimPOLoss",
        inputs="preference_pairs_without_reference",
    ),
    LossEntry(
        "orpo",
        "preference: pairs",
        "NLL(y_w) - beta log sigmoid(log odds(y_w) / odds(y_l))",
        "Hong, Lee & Thorne, EMNLP 2024",
        f"{_PREFERENCE}.odds:ORPOLoss",
        inputs="preference_pairs_without_reference",
    ),
    LossEntry(
        "kto",
        "preference: unpaired",
        "1 - sigmoid(beta (u - z0)) desirable, 1 - sigmoid(beta (z0 - u)) undesirable",
        "Ethayarajh et al., ICML 2024",
        f"{_PREFERENCE}.odds:KTOLoss",
        inputs="preference_unpaired",
    ),
    LossEntry(
        "bradley_terry",
        "preference: reward model",
        "-log sigmoid(r_w - r_l - m) + c (r_w + r_l)^2",
        "Bradley & Terry 1952; Ouyang et al. 2022",
        f"{_PREFERENCE}.odds:BradleyTerryLoss",
        inputs="reward_pairs",
    ),
    LossEntry(
        "lipo_lambda",
        "preference: lists",
        "-sum_{psi_i > psi_j} Delta_ij log sigmoid(r_i - r_j), LambdaRank Delta",
        "Liu et al., 2024 (LiPO)",
        f"{_PREFERENCE}.listwise:LiPOLambdaLoss",
        inputs="preference_lists",
    ),
    LossEntry(
        "infonca",
        "preference: lists",
        "-sum_i softmax(R / alpha)_i log softmax(r)_i",
        "Chen et al., NeurIPS 2024",
        f"{_PREFERENCE}.listwise:InfoNCALoss",
        inputs="preference_lists",
    ),
    LossEntry(
        "nca_preference",
        "preference: lists",
        "-sum_i softmax(R / alpha)_i log sigmoid(r_i) - mean_i log sigmoid(-r_i)",
        "Chen et al., NeurIPS 2024",
        f"{_PREFERENCE}.listwise:NCAPreferenceLoss",
        inputs="preference_lists",
    ),
    LossEntry(
        "mmpo",
        "preference: lists",
        "soft Bradley-Terry DPO, target sigmoid(gamma (R_i - R_j))",
        "Kim et al., EMNLP 2024 Findings",
        f"{_PREFERENCE}.listwise:MMPOLoss",
        inputs="preference_lists",
    ),
    LossEntry(
        "sppo",
        "preference: lists",
        "mean_i (log pi/pi_ref (y_i) - (P_i - 1/2) / beta)^2",
        "Wu et al., 2024",
        f"{_PREFERENCE}.listwise:SPPOLoss",
        inputs="preference_lists",
    ),
    LossEntry(
        "irepo",
        "preference: lists",
        "((r_i - r_j) - logit(p_hat_ij))^2",
        "Le et al., 2024",
        f"{_PREFERENCE}.listwise:IREPOLoss",
        inputs="preference_matrix",
    ),
)

# family D: two towers, views, sentence pairs, self-supervision
_D = "pairloss.losses.contrastive."
LOSSES += (
    LossEntry(
        "clip",
        "contrastive: two towers",
        "(CE_rows + CE_cols) / 2 on t s(x_i, y_j), t = e^w learned (init 1/0.07, clamp 100)",
        "Radford et al., ICML 2021",
        _D + "clip:CLIPLoss",
        inputs="image_text",
    ),
    LossEntry(
        "siglip",
        "contrastive: two towers",
        "-1/B sum_ij log sigmoid(y_ij (t s_ij + b)), y = +1 on the diagonal",
        "Zhai et al., ICCV 2023",
        _D + "siglip:SigLIPLoss",
        inputs="image_text",
    ),
    LossEntry(
        "in_batch_negatives",
        "contrastive: sentence pairs",
        "LSE_{docs (+ directions)} scale s - scale s(q_i, d_i), hard-negative columns",
        "Henderson et al. 2017; van den Oord et al. 2018",
        _D + "in_batch:InBatchNegativesLoss",
        inputs="queries_docs",
    ),
    LossEntry(
        "hardness_weighted_infonce",
        "contrastive: sentence pairs",
        "InfoNCE with negative logits + beta sg(s) (weight e^{beta s})",
        "Lan et al. 2025 (LLaVE)",
        _D + "weighted:HardnessWeightedInfoNCELoss",
        inputs="queries_docs",
    ),
    LossEntry(
        "soft_infonce",
        "contrastive: sentence pairs",
        "-log(e^{z_ii} / (e^{z_ii} + sum_j w_ij e^{z_ij}))",
        "Li et al., EMNLP 2023",
        _D + "weighted:SoftInfoNCELoss",
        inputs="weighted_docs",
    ),
    LossEntry(
        "cwcl",
        "contrastive: two towers",
        "-1/B sum_i sum_j w_ij log softmax_j(z_ij) / sum_j w_ij, w from the frozen tower",
        "Srinivasa et al., NeurIPS 2023",
        _D + "weighted:CWCLLoss",
        inputs="frozen_towers",
    ),
    LossEntry(
        "cosent",
        "contrastive: graded pairs",
        "log(1 + sum_{y_k < y_l} e^{lambda (cos_k - cos_l)})",
        "Su 2022; Huang et al., TASLP 2024",
        _D + "graded:CoSENTLoss",
        inputs="graded_pairs",
    ),
    LossEntry(
        "angle",
        "contrastive: graded pairs",
        "CoSENT on the angle (complex quotient) similarity (+ w_cos CoSENT)",
        "Li & Li, ACL 2024",
        _D + "graded:AnglELoss",
        inputs="graded_pairs",
    ),
    LossEntry(
        "cosine_similarity_regression",
        "contrastive: graded pairs",
        "mean (cos(a_k, b_k) - y_k)^2",
        "Reimers & Gurevych, EMNLP 2019",
        _D + "graded:CosineSimilarityLoss",
        inputs="graded_pairs",
    ),
    LossEntry(
        "barlow_twins",
        "self-supervised: feature statistics",
        "sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2, C the views' cross-correlation",
        "Zbontar et al., ICML 2021",
        _D + "redundancy:BarlowTwinsLoss",
        inputs="two_views",
    ),
    LossEntry(
        "vicreg_views",
        "self-supervised: feature statistics",
        "lambda MSE + mu (v(z_a) + v(z_b)) / 2 + nu (c(z_a) + c(z_b)) on two views",
        "Bardes, Ponce & LeCun, ICLR 2022",
        _D + "redundancy:ViewVICRegLoss",
        inputs="two_views",
    ),
    LossEntry(
        "wmse",
        "self-supervised: feature statistics",
        "2 - 2 cos between whitened views (Cholesky whitening in sub-batches)",
        "Ermolov et al., ICML 2021",
        _D + "redundancy:WMSELoss",
        inputs="whitened_views",
    ),
    LossEntry(
        "negative_cosine",
        "self-supervised: bootstrap",
        "-mean cos(p, sg(z)) (symmetric: both views)",
        "Grill et al., NeurIPS 2020; Chen & He, CVPR 2021",
        _D + "bootstrap:NegativeCosineLoss",
        inputs="predictions_targets",
    ),
    LossEntry(
        "alignment",
        "self-supervised: hypersphere",
        "mean |x_i - y_i|^alpha on unit vectors",
        "Wang & Isola, ICML 2020",
        _D + "hypersphere:AlignmentLoss",
        inputs="paired",
    ),
    LossEntry(
        "uniformity",
        "self-supervised: hypersphere",
        "log mean_{i != j} e^{-t |x_i - x_j|^2} on unit vectors",
        "Wang & Isola, ICML 2020",
        _D + "hypersphere:UniformityLoss",
        inputs="batch",
    ),
    LossEntry(
        "ntxent_am",
        "contrastive: softmax",
        "NT-Xent with the positive's cosine s - m (or cos(theta + m))",
        "Lepage & Dehak, Interspeech 2023",
        _D + "ntxent_am:NTXentAMLoss",
        inputs="view_ids",
    ),
    LossEntry(
        "icon",
        "contrastive: neighbourhoods",
        "mean_i KL(p(.|i) || softmax_{j != i}(s_ij / t))",
        "Alshammari et al., ICLR 2025",
        _D + "icon:IConLoss",
        inputs="view_ids",
    ),
    LossEntry(
        "multiview_infonce",
        "self-supervised: views",
        "-log(sum_{v != w} e^{z(v_i, w_i)} / sum_v sum_{c != (v,i)} e^{z(v_i, c)}) per sample",
        "Koromilas et al. 2025",
        _D + "multiview:MultiViewInfoNCELoss",
        inputs="views",
    ),
    LossEntry(
        "mv_dhel",
        "self-supervised: views",
        "-log(sum_{v < w} e^{z(v_i, w_i)} / prod_v sum_{j != i} e^{z(v_i, v_j)}) per sample",
        "Koromilas et al. 2025",
        _D + "multiview:MVDHELLoss",
        inputs="views",
    ),
    LossEntry(
        "cacr",
        "self-supervised: views",
        "softmax-weighted attraction of positives + repulsion of negatives (squared distances)",
        "Zheng et al., TMLR 2023",
        _D + "cacr:CACRLoss",
        inputs="views",
    ),
    LossEntry(
        "groco",
        "self-supervised: views",
        "BCE of a differentiable sort of [top-k negatives, positives] with the groups' order",
        "Shvetsova et al., ICCV 2023",
        _D + "groco:GroCoLoss",
        inputs="views",
    ),
    LossEntry(
        "isogclr",
        "self-supervised: views",
        "tau_i log E exp((s_iz - s_ii) / tau_i) + tau_i rho, moving averages, learned tau_i",
        "Qiu et al., ICML 2023",
        _D + "isogclr:ISogCLRLoss",
        inputs="indexed_views",
    ),
    LossEntry(
        "amcl",
        "self-supervised: views",
        "-s_ip / tau_ip + mean_topk s_ik / tau_ik + beta Omega(tau), tau from a learned map",
        "Wang et al., ECCV 2024",
        _D + "amcl:AMCLLoss",
        inputs="heads",
    ),
)

ALIASES = {
    "mnrl": "in_batch_negatives",
    "multiple_negatives_ranking": "in_batch_negatives",
    "infonce_symmetric": "clip",
    "ms": "multi_similarity",
    "triplet": "triplet_margin",
    "lifted": "generalized_lifted_structure",
    "mw": "mann_whitney_ranking",
    "auc": "mann_whitney_ranking",
    "psl": "pairwise_softmax",
    "softmax_ce": "listwise_softmax",
    "rankt5": "listwise_softmax",
    "pld": "plackett_luce_distillation",
    "p_listmle": "plistmle",
    "reward": "bradley_terry",
    "lipo": "lipo_lambda",
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
