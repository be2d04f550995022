"""A symmetric InfoNCE with open_clip's call, for the benchmark's smoke test (the CLIP loss of
the two-tower family is what the benchmark is for)."""

from __future__ import annotations

import torch
from torch import nn

import pairloss


class SymmetricInfoNCE(nn.Module):
    """(InfoNCE of images against texts + of texts against images) / 2, logits scaled by
    ``logit_scale``: open_clip's ClipLoss value, as two NT-Xent passes."""

    def forward(self, image_features, text_features, logit_scale):
        ids = torch.arange(image_features.shape[0])
        t = 1.0 / float(logit_scale)
        loss = pairloss.NTXentLoss(temperature=t, distance=pairloss.DotProductSimilarity())
        rows = loss(image_features, ids, ref_emb=text_features, ref_labels=ids.clone())
        cols = loss(text_features, ids, ref_emb=image_features, ref_labels=ids.clone())
        return (rows + cols) / 2
