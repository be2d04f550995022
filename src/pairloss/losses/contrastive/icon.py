"""I-Con: one KL divergence between a target neighbourhood and the learned one (Alshammari,
Hershey, Feldmann, Freeman & Hamilton, "I-Con: A Unifying Framework for Representation
Learning", ICLR 2025)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...errors import PairLossError
from ...objectives.terms import RowTerms, masked_logsumexp
from ...validation import check_choice, check_positive
from ..base import PairLossModule, check_reference

Target = Callable[[int, int], torch.Tensor]


def icon_rows(
    s: torch.Tensor,
    support: torch.Tensor,
    p: torch.Tensor,
    temperature: float,
    is_distance: bool,
    kl: bool,
) -> list[RowTerms]:
    r"""Per anchor i, :math:`\sum_j p_{ij} \log p_{ij} - \sum_j p_{ij} \log q_{ij}` with
    :math:`q_{ij} = \mathrm{softmax}_{j \in S(i)}(z_{ij})`, ``z = s / t`` ("higher is closer"
    form) over the support ``S(i)``; ``p`` is normalised over the support and the entropy term
    is left out when ``kl`` is False (the cross-entropy form). Rows without target mass give no
    term."""
    z = (-s if is_distance else s) / temperature
    p = torch.where(support, p, 0.0)
    mass = p.sum(dim=1)
    p = p / torch.where(mass > 0, mass, 1.0)[:, None]
    lse = masked_logsumexp(z, support)
    values = lse - (p * torch.where(support, z, 0.0)).sum(dim=1)
    if kl:
        values = values + torch.special.xlogy(p, p).sum(dim=1)
    return [RowTerms.per_anchor(values, mass > 0)]


class IConLoss(PairLossModule):
    r"""I-Con: the KL divergence from a target neighbourhood to the learned one, per anchor.

    .. math::
        L = \frac{1}{|V|}\sum_{i \in V} \mathrm{KL}\big(p(\cdot|i) \,\|\, q(\cdot|i)\big),
        \qquad q(j|i) = \frac{e^{z_{ij}}}{\sum_{k \ne i} e^{z_{ik}}},\ z = s / \tau

    (``-d / tau`` for a distance), over the anchors V with target mass. The target ``p(.|i)``
    is uniform over the anchor's positives when ``labels`` are given (sample ids of views: the
    SimCLR neighbourhood, whose I-Con is NT-Xent; classes: SupCon's, whose I-Con is SupCon
    less the entropy ``log |P(i)|``), or any given distribution ``target`` (e.g. SNE's Gaussian
    neighbourhood of the inputs, with ``distance=LpDistance(power=2,
    normalize_embeddings=False)`` and ``temperature=1`` for SNE's Gaussian ``q``). Paper:
    Alshammari et al., ICLR 2025, eq. 1; ``form="cross_entropy"`` drops the
    target's entropy, as the authors' code (``kl_divergence`` of their divergences module) does;
    the gradients are the same. Row-decomposable: runs on the pair engine (dense or blocked).

    Args:
        temperature: tau > 0 (default 0.1).
        form: ``"kl"`` (default) or ``"cross_entropy"``.
        distance, reduction, engine, block_size: as the other embedding losses (cosine; mean
            over the anchors with target mass).

    Shapes: embeddings [B, D] with labels [B], or ``target`` [B, N] (non-negative, normalised
    per row over the anchor's support) or ``f(start, end) -> [b, N]`` giving it by row blocks;
    ref_emb [N, D] (with ref_labels [N] when labels are used). Returns a scalar (or [B]).
    """

    default_reduction = "mean_valid"

    def __init__(self, temperature: float = 0.1, form: str = "kl", **kwargs) -> None:
        super().__init__(**kwargs)
        self.temperature = check_positive(temperature, "temperature")
        self.form = check_choice(form, "form", ("kl", "cross_entropy"))

    def objective(self, s, pos, neg, start, end):
        return icon_rows(
            s,
            pos | neg,
            pos.to(s.dtype),
            self.temperature,
            self.distance.is_distance,
            self.form == "kl",
        )

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple=None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
        *,
        target: torch.Tensor | Target | None = None,
    ) -> torch.Tensor:
        """The loss with the target neighbourhood of ``labels`` or of ``target``."""
        if target is None:
            return super().forward(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        if labels is not None or indices_tuple is not None or ref_labels is not None:
            raise PairLossError(
                "target: given with labels, indices_tuple or ref_labels; expected the target "
                "neighbourhood from one source"
            )
        if not isinstance(embeddings, torch.Tensor):
            raise PairLossError("embeddings: expected a torch.Tensor")
        n = embeddings.shape[0]
        n_cand = n if ref_emb is None else check_reference(embeddings, ref_emb).shape[0]
        blocks = _target_blocks(target, n, n_cand, embeddings.device)
        ids = torch.arange(n, device=embeddings.device)
        ref_ids = None if ref_emb is None else -1 - torch.arange(n_cand, device=embeddings.device)

        def objective(s, pos, neg, start, end):
            p = blocks(start, end).to(s.dtype)
            return icon_rows(
                s, neg, p, self.temperature, self.distance.is_distance, self.form == "kl"
            )

        return self.run_objective(objective, embeddings, ids, None, ref_emb, ref_ids, miner=None)


def _target_blocks(target, n: int, n_cand: int, device) -> Target:
    if isinstance(target, torch.Tensor):
        if tuple(target.shape) != (n, n_cand):
            raise PairLossError(
                f"target: expected shape ({n}, {n_cand}), got {tuple(target.shape)}"
            )
        if not bool(torch.isfinite(target).all()) or bool((target < 0).any()):
            raise PairLossError("target: expected finite non-negative probabilities")
        table = target.detach().to(device)
        return lambda start, end: table[start:end]
    if callable(target):

        def checked(start: int, end: int) -> torch.Tensor:
            p = target(start, end)
            if not isinstance(p, torch.Tensor) or tuple(p.shape) != (end - start, n_cand):
                raise PairLossError(
                    f"target: the block of rows {start}:{end} must be a "
                    f"[{end - start}, {n_cand}] tensor"
                )
            if not bool(torch.isfinite(p).all()) or bool((p < 0).any()):
                raise PairLossError("target: expected finite non-negative probabilities")
            return p.detach()

        return checked
    raise PairLossError(f"target: expected a tensor or a callable, got {type(target).__name__}")


def gaussian_neighbourhood(inputs: torch.Tensor, sigma: float | torch.Tensor) -> Target:
    r"""SNE's target neighbourhood of the rows of ``inputs`` [B, F]:
    :math:`p(j|i) \propto e^{-\|x_i - x_j\|^2 / (2 \sigma_i^2)}` over ``j != i``, by row blocks
    (``sigma`` one number or one per row). Pass it as ``target=`` to :class:`IConLoss`."""
    x = inputs.detach()
    sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
    if not bool(torch.isfinite(sig).all()) or bool((sig <= 0).any()):
        raise PairLossError("sigma: expected finite numbers > 0")
    sq = (x * x).sum(dim=1)

    def block(start: int, end: int) -> torch.Tensor:
        d2 = (sq[start:end, None] + sq[None, :] - 2 * x[start:end] @ x.T).clamp_min(0)
        logits = -d2 / (2 * sig[start:end, None] ** 2)
        idx = torch.arange(end - start, device=x.device)
        logits[idx, idx + start] = float("-inf")
        return torch.softmax(logits, dim=1)

    return block


def icon(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    temperature: float = 0.1,
    form: str = "kl",
    target: torch.Tensor | Target | None = None,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`IConLoss` (same arguments and defaults)."""
    return IConLoss(temperature=temperature, form=form, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels, target=target
    )
