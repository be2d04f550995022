"""The shared front end of the two-tower losses: input checks, similarity and engine options."""

from __future__ import annotations

import torch
from torch import nn

from ...errors import PairLossError
from ...similarity import Similarity, get_similarity
from ...two_towers import TowerObjective, run_towers
from ...validation import check_choice, check_embeddings, check_same_device_dtype


def check_towers(
    x: object,
    y: object,
    x_name: str,
    y_name: str,
    extra_rows: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two finite [B, D] matrices on one device and dtype with the same D; ``y`` may have more
    rows than ``x`` (``N >= B``: extra candidates) when ``extra_rows``, else exactly B."""
    x = check_embeddings(x, x_name)
    y = check_embeddings(y, y_name)
    check_same_device_dtype(x, y, x_name, y_name)
    if x.shape[1] != y.shape[1]:
        raise PairLossError(
            f"{y_name}: has {y.shape[1]} features but {x_name} have {x.shape[1]}; "
            "expected the same embedding size"
        )
    if extra_rows and y.shape[0] < x.shape[0]:
        raise PairLossError(
            f"{y_name}: has {y.shape[0]} rows but {x_name} have {x.shape[0]}; expected at least "
            "one row per row of the first tower (rows beyond it are extra negatives)"
        )
    if not extra_rows and y.shape[0] != x.shape[0]:
        raise PairLossError(
            f"{y_name}: has {y.shape[0]} rows but {x_name} have {x.shape[0]}; expected one "
            "row per row (row i of each is a positive pair)"
        )
    return x, y


def check_params_device(loss: nn.Module, x: torch.Tensor, name: str) -> None:
    """The loss's parameters must live on the inputs' device."""
    for p in loss.parameters():
        if p.device != x.device:
            raise PairLossError(
                f"{name}: is on device {x.device} but the loss's parameters are on {p.device}; "
                "expected the same device (move the loss with .to())"
            )


class TowerLoss(nn.Module):
    """Base class of the two-tower losses.

    Args:
        distance: a :class:`~pairloss.similarity.Similarity` or a name (``"cosine"``,
            ``"dot"``); cosine similarity by default.
        engine: ``"auto"``, ``"dense"`` or ``"blocked"`` (see :mod:`pairloss.two_towers`).
        block_size: rows per block of the blocked engine (default: by size).
    """

    def __init__(
        self,
        distance: Similarity | str | None = None,
        engine: str = "auto",
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        from ...similarity import CosineSimilarity

        self.distance = get_similarity(distance, CosineSimilarity())
        if self.distance.is_distance:
            raise PairLossError(
                f"distance: {type(self.distance).__name__} is a distance; expected a similarity "
                "(cosine or dot) for logits"
            )
        self.engine = check_choice(engine, "engine", ("auto", "dense", "blocked"))
        self.block_size = block_size

    def run(
        self, objective: TowerObjective, tensors: list[torch.Tensor], names: list[str]
    ) -> torch.Tensor:
        """Run ``objective`` on ``tensors`` with this loss's similarity and engine."""
        return run_towers(
            objective,
            tensors,
            self.distance,
            names=names,
            engine=self.engine,
            block_size=self.block_size,
        )
