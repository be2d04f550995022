"""Dynamic bad pair mining (Lan, Yan, Hong & Feng, "Towards Enhancing Time Series Contrastive
Learning: A Dynamic Bad Pair Mining Approach", ICLR 2024)."""

from __future__ import annotations

import math

import torch

from ..errors import PairLossError
from ..validation import check_int, check_real, check_tensor


class DBPM:
    r"""A memory of each positive pair's training loss that flags the pairs whose history is
    extreme and down-weights them.

    Every call of :meth:`reweight` records each pair's current loss in its row of the memory
    (the mean when a pair appears several times in one epoch). At the start of each epoch from
    ``warm_epochs`` on (:meth:`start_epoch`), each pair's history is summarised by the mean of
    its past losses weighted by (1 + e) / ``max_epochs`` for epoch e (recent epochs count more);
    with mu and sd the mean and standard deviation of these summaries over the pairs, a pair is
    a potential *noisy* positive when its summary is <= mu - ``cut_np`` sd and a potential
    *faulty* positive when >= mu + ``cut_fp`` sd. During that epoch a flagged pair's loss is
    multiplied by the normal density N(l; mu, sd) of its current loss l; others keep weight 1.

    Paper: Lan et al., ICLR 2024, sec. 3 (memory module, eq. 3-4; transformation module, eq. 5).
    Defaults as the official configuration: ``cut_np=2``, ``cut_fp=3``; ``warm_epochs`` and
    ``max_epochs`` are the training schedule (50 and 80 there). Checked against the official
    code (``models/dbpm_model.py``): the weighted history, the bounds and the density weight.

    Args:
        num_pairs: how many positive pairs (e.g. samples of a two-view batch) are tracked.
        max_epochs: the length of training (the history weights' denominator).
        warm_epochs: epochs recorded before any re-weighting.
        cut_np, cut_fp: the bounds in standard deviations below / above the mean.

    Usage::

        dbpm = DBPM(len(dataset), max_epochs=80, warm_epochs=50)
        for epoch in range(80):
            dbpm.start_epoch(epoch)
            for x1, x2, ids in loader:
                per_pair = ntxent_per_pair(model(x1), model(x2))   # [batch]
                loss = dbpm.reweight(ids, per_pair).mean()
    """

    def __init__(
        self,
        num_pairs: int,
        max_epochs: int,
        warm_epochs: int = 0,
        cut_np: float = 2.0,
        cut_fp: float = 3.0,
    ) -> None:
        self.num_pairs = check_int(num_pairs, "num_pairs", minimum=1)
        self.max_epochs = check_int(max_epochs, "max_epochs", minimum=1)
        self.warm_epochs = check_int(warm_epochs, "warm_epochs", minimum=0)
        self.cut_np = check_real(cut_np, "cut_np", low=0.0)
        self.cut_fp = check_real(cut_fp, "cut_fp", low=0.0)
        self.loss_sum = torch.zeros(num_pairs, self.max_epochs, dtype=torch.float64)
        self.loss_count = torch.zeros(num_pairs, self.max_epochs, dtype=torch.float64)
        self.epoch = 0
        self.flagged = torch.zeros(num_pairs, dtype=torch.bool)
        self.noisy = torch.zeros(num_pairs, dtype=torch.bool)
        self.faulty = torch.zeros(num_pairs, dtype=torch.bool)
        self.mu = self.sd = float("nan")

    def history(self) -> torch.Tensor:
        """Each pair's weighted mean past loss [num_pairs] (NaN for a pair never seen)."""
        e = self.epoch
        if e == 0:
            return torch.full((self.num_pairs,), float("nan"), dtype=torch.float64)
        seen = self.loss_count[:, :e] > 0
        losses = self.loss_sum[:, :e] / self.loss_count[:, :e].clamp_min(1)
        w = (1 + torch.arange(e, dtype=torch.float64)) / self.max_epochs
        total = (losses * w * seen).sum(dim=1)
        n = seen.sum(dim=1)
        return torch.where(n > 0, total / n.clamp_min(1), float("nan"))

    def start_epoch(self, epoch: int) -> None:
        """Enter ``epoch`` (0-based): from ``warm_epochs`` on, flag the bad pairs from their
        history."""
        self.epoch = check_int(epoch, "epoch", minimum=0, maximum=self.max_epochs - 1)
        self.flagged.zero_()
        self.noisy.zero_()
        self.faulty.zero_()
        if epoch < self.warm_epochs or epoch == 0:
            return
        h = self.history()
        seen = torch.isfinite(h)
        if not bool(seen.any()):
            return
        values = h[seen]
        self.mu = float(values.mean())
        self.sd = float(values.std(unbiased=False))  # numpy's np.std
        self.noisy = seen & (h <= self.mu - self.cut_np * self.sd)
        self.faulty = seen & (h >= self.mu + self.cut_fp * self.sd)
        self.flagged = self.noisy | self.faulty

    def weights(self, pair_ids: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """The weight of each pair's loss this epoch (no gradient): N(l; mu, sd) for flagged
        pairs, 1 for the others."""
        ids = self._check(pair_ids, losses)
        with torch.no_grad():
            flagged = self.flagged[ids.cpu()].to(losses.device)
            if not bool(flagged.any()) or not self.sd > 0:
                return torch.ones_like(losses)
            z = (losses.detach().double() - self.mu) / self.sd
            pdf = torch.exp(-0.5 * z * z) / (self.sd * math.sqrt(2 * math.pi))
            return torch.where(flagged, pdf.to(losses.dtype), 1.0)

    def record(self, pair_ids: torch.Tensor, losses: torch.Tensor) -> None:
        """Add each pair's loss to its history of the current epoch."""
        ids = self._check(pair_ids, losses).cpu()
        values = losses.detach().double().cpu()
        self.loss_sum[:, self.epoch].index_add_(0, ids, values)
        self.loss_count[:, self.epoch].index_add_(0, ids, torch.ones_like(values))

    def reweight(self, pair_ids: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """Record the pairs' losses [P] and return them multiplied by :meth:`weights` (with the
        losses' gradient)."""
        w = self.weights(pair_ids, losses)
        self.record(pair_ids, losses)
        return losses * w

    def _check(self, pair_ids, losses) -> torch.Tensor:
        check_tensor(losses, "losses")
        ids = check_tensor(pair_ids, "pair_ids")
        if ids.dim() != 1 or losses.dim() != 1 or ids.shape != losses.shape:
            raise PairLossError(
                "pair_ids, losses: expected two 1-D tensors of the same length (one loss per "
                f"pair), got shapes {tuple(ids.shape)} and {tuple(losses.shape)}"
            )
        if ids.is_floating_point() or (
            ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_pairs)
        ):
            raise PairLossError(f"pair_ids: expected integer ids in [0, {self.num_pairs})")
        if losses.numel() and not bool(torch.isfinite(losses.detach()).all()):
            raise PairLossError("losses: contain NaN or Inf; expected finite per-pair losses")
        return ids.long()
