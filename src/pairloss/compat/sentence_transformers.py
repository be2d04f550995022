"""sentence-transformers' losses under their own names and call conventions, computed by pairloss.

Each class takes the model first, as sentence-transformers' own classes do, and is called as a
``SentenceTransformerTrainer`` calls a loss: ``loss(sentence_features, labels)``, where
``sentence_features`` is the list of tokenised input columns. The model embeds the columns (with
sentence-transformers' own ``embed_columns`` when it is installed) and the loss runs on
pairloss's engines. ``compute_loss_from_embeddings(embeddings, labels)`` takes the embeddings
directly (a list of [B, D] tensors, one per column), so the same objects work as plain embedding
losses with ``model=None``::

    from pairloss.compat.sentence_transformers import MultipleNegativesRankingLoss
    loss = MultipleNegativesRankingLoss(model)        # in place of losses.MultipleNegativesRankingLoss

Covered: ``MultipleNegativesRankingLoss`` (directions, partitions, hard negatives, hardness),
``MultipleNegativesSymmetricRankingLoss``, ``CachedMultipleNegativesRankingLoss`` (GradCache:
sentence-transformers' mini-batch embedding with the loss and its gradient from pairloss),
``GISTEmbedLoss`` (guide model; absolute and sign-safe relative margins), ``CoSENTLoss``,
``AnglELoss``, ``CosineSimilarityLoss`` and ``MatryoshkaLoss``. Arguments, defaults and results
are sentence-transformers 6.x's; ``gather_across_devices`` is accepted but a run on several
processes raises (gathering is not part of these adapters).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import PairLossError
from ..losses.contrastive.false_negatives import GuideFilter
from ..losses.contrastive.graded import check_scores, pair_similarity
from ..losses.contrastive.in_batch import (
    DOCS,
    PANELS,
    POSITIVES,
    QUERIES,
    InBatchNegativesLoss,
    Panel,
    check_directions,
    in_batch_negatives_loss,
)
from ..losses.contrastive.towers import TowerLoss
from ..objectives.graded import ranked_pairs_logsumexp
from ..validation import check_choice, check_int, check_real


def embed_features(model: Any, sentence_features: Iterable[dict[str, Tensor]]) -> list[Tensor]:
    """The ``sentence_embedding`` of every input column, as sentence-transformers embeds them."""
    if model is None:
        raise PairLossError(
            "model: this loss was built without a model; call compute_loss_from_embeddings "
            "with the embeddings, or pass the SentenceTransformer model first"
        )
    features = list(sentence_features)
    try:
        from sentence_transformers.base.losses.merged_forward import embed_columns
    except ImportError:
        return [model(f)["sentence_embedding"] for f in features]
    return embed_columns(model, features)


def _similarity_name(fn: Callable | None, pairwise: bool = False) -> str:
    """``"cosine"``, ``"dot"`` or ``"angle"`` from a sentence-transformers similarity function."""
    if fn is None:
        return "cosine"
    name = getattr(fn, "__name__", type(fn).__name__)
    table = (
        {"pairwise_cos_sim": "cosine", "pairwise_angle_sim": "angle"}
        if pairwise
        else {"cos_sim": "cosine", "dot_score": "dot", "dot": "dot"}
    )
    if name not in table:
        raise PairLossError(
            f"similarity_fct: {name} is not supported; expected one of {sorted(table)}"
        )
    return table[name]


def _check_single_process(gather: bool) -> None:
    dist = torch.distributed
    if gather and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        raise PairLossError(
            "gather_across_devices: gathering across processes is not supported by the "
            "pairloss adapters; expected gather_across_devices=False"
        )


class _Adapter(nn.Module):
    """The sentence-transformers loss protocol: ``forward(sentence_features, labels)``."""

    def __init__(self, model: Any = None) -> None:
        super().__init__()
        self.model = model

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        """Embed the columns with the model, then :meth:`compute_loss_from_embeddings`."""
        return self.compute_loss_from_embeddings(
            embed_features(self.model, sentence_features), labels
        )

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def citation(self) -> str | None:
        """The paper's BibTeX is in the pairloss docstring; sentence-transformers' model cards
        read this attribute."""
        return None


class MultipleNegativesRankingLoss(_Adapter):
    """sentence-transformers' ``MultipleNegativesRankingLoss`` on
    :class:`~pairloss.losses.contrastive.in_batch.InBatchNegativesLoss`.

    Columns: (anchor, positive, negative_1, ..., negative_n); every negative column is a block of
    hard negatives. Same arguments and defaults (``scale=20``, ``cos_sim``, ``directions=
    ("query_to_doc",)``, ``partition_mode="joint"``, ``hardness_mode=None``).
    """

    def __init__(
        self,
        model: Any = None,
        scale: float = 20.0,
        similarity_fct: Callable | None = None,
        gather_across_devices: bool = False,
        directions: Sequence[str] = ("query_to_doc",),
        partition_mode: str = "joint",
        hardness_mode: str | None = None,
        hardness_strength: float = 0.0,
    ) -> None:
        super().__init__(model)
        self.scale = check_real(scale, "scale", low=0.0, low_open=True)
        self.similarity_fct = similarity_fct
        self.gather_across_devices = gather_across_devices
        self.partition_mode = check_choice(
            partition_mode, "partition_mode", ("joint", "per_direction")
        )
        self.directions = check_directions(directions, self.partition_mode)
        self.hardness_mode = hardness_mode
        self.hardness_strength = hardness_strength
        self._loss = InBatchNegativesLoss(
            scale=self.scale,
            directions=self.directions,
            partition=self.partition_mode,
            hardness_mode=hardness_mode,
            hardness_strength=hardness_strength,
            distance=_similarity_name(similarity_fct),
        )

    @property
    def temperature(self) -> float:
        """``1 / scale``."""
        return 1.0 / self.scale

    def compute_loss_from_embeddings(
        self, embeddings: list[Tensor], labels: Tensor | None
    ) -> Tensor:
        """The loss of ``embeddings`` = [anchors, positives, negatives_1, ...] ([B, D] each)."""
        if len(embeddings) < 2:
            raise PairLossError(
                f"embeddings: expected at least 2 columns (anchor, positive), got {len(embeddings)}"
            )
        _check_single_process(self.gather_across_devices)
        return self._loss(embeddings[0], torch.cat(list(embeddings[1:]), dim=0))

    def get_config_dict(self) -> dict[str, Any]:
        """The settings, as sentence-transformers reports them."""
        return {
            "scale": self.scale,
            "similarity_fct": _similarity_name(self.similarity_fct),
            "gather_across_devices": self.gather_across_devices,
            "directions": self.directions,
            "partition_mode": self.partition_mode,
            "hardness_mode": self.hardness_mode,
            "hardness_strength": self.hardness_strength,
        }


class MultipleNegativesSymmetricRankingLoss(MultipleNegativesRankingLoss):
    """sentence-transformers' ``MultipleNegativesSymmetricRankingLoss``: the query-to-document
    and document-to-query directions, one softmax each, averaged."""

    def __init__(
        self,
        model: Any = None,
        scale: float = 20.0,
        similarity_fct: Callable | None = None,
        gather_across_devices: bool = False,
    ) -> None:
        super().__init__(
            model,
            scale,
            similarity_fct,
            gather_across_devices,
            directions=("query_to_doc", "doc_to_query"),
            partition_mode="per_direction",
        )


def _cached_bases() -> tuple[type, ...]:
    """sentence-transformers' GradCache mixin (mini-batching and random-state replay) when it
    is installed."""
    try:
        from sentence_transformers.base.losses.gradcache import CachedLossMixin
    except ImportError:  # pragma: no cover - the adapter needs sentence-transformers
        return (MultipleNegativesRankingLoss,)
    return (CachedLossMixin, MultipleNegativesRankingLoss)


class CachedMultipleNegativesRankingLoss(*_cached_bases()):
    """sentence-transformers' ``CachedMultipleNegativesRankingLoss`` (GradCache, Gao et al.
    2021): the columns are embedded in mini-batches of ``mini_batch_size`` without a graph, the
    loss and its gradient with respect to the embeddings come from pairloss's blocked engine (no
    B x N matrix), and the embedding pass is replayed with gradient, mini-batch by mini-batch,
    when the loss is back-propagated (sentence-transformers' own mini-batching and random-state
    replay). The values and gradients are those of :class:`MultipleNegativesRankingLoss`."""

    def __init__(
        self,
        model: Any = None,
        scale: float = 20.0,
        similarity_fct: Callable | None = None,
        mini_batch_size: int = 32,
        mini_batch_num_tokens: int | None = None,
        gather_across_devices: bool = False,
        directions: Sequence[str] = ("query_to_doc",),
        partition_mode: str = "joint",
        show_progress_bar: bool = False,
        hardness_mode: str | None = None,
        hardness_strength: float = 0.0,
    ) -> None:
        MultipleNegativesRankingLoss.__init__(
            self,
            model,
            scale,
            similarity_fct,
            gather_across_devices,
            directions,
            partition_mode,
            hardness_mode,
            hardness_strength,
        )
        self.mini_batch_size = check_int(mini_batch_size, "mini_batch_size", minimum=1)
        if mini_batch_num_tokens is not None:
            check_int(mini_batch_num_tokens, "mini_batch_num_tokens", minimum=1)
        self.mini_batch_num_tokens = mini_batch_num_tokens
        self.show_progress_bar = show_progress_bar

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        """GradCache forward (see the class docstring)."""
        if self.model is None:
            embed_features(None, [])
        features = list(sentence_features)
        if len(features) < 2:
            raise PairLossError(
                f"sentence_features: expected at least 2 columns, got {len(features)}"
            )
        return self.forward_cached(features, labels)

    def calculate_loss(
        self, reps: list[list[Tensor]], labels: Tensor | None = None, *, with_backward: bool = False
    ) -> Tensor:
        """The loss of the cached mini-batch embeddings ``reps`` (one list per column); with
        ``with_backward`` their gradients are written into ``.grad``."""
        embeddings = [torch.cat(r) for r in reps]
        loss = self.compute_loss_from_embeddings(embeddings, labels)
        if with_backward:
            loss.backward()
            loss = loss.detach()
        return loss

    def get_config_dict(self) -> dict[str, Any]:
        """The settings, as sentence-transformers reports them."""
        out = super().get_config_dict()
        out.update(
            mini_batch_size=self.mini_batch_size, mini_batch_num_tokens=self.mini_batch_num_tokens
        )
        return out


class GISTEmbedLoss(_Adapter):
    """sentence-transformers' ``GISTEmbedLoss`` (Solatorio 2024): in-batch negatives whose
    candidates a guide model scores above the positive are dropped.

    The softmax of anchor i runs over its positive, the other positives and the negatives
    (``a-p``, ``a-n``), the other anchors (``a-a``, with ``contrast_anchors``) and positive i
    against the other positives (``p-p``, with ``contrast_positives``), at ``1 / temperature``.
    A candidate is dropped where the guide's cosine exceeds ``g_ii - margin`` (absolute) or
    ``g_ii - |g_ii| margin`` (relative: correct for negative guide scores), ``g_ii`` the guide's
    score of the positive pair. ``compute_loss_from_embeddings(embeddings, labels,
    guide_embeddings)`` takes both models' embeddings.
    """

    def __init__(
        self,
        model: Any = None,
        guide: Any = None,
        temperature: float = 0.01,
        margin_strategy: str = "absolute",
        margin: float = 0.0,
        contrast_anchors: bool = True,
        contrast_positives: bool = True,
        gather_across_devices: bool = False,
    ) -> None:
        super().__init__(model)
        self.guide = guide
        self.temperature = check_real(temperature, "temperature", low=0.0, low_open=True)
        self.margin_strategy = check_choice(
            margin_strategy, "margin_strategy", ("absolute", "relative")
        )
        self.margin = check_real(margin, "margin")
        self.contrast_anchors = bool(contrast_anchors)
        self.contrast_positives = bool(contrast_positives)
        self.gather_across_devices = gather_across_devices
        self._loss = TowerLoss()

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        """Embed the columns with the model and (without gradient) the guide."""
        features = list(sentence_features)
        embeddings = embed_features(self.model, features)
        if self.guide is None:
            raise PairLossError("guide: expected a guide SentenceTransformer model")
        with torch.no_grad():
            guide_embeddings = embed_features(self.guide, self._guide_features(features))
        return self.compute_loss_from_embeddings(embeddings, labels, guide_embeddings)

    def _guide_features(self, features: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
        """The columns as the guide reads them: the same tokens when the two models share a
        vocabulary and length, else decoded with the model's tokenizer and re-encoded."""
        same = (
            self.model.tokenizer.get_vocab() == self.guide.tokenizer.get_vocab()
            and self.guide.max_seq_length >= self.model.max_seq_length
        )
        if same:
            return [dict(f) for f in features]
        out = []
        for f in features:
            texts = self.model.tokenizer.batch_decode(f["input_ids"], skip_special_tokens=True)
            tokens = (
                self.guide.preprocess(texts)
                if hasattr(self.guide, "preprocess")
                else (self.guide.tokenize(texts))
            )
            out.append({k: v.to(self.guide.device) for k, v in tokens.items()})
        return out

    def compute_loss_from_embeddings(
        self, embeddings: list[Tensor], labels: Tensor | None, guide_embeddings: list[Tensor]
    ) -> Tensor:
        """The loss of [anchors, positives(, negatives)] with the guide's embeddings of the
        same columns."""
        if len(embeddings) not in (2, 3) or len(guide_embeddings) != len(embeddings):
            raise PairLossError(
                "embeddings: expected 2 or 3 columns (anchor, positive[, negative]) and as many "
                f"guide embeddings, got {len(embeddings)} and {len(guide_embeddings)}"
            )
        _check_single_process(self.gather_across_devices)
        q, d = embeddings[0], torch.cat(list(embeddings[1:]), dim=0)
        gq, gd = guide_embeddings[0], torch.cat(list(guide_embeddings[1:]), dim=0)
        n = q.shape[0]
        guide = GuideFilter([gq, gd, gd[:n]], self.margin, self.margin_strategy)
        panels = [Panel(QUERIES, DOCS)]
        if self.contrast_anchors:
            panels.append(PANELS["query_to_query"])
        if self.contrast_positives:
            panels.append(Panel(POSITIVES, POSITIVES, "self"))
        return in_batch_negatives_loss(
            self._loss, q, d, panels, 1.0 / self.temperature, "joint", guide=guide
        )

    def get_config_dict(self) -> dict[str, Any]:
        """The settings, as sentence-transformers reports them."""
        return {
            "guide": self.guide,
            "temperature": self.temperature,
            "margin_strategy": self.margin_strategy,
            "margin": self.margin,
            "contrast_anchors": self.contrast_anchors,
            "contrast_positives": self.contrast_positives,
            "gather_across_devices": self.gather_across_devices,
        }


class CoSENTLoss(_Adapter):
    """sentence-transformers' ``CoSENTLoss`` on :func:`~pairloss.objectives.graded.
    ranked_pairs_logsumexp`: columns (sentence_A, sentence_B), labels the gold scores."""

    def __init__(
        self, model: Any = None, scale: float = 20.0, similarity_fct: Callable | None = None
    ):
        super().__init__(model)
        self.scale = check_real(scale, "scale", low=0.0, low_open=True)
        self.similarity_fct = similarity_fct
        self._similarity = _similarity_name(similarity_fct, pairwise=True)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        """The loss of [sentences_a, sentences_b] with gold ``labels``."""
        if len(embeddings) < 2:
            raise PairLossError(f"embeddings: expected 2 columns, got {len(embeddings)}")
        a, b = embeddings[0], embeddings[1]
        y = check_scores(labels, a.shape[0], "labels").to(a.device)
        s = pair_similarity(a, b, self._similarity)
        return ranked_pairs_logsumexp(s, y, self.scale)

    def get_config_dict(self) -> dict[str, Any]:
        """The settings, as sentence-transformers reports them."""
        return {"scale": self.scale, "similarity_fct": self._similarity}


class AnglELoss(CoSENTLoss):
    """sentence-transformers' ``AnglELoss``: CoSENT on the angle similarity. With more than two
    columns (anchor, positive, negatives...) the anchor is paired with every other column, the
    positives keep their labels (1 when none are given) and the negatives get ``1 - label``."""

    def __init__(self, model: Any = None, scale: float = 20.0) -> None:
        super().__init__(model, scale)
        self._similarity = "angle"

    def compute_loss_from_embeddings(
        self, embeddings: list[Tensor], labels: Tensor | None
    ) -> Tensor:
        """The loss of [sentences_a, sentences_b(, ...)] with gold ``labels``."""
        if len(embeddings) > 2:
            anchors = embeddings[0]
            n = anchors.shape[0]
            if labels is None:
                labels = torch.ones(n, device=anchors.device)
            labels = check_scores(labels, n, "labels").to(anchors.device)
            pairs = [anchors.repeat(len(embeddings) - 1, 1), torch.cat(list(embeddings[1:]))]
            labels = torch.cat([labels, (1 - labels).repeat(len(embeddings) - 2)])
            return super().compute_loss_from_embeddings(pairs, labels)
        if labels is None:
            raise PairLossError("labels: AnglELoss needs gold scores for pairs")
        return super().compute_loss_from_embeddings(embeddings, labels)


class CosineSimilarityLoss(_Adapter):
    """sentence-transformers' ``CosineSimilarityLoss``: ``loss_fct(cos_score_transformation(
    cos(u, v)), labels)`` with the squared error by default."""

    def __init__(
        self,
        model: Any = None,
        loss_fct: nn.Module | None = None,
        cos_score_transformation: nn.Module | None = None,
    ) -> None:
        super().__init__(model)
        self.loss_fct = loss_fct if loss_fct is not None else nn.MSELoss()
        self.cos_score_transformation = (
            cos_score_transformation if cos_score_transformation is not None else nn.Identity()
        )

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        """The loss of [sentences_a, sentences_b] with gold ``labels``."""
        if len(embeddings) < 2:
            raise PairLossError(f"embeddings: expected 2 columns, got {len(embeddings)}")
        a, b = embeddings[0], embeddings[1]
        y = check_scores(labels, a.shape[0], "labels").to(a.device)
        out = self.cos_score_transformation(pair_similarity(a, b, "cosine"))
        return self.loss_fct(out, y.float().to(out.dtype))


class MatryoshkaLoss(_Adapter):
    """sentence-transformers' ``MatryoshkaLoss`` (Kusupati et al., NeurIPS 2022): the inner loss
    on the embeddings truncated to each of ``matryoshka_dims`` (and L2-normalised), weighted by
    ``matryoshka_weights`` (1 each by default) and summed. The model embeds once; with
    ``n_dims_per_step > 0`` that many sizes are drawn at random each step (Python's
    ``random``, as sentence-transformers)."""

    def __init__(
        self,
        model: Any = None,
        loss: nn.Module | None = None,
        matryoshka_dims: Sequence[int] = (),
        matryoshka_weights: Sequence[float] | None = None,
        n_dims_per_step: int = -1,
    ) -> None:
        super().__init__(model)
        if loss is None or not hasattr(loss, "compute_loss_from_embeddings"):
            raise PairLossError(
                "loss: expected a loss with compute_loss_from_embeddings (a pairloss "
                "sentence-transformers adapter or a sentence-transformers loss)"
            )
        dims = [check_int(d, "matryoshka_dims", minimum=1) for d in matryoshka_dims]
        if not dims:
            raise PairLossError("matryoshka_dims: expected at least one size")
        weights = [1.0] * len(dims) if matryoshka_weights is None else list(matryoshka_weights)
        if len(weights) != len(dims):
            raise PairLossError(
                f"matryoshka_weights: has {len(weights)} entries for {len(dims)} sizes; "
                "expected one weight per size"
            )
        pairs = sorted(zip(dims, weights), key=lambda p: p[0], reverse=True)
        self.matryoshka_dims = tuple(d for d, _ in pairs)
        self.matryoshka_weights = tuple(check_real(w, "matryoshka_weights") for _, w in pairs)
        self.loss = loss
        self.n_dims_per_step = check_int(n_dims_per_step, "n_dims_per_step")

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        """The weighted sum of the inner loss at every (drawn) truncation size."""
        width = embeddings[0].shape[-1]
        if max(self.matryoshka_dims) > width:
            raise PairLossError(
                f"matryoshka_dims: {max(self.matryoshka_dims)} exceeds the embedding size {width}"
            )
        which = list(range(len(self.matryoshka_dims)))
        if 0 < self.n_dims_per_step < len(which):
            which = sorted(random.sample(which, self.n_dims_per_step))
        total = 0.0
        for k in which:
            dim, weight = self.matryoshka_dims[k], self.matryoshka_weights[k]
            truncated = [shrink(e, dim) for e in embeddings]
            total = total + weight * self.loss.compute_loss_from_embeddings(truncated, labels)
        return total


def shrink(embeddings: Tensor, dim: int) -> Tensor:
    """The first ``dim`` features, L2-normalised (in fp32 for fp16/bf16 input)."""
    x = embeddings[..., :dim]
    dtype = x.dtype
    if dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return nn.functional.normalize(x, p=2, dim=-1).to(dtype)
