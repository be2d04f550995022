"""InfoNCE with weighted pairs: soft positives (CWCL), weighted negatives (Soft-InfoNCE) and
hardness-weighted negatives."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ...errors import PairLossError
from ...objectives.tower_softmax import SoftmaxTowers
from ...similarity import normalize_rows
from ...validation import check_bool, check_choice, check_embeddings, check_real, check_tensor
from .clip import as_scale, check_logit_scale
from .in_batch import InBatchNegativesLoss
from .towers import TowerLoss, check_params_device, check_towers

BlockWeights = Callable[[int, int], torch.Tensor]


def _weight_blocks(
    weights: torch.Tensor | BlockWeights, n_rows: int, n_cols: int, name: str
) -> BlockWeights:
    """``f(start, end) -> [end - start, n_cols]`` from a [n_rows, n_cols] tensor or such a
    callable (checked on each call: finite and non-negative)."""
    if isinstance(weights, torch.Tensor):
        check_tensor(weights, name)
        if tuple(weights.shape) != (n_rows, n_cols):
            raise PairLossError(
                f"{name}: expected shape ({n_rows}, {n_cols}), got {tuple(weights.shape)}"
            )
        if weights.is_complex():
            raise PairLossError(f"{name}: expected real weights, got dtype {weights.dtype}")
        table = weights.detach()

        def fn(start: int, end: int) -> torch.Tensor:
            return table[start:end]
    elif callable(weights):
        fn = weights
    else:
        raise PairLossError(
            f"{name}: expected a tensor or a callable, got {type(weights).__name__}"
        )

    def checked(start: int, end: int) -> torch.Tensor:
        w = fn(start, end)
        if not isinstance(w, torch.Tensor) or tuple(w.shape) != (end - start, n_cols):
            raise PairLossError(
                f"{name}: a block of rows {start}:{end} must be a [{end - start}, {n_cols}] tensor"
            )
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise PairLossError(f"{name}: expected finite non-negative weights")
        return w.detach()

    return checked


class CWCLLoss(TowerLoss):
    r"""Continuously weighted contrastive loss (CWCL): CLIP with soft positives taken from the
    frozen modality's own similarities.

    With the frozen tower's embeddings :math:`u_i` (e.g. a pre-trained image model), the trained
    tower's :math:`v_j` and logits :math:`z_{ij} = t\, s(u_i, v_j)`:

    .. math::
        L_{u \to v} = -\frac{1}{B}\sum_i \frac{1}{\sum_j w_{ij}} \sum_j w_{ij}
            \log \frac{e^{z_{ij}}}{\sum_k e^{z_{ik}}}, \qquad
        w_{ij} = \frac{1 + \cos(u_i, u_j)}{2}

    and the loss is :math:`\frac{1}{2}(L_{u \to v} + L_{v \to u})` with the same weights for the
    columns (normalised per column). Paper: Srinivasa et al., "CWCL: Cross-Modal Transfer with
    Continuously Weighted Contrastive Loss", NeurIPS 2023 (the weighted cross-entropy, with
    the frozen modality's intra-modal similarity mapped to [0, 1] as the weights; no reference
    code is public, so the definition is checked as written here, and the identity: with
    identity weights CWCL is the CLIP loss). Logit scale as :class:`~pairloss.losses.contrastive.clip.CLIPLoss` (learnable,
    ``1 / 0.07``, clamped at 100).

    Shapes: ``frozen_features`` [B, D] (the pre-trained, frozen tower: its rows give the
    weights), ``features`` [B, D] (the tower being trained). ``weights`` optionally replaces the
    similarity-derived weights: a [B, B] non-negative tensor or ``f(start, end) -> [b, B]``.
    Rows and columns of zero weight give 0. Returns a scalar.
    """

    def __init__(
        self,
        logit_scale: float = 1 / 0.07,
        max_logit_scale: float | None = 100.0,
        learn_logit_scale: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        scale = check_logit_scale(logit_scale)
        self.max_logit_scale = (
            None
            if max_logit_scale is None
            else check_logit_scale(max_logit_scale, "max_logit_scale")
        )
        learn = check_bool(learn_logit_scale, "learn_logit_scale")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(scale)), requires_grad=learn)

    def scale(self) -> torch.Tensor:
        """The current multiplier ``exp(w)``, clamped at ``max_logit_scale``."""
        w = self.logit_scale
        if self.max_logit_scale is not None:
            w = w.clamp(max=math.log(self.max_logit_scale))
        return w.exp()

    def forward(
        self,
        frozen_features: torch.Tensor,
        features: torch.Tensor,
        weights: torch.Tensor | BlockWeights | None = None,
    ) -> torch.Tensor:
        """The symmetric CWCL loss of the two towers."""
        u, v = check_towers(frozen_features, features, "frozen_features", "features")
        check_params_device(self, u, "frozen_features")
        return _cwcl(self, u, v, weights, self.scale, (self.logit_scale,))


def _cwcl(loss: TowerLoss, u, v, weights, scale, params) -> torch.Tensor:
    n = u.shape[0]
    if weights is None:
        unit = normalize_rows(u.detach())

        def weights(start: int, end: int) -> torch.Tensor:
            return (1 + unit[start:end] @ unit.T) / 2

    objective = SoftmaxTowers(
        ((0, 1),),
        n,
        scale,
        params=params,
        row_weight=0.5,
        column_weight=0.5,
        targets=_weight_blocks(weights, n, n, "weights"),
    )
    return loss.run(objective, [u, v], ["frozen_features", "features"])


def soft_infonce_weights(
    prior: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 1.0,
    temperature: float = 1.0,
    floor: float = 0.1,
) -> torch.Tensor:
    r"""Soft-InfoNCE's negative weights from a prior similarity of each query's candidates
    (Li et al., EMNLP 2023, the estimator of the authors' code): with :math:`q_{ij} =
    \mathrm{softmax}_{j \ne i}(\mathrm{prior}_{ij} / t)` over the N - 1 negatives of row i,

    .. math::
        w_{ij} = \max\Big(\frac{\beta - \alpha q_{ij}}{\beta - \alpha / (N - 1)},\ floor\Big)

    so negatives the prior finds more similar to the query weigh less (uniform priors give 1).
    ``prior`` [B, N] (the diagonal, the positives, is ignored); returns [B, N] weights with 1 on
    the diagonal."""
    prior = check_embeddings(prior, "prior")
    b, n = prior.shape
    if n < 2:
        raise PairLossError(f"prior: expected at least 2 columns, got {n}")
    eye = torch.zeros_like(prior, dtype=torch.bool)
    idx = torch.arange(min(b, n), device=prior.device)
    eye[idx, idx] = True
    q = torch.softmax((prior / temperature).masked_fill(eye, float("-inf")), dim=1)
    w = ((beta - alpha * q) / (beta - alpha / (n - 1))).clamp_min(floor)
    return w.masked_fill(eye, 1.0).detach()


class SoftInfoNCELoss(TowerLoss):
    r"""Soft-InfoNCE: InfoNCE whose negatives carry weights.

    .. math::
        \ell_i = -\log \frac{e^{z_{ii}}}{e^{z_{ii}} + \sum_{j \ne i} w_{ij} e^{z_{ij}}}

    with logits :math:`z = \mathrm{scale} \cdot s` (cosine). A weight enters as
    :math:`z_{ij} + \log w_{ij}` (0 drops the negative). Paper: Li, Zhou, Luu & Miao, "Rethinking
    Negative Pairs in Code Search", EMNLP 2023 (the authors' code computes exactly this
    with a weighted denominator); :func:`soft_infonce_weights` is its estimator from a prior
    similarity. Unit weights give InfoNCE (checked against in-batch negatives /
    sentence-transformers' MNRL). Default ``scale = 20`` as the sentence losses (the paper's code
    uses raw dot products: ``distance="dot", scale=1``).

    Shapes: ``queries`` [B, D], ``docs`` [N, D] (N >= B; rows beyond B are hard negatives of
    every query); ``weights`` [B, N] (the diagonal is ignored) or ``f(start, end) -> [b, N]``.
    Returns a scalar.
    """

    def __init__(self, scale: float = 20.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.scale = check_real(scale, "scale", low=0.0, low_open=True)

    def forward(
        self,
        queries: torch.Tensor,
        docs: torch.Tensor,
        weights: torch.Tensor | BlockWeights,
    ) -> torch.Tensor:
        """The loss of ``queries`` against ``docs`` with weighted negatives."""
        q, d = check_towers(queries, docs, "queries", "docs", extra_rows=True)
        blocks = _weight_blocks(weights, q.shape[0], d.shape[0], "weights")
        scale = torch.tensor(self.scale, dtype=q.dtype, device=q.device)

        def adjust(p, z, s, start, end):
            w = blocks(start, end).to(z.dtype)
            idx = torch.arange(end - start, device=z.device)
            w = w.clone()
            w[idx, idx + start] = 1.0
            return z + torch.log(w)

        objective = SoftmaxTowers(((0, 1),), q.shape[0], lambda: scale, adjust=adjust)
        return self.run(objective, [q, d], ["queries", "docs"])


class HardnessWeightedInfoNCELoss(InBatchNegativesLoss):
    r"""InfoNCE with hardness-weighted negatives: each selected negative is weighted by
    :math:`e^{\beta\, \mathrm{sg}(s_{ij})}` in the softmax, i.e. its logit becomes
    :math:`\mathrm{scale}\, s_{ij} + \beta\, \mathrm{sg}(s_{ij})` (harder negatives count more,
    without changing the gradient's direction through the weight).

    Paper: Lan et al., "LLaVE: Large Language and Vision Embedding Models with Hardness-Weighted
    Contrastive Learning", 2025 (eq. 5, ``beta = 9`` on in-batch negatives); the same term is
    sentence-transformers' ``hardness_mode``, against which it is checked. ``negatives``:
    ``"in_batch"`` (the other rows' documents), ``"hard"`` (the row's own hard-negative rows) or
    ``"all"``. Other arguments, shapes and defaults as
    :class:`~pairloss.losses.contrastive.in_batch.InBatchNegativesLoss` (``scale = 20``).
    """

    def __init__(self, beta: float = 9.0, negatives: str = "in_batch", **kwargs) -> None:
        mode = {"in_batch": "in_batch_negatives", "hard": "hard_negatives", "all": "all_negatives"}
        check_choice(negatives, "negatives", tuple(mode))
        if "hardness_mode" in kwargs or "hardness_strength" in kwargs:
            raise PairLossError(
                "hardness_mode: set by HardnessWeightedInfoNCELoss; use beta and negatives"
            )
        super().__init__(
            hardness_mode=mode[negatives],
            hardness_strength=check_real(beta, "beta", low=0.0),
            **kwargs,
        )
        self.beta, self.negatives = float(beta), negatives


def cwcl(frozen_features, features, weights=None, logit_scale=1 / 0.07, **kwargs):
    """Functional form of :class:`CWCLLoss` with the scale passed in (a number, or a 0-d
    tensor that receives its gradient); ``kwargs``: distance, engine, block_size."""
    u, v = check_towers(frozen_features, features, "frozen_features", "features")
    scale = as_scale(logit_scale, u)
    check_logit_scale(float(scale.detach()))
    return _cwcl(TowerLoss(**kwargs), u, v, weights, lambda: scale, (scale,))


def soft_infonce(queries, docs, weights, scale: float = 20.0, **kwargs) -> torch.Tensor:
    """Functional form of :class:`SoftInfoNCELoss`."""
    return SoftInfoNCELoss(scale, **kwargs)(queries, docs, weights)


def hardness_weighted_infonce(queries, docs, beta=9.0, negatives="in_batch", **kwargs):
    """Functional form of :class:`HardnessWeightedInfoNCELoss`."""
    return HardnessWeightedInfoNCELoss(beta, negatives, **kwargs)(queries, docs)
