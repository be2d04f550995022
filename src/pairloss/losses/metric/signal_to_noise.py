"""Signal-to-noise ratio contrastive loss (Yuan et al., "Signal-To-Noise Ratio: A Robust
Distance Metric for Deep Metric Learning", CVPR 2019), as pytorch-metric-learning's
``SignalToNoiseRatioContrastiveLoss``."""

from __future__ import annotations

import torch

from ...errors import PairLossError
from ...similarity import Similarity, SNRDistance
from .contrastive import ContrastiveLoss


class SignalToNoiseRatioContrastiveLoss(ContrastiveLoss):
    r""":class:`ContrastiveLoss` in the signal-to-noise ratio distance,
    :math:`d(a, c) = \mathrm{Var}(a - c) / \mathrm{Var}(a)`
    (:class:`~pairloss.similarity.SNRDistance`, required):

    .. math::
        L = \mathrm{mean}_{>0}\,[d_{ip} - m_{pos}]_+ + \mathrm{mean}_{>0}\,[m_{neg} - d_{in}]_+

    Paper: Yuan et al., CVPR 2019, eq. 9 (its contrastive form). Defaults as
    pytorch-metric-learning: ``pos_margin=0``, ``neg_margin=1``, ``SNRDistance()``, each part
    averaged over its non-zero terms. The SNR matrix of a block is one matrix product of the
    centred vectors (the generic path of the pair engine). An ``indices_tuple`` counts as in
    :class:`ContrastiveLoss` (a pair once per listing, as pytorch-metric-learning).
    """

    def __init__(self, pos_margin: float = 0, neg_margin: float = 1, **kwargs) -> None:
        super().__init__(pos_margin=pos_margin, neg_margin=neg_margin, **kwargs)
        if not isinstance(self.distance, SNRDistance):
            raise PairLossError(
                "distance: SignalToNoiseRatioContrastiveLoss needs SNRDistance, got "
                f"{self.distance!r}"
            )

    @staticmethod
    def default_similarity() -> Similarity:
        return SNRDistance()


def signal_to_noise_ratio_contrastive(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    pos_margin: float = 0,
    neg_margin: float = 1,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`SignalToNoiseRatioContrastiveLoss` (same arguments and
    defaults)."""
    return SignalToNoiseRatioContrastiveLoss(
        pos_margin=pos_margin, neg_margin=neg_margin, **kwargs
    )(embeddings, labels, indices_tuple, ref_emb, ref_labels)
