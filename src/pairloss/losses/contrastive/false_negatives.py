"""False negatives of in-batch contrastive losses: cells to drop from a softmax because the
candidate is not really a negative.

- :class:`DuplicateIds`: the same text twice in a batch. Every example carries the id of its
  query and of its positive document (e.g. a hash of the text); a candidate whose id equals the
  anchor's own query or positive is dropped.
- :class:`GuideFilter`: a guide model's judgement (GISTEmbed, Solatorio 2024): candidate j of
  anchor i is dropped when the guide scores it above the guide's score of the positive pair
  less a margin. The ``relative`` margin scales with the positive's magnitude,
  ``g_ii - |g_ii| * margin``, so that it lowers the threshold for negative guide scores too
  (``g_ii * (1 - margin)`` would raise it).

A filter is asked for one block of rows of one panel at a time (:meth:`block`), so no B x N
mask is ever stored. Panels name their anchor and candidate roles: ``"query"``, ``"doc"``
(rows of the positives and any hard-negative rows after them).
"""

from __future__ import annotations

import torch

from ...errors import PairLossError
from ...similarity import normalize_rows
from ...validation import check_choice, check_embeddings, check_real, check_tensor


def _ids(ids: object, n: int, name: str, device) -> torch.Tensor:
    ids = check_tensor(ids, name)
    if ids.dim() != 1 or ids.shape[0] != n:
        raise PairLossError(
            f"{name}: expected a 1-D tensor of {n} ids, got shape {tuple(ids.shape)}"
        )
    if ids.is_floating_point() or ids.is_complex():
        raise PairLossError(f"{name}: expected integer ids, got dtype {ids.dtype}")
    return ids.to(device)


class DuplicateIds:
    """Drop candidates that repeat an anchor's own query or positive document.

    Args:
        query_ids: [B] integer ids of the queries (equal ids: the same query text).
        doc_ids: [N] integer ids of the documents (the B positives first, then any hard
            negatives); equal ids: the same document text.
        n_rows: B.
        device: where the masks are built.

    A query candidate ``j`` (or a positive document ``j < B``) is a duplicate of row ``i`` when
    example ``j`` has row ``i``'s query id or positive-document id; a hard-negative document is
    a duplicate when it has row ``i``'s positive-document id. The positive cell itself and self
    cells are left to the loss.
    """

    def __init__(
        self,
        query_ids: torch.Tensor | None,
        doc_ids: torch.Tensor | None,
        n_rows: int,
        n_docs: int,
        device,
    ) -> None:
        self.n_rows = n_rows
        self.query_ids = None if query_ids is None else _ids(query_ids, n_rows, "query_ids", device)
        self.doc_ids = None if doc_ids is None else _ids(doc_ids, n_docs, "doc_ids", device)

    def block(self, anchor: str, candidate: str, start: int, end: int, n_cols: int):
        """Boolean [end - start, n_cols] mask of duplicate cells (None when nothing is known)."""
        mask = None
        qi = None if self.query_ids is None else self.query_ids[start:end, None]
        di = None if self.doc_ids is None else self.doc_ids[start:end, None]
        n = self.n_rows
        if candidate == "query":
            parts = []
            if qi is not None:
                parts.append(qi == self.query_ids[None, :])
            if di is not None:
                parts.append(di == self.doc_ids[None, :n])
            for p in parts:
                mask = p if mask is None else mask | p
            return mask
        if di is not None:
            mask = di == self.doc_ids[None, :n_cols]
        if qi is not None:
            same_query = torch.zeros(end - start, n_cols, dtype=torch.bool, device=qi.device)
            same_query[:, :n] = qi == self.query_ids[None, :]
            mask = same_query if mask is None else mask | same_query
        return mask


class GuideFilter:
    """Drop candidates that a guide model scores above the positive (GISTEmbed).

    Args:
        guides: guide embeddings aligned with the loss's tensors (same rows), e.g.
            ``[guide_queries, guide_docs]``; cosine similarity is used, as in GISTEmbed.
        margin: 0 by default.
        strategy: ``"absolute"`` (threshold ``g_ii - margin``) or ``"relative"`` (threshold
            ``g_ii - |g_ii| * margin``, correct for negative guide scores).

    A cell is dropped when its guide score is strictly above the threshold of its row, where
    ``g_ii`` is the guide's score of row i's positive pair (query i with document i).
    """

    def __init__(
        self, guides: list[torch.Tensor], margin: float = 0.0, strategy: str = "absolute"
    ) -> None:
        self.margin = check_real(margin, "margin")
        self.strategy = check_choice(strategy, "margin_strategy", ("absolute", "relative"))
        self.guides = [
            normalize_rows(check_embeddings(g, f"guides[{k}]").detach())
            for k, g in enumerate(guides)
        ]
        q, d = self.guides[0], self.guides[1]
        n = q.shape[0]
        positive = (q * d[:n]).sum(dim=1)
        if self.strategy == "absolute":
            self.threshold = positive - self.margin
        else:
            self.threshold = positive - positive.abs() * self.margin

    def block(self, a: int, c: int, start: int, end: int) -> torch.Tensor:
        """Boolean mask of the cells of guide tensor ``a``'s rows ``start:end`` against guide
        tensor ``c`` that score above their row's threshold."""
        g = self.guides[a][start:end] @ self.guides[c].T
        return g > self.threshold[start:end, None].to(g.dtype)
