"""lightly's self-supervised losses under their own names and call convention
``loss(out0, out1)`` (two views of the same B samples), computed by pairloss.

Covered: ``NTXentLoss`` (SimCLR over the 2B views, or MoCo-style against a memory bank),
``DCLLoss`` (with an optional ``weight_fn``), ``BarlowTwinsLoss``, ``VICRegLoss`` and
``NegativeCosineSimilarity``. Arguments, defaults and results are lightly 1.6's (checked in
float64, values and gradients); ``gather_distributed=True`` is accepted on one process and
refused on several (gathering is not part of these adapters).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..errors import PairLossError
from ..losses.base import pair_loss
from ..losses.contrastive.bootstrap import NegativeCosineLoss
from ..losses.contrastive.redundancy import BarlowTwinsLoss as _BarlowTwins
from ..losses.contrastive.redundancy import ViewVICRegLoss
from ..losses.contrastive.views import check_two_views
from ..losses.metric.dcl import DCLLoss as _DCL
from ..losses.metric.ntxent import NTXentLoss as _NTXent
from ..objectives.softmax import dcl_rows
from ..relations import view_ids
from ..similarity import CosineSimilarity, DotProductSimilarity
from ..two_towers import TowerObjective, run_towers
from ..validation import check_int, check_real


def _single_process(gather: bool) -> None:
    dist = torch.distributed
    if gather and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        raise PairLossError(
            "gather_distributed: gathering across processes is not supported by the pairloss "
            "lightly adapters; expected gather_distributed=False"
        )


class MemoryBank(nn.Module):
    """A first-in first-out bank of ``size`` past embeddings of ``dim`` features, as lightly's
    ``MemoryBankModule``: it starts as L2-normalised Gaussian rows (one ``torch.randn`` draw),
    the loss reads a detached copy, and each training call writes the batch after the pointer,
    wrapping to the start when the batch does not fit (the remainder of that batch is
    dropped)."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.size = check_int(size, "memory_bank_size[0]", minimum=1)
        dim = check_int(dim, "memory_bank_size[1]", minimum=1)
        self.register_buffer(
            "bank", nn.functional.normalize(torch.randn(self.size, dim), dim=-1), persistent=False
        )
        self.register_buffer("bank_ptr", torch.zeros(1, dtype=torch.long), persistent=False)

    def read(self) -> torch.Tensor:
        """A detached copy of the bank [size, dim]."""
        return self.bank.clone().detach()

    @torch.no_grad()
    def write(self, batch: torch.Tensor) -> None:
        """Enqueue ``batch`` [b, dim] after the pointer."""
        b, ptr = batch.shape[0], int(self.bank_ptr)
        if ptr + b >= self.size:
            self.bank[ptr:] = batch[: self.size - ptr].detach()
            self.bank_ptr.zero_()
        else:
            self.bank[ptr : ptr + b] = batch.detach()
            self.bank_ptr[0] = ptr + b


class _BankSoftmax(TowerObjective):
    """Cross-entropy of each anchor's positive logit (a given [B] tensor) against its logits
    on the bank: ``logaddexp(p_i, LSE_k z_ik) - p_i``, averaged."""

    panels = ((0, 1),)
    linear = True
    n_stats = 2

    def __init__(self, positive: torch.Tensor, temperature: float) -> None:
        self.positive, self.temperature = positive, temperature

    def params(self):
        return (self.positive,)

    def block(self, s, start, end):
        (sb,) = s
        p = self.positive[start:end]
        lse = torch.logaddexp(p, torch.logsumexp(sb / self.temperature, dim=1))
        return torch.stack([lse, p], dim=1), [None]

    def combine(self, rows, cols):
        return (rows[:, 0] - rows[:, 1]).mean()


def _bank_size(memory_bank_size) -> tuple[int, int] | None:
    if isinstance(memory_bank_size, bool):
        raise PairLossError(
            f"memory_bank_size: expected 0 or (size, dim), got {memory_bank_size!r}"
        )
    if isinstance(memory_bank_size, int):
        if memory_bank_size == 0:
            return None
        raise PairLossError(
            f"memory_bank_size: {memory_bank_size} does not give the feature size; expected "
            "(size, dim), or 0 for no bank"
        )
    if not isinstance(memory_bank_size, Sequence) or len(memory_bank_size) != 2:
        raise PairLossError(
            f"memory_bank_size: expected 0 or (size, dim), got {memory_bank_size!r}"
        )
    return tuple(memory_bank_size)  # type: ignore[return-value]


class NTXentLoss(nn.Module):
    """lightly's ``NTXentLoss``.

    Without a bank (``memory_bank_size=0``) each of the 2B views has the other view of its sample
    as positive and the 2B - 2 other views as negatives (SimCLR's loss, averaged over the 2B
    anchors): :class:`pairloss.NTXentLoss` with the views' sample ids. With a bank
    (``memory_bank_size=(size, dim)``) the anchors are ``out0``, the positive of anchor i is
    ``out1[i]`` and the negatives are the bank's rows (MoCo's loss); ``out1`` then enters the
    bank (when ``out0`` requires a gradient, i.e. in training), as lightly does.
    """

    def __init__(
        self,
        temperature: float = 0.5,
        memory_bank_size: int | Sequence[int] = 0,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        self.temperature = check_real(temperature, "temperature", low=0.0, low_open=True)
        size = _bank_size(memory_bank_size)
        self.memory_bank = None if size is None else MemoryBank(*size)
        self.gather_distributed = gather_distributed
        self._ntxent = _NTXent(temperature=self.temperature)

    def forward(self, out0: torch.Tensor, out1: torch.Tensor) -> torch.Tensor:
        """The loss of two views [B, D]."""
        a, b = check_two_views(out0, out1, names=("out0", "out1"))
        _single_process(self.gather_distributed)
        if self.memory_bank is None:
            labels = view_ids(a.shape[0], 2, device=a.device)
            return self._ntxent(torch.cat([a, b]), labels)
        a_n, b_n = nn.functional.normalize(a, dim=1), nn.functional.normalize(b, dim=1)
        bank = self.memory_bank.read().to(device=a.device, dtype=a.dtype)
        if bank.shape[1] != a.shape[1]:
            raise PairLossError(
                f"out0: has {a.shape[1]} features but the memory bank holds {bank.shape[1]}; "
                "expected the same size"
            )
        if out0.requires_grad:
            self.memory_bank.write(b_n)
        positive = (a_n * b_n).sum(dim=1) / self.temperature
        return run_towers(
            _BankSoftmax(positive, self.temperature),
            [a_n, bank],
            DotProductSimilarity(normalize_embeddings=False),
            names=["out0", "memory bank"],
        )


class DCLLoss(nn.Module):
    """lightly's ``DCLLoss``: decoupled contrastive loss of the 2B views,
    ``(DCL(out0, out1) + DCL(out1, out0)) / 2`` with the 2B - 2 other views as negatives.
    ``weight_fn(out0, out1) -> [B]`` (on the normalised views) weights the positive terms of
    the first direction and ``weight_fn(out1, out0)`` those of the second, as lightly does.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        weight_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        self.temperature = check_real(temperature, "temperature", low=0.0, low_open=True)
        if weight_fn is not None and not callable(weight_fn):
            raise PairLossError(f"weight_fn: expected a callable or None, got {weight_fn!r}")
        self.weight_fn = weight_fn
        self.gather_distributed = gather_distributed
        self._dcl = _DCL(temperature=self.temperature)

    def forward(self, out0: torch.Tensor, out1: torch.Tensor) -> torch.Tensor:
        """The loss of two views [B, D]."""
        a, b = check_two_views(out0, out1, names=("out0", "out1"))
        _single_process(self.gather_distributed)
        labels = view_ids(a.shape[0], 2, device=a.device)
        x = torch.cat([a, b])
        if self.weight_fn is None:
            return self._dcl(x, labels)
        a_n, b_n = nn.functional.normalize(a, dim=1), nn.functional.normalize(b, dim=1)
        w = torch.cat([self.weight_fn(a_n, b_n), self.weight_fn(b_n, a_n)]).detach()
        w = w.to(device=a.device, dtype=x.dtype).reshape(-1)
        if w.shape[0] != x.shape[0]:
            raise PairLossError(
                f"weight_fn: returned {w.shape[0] // 2} weights for {a.shape[0]} pairs; "
                "expected one weight per pair"
            )

        def objective(s, pos, neg, start, end):
            weight = w[start:end, None].expand_as(s)
            return dcl_rows(s, pos, neg, self.temperature, False, weight)

        return pair_loss(
            objective, x, labels, similarity=CosineSimilarity(), reduction="mean_terms"
        )


class BarlowTwinsLoss(_BarlowTwins):
    """lightly's ``BarlowTwinsLoss(lambda_param=0.005)``:
    :class:`pairloss.BarlowTwinsLoss`."""

    def __init__(self, lambda_param: float = 5e-3, gather_distributed: bool = False) -> None:
        super().__init__(lambda_param)
        self.gather_distributed = gather_distributed

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        _single_process(self.gather_distributed)
        return super().forward(z_a, z_b)


class VICRegLoss(ViewVICRegLoss):
    """lightly's ``VICRegLoss``: :class:`pairloss.ViewVICRegLoss` under lightly's name and
    argument order."""

    def __init__(
        self,
        lambda_param: float = 25.0,
        mu_param: float = 25.0,
        nu_param: float = 1.0,
        gather_distributed: bool = False,
        eps: float = 1e-4,
    ) -> None:
        super().__init__(lambda_param, mu_param, nu_param, eps)
        self.gather_distributed = gather_distributed

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        _single_process(self.gather_distributed)
        return super().forward(z_a, z_b)


class NegativeCosineSimilarity(NegativeCosineLoss):
    """lightly's ``NegativeCosineSimilarity(dim=1, eps=1e-8)``: ``-mean cos(x0, x1)`` along
    ``dim``, without a stop-gradient (detach the target yourself, as with lightly)."""

    def __init__(self, dim: int = 1, eps: float = 1e-8) -> None:
        super().__init__(stop_gradient=False, eps=eps)
        self.dim = check_int(dim, "dim")

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """The loss of two tensors of one shape."""
        if self.dim == 1 and x0.dim() == 2:
            return super().forward(x0, x1)
        if not isinstance(x0, torch.Tensor) or not isinstance(x1, torch.Tensor):
            raise PairLossError("x0, x1: expected tensors")
        if x0.shape != x1.shape:
            raise PairLossError(
                f"x1: has shape {tuple(x1.shape)} but x0 has {tuple(x0.shape)}; expected the same"
            )
        return -nn.functional.cosine_similarity(x0, x1, self.dim, self.eps).mean()
