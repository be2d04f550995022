"""iSogCLR: global contrastive learning with individualised temperatures (Qiu, Hu, Yuan, Zhou,
Zhang & Yang, "Not All Semantics are Created Equal: Contrastive Self-supervised Learning with
Automatic Temperature Individualization", ICML 2023)."""

from __future__ import annotations

import torch
from torch import nn

from ...errors import PairLossError
from ...similarity import CosineSimilarity
from ...two_towers import TowerObjective, run_towers
from ...validation import (
    check_bool,
    check_int,
    check_labels,
    check_ordered,
    check_real,
    check_tensor,
)
from .views import check_two_views


class _Direction(TowerObjective):
    """One direction (anchors a, candidates [b | a]): the surrogate whose gradient is the
    robust global contrastive loss's, and the per-row statistics of the state update."""

    panels = ((0, 1), (0, 0))
    linear = True
    n_stats = 1

    def __init__(self, tau, u_old, first, gamma, n_neg):
        self.tau, self.u_old, self.first = tau, u_old, first
        self.gamma, self.n_neg = gamma, n_neg
        self.state: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def block(self, s, start, end):
        ab, aa = s
        b = end - start
        idx = torch.arange(b, device=ab.device)
        tau = self.tau[start:end, None].to(ab.dtype)
        neg_ab = torch.ones_like(ab, dtype=torch.bool).index_put(
            (idx, idx + start), torch.tensor(False, device=ab.device)
        )
        neg_aa = neg_ab  # the self cell of the anchors' own view is not a negative either
        sims = torch.cat([ab, aa], dim=1)
        neg = torch.cat([neg_ab, neg_aa], dim=1)
        exp = torch.where(neg, torch.exp(sims.detach() / tau), 0.0)
        mean = exp.sum(dim=1) / self.n_neg
        u = mean if self.first else (1 - self.gamma) * self.u_old[start:end] + self.gamma * mean
        weights = exp / u.clamp_min(1e-8)[:, None]
        positive = ab[idx, idx + start]
        rows = -positive + (weights * torch.where(neg, sims, 0.0)).sum(dim=1) / self.n_neg
        grad_tau_term = (weights * torch.where(neg, sims.detach(), 0.0) / tau).sum(
            dim=1
        ) / self.n_neg
        self.state[start] = (u.detach(), grad_tau_term.detach())
        return rows[:, None], [None, None]

    def combine(self, rows, cols):
        return rows[:, 0].mean()

    def gathered(self):
        """(u, the tau-gradient term) of every row, in row order."""
        parts = [self.state[k] for k in sorted(self.state)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


class ISogCLRLoss(nn.Module):
    r"""iSogCLR (with ``learn_temperature``) or SogCLR: the global contrastive loss optimised
    with moving averages, with one learned temperature per training sample.

    For two views a, b of B samples with dataset indices ``index`` and
    :math:`h_i(z) = s(a_i, z) - s(a_i, b_i)`, the robust global contrastive objective is

    .. math::
        F = \frac{1}{n}\sum_i \Big[\tau_i \log \mathbb{E}_{z \in S_i^-} e^{h_i(z) / \tau_i}
            + \tau_i \rho\Big]

    (plus the same from b's side), the negatives :math:`S_i^-` being the 2(B - 1) other rows of
    both views. The loss returned is the stochastic surrogate whose gradient is F's with the
    inner mean replaced by a moving average ``u_i`` per sample (``u_i <- (1 - gamma) u_i +
    gamma * batch mean``; the batch mean when all of the batch's ``u`` are 0):
    :math:`-s(a_i, b_i) + \frac{1}{2(B-1)}\sum_z \mathrm{sg}(e^{s(a_i,z)/\tau_i} / u_i)\,
    s(a_i, z)`, summed over the two directions and averaged over the samples. In training mode
    each call then updates ``u`` and, with ``learn_temperature``, the temperatures by momentum
    SGD on :math:`\partial F / \partial \tau_i = \log u_i + \rho - \mathbb{E}[s/\tau_i]`,
    clamped to ``[tau_min, tau_max]``.

    Paper: Qiu et al., ICML 2023 (eq. 6); defaults and update rules as LibAUC's ``GCLoss_v1``
    (the authors' library, read to check them): ``temperature = 0.1``, ``gamma = 0.9``, ``rho
    = 0.3``, ``eta = 0.01``, ``beta = 0.9``, ``tau_min = 0.05``, ``tau_max = 0.7``. Checked
    against F: the surrogate's gradient and the temperature step equal autograd's gradients of F
    at the first step. The state is kept on the module (buffers ``u``, ``tau``, ``grad_tau`` of
    ``num_samples`` entries).

    Shapes: ``view_a``, ``view_b`` [B, D]; ``index`` [B] integer dataset indices in
    ``[0, num_samples)``. Returns a scalar.
    """

    def __init__(
        self,
        num_samples: int,
        temperature: float = 0.1,
        gamma: float = 0.9,
        learn_temperature: bool = True,
        rho: float = 0.3,
        eta: float = 0.01,
        beta: float = 0.9,
        tau_min: float = 0.05,
        tau_max: float = 0.7,
        engine: str = "auto",
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        self.num_samples = check_int(num_samples, "num_samples", minimum=1)
        self.temperature = check_real(temperature, "temperature", low=0.0, low_open=True)
        self.gamma = check_real(gamma, "gamma", low=0.0, high=1.0)
        self.learn_temperature = check_bool(learn_temperature, "learn_temperature")
        self.rho = check_real(rho, "rho")
        self.eta = check_real(eta, "eta", low=0.0)
        self.beta = check_real(beta, "beta", low=0.0, high=1.0)
        self.tau_min = check_real(tau_min, "tau_min", low=0.0, low_open=True)
        self.tau_max = check_real(tau_max, "tau_max", low=0.0, low_open=True)
        check_ordered(self.tau_min, self.tau_max, "tau_min", "tau_max")
        self.engine, self.block_size = engine, block_size
        n = self.num_samples
        self.register_buffer("u", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("tau", torch.full((n,), self.temperature, dtype=torch.float64))
        self.register_buffer("grad_tau", torch.zeros(n, dtype=torch.float64))

    def forward(self, view_a: torch.Tensor, view_b: torch.Tensor, index: torch.Tensor):
        """The surrogate loss of one batch (and, in training mode, the state update)."""
        a, b = check_two_views(view_a, view_b, min_batch=2, names=("view_a", "view_b"))
        index = check_labels(index, a.shape[0], "index").to(self.u.device)
        if int(index.min()) < 0 or int(index.max()) >= self.num_samples:
            raise PairLossError(
                f"index: expected indices in [0, {self.num_samples}), got range "
                f"[{int(index.min())}, {int(index.max())}]"
            )
        tau = self.tau[index].to(a.device)
        u_old = self.u[index].to(device=a.device, dtype=a.dtype)
        first = bool(self.u[index].sum() == 0)
        loss, stats = isogclr_terms(
            a, b, tau, u_old, first, self.gamma, self.engine, self.block_size
        )
        if self.training:
            stats = [tuple(_plain(t, index) for t in pair) for pair in stats]
            with torch._C._DisableFuncTorch():  # the state is no input of a transformed function
                self._update(index, stats)
        return loss

    @torch.no_grad()
    def _update(self, index, stats) -> None:
        (u1, g1), (u2, g2) = stats
        self.u[index] = ((u1 + u2) / 2).to(self.u)
        if not self.learn_temperature:
            return
        grad = ((torch.log(u1) + self.rho - g1) + (torch.log(u2) + self.rho - g2)) / 2
        self.grad_tau[index] = (1 - self.beta) * self.grad_tau[index] + self.beta * grad.to(self.u)
        step = self.tau[index] - self.eta * self.grad_tau[index]
        self.tau[index] = step.clamp(self.tau_min, self.tau_max)


def _plain(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The values of a state statistic as a plain tensor: under ``torch.func.grad`` or ``jvp``
    the statistics (constants of the gradient) arrive wrapped by the transform, and writing a
    wrapped tensor into the module's buffers is refused by torch; their values are the
    unwrapped tensor, written with the transforms disabled. Under ``vmap`` one state update per
    mapped call is undefined."""
    from torch._C._functorch import get_unwrapped, is_batchedtensor, is_functorch_wrapped_tensor

    while is_functorch_wrapped_tensor(t):
        if is_batchedtensor(t):
            raise PairLossError(
                "index: ISogCLRLoss updates its per-sample state in training mode, which has no "
                "meaning under torch.func.vmap; expected loss.eval() (no update) inside vmap"
            )
        t = get_unwrapped(t)
    if t.shape != index.shape:
        raise PairLossError(f"index: expected {index.shape[0]} state entries, got {t.shape}")
    return t


def isogclr_terms(a, b, tau, u_old, first, gamma, engine="auto", block_size=None):
    """The surrogate loss of both directions and, per direction, each row's new moving average
    and temperature-gradient term (see :class:`ISogCLRLoss`)."""
    n_neg = 2 * (a.shape[0] - 1)
    losses, stats = [], []
    for x, y in ((a, b), (b, a)):
        direction = _Direction(tau, u_old, first, gamma, n_neg)
        losses.append(
            run_towers(
                direction,
                [x, y],
                CosineSimilarity(),
                names=["view_a", "view_b"],
                engine=engine,
                block_size=block_size,
            )
        )
        stats.append(direction.gathered())
    return losses[0] + losses[1], stats


def isogclr(
    view_a: torch.Tensor,
    view_b: torch.Tensor,
    tau: torch.Tensor,
    u: torch.Tensor | None = None,
    gamma: float = 0.9,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`ISogCLRLoss`'s surrogate for given per-row temperatures
    ``tau`` [B] and moving averages ``u`` [B] (None: the first step, the batch means); no
    state is kept or updated."""
    a, b = check_two_views(view_a, view_b, min_batch=2, names=("view_a", "view_b"))
    tau = check_tensor(tau, "tau")
    if tau.shape != (a.shape[0],) or not bool(torch.isfinite(tau).all()) or bool((tau <= 0).any()):
        raise PairLossError(f"tau: expected {a.shape[0]} finite temperatures > 0")
    if u is not None:
        u = check_tensor(u, "u")
        if u.shape != (a.shape[0],) or not bool(torch.isfinite(u).all()) or bool((u <= 0).any()):
            raise PairLossError(f"u: expected {a.shape[0]} finite moving averages > 0")
    first = u is None
    u_old = torch.zeros_like(tau) if first else u
    loss, _ = isogclr_terms(
        a, b, tau.to(a), u_old.to(a), first, check_real(gamma, "gamma", 0.0, 1.0), **kwargs
    )
    return loss
