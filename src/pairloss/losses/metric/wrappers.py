"""Losses built from other losses, with pytorch-metric-learning's names and calls:
:class:`MultipleLosses` (a weighted sum, each with its own miner) and :class:`SelfSupervisedLoss`
(two augmented views labelled by sample)."""

from __future__ import annotations

import torch
from torch import nn

from ...errors import PairLossError
from ...mining import miner_from
from ...validation import check_bool, check_embeddings, check_real


def _check_loss(loss: object, name: str) -> nn.Module:
    if not isinstance(loss, nn.Module) or not callable(loss):
        raise PairLossError(f"{name}: expected a loss module, got {type(loss).__name__}")
    return loss


class MultipleLosses(nn.Module):
    """A weighted sum of losses, each optionally fed by its own miner:
    ``sum_k weights[k] * losses[k](embeddings, labels, indices_k)`` with ``indices_k`` the
    output of ``miners[k]`` (or the given ``indices_tuple``).

    Arguments as pytorch-metric-learning's ``MultipleLosses``: ``losses`` a list or a dict of
    losses (pairloss's or pytorch-metric-learning's); ``miners`` the same layout (a list as long
    as ``losses`` with None where a loss has no miner, or a dict with some of the losses' keys);
    ``weights`` the same layout (every key), 1 by default. With miners, ``indices_tuple`` must be
    None. A pairloss miner's output given to a pairloss loss is mined inside its engine.
    """

    def __init__(self, losses, miners=None, weights=None) -> None:
        super().__init__()
        self.is_dict = isinstance(losses, dict)
        if not self.is_dict and not isinstance(losses, (list, tuple)):
            raise PairLossError("losses: expected a list or a dict of losses")
        if self.is_dict:
            self.losses = nn.ModuleDict(
                {k: _check_loss(v, f"losses[{k!r}]") for k, v in losses.items()}
            )
        else:
            self.losses = nn.ModuleList(
                [_check_loss(v, f"losses[{i}]") for i, v in enumerate(losses)]
            )
        keys = list(self.losses.keys()) if self.is_dict else list(range(len(self.losses)))
        self.miners = None
        if miners is not None:
            self._check_layout(miners, "miners", keys, every_key=False)
            if self.is_dict:
                self.miners = nn.ModuleDict({k: miner_from(v) for k, v in miners.items()})
            else:
                self.miners = nn.ModuleList([miner_from(m) for m in miners])
        if weights is None:
            weights = {k: 1 for k in keys} if self.is_dict else [1] * len(keys)
        else:
            self._check_layout(weights, "weights", keys, every_key=True)
            items = weights.items() if self.is_dict else enumerate(weights)
            for k, w in items:
                check_real(w, f"weights[{k!r}]")
        self.weights = weights

    def _check_layout(self, x, name: str, keys: list, every_key: bool) -> None:
        if self.is_dict:
            if not isinstance(x, dict):
                raise PairLossError(f"{name}: expected a dict, as losses")
            extra = set(x) - set(keys)
            missing = set(keys) - set(x)
            if extra or (every_key and missing):
                raise PairLossError(
                    f"{name}: keys {sorted(map(str, x))} do not match the losses' keys "
                    f"{sorted(map(str, keys))}"
                )
        elif not isinstance(x, (list, tuple)) or len(x) != len(keys):
            raise PairLossError(f"{name}: expected a list of {len(keys)} entries, as losses")

    def _miner(self, key):
        if self.miners is None:
            return None
        if self.is_dict and key not in self.miners:  # an nn.ModuleDict, which has no .get
            return None
        return self.miners[key]

    def forward(self, embeddings: torch.Tensor, labels=None, indices_tuple=None) -> torch.Tensor:
        """The weighted sum of the losses on ``embeddings`` [B, D] with ``labels`` [B]."""
        if self.miners is not None and indices_tuple is not None:
            raise PairLossError("indices_tuple: expected None when the losses have miners")
        total = 0
        items = self.losses.items() if self.is_dict else enumerate(self.losses)
        for key, loss in items:
            miner = self._miner(key)
            tup = miner(embeddings, labels) if miner is not None else indices_tuple
            total = total + loss(embeddings, labels, tup) * self.weights[key]
        return total


class SelfSupervisedLoss(nn.Module):
    """A loss on two augmented views of one batch, labelled by sample: ``loss(embeddings,
    ref_emb)`` with labels ``arange(B)`` for both views, the views concatenated into one batch
    (``symmetric=True``, the default) or ``ref_emb`` used as the reference set
    (``symmetric=False``).

    As pytorch-metric-learning's ``SelfSupervisedLoss``; ``loss`` is a pairloss or
    pytorch-metric-learning loss whose name is in :meth:`supported_losses`.
    """

    def __init__(self, loss: nn.Module, symmetric: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.loss = _check_loss(loss, "loss")
        self.check_loss_support(type(loss).__name__)
        self.symmetric = check_bool(symmetric, "symmetric")

    @staticmethod
    def supported_losses() -> list[str]:
        """The losses that read pairs from sample labels (pytorch-metric-learning's list)."""
        return [
            "AngularLoss",
            "CircleLoss",
            "ContrastiveLoss",
            "GeneralizedLiftedStructureLoss",
            "IntraPairVarianceLoss",
            "LiftedStructureLoss",
            "MultiSimilarityLoss",
            "NTXentLoss",
            "SignalToNoiseRatioContrastiveLoss",
            "SupConLoss",
            "TripletMarginLoss",
            "NCALoss",
            "TupletMarginLoss",
        ]

    @classmethod
    def check_loss_support(cls, loss_name: str) -> None:
        """A :class:`PairLossError` unless ``loss_name`` is supported."""
        if loss_name not in cls.supported_losses():
            raise PairLossError(
                f"loss: SelfSupervisedLoss does not support {loss_name}; expected one of "
                f"{cls.supported_losses()}"
            )

    def forward(self, embeddings: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        """The loss of the views ``embeddings`` and ``ref_emb`` [B, D] (row i of each is the
        same sample)."""
        embeddings = check_embeddings(embeddings, "embeddings")
        ref_emb = check_embeddings(ref_emb, "ref_emb")
        if ref_emb.shape != embeddings.shape:
            raise PairLossError(
                f"ref_emb: has shape {tuple(ref_emb.shape)} but embeddings have "
                f"{tuple(embeddings.shape)}; expected the two views of one batch"
            )
        labels = torch.arange(embeddings.shape[0], device=embeddings.device)
        if self.symmetric:
            return self.loss(torch.cat([embeddings, ref_emb]), torch.cat([labels, labels]))
        return self.loss(embeddings, labels, ref_emb=ref_emb, ref_labels=labels.clone())


def multiple_losses(
    embeddings: torch.Tensor,
    labels=None,
    indices_tuple=None,
    *,
    losses,
    miners=None,
    weights=None,
) -> torch.Tensor:
    """Functional form of :class:`MultipleLosses` (the same arguments)."""
    return MultipleLosses(losses, miners=miners, weights=weights)(embeddings, labels, indices_tuple)


def self_supervised(
    embeddings: torch.Tensor, ref_emb: torch.Tensor, *, loss: nn.Module, symmetric: bool = True
) -> torch.Tensor:
    """Functional form of :class:`SelfSupervisedLoss` (the same arguments)."""
    return SelfSupervisedLoss(loss, symmetric=symmetric)(embeddings, ref_emb)
