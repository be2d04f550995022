"""AMCL: adaptive multi-head contrastive learning (Wang, Koniusz, Gedeon & Zheng, "Adaptive
Multi-head Contrastive Learning", ECCV 2024)."""

from __future__ import annotations

import torch
from torch import nn

from ...engine import compute_dtype
from ...errors import PairLossError
from ...similarity import DotProductSimilarity, normalize_rows
from ...two_towers import TowerObjective, run_towers
from ...validation import check_int, check_ordered, check_real, check_tensor


def temperature_regulariser(tau: torch.Tensor, dim: int) -> torch.Tensor:
    r""":math:`\Omega(\tau) = \frac{d}{2}\log\tau + \frac{1}{\tau}`, AMCL's penalty that keeps an
    adaptive temperature away from 0 and infinity."""
    return 0.5 * dim * torch.log(tau) + 1 / tau


class _Negatives(TowerObjective):
    """Panels (anchors, candidates) for cosine scores and (phi(anchors), phi(candidates)) for
    temperature scores; a row keeps its ``topk`` most similar negatives (the cells of its own
    sample dropped) and gives ``mean_k s_k / tau_k - beta sum_k (log tau_k + 1 / tau_k)``."""

    panels = ((0, 1), (2, 3))
    linear = True
    n_stats = 1

    def __init__(self, n: int, topk: int, beta: float, to_tau) -> None:
        self.n, self.topk, self.beta, self.to_tau = n, topk, beta, to_tau

    def block(self, s, start, end):
        cos, phi = s
        b = end - start
        idx = torch.arange(b, device=cos.device)
        rows = idx.repeat(2)
        cols = torch.cat([idx + start, idx + start + self.n])
        cos = cos.index_put((rows, cols), cos.new_tensor(float("-inf")))
        k = min(self.topk, cos.shape[1] - 2)
        values, where = torch.topk(cos, k, dim=1)
        tau = self.to_tau(torch.gather(phi, 1, where))
        value = (values / tau).mean(dim=1) - self.beta * (torch.log(tau) + 1 / tau).sum(dim=1)
        return value[:, None], [None, None]

    def combine(self, rows, cols):
        return rows[:, 0].mean()


class AMCLLoss(nn.Module):
    r"""AMCL with NT-Xent heads: several projection heads, and a temperature per pair predicted
    by a small network.

    For head h and direction (anchor view, positive view), with unit features, the pair
    temperature :math:`\tau(x, y) = \tau_{min} + (\tau_{max} - \tau_{min})\,
    \sigma(-\phi(x)^\top \phi(y))` (``phi`` an MLP shared by all heads) and the ``topk`` most
    similar negatives :math:`K_i` of anchor i among the other samples of both views:

    .. math::
        \ell_i = -\frac{s_{ip}}{\tau_{ip}} + \frac{1}{|K_i|}\sum_{k \in K_i}
            \frac{s_{ik}}{\tau_{ik}} + \beta\, \Omega(\tau_{ip})
            - \beta \sum_{k \in K_i} \big(\log \tau_{ik} + \tau_{ik}^{-1}\big)

    averaged over the anchors and the two directions, summed over the heads (the top-k
    approximation of the paper's eq. 5). Paper: Wang et al., ECCV 2024; the loss, ``Omega``,
    the temperature map and the defaults (``num_heads = 3``, ``beta = 0.01``, ``tau_min =
    1e-5``, ``tau_max = 2``, ``topk = 100``) follow the first author's public code
    (``AMCLNTXentLoss``), which the tests reproduce. The negatives' top-k runs on the
    two-tower engine (one walk per head and direction).

    Args:
        dim: D, the features' size (``phi`` maps D -> hidden -> D and ``Omega`` uses D).
        num_heads, beta, tau_min, tau_max, topk: as above; ``hidden_dim`` (default D).

    Shapes: ``z1``, ``z2`` [B, H, D] (two views, H heads). Returns a scalar; the loss owns
    ``phi``'s parameters (optimise them with the model).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 3,
        beta: float = 0.01,
        tau_min: float = 1e-5,
        tau_max: float = 2.0,
        topk: int = 100,
        hidden_dim: int | None = None,
        engine: str = "auto",
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        self.dim = check_int(dim, "dim", minimum=1)
        self.num_heads = check_int(num_heads, "num_heads", minimum=1)
        self.beta = check_real(beta, "beta", low=0.0)
        self.tau_min = check_real(tau_min, "tau_min", low=0.0, low_open=True)
        self.tau_max = check_real(tau_max, "tau_max", low=0.0, low_open=True)
        check_ordered(self.tau_min, self.tau_max, "tau_min", "tau_max", strict=True)
        self.topk = check_int(topk, "topk", minimum=1)
        hidden = self.dim if hidden_dim is None else check_int(hidden_dim, "hidden_dim", minimum=1)
        self.phi = nn.Sequential(
            nn.Linear(self.dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, self.dim)
        )
        self.engine, self.block_size = engine, block_size

    def temperature(self, score: torch.Tensor) -> torch.Tensor:
        """The temperature of a pair from its ``phi`` score."""
        return self.tau_min + (self.tau_max - self.tau_min) * torch.sigmoid(-score)

    def _phi(self, x: torch.Tensor) -> torch.Tensor:
        """``phi(x)`` in ``x``'s dtype: the parameters are cast (differentiably) to it, so that
        float64 features keep float64 temperatures and the parameters still get gradients."""
        params = {k: v.to(x.dtype) for k, v in self.phi.named_parameters()}
        return torch.func.functional_call(self.phi, params, (x,))

    def _direction(self, a: torch.Tensor, p: torch.Tensor, candidates: torch.Tensor):
        a, p = normalize_rows(a), normalize_rows(p)
        c = normalize_rows(candidates)
        phi_a, phi_p, phi_c = self._phi(a), self._phi(p), self._phi(c)
        tau_pos = self.temperature((phi_a * phi_p).sum(dim=1))
        positive = -(a * p).sum(dim=1) / tau_pos + self.beta * temperature_regulariser(
            tau_pos, self.dim
        )
        negatives = run_towers(
            _Negatives(a.shape[0], self.topk, self.beta, self.temperature),
            [a, c, phi_a, phi_c],
            DotProductSimilarity(normalize_embeddings=False),
            names=["anchors", "candidates", "phi(anchors)", "phi(candidates)"],
            engine=self.engine,
            block_size=self.block_size,
        )
        return positive.mean() + negatives

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """The loss of two views of B samples through H heads."""
        for name, z in (("z1", z1), ("z2", z2)):
            check_tensor(z, name)
            if z.dim() != 3 or z.shape[1:] != (self.num_heads, self.dim):
                raise PairLossError(
                    f"{name}: expected shape [batch, {self.num_heads}, {self.dim}], got "
                    f"{tuple(z.shape)}"
                )
            if not z.is_floating_point() or not bool(torch.isfinite(z).all()):
                raise PairLossError(f"{name}: expected finite floating-point features")
        if z1.shape != z2.shape:
            raise PairLossError(f"z2: has shape {tuple(z2.shape)} but z1 has {tuple(z1.shape)}")
        if z1.shape[0] < 2:
            raise PairLossError("z1: expected at least 2 samples (the negatives are the others)")
        out_dtype = z1.dtype
        z1, z2 = z1.to(compute_dtype(z1)), z2.to(compute_dtype(z1))
        total = 0
        for h in range(self.num_heads):
            a, p = z1[:, h], z2[:, h]
            both = torch.cat([a, p])
            forward = self._direction(a, p, both)
            backward = self._direction(p, a, torch.cat([p, a]))
            total = total + (forward + backward) / 2
        return total.to(out_dtype)


def amcl(
    z1: torch.Tensor,
    z2: torch.Tensor,
    phi: nn.Module,
    beta: float = 0.01,
    tau_min: float = 1e-5,
    tau_max: float = 2.0,
    topk: int = 100,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`AMCLLoss` with the temperature network ``phi`` (D -> D)
    passed in; the heads and D are read from ``z1`` [B, H, D]."""
    check_tensor(z1, "z1")
    if z1.dim() != 3:
        raise PairLossError(f"z1: expected shape [batch, heads, dim], got {tuple(z1.shape)}")
    if not isinstance(phi, nn.Module):
        raise PairLossError(f"phi: expected an nn.Module, got {type(phi).__name__}")
    loss = AMCLLoss(z1.shape[2], z1.shape[1], beta, tau_min, tau_max, topk, **kwargs)
    loss.phi = phi
    return loss(z1, z2)
