"""The shared base of the proxy losses: learnable class weights (proxies) as the candidates.

A proxy loss is a pair loss whose candidates are the rows of a learnable matrix ``W`` [C * k, D]
(k proxies per class, a class's proxies adjacent: class c owns rows c*k .. c*k + k - 1) instead
of in-batch embeddings. The relation is ``LabelRelation(labels, class_of_proxy,
exclude_self=False)``: an anchor's positives are its own class's proxies, its negatives every
other class's. The engine computes the gradient with respect to the candidates, so the proxies
learn through the same dense or blocked walk as the embeddings; in the blocked engine the rows
are the batch and the columns all proxies, so memory is O(block x C), never B x C.

Proxy-Anchor turns this around (the proxies are the rows, the batch the columns); a subclass
says so with ``proxies_as_anchors = True``.

Parameters: ``W`` is a float32 :class:`torch.nn.Parameter` that stays float32 under
``torch.autocast`` and for half-precision embeddings (the engine computes in float32 and the
parameter is only ever cast out of place; ``module.double()`` makes it float64). Give the proxies
their own learning rate with an optimizer parameter group::

    opt = torch.optim.SGD([
        {"params": model.parameters()},
        {"params": loss_fn.parameters(), "lr": 100 * base_lr},
    ], lr=base_lr)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ...engine import FusedObjective, PairProblem, compute_dtype, run
from ...errors import PairLossError
from ...relations import LabelRelation
from ...similarity import Similarity
from ...validation import (
    check_callable,
    check_embeddings,
    check_finite,
    check_int,
    check_labels,
    check_real,
)
from ..base import Component, PairLossModule, dense_terms, fused_form_applies, regularizer_from

InitSpec = str | Callable[[torch.Tensor], object] | None

_INITS = ("normal", "xavier_normal", "xavier_uniform", "kaiming_normal", "kaiming_uniform")


def miner_weights(indices_tuple, n: int, using_ref: bool, device, dtype) -> torch.Tensor | None:
    """Per-sample weights from a pytorch-metric-learning ``indices_tuple`` (pairs or triplets):
    how often each batch row appears, divided by the largest count; rows that never appear get
    0 (pytorch-metric-learning's rule for its proxy losses). With ``using_ref`` only the anchor
    indices count. ``None`` (or empty index lists) means no weighting."""
    if indices_tuple is None:
        return None
    if not isinstance(indices_tuple, (tuple, list)) or len(indices_tuple) not in (3, 4):
        raise PairLossError(
            "indices_tuple: expected (anchors, positives, negatives) or "
            "(anchors1, positives, anchors2, negatives) index tensors"
        )
    parts = []
    for t in indices_tuple:
        if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.is_floating_point():
            raise PairLossError("indices_tuple: expected 1-D integer index tensors")
        parts.append(t.to(device).long())
    if all(p.numel() == 0 for p in parts):
        return None
    if using_ref:
        parts = [parts[0]] if len(parts) == 3 else [parts[0], parts[2]]
    idx = torch.cat(parts)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise PairLossError(
            f"indices_tuple: indices must lie in [0, {n}), got range "
            f"[{int(idx.min())}, {int(idx.max())}]"
        )
    uniq, counts = torch.unique(idx, return_counts=True)
    w = torch.zeros(n, device=device, dtype=dtype)
    if counts.numel():
        w[uniq] = counts.to(dtype) / counts.max().to(dtype)
    return w


WEIGHT_NAMES = ("W", "proxies", "fc", "weight")


class ProxyLossModule(PairLossModule):
    """Base of the proxy losses: owns the class weights, under pytorch-metric-learning's name
    and layout (:attr:`weight_name`, :attr:`weight_layout`): ``W`` [D, C * k] for the
    margin-softmax losses, ``proxies`` [C, D] for ProxyAnchor and ProxyNCA, ``fc`` [D, C * K] for
    SoftTriple, so that a pytorch-metric-learning ``state_dict`` loads as it is.
    :meth:`proxy_weights` is the [C * k, D] view the engine reads (a transpose, no copy).

    As in pytorch-metric-learning, the weights follow the embeddings' dtype when those are
    float32 or float64 (their data is cast in place on the first call); fp16/bf16 embeddings are
    computed in float32 against float32 weights. Assigning the weight attribute a new
    ``nn.Parameter`` of the same shape takes effect; assigning anything else, or one of the other
    libraries' weight names that this loss does not have, raises :class:`PairLossError`.

    Subclasses set ``weight_name`` / ``weight_layout``, ``default_init`` and
    ``proxies_as_anchors``, and implement :meth:`proxy_objective` ``(s, pos, neg, start, end,
    weights, extra) -> list[RowTerms]``.

    Args:
        num_classes: C >= 1.
        embedding_size: D >= 1.
        proxies_per_class: k >= 1 proxies per class (sub-centres, SoftTriple centres).
        init: ``"default"`` / ``None`` (pytorch-metric-learning's init for this loss, in its
            weight layout, so equal seeds give equal weights), one of ``"normal"``,
            ``"xavier_normal"``, ``"xavier_uniform"``, ``"kaiming_normal"``,
            ``"kaiming_uniform"``, or a callable applied in place to the [C * k, D] view.
        weight_init_func: pytorch-metric-learning's argument: a callable applied in place to
            the weight in its own layout (instead of ``init``).
        weight_regularizer: a regularizer of the [C * k, D] weights (pairloss's or
            pytorch-metric-learning's), added times ``weight_reg_weight``.
        reduction, engine, block_size, gather, reducer, embedding_regularizer,
            embedding_reg_weight, collect_stats: as every pair loss.
    """

    proxies_as_anchors = False
    uses_ref_for_weights = False
    weight_name = "W"
    weight_layout = "CD"
    components = (Component(every_row=True),)

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        proxies_per_class: int = 1,
        init: InitSpec = None,
        reduction: str | None = None,
        engine: str = "auto",
        block_size: int | None = None,
        gather: str | None = None,
        *,
        weight_init_func: Callable | None = None,
        weight_regularizer=None,
        weight_reg_weight: float = 1,
        distance=None,
        **kwargs,
    ) -> None:
        self._weights_ready = False
        super().__init__(
            distance=distance,
            reduction=reduction,
            miner=None,
            engine=engine,
            block_size=block_size,
            gather=gather,
            **kwargs,
        )
        self.check_distance()
        self.num_classes = check_int(num_classes, "num_classes", minimum=1)
        self.embedding_size = check_int(embedding_size, "embedding_size", minimum=1)
        self.proxies_per_class = check_int(proxies_per_class, "proxies_per_class", minimum=1)
        self.weight_regularizer = regularizer_from(weight_regularizer, "weight_regularizer")
        self.weight_reg_weight = check_real(weight_reg_weight, "weight_reg_weight")
        n, d = self.num_classes * self.proxies_per_class, self.embedding_size
        shape = (n, d) if self.weight_layout == "CD" else (d, n)
        setattr(self, self.weight_name, nn.Parameter(torch.empty(shape, dtype=torch.float32)))
        self._weights_ready = True
        if weight_init_func is not None:
            if init is not None:
                raise PairLossError("init, weight_init_func: expected one of them, got both")
            check_callable(weight_init_func, "weight_init_func")
            with torch.no_grad():
                self.weight_parameter().zero_()
                weight_init_func(self.weight_parameter())
                check_finite(self.weight_parameter(), "weight_init_func")
        else:
            self.reset_parameters(init)

    def check_distance(self) -> None:
        """A :class:`PairLossError` unless ``self.distance`` is one this loss supports (by
        default: scores equal to its default similarity's)."""
        if not self.distance.same_scores(self.default_similarity()):
            raise PairLossError(
                f"distance: {type(self).__name__} supports only {self.default_similarity()!r}, "
                f"got {self.distance!r}"
            )

    def sub_loss_names(self) -> list[str]:
        names = super().sub_loss_names()
        if getattr(self, "weight_regularizer", None) is not None:
            names.append("weight_reg_loss")
        return names

    def __setattr__(self, name: str, value) -> None:
        if name in WEIGHT_NAMES and self.__dict__.get("_weights_ready"):
            if name != self.weight_name:
                raise PairLossError(
                    f"{name}: {type(self).__name__} keeps its class weights in "
                    f"{self.weight_name!r}; expected an assignment to that attribute"
                )
            old = self.weight_parameter()
            if not isinstance(value, nn.Parameter) or value.shape != old.shape:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
                raise PairLossError(
                    f"{name}: expected an nn.Parameter of shape {tuple(old.shape)} "
                    f"({self.weight_layout} layout), got {got}"
                )
        super().__setattr__(name, value)

    # ------------------------------------------------------------------ weights

    def weight_parameter(self) -> nn.Parameter:
        """The class weights in pytorch-metric-learning's layout."""
        return getattr(self, self.weight_name)

    def proxy_weights(self) -> torch.Tensor:
        """The class weights as [C * k, D] rows (class c's k proxies adjacent): a view."""
        w = self.weight_parameter()
        return w if self.weight_layout == "CD" else w.T

    def default_init(self, w: torch.Tensor) -> None:
        """pytorch-metric-learning's default init, applied to the weight in its layout."""
        nn.init.normal_(w)

    def reset_parameters(self, init: InitSpec = None) -> None:
        """(Re-)initialise the weights (see the class docstring for ``init``). A callable
        ``init`` receives the weights filled with zeros (never uninitialised memory) and must
        leave them finite."""
        named = isinstance(init, str) and init in ("default", *_INITS)
        if not (init is None or callable(init) or named):
            raise PairLossError(
                f"init: expected 'default', a callable or one of {_INITS}, got {init!r}"
            )
        rows = self.proxy_weights()
        with torch.no_grad():
            if init is None or init == "default":
                self.default_init(self.weight_parameter())
            elif callable(init):
                rows.zero_()
                init(rows)
                check_finite(rows, "init")
            elif init == "normal":
                nn.init.normal_(rows)
            elif init == "xavier_normal":
                nn.init.xavier_normal_(rows)
            elif init == "xavier_uniform":
                nn.init.xavier_uniform_(rows)
            elif init == "kaiming_normal":
                nn.init.kaiming_normal_(rows, mode="fan_out")
            else:
                nn.init.kaiming_uniform_(rows, a=math.sqrt(5), mode="fan_out")

    def cast_types(self, dtype: torch.dtype, device) -> None:
        """pytorch-metric-learning's cast: the weights take the embeddings' float32/float64
        dtype (their data, in place); half precision keeps float32 weights."""
        w = self.weight_parameter()
        if dtype in (torch.float32, torch.float64) and w.dtype != dtype:
            w.data = w.data.to(dtype)

    def proxy_labels(self, device) -> torch.Tensor:
        """The class of each row of :meth:`proxy_weights`: [0]*k + [1]*k + ... ([C * k])."""
        c = torch.arange(self.num_classes, device=device)
        return c.repeat_interleave(self.proxies_per_class) if self.proxies_per_class > 1 else c

    def get_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The scores of ``embeddings`` [B, D] against every class, [B, C], as
        pytorch-metric-learning's ``get_logits`` (each loss says what they are)."""
        embeddings = check_embeddings(embeddings, "embeddings")
        self.cast_types(embeddings.dtype, embeddings.device)
        dtype = compute_dtype(embeddings)
        w = self.prepare_weights(self.proxy_weights().to(dtype))
        return self.distance(self.prepare_embeddings(embeddings.to(dtype)), w)

    # ------------------------------------------------------------------ hooks

    def proxy_objective(self, s, pos, neg, start, end, weights, extra):
        raise NotImplementedError

    def proxy_fused_form(self, weights: torch.Tensor | None, extra: tuple) -> FusedObjective | None:
        """The hand-differentiated objective for the blocked engine (see
        :class:`pairloss.engine.PairProblem`) in this setting, or None (the default)."""
        return None

    def known_counts(self, labels: torch.Tensor) -> Callable[[], list[float]] | None:
        """The reduction's normaliser of each component when the labels alone give it, or
        None (the default)."""
        return None

    def prepare_weights(self, w: torch.Tensor) -> torch.Tensor:
        """A transform of the [C * k, D] weights before the engine (with autograd); the identity
        here."""
        return w

    def prepare_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """A transform of the embeddings before the engine (with autograd); the identity here."""
        return x

    def extra_params(self, embeddings: torch.Tensor, w: torch.Tensor) -> tuple:
        """Tensors the objective reads besides the scores (e.g. norms); they get gradients."""
        return ()

    def check_reduction_ok(self) -> None:
        return None

    def objective(self, s, pos, neg, start, end):
        return self.proxy_objective(s, pos, neg, start, end, None, ())

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of ``embeddings`` [B, D] with class ``labels`` [B] in [0, num_classes).

        ``indices_tuple`` (pairs or triplets of batch indices, e.g. a miner's output) weights
        each sample by how often it appears (see :func:`miner_weights`). ``ref_emb`` /
        ``ref_labels`` are refused: the proxies are the references. Returns a scalar (or one
        value per row with ``reduction="none"``).
        """
        if isinstance(embeddings, torch.Tensor):
            self.cast_types(embeddings.dtype, embeddings.device)
        return self.compute(
            self.proxy_weights(), embeddings, labels, indices_tuple, ref_emb, ref_labels
        )

    def compute(
        self,
        proxies: torch.Tensor,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:meth:`forward` with ``proxies`` [C * k, D] in place of the loss's own weights (the
        functional forms use it; gradients flow to ``proxies``)."""
        embeddings = check_embeddings(embeddings, "embeddings")
        if ref_emb is not None or ref_labels is not None:
            raise PairLossError(
                "ref_emb: not supported by proxy losses (the class proxies are the references); "
                "expected None"
            )
        if labels is None:
            raise PairLossError("labels: required by proxy losses; expected a [batch] tensor")
        b, d = embeddings.shape
        if d != self.embedding_size:
            raise PairLossError(
                f"embeddings: have {d} features but the proxies have {self.embedding_size}; "
                "expected embedding_size columns"
            )
        labels = check_labels(labels, b, "labels").to(embeddings.device)
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= self.num_classes:
            raise PairLossError(
                f"labels: must lie in [0, {self.num_classes}) (num_classes={self.num_classes}), "
                f"got range [{lo}, {hi}]"
            )
        if proxies.device != embeddings.device:
            raise PairLossError(
                f"embeddings: are on device {embeddings.device} but the proxies are on "
                f"{proxies.device}; expected the same device (move the loss with .to())"
            )
        self.check_reduction_ok()
        dtype = compute_dtype(embeddings)
        w = self.prepare_weights(proxies if proxies.dtype == dtype else proxies.to(dtype))
        x = self.prepare_embeddings(
            embeddings if embeddings.dtype == dtype else embeddings.to(dtype)
        )
        weights = miner_weights(
            indices_tuple, b, self.uses_ref_for_weights, embeddings.device, dtype
        )
        extra = tuple(self.extra_params(x, w))
        plabels = self.proxy_labels(embeddings.device)

        def objective(s, pos, neg, start, end):
            return self.proxy_objective(s, pos, neg, start, end, weights, extra)

        if self.proxies_as_anchors:
            relation = LabelRelation(plabels, labels, exclude_self=False)
            anchors, candidates = w, x
        else:
            relation = LabelRelation(labels, plabels, exclude_self=False)
            anchors, candidates = x, w
        fused = self._fused_form(weights, extra)
        reduction, counts = self.reduction, self.known_counts(labels)
        if self.uses_reducer():
            ruled = self.reduce_with(objective, fused, None if self.proxies_as_anchors else labels)
            if ruled is None:
                terms = dense_terms(objective, self.distance, relation, anchors, candidates)
                loss_dict = self.listed_terms(terms, anchors.shape[0], embeddings.device)
                if self.weight_regularizer is not None:
                    loss_dict["weight_reg_loss"] = {
                        "losses": self.weight_regularization(w),
                        "indices": None,
                        "reduction_type": "already_reduced",
                    }
                return self.finish_listed(loss_dict, embeddings, labels)
            objective, fused, reduction = ruled
            counts = None
        problem = PairProblem(
            objective=objective,
            similarity=self.distance,
            relation=relation,
            reduction=reduction,
            params=tuple(t for t in extra if isinstance(t, torch.Tensor)),
            fused=fused,
            counts=counts,
        )
        out = run(problem, anchors, candidates, engine=self.engine, block_size=self.block_size)
        out = self.add_regularizer(out, w)
        if self.weight_regularizer is not None:
            out = out + self.weight_regularization(w).to(out.dtype)
        return self.add_regularizers(out.to(embeddings.dtype), embeddings)

    def weight_regularization(self, w: torch.Tensor) -> torch.Tensor:
        """The weight regularizer of the [C * k, D] weights, times its weight."""
        return self.weight_regularizer(w) * self.weight_reg_weight

    def _fused_form(self, weights, extra) -> FusedObjective | None:
        """:meth:`proxy_fused_form` when it is the twin of this class's objective and of the
        extra tensors it reads (:func:`~pairloss.losses.base.fused_form_applies`), else None."""
        reads = ("proxy_objective", "extra_params")
        if not fused_form_applies(self, ("proxy_fused_form",), reads):
            return None
        return self.proxy_fused_form(weights, extra)

    def add_regularizer(self, loss: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Hook for a loss term on the proxies alone (SoftTriple's centre regulariser)."""
        return loss

    @staticmethod
    def default_similarity() -> Similarity:
        from ...similarity import CosineSimilarity

        return CosineSimilarity()

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embedding_size={self.embedding_size}, "
            f"proxies_per_class={self.proxies_per_class}, reduction={self.reduction!r}"
        )


def _no_init(w: torch.Tensor) -> None:
    return None


def call_functional(
    cls: type[ProxyLossModule],
    proxies: object,
    embeddings: torch.Tensor,
    labels: torch.Tensor | None,
    indices_tuple,
    ref_emb: torch.Tensor | None,
    ref_labels: torch.Tensor | None,
    per_class: int = 1,
    **kwargs,
) -> torch.Tensor:
    """Run proxy loss ``cls`` with the tensor ``proxies`` [C * k, D] as its weights (the
    functional forms); gradients flow to ``proxies``."""
    if not isinstance(proxies, torch.Tensor):
        raise PairLossError(
            "proxies: expected a [num_classes * k, embedding_size] tensor, got "
            f"{type(proxies).__name__}"
        )
    proxies = check_embeddings(proxies, "proxies")
    n, d = proxies.shape
    if n % per_class:
        raise PairLossError(
            f"proxies: has {n} rows, not a multiple of the {per_class} proxies per class"
        )
    module = cls(n // per_class, d, init=_no_init, **kwargs)
    return module.compute(proxies, embeddings, labels, indices_tuple, ref_emb, ref_labels)
