"""Offline hard-negative mining from a corpus (FAISS or exact search), with false-negative
margins, as sentence-transformers' ``mine_hard_negatives`` selects its candidates (and the
NV-Retriever paper's positive-aware filters, Moreira et al. 2024)."""

from __future__ import annotations

import torch

from ..errors import PairLossError
from ..validation import check_bool, check_choice, check_embeddings, check_int, check_real


def _candidates(queries, corpus, k: int, use_faiss: bool, batch_size: int):
    """The k highest-scoring corpus rows of every query (inner products) and their scores."""
    if use_faiss:
        import faiss

        index = faiss.IndexFlatIP(corpus.shape[1])
        index.add(corpus.float().cpu().numpy())
        scores, found = [], []
        for start in range(0, queries.shape[0], batch_size):
            s, f = index.search(queries[start : start + batch_size].float().cpu().numpy(), k)
            scores.append(torch.from_numpy(s))
            found.append(torch.from_numpy(f))
        return torch.cat(scores).to(queries.dtype), torch.cat(found).long()
    scores, found = [], []
    for start in range(0, queries.shape[0], batch_size):
        s, f = torch.topk(queries[start : start + batch_size] @ corpus.T, k, dim=1)
        scores.append(s)
        found.append(f)
    return torch.cat(scores), torch.cat(found)


def mine_hard_negatives(
    queries: torch.Tensor,
    corpus: torch.Tensor,
    positives: torch.Tensor,
    num_negatives: int = 3,
    *,
    similarity: str = "cosine",
    range_min: int = 0,
    range_max: int | None = None,
    absolute_margin: float | None = None,
    relative_margin: float | None = None,
    max_score: float | None = None,
    min_score: float | None = None,
    exclude: torch.Tensor | None = None,
    sampling_strategy: str = "top",
    use_faiss: bool = True,
    batch_size: int = 16384,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The hard negatives of every query from a corpus: its highest-scoring corpus rows that
    are not its positive and pass the false-negative filters.

    With s the score of a candidate and s+ the score of the query's positive:

    - the candidates are the corpus rows ranked ``range_min`` .. ``range_max`` - 1 by score (the
      positive, ``exclude``\ d rows and the filtered ones removed first);
    - ``absolute_margin`` m keeps a candidate only if s <= s+ - m (a candidate scoring within m
      of the positive is a probable false negative);
    - ``relative_margin`` r keeps it only if s <= s+ - r |s+|: r of the positive score's
      *magnitude* below it, so that the rule stays a margin below the positive when s+ < 0
      (the naive s <= s+ (1 - r) would move the bound above the positive there);
    - ``max_score`` / ``min_score`` bound s itself.

    ``sampling_strategy="top"`` takes the ``num_negatives`` highest remaining candidates,
    ``"random"`` draws them uniformly from the remaining candidates (``generator``). These are
    sentence-transformers' ``mine_hard_negatives`` rules (its sign-safe relative margin
    included), on embeddings you give, without a model or a dataset.

    Args:
        queries: [Q, D] query (anchor) embeddings.
        corpus: [N, D] corpus embeddings.
        positives: [Q] the corpus index of each query's positive.
        num_negatives: negatives per query.
        similarity: ``"cosine"`` (the embeddings are L2-normalised) or ``"dot"``.
        exclude: optional [Q] corpus index of each query itself (when the queries are in the
            corpus), never a negative; -1 for none.
        use_faiss: search with a FAISS flat inner-product index (``faiss-cpu``); False uses an
            exact torch top-k (the same candidates up to ties).
        batch_size: queries per search.

    Returns:
        ``(negatives, scores)``, both [Q, num_negatives]: corpus indices (-1 where a query has
        fewer candidates left) and their scores (-inf there).
    """
    queries = check_embeddings(queries, "queries")
    corpus = check_embeddings(corpus, "corpus")
    if corpus.shape[1] != queries.shape[1]:
        raise PairLossError("corpus: expected the queries' embedding size")
    n, q = corpus.shape[0], queries.shape[0]
    positives = torch.as_tensor(positives)
    if positives.shape != (q,) or positives.is_floating_point():
        raise PairLossError(f"positives: expected [{q}] corpus indices, one per query")
    if q and (int(positives.min()) < 0 or int(positives.max()) >= n):
        raise PairLossError(f"positives: expected corpus indices in [0, {n})")
    num_negatives = check_int(num_negatives, "num_negatives", minimum=1)
    check_choice(similarity, "similarity", ("cosine", "dot"))
    range_min = check_int(range_min, "range_min", minimum=0)
    check_choice(sampling_strategy, "sampling_strategy", ("top", "random"))
    use_faiss = check_bool(use_faiss, "use_faiss")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    margins = {}
    for name, value in (
        ("absolute_margin", absolute_margin),
        ("relative_margin", relative_margin),
        ("max_score", max_score),
        ("min_score", min_score),
    ):
        margins[name] = None if value is None else check_real(value, name)
    if range_max is None:
        filtered = any(v is not None for v in margins.values())
        range_max = range_min + num_negatives * (10 if filtered else 1)
    range_max = check_int(range_max, "range_max", minimum=range_min + 1)
    if similarity == "cosine":
        queries = torch.nn.functional.normalize(queries, dim=1)
        corpus = torch.nn.functional.normalize(corpus, dim=1)
    extra = 2  # room for the positive and the query itself among the retrieved
    k = min(n, range_max + extra)
    scores, found = _candidates(queries.detach(), corpus.detach(), k, use_faiss, batch_size)
    positives = positives.to(found.device).long()
    pos_score = (queries.detach() * corpus.detach()[positives]).sum(dim=1).to(scores.dtype)
    drop = found == positives[:, None]
    if exclude is not None:
        exclude = torch.as_tensor(exclude).to(found.device).long()
        if exclude.shape != (q,):
            raise PairLossError(f"exclude: expected [{q}] corpus indices (-1 for none)")
        drop |= found == exclude[:, None]
    drop |= found < 0
    kept = scores.masked_fill(drop, float("-inf"))
    # rank window: drop the positive and the query first, then keep ranks range_min..range_max
    order = torch.argsort(drop.to(torch.int8), dim=1, stable=True)
    kept, found = kept.gather(1, order), found.gather(1, order)
    kept[:, :range_min] = float("-inf")
    kept[:, range_max:] = float("-inf")
    if margins["absolute_margin"] is not None:
        kept = kept.masked_fill(
            kept > pos_score[:, None] - margins["absolute_margin"], float("-inf")
        )
    if margins["relative_margin"] is not None:
        bound = pos_score - pos_score.abs() * margins["relative_margin"]
        kept = kept.masked_fill(kept > bound[:, None], float("-inf"))
    if margins["max_score"] is not None:
        kept = kept.masked_fill(kept > margins["max_score"], float("-inf"))
    if margins["min_score"] is not None:
        kept = kept.masked_fill(kept < margins["min_score"], float("-inf"))
    alive = torch.isfinite(kept)
    if sampling_strategy == "top":
        top, pos = torch.topk(kept, min(num_negatives, kept.shape[1]), dim=1)
    else:
        noise = torch.rand(kept.shape, generator=generator).to(kept.device)
        key = torch.where(alive, noise, -1.0)
        _, pos = torch.topk(key, min(num_negatives, kept.shape[1]), dim=1)
        top = kept.gather(1, pos)
    negatives = torch.where(torch.isfinite(top), found.gather(1, pos), -1)
    if negatives.shape[1] < num_negatives:
        pad = num_negatives - negatives.shape[1]
        negatives = torch.nn.functional.pad(negatives, (0, pad), value=-1)
        top = torch.nn.functional.pad(top, (0, pad), value=float("-inf"))
    return negatives, top
