"""svmlight / LibSVM ranking files with query groups, and their slates.

A line is ``label [qid:Q] index:value index:value ... [# comment]``. Documents of one query are
consecutive; the groups come from the ``qid:`` fields, or from a query file (one number of
documents per line, in order: LightGBM's ``*.query`` files, looked up next to the data file as
``<file>.query`` when not given). Feature indices are 1-based by default (the LibSVM
convention); features that a line does not list are 0.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import PairLossError
from ..validation import check_bool, check_int
from ._files import as_path, env_data_dir, read_bytes

_LINE = re.compile(r"[^\s:]+(?:\s+(?:qid|\d+):[^\s:]+)*")
"""A data line (comment removed): a label, then ``qid:Q`` or ``index:value`` tokens."""

LAMBDARANK_DIR = "lambdarank"
"""Folder of LightGBM's learning-to-rank example under the data root (``rank.train``,
``rank.test`` and their ``.query`` files)."""


@dataclass
class RankingData:
    """Documents grouped by query.

    Attributes:
        features: [N, D] float32, documents of one query consecutive.
        labels: [N] float32 graded relevance.
        query_sizes: [Q] int64 documents per query, in order (sum N).
        query_ids: [Q] int64 the ``qid`` of each query (0..Q-1 when the file has none).
        source: where the data came from.
    """

    features: torch.Tensor
    labels: torch.Tensor
    query_sizes: torch.Tensor
    query_ids: torch.Tensor
    source: str = ""

    @property
    def n_queries(self) -> int:
        return int(self.query_sizes.numel())

    def select_queries(self, queries: torch.Tensor) -> RankingData:
        """The queries at the indices ``queries`` [q] (int64, in the order given) with their
        documents."""
        starts = torch.cumsum(self.query_sizes, 0) - self.query_sizes
        sizes = self.query_sizes[queries]
        rows = torch.cat(
            [torch.arange(int(starts[i]), int(starts[i] + self.query_sizes[i])) for i in queries]
            or [torch.empty(0, dtype=torch.int64)]
        )
        return RankingData(
            self.features[rows], self.labels[rows], sizes, self.query_ids[queries], self.source
        )

    def query_of_document(self) -> torch.Tensor:
        """[N] the query index of every document."""
        return torch.repeat_interleave(torch.arange(self.n_queries), self.query_sizes)

    def slates(
        self, max_items: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(features [Q, L, D], relevance [Q, L], mask [Q, L])`` with ``L`` the longest
        query (or ``max_items``: longer queries keep their first ``max_items`` documents).
        Padded slots have zero features, relevance -1 (allRank's convention) and mask False."""
        if max_items is not None:
            max_items = check_int(max_items, "max_items", minimum=1)
        longest = int(self.query_sizes.max()) if self.n_queries else 0
        width = longest if max_items is None else min(longest, max_items)
        q = self.n_queries
        starts = torch.cumsum(self.query_sizes, 0) - self.query_sizes
        pos = torch.arange(width)[None, :]
        mask = pos < self.query_sizes.clamp(max=width)[:, None]
        index = (starts[:, None] + pos).clamp(max=max(0, self.features.shape[0] - 1))
        feats = torch.where(
            mask[:, :, None], self.features[index], torch.zeros((), dtype=self.features.dtype)
        )
        rel = torch.where(mask, self.labels[index], torch.full((q, width), -1.0))
        return feats, rel, mask


def _parse_number(token: str, path: Path, line: int, what: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise PairLossError(
            f"{path}: line {line}: {what} {token!r} is not a number; expected "
            "'label [qid:Q] index:value ...'"
        ) from None
    if not math.isfinite(value):
        raise PairLossError(f"{path}: line {line}: {what} {token!r} is not finite")
    return value


def read_svmlight(
    path: str | Path,
    query_path: str | Path | None = None,
    n_features: int | None = None,
    zero_based: bool = False,
) -> RankingData:
    """Read an svmlight / LibSVM ranking file (plain or gzip).

    Args:
        path: the data file.
        query_path: a query-size file (one count per line). Default: ``<path>.query`` if it
            exists, else the ``qid:`` fields; a file with neither is an error.
        n_features: number of feature columns (default: the largest index seen).
        zero_based: feature indices start at 0 (default False: at 1, the LibSVM convention).

    Raises:
        PairLossError: naming the file (and line) for a missing file, a malformed line, a
        repeated feature index, an index out of range, or query groups that do not match the
        documents.
    """
    path = as_path(path, "path")
    zero_based = check_bool(zero_based, "zero_based")
    text = _text(path)
    offset = 0 if zero_based else 1
    rows: list[tuple[float, int | None, list[int], list[float]]] = []
    top = -1
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        tokens = line.split()
        row = _fast_line(tokens, offset) if _LINE.fullmatch(line) else None
        if row is None:  # something is wrong: find it and say what
            _check_line(tokens, path, number, offset)
        rows.append(row)
        if row[2]:
            top = max(top, max(row[2]))
    if not rows:
        raise PairLossError(f"{path}: no documents; expected svmlight lines")
    width = top + 1 if n_features is None else check_int(n_features, "n_features", minimum=1)
    if top >= width:
        raise PairLossError(
            f"n_features: {width} but {path} has feature index {top + (0 if zero_based else 1)}"
        )
    row_index = [i for i, r in enumerate(rows) for _ in r[2]]
    col_index = [c for r in rows for c in r[2]]
    values = [v for r in rows for v in r[3]]
    features = torch.zeros(len(rows), width, dtype=torch.float32)
    features[row_index, col_index] = torch.tensor(values, dtype=torch.float32)
    labels = torch.tensor([r[0] for r in rows], dtype=torch.float32)
    sizes, ids = _groups(path, query_path, [r[1] for r in rows])
    return RankingData(features, labels, sizes, ids, str(path))


def _fast_line(tokens: list[str], offset: int):
    """``(label, qid, indices, values)`` of a well-formed line, or None if anything is off."""
    try:
        label = float(tokens[0])
        qid = None
        idx, vals = [], []
        for token in tokens[1:]:
            key, _, value = token.partition(":")
            if key == "qid":
                qid = int(value)
            else:
                idx.append(int(key) - offset)
                vals.append(float(value))
    except ValueError:
        return None
    values_ok = all(map(math.isfinite, vals)) and math.isfinite(label)
    if not values_ok or (idx and min(idx) < 0) or len(set(idx)) != len(idx):
        return None
    return label, qid, idx, vals


def _check_line(tokens: list[str], path: Path, number: int, offset: int) -> None:
    """Raise the :class:`PairLossError` that says what is wrong with a line."""
    _parse_number(tokens[0], path, number, "label")
    seen: set[int] = set()
    for token in tokens[1:]:
        key, sep, value = token.partition(":")
        if not sep:
            raise PairLossError(
                f"{path}: line {number}: token {token!r} has no ':'; expected index:value"
            )
        if key == "qid":
            qid = _parse_number(value, path, number, "qid")
            if qid != int(qid):
                raise PairLossError(f"{path}: line {number}: qid {value!r} is not an integer")
            continue
        if not key.isdigit():
            raise PairLossError(
                f"{path}: line {number}: feature index {key!r} is not a non-negative integer"
            )
        if int(key) - offset < 0:
            raise PairLossError(
                f"{path}: line {number}: feature index 0 with 1-based indices; pass "
                "zero_based=True for files whose indices start at 0"
            )
        if int(key) in seen:
            raise PairLossError(f"{path}: line {number}: feature index {key} repeated")
        seen.add(int(key))
        _parse_number(value, path, number, f"value of feature {key}")
    raise PairLossError(f"{path}: line {number}: cannot be read as 'label [qid:Q] index:value'")


def _text(path: Path) -> str:
    try:
        return read_bytes(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PairLossError(f"{path}: not UTF-8 text ({exc}); expected an svmlight file") from exc


def _groups(path: Path, query_path, qids: list[int | None]) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(qids)
    default = Path(str(path) + ".query")
    if query_path is None and default.is_file():
        query_path = default
    if query_path is not None:
        query_path = as_path(query_path, "query_path")
        counts = []
        for number, raw in enumerate(_text(query_path).splitlines(), start=1):
            if raw.strip():
                value = raw.strip()
                if not value.isdigit() or int(value) == 0:
                    raise PairLossError(
                        f"{query_path}: line {number}: {value!r}; expected a number of documents "
                        ">= 1"
                    )
                counts.append(int(value))
        if sum(counts) != n:
            raise PairLossError(
                f"{query_path}: the query sizes add up to {sum(counts)} but {path} has {n} "
                "documents; expected the same number"
            )
        sizes = torch.tensor(counts, dtype=torch.int64)
        return sizes, torch.arange(sizes.numel())
    if any(q is None for q in qids):
        raise PairLossError(
            f"{path}: has no query groups: no qid: fields on every line and no query file "
            f"({default.name}); expected one of them"
        )
    sizes, ids = [], []
    for q in qids:
        if ids and ids[-1] == q:
            sizes[-1] += 1
        else:
            if q in ids:
                raise PairLossError(
                    f"{path}: qid {q} appears in two separate runs of lines; expected the "
                    "documents of a query to be consecutive"
                )
            ids.append(q)
            sizes.append(1)
    return torch.tensor(sizes, dtype=torch.int64), torch.tensor(ids, dtype=torch.int64)


def load_lambdarank(data_dir: str | Path | None = None) -> tuple[RankingData, RankingData]:
    """LightGBM's learning-to-rank example: ``(train, test)`` from ``rank.train`` and
    ``rank.test`` with their ``.query`` files (3,005 documents in 201 queries and 768 in 50;
    graded labels 0-4; 300 features). ``data_dir``: the folder holding the files, or a data
    root with a ``lambdarank/`` folder (default: ``$PAIRLOSS_DATA/lambdarank``)."""
    if data_dir is None:
        folder = env_data_dir(LAMBDARANK_DIR)
        if folder is None:
            raise PairLossError(
                "data_dir: not given and $PAIRLOSS_DATA is not set; expected the folder of "
                "LightGBM's lambdarank example (rank.train, rank.test, *.query)"
            )
    else:
        folder = as_path(data_dir, "data_dir")
        if not (folder / "rank.train").is_file() and (folder / LAMBDARANK_DIR).is_dir():
            folder = folder / LAMBDARANK_DIR
    train = read_svmlight(folder / "rank.train")
    test = read_svmlight(folder / "rank.test", n_features=train.features.shape[1])
    return train, test
