"""Metrix: mixup for deep metric learning (Venkataramanan, Psomas, Kijak, Amsaleg, Karantzalos &
Avrithis, "It Takes Two to Tango: Mixup for Deep Metric Learning", ICLR 2022)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import PairLossError
from ..losses import ContrastiveLoss
from ..mining import all_pairs
from ..similarity import LpDistance, Similarity, get_similarity
from ..validation import check_embeddings, check_int, check_labels, check_positive, check_real


class Metrix(nn.Module):
    r"""Metrix for the contrastive loss: mix a positive and a negative of an anchor and treat
    the mixture as a pair with an interpolated label.

    For each anchor a, each of its positives p and its ``top_k`` hardest negatives n (closest
    in the clean embedding; all of them with ``top_k=None``), a mixture
    :math:`\tilde x = \lambda x_p + (1 - \lambda) x_n` (of the inputs, intermediate features
    or embeddings: :meth:`mix` mixes rows of any tensor) is a positive of a with weight lambda
    and a negative with weight 1 - lambda:

    .. math::
        L = L_{clean} + w \Big(\lambda\, \mathrm{mean}\,[d(a, \tilde x) - m_{pos}]_+
            + (1 - \lambda)\, \mathrm{mean}\,[m_{neg} - d(a, \tilde x)]_+\Big)

    with :math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)` drawn once per call (torch's global
    generator). Paper: Venkataramanan et al., ICLR 2022, eq. 8-11 (the contrastive case; the
    positive-negative mixing of each anchor's pairs). Defaults as the official code's
    contrastive setting: ``pos_margin=0``, ``neg_margin=0.5``, ``mix_weight=0.4``,
    ``alpha=2.0``, ``top_k=1``, normalised Euclidean distance; the clean loss is
    :class:`~pairloss.ContrastiveLoss` with the same margins.

    :meth:`forward` mixes the embeddings themselves; for input or feature mixup, call
    :meth:`select` for the (anchor, positive, negative) triples and lambda, :meth:`mix` on the
    inputs (or features), embed the mixtures, and add :meth:`mixed_loss` of the anchors'
    embeddings and the mixtures' to the clean loss.
    """

    def __init__(
        self,
        pos_margin: float = 0.0,
        neg_margin: float = 0.5,
        mix_weight: float = 0.4,
        alpha: float = 2.0,
        top_k: int | None = 1,
        distance: Similarity | None = None,
    ) -> None:
        super().__init__()
        self.pos_margin = check_real(pos_margin, "pos_margin")
        self.neg_margin = check_real(neg_margin, "neg_margin")
        self.mix_weight = check_real(mix_weight, "mix_weight", low=0.0)
        self.alpha = check_positive(alpha, "alpha")
        self.top_k = None if top_k is None else check_int(top_k, "top_k", minimum=1)
        self.distance = get_similarity(distance, LpDistance())
        self.clean = ContrastiveLoss(self.pos_margin, self.neg_margin, distance=self.distance)

    def draw_lambda(self) -> float:
        """lambda ~ Beta(alpha, alpha), from torch's global generator."""
        a = torch.tensor(float(self.alpha), dtype=torch.float64)
        return float(torch.distributions.Beta(a, a).sample())

    def select(self, embeddings: torch.Tensor, labels: torch.Tensor):
        """(anchors, positives, negatives) to mix: for every positive pair (a, p), its anchor's
        ``top_k`` closest negatives in ``embeddings`` (all of them when ``top_k`` is None)."""
        embeddings = check_embeddings(embeddings, "embeddings")
        labels = check_labels(labels, embeddings.shape[0]).to(embeddings.device)
        a1, p, _, _ = all_pairs(labels)
        with torch.no_grad():
            s = self.distance(embeddings.detach())
            neg = labels[:, None] != labels[None, :]
            close = self.distance.signed(s).masked_fill(~neg, float("-inf"))
            counts = neg.sum(dim=1)
            k = int(counts.max()) if self.top_k is None else min(self.top_k, int(counts.max()))
            if k == 0 or a1.numel() == 0:
                empty = a1.new_zeros(0)
                return empty, empty, empty
            order = torch.topk(close, k, dim=1).indices  # [B, k], hardest first
            valid = torch.arange(k, device=labels.device)[None, :] < counts[:, None]
        rows = valid[a1]  # [P, k]
        anchors = a1[:, None].expand(-1, k)[rows]
        positives = p[:, None].expand(-1, k)[rows]
        negatives = order[a1][rows]
        return anchors, positives, negatives

    @staticmethod
    def mix(x: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, lam: float):
        """lambda x[positives] + (1 - lambda) x[negatives]: rows of inputs, features or
        embeddings (any leading dimension)."""
        lam = check_real(lam, "lam", 0.0, 1.0)
        return lam * x[positives] + (1 - lam) * x[negatives]

    def mixed_loss(self, anchor_emb: torch.Tensor, mixed_emb: torch.Tensor, lam: float):
        """lambda mean [d - m_pos]+ + (1 - lambda) mean [m_neg - d]+ over the (anchor, mixture)
        pairs, row i with row i (0 without pairs)."""
        lam = check_real(lam, "lam", 0.0, 1.0)
        if anchor_emb.shape != mixed_emb.shape:
            raise PairLossError("mixed_emb: expected one mixture per anchor row, of its shape")
        if anchor_emb.shape[0] == 0:
            return (anchor_emb * 0).sum() + (mixed_emb * 0).sum()
        sim = self.distance
        d = sim.paired(sim.prepare(anchor_emb), sim.prepare(mixed_emb))
        pos = torch.relu(sim.margin(d, self.pos_margin))
        neg = torch.relu(sim.margin(self.neg_margin, d))
        return lam * pos.mean() + (1 - lam) * neg.mean()

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The clean contrastive loss plus ``mix_weight`` times the loss of embedding mixtures."""
        clean = self.clean(embeddings, labels)
        a, p, n = self.select(embeddings, labels)
        lam = self.draw_lambda()
        mixed = self.mixed_loss(embeddings[a], self.mix(embeddings, p, n, lam), lam)
        return clean + self.mix_weight * mixed
