"""Preference pairs and lists from human similarity judgements (STS Benchmark).

A sentence that STS-B pairs with several others, each pair scored 0-5 by annotators, is a
prompt with several rated candidates: a candidate rated more similar is preferred. This gives
preference pairs (chosen, rejected, and both scores) and preference lists (all rated candidates
of an anchor with their scores) on real human judgements, for the preference losses
(``pairloss.DPOLoss``, ``pairloss.LiPOLambdaLoss``, ...), with a scoring policy over candidates.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import PairLossError
from ..validation import check_int, check_real
from ._files import as_path, env_data_dir, read_bytes

STSB_DIR = "stsbenchmark"
STSB_SPLITS = ("train", "dev", "test")


def read_sts_scores(path: str | Path) -> list[tuple[str, str, float]]:
    """``(sentence1, sentence2, score)`` of every line of an STS Benchmark file (tab-separated:
    genre, file, year, id, score, sentence1, sentence2; a few lines carry extra columns, which
    are ignored). Raises :class:`PairLossError` naming the file and line for a malformed line."""
    path = as_path(path, "path")
    try:
        text = read_bytes(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PairLossError(f"{path}: not UTF-8 text ({exc})") from exc
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 7:
            raise PairLossError(
                f"{path}: line {number} has {len(parts)} tab-separated fields; expected 7 "
                "(genre, file, year, id, score, sentence1, sentence2)"
            )
        try:
            score = float(parts[4])
        except ValueError:
            raise PairLossError(
                f"{path}: line {number}: score {parts[4]!r} is not a number"
            ) from None
        if not math.isfinite(score):
            raise PairLossError(f"{path}: line {number}: score {parts[4]!r} is not finite")
        rows.append((parts[5], parts[6], score))
    if not rows:
        raise PairLossError(f"{path}: no sentence pairs")
    return rows


def load_sts_scores(split: str, data_dir: str | Path | None = None) -> list[tuple[str, str, float]]:
    """The scored pairs of an STS-B split (``train``, ``dev`` or ``test``) from ``data_dir``
    (the ``stsbenchmark`` folder or a data root holding it; default ``$PAIRLOSS_DATA``)."""
    if split not in STSB_SPLITS:
        raise PairLossError(f"split: expected one of {STSB_SPLITS}, got {split!r}")
    if data_dir is None:
        folder = env_data_dir(STSB_DIR)
        if folder is None:
            raise PairLossError("data_dir: not given and $PAIRLOSS_DATA is not set")
    else:
        folder = as_path(data_dir, "data_dir")
        if not (folder / f"sts-{split}.csv").is_file() and (folder / STSB_DIR).is_dir():
            folder = folder / STSB_DIR
    return read_sts_scores(folder / f"sts-{split}.csv")


@dataclass
class PreferenceLists:
    """Anchors with their rated candidates.

    Attributes:
        anchors: B sentences.
        candidates: for each anchor, its K_b candidate sentences.
        scores: for each anchor, the human similarity score (0-5) of every candidate; a random
            negative (see :func:`preference_lists`) has score 0.
    """

    anchors: list[str]
    candidates: list[list[str]]
    scores: list[list[float]]

    def __len__(self) -> int:
        return len(self.anchors)

    def tensors(self, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores [B, K], mask [B, K])`` padded to the longest list (padding: score 0, mask
        False), for the list losses' ``rewards`` and ``mask``."""
        k = max((len(c) for c in self.candidates), default=0)
        scores = torch.zeros(len(self), k, dtype=dtype)
        mask = torch.zeros(len(self), k, dtype=torch.bool)
        for i, row in enumerate(self.scores):
            scores[i, : len(row)] = torch.tensor(row, dtype=dtype)
            mask[i, : len(row)] = True
        return scores, mask


def preference_lists(
    rows: list[tuple[str, str, float]],
    min_candidates: int = 2,
    random_negatives: int = 0,
    seed: int = 0,
) -> PreferenceLists:
    """Group scored sentence pairs by sentence: every sentence that appears in at least
    ``min_candidates`` pairs whose scores are not all equal becomes an anchor whose candidates
    are its partners, scored as the annotators scored the pair (a pair counts for both of its
    sentences; a partner scored several times, in repeated pairs, gets the mean of its scores,
    and a sentence paired with itself is no candidate). Anchors in order of first appearance,
    candidates in file order.

    ``random_negatives`` adds that many sentences drawn (seeded) from the rest of the split to
    each list with score 0: the assumption, not a human judgement, that an unrelated sentence of
    the corpus is dissimilar. Default 0: only human scores."""
    min_candidates = check_int(min_candidates, "min_candidates", minimum=2)
    random_negatives = check_int(random_negatives, "random_negatives", minimum=0)
    judged: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for a, b, score in rows:
        judged[a].setdefault(b, []).append(score)
        judged[b].setdefault(a, []).append(score)
    partners = {
        anchor: [(c, sum(v) / len(v)) for c, v in cands.items() if c != anchor]
        for anchor, cands in judged.items()
    }
    sentences = list(partners)
    rng = random.Random(seed)
    anchors, candidates, scores = [], [], []
    for anchor, rated in partners.items():
        if len(rated) < min_candidates or len({s for _, s in rated}) < 2:
            continue
        cands = [c for c, _ in rated]
        cand_scores = [s for _, s in rated]
        taken = set(cands) | {anchor}
        while random_negatives and len(cands) < len(rated) + random_negatives:
            other = sentences[rng.randrange(len(sentences))]
            if other not in taken:
                taken.add(other)
                cands.append(other)
                cand_scores.append(0.0)
        anchors.append(anchor)
        candidates.append(cands)
        scores.append(cand_scores)
    return PreferenceLists(anchors, candidates, scores)


@dataclass
class PreferencePairs:
    """(anchor, chosen, rejected) triples with the two human scores."""

    anchors: list[str]
    chosen: list[str]
    rejected: list[str]
    chosen_scores: list[float]
    rejected_scores: list[float]

    def __len__(self) -> int:
        return len(self.anchors)


def preference_pairs(lists: PreferenceLists, min_margin: float = 0.0) -> PreferencePairs:
    """Every pair of candidates of an anchor whose scores differ by more than ``min_margin``:
    the higher-scored one is chosen. Pairs in list order (i before j)."""
    min_margin = check_real(min_margin, "min_margin", low=0.0)
    out = PreferencePairs([], [], [], [], [])
    for anchor, cands, scores in zip(lists.anchors, lists.candidates, lists.scores):
        for i in range(len(cands)):
            for j in range(i + 1, len(cands)):
                if abs(scores[i] - scores[j]) <= min_margin:
                    continue
                hi, lo = (i, j) if scores[i] > scores[j] else (j, i)
                out.anchors.append(anchor)
                out.chosen.append(cands[hi])
                out.rejected.append(cands[lo])
                out.chosen_scores.append(scores[hi])
                out.rejected_scores.append(scores[lo])
    return out
