"""NT-Xent with an additive margin on the positive (Lepage & Dehak, "Experimenting with Additive
Margins for Contrastive Self-Supervised Speaker Verification", Interspeech 2023)."""

from __future__ import annotations

import torch

from ...errors import PairLossError
from ...objectives.softmax import ntxent_rows
from ...validation import check_bool, check_real
from ..metric.ntxent import NTXentLoss

# keeps acos away from its infinite slope at -1 and 1
_ACOS_CLAMP = 1e-7


def margined_positives(s: torch.Tensor, pos: torch.Tensor, margin: float, angular: bool):
    """The scores with the positive cells moved by the margin: ``s - m`` (additive, as CosFace)
    or ``cos(acos(s) + m)`` (additive angular, as ArcFace)."""
    if angular:
        theta = torch.acos(s.clamp(-1 + _ACOS_CLAMP, 1 - _ACOS_CLAMP))
        return torch.where(pos, torch.cos(theta + margin), s)
    return torch.where(pos, s - margin, s)


class NTXentAMLoss(NTXentLoss):
    r"""NT-Xent with an additive margin on each positive pair's cosine (NT-Xent-AM):

    .. math::
        \ell_{ip} = -\log \frac{e^{(s_{ip} - m)/\tau}}
            {e^{(s_{ip} - m)/\tau} + \sum_{n \in N(i)} e^{s_{in}/\tau}}

    or, with ``angular=True``, :math:`\cos(\theta_{ip} + m)` in place of :math:`s_{ip} - m`
    (the additive angular margin). Averaged over the positive pairs, as
    :class:`~pairloss.NTXentLoss`; for two views pass the sample ids as labels
    (``torch.arange(B).repeat(2)``): every view is an anchor, which is the symmetric loss the
    paper recommends. Paper: Lepage & Dehak, Interspeech 2023 (only its abstract was at
    hand to check: the margin's form is CosFace's, ``m = 0`` gives NT-Xent exactly, which the
    tests check against pytorch-metric-learning; the defaults ``margin = 0.1`` and pairloss's
    NT-Xent temperature 0.07 are not from the paper's text).

    Args:
        margin: m >= 0 (default 0.1).
        angular: the additive angular margin instead of the additive one.
        temperature, distance, reduction, engine, block_size: as :class:`~pairloss.NTXentLoss`
            (a similarity, not a distance: the margin acts on the cosine).

    Shapes: embeddings [B, D], labels [B]; ref_emb [N, D] with ref_labels [N]. Returns a scalar
    (or [B] with ``reduction="none"``).
    """

    def __init__(self, margin: float = 0.1, angular: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.distance.is_distance:
            raise PairLossError(
                "distance: the margin acts on a similarity; expected cosine or dot, got "
                f"{type(self.distance).__name__}"
            )
        self.margin = check_real(margin, "margin", low=0.0)
        self.angular = check_bool(angular, "angular")

    def objective(self, s, pos, neg, start, end):
        s = margined_positives(s, pos, self.margin, self.angular)
        return ntxent_rows(s, pos, neg, self.temperature)

    fused = None

    def fused_form(self, miner):
        """None: the margin is applied on the autograd walk."""
        return None


def ntxent_am(
    embeddings: torch.Tensor,
    labels: torch.Tensor | None = None,
    indices_tuple=None,
    ref_emb: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    margin: float = 0.1,
    angular: bool = False,
    **kwargs,
) -> torch.Tensor:
    """Functional form of :class:`NTXentAMLoss` (same arguments and defaults)."""
    return NTXentAMLoss(margin=margin, angular=angular, **kwargs)(
        embeddings, labels, indices_tuple, ref_emb, ref_labels
    )
