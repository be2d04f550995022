"""Readers of sentence-pair data: the STS Benchmark and any TSV, CSV or JSONL file of pairs.

A :class:`SentencePairs` holds P pairs of texts with, optionally, a gold similarity score each
(STS: 0 to 5) or an integer label each (e.g. NLI classes); pairs with neither are positive pairs
(for in-batch negatives). Every reader raises :class:`pairloss.PairLossError` naming the file and
the line of the first problem: a missing file, bytes that are not UTF-8, a missing column, an
empty text, a score that is not a finite number, a label that is not an integer, no pair at all.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import PairLossError
from ..validation import check_choice, check_real
from ._files import as_path, env_data_dir, read_bytes

STS_SPLITS = ("train", "dev", "test")
STS_DIR = "stsbenchmark"
# the STS Benchmark's columns: genre, file, year, id, score, sentence1, sentence2 (a few lines
# carry two more columns, the sources, which are ignored)
_STS_COLUMNS = 7
_STS_SCORE, _STS_FIRST, _STS_SECOND = 4, 5, 6


@dataclass
class SentencePairs:
    """P sentence pairs.

    Attributes:
        first, second: the two texts of each pair (lists of P strings).
        scores: float64 [P] gold scores, or None.
        labels: int64 [P] labels, or None.
        source: where the pairs came from (a file path, for messages).
    """

    first: list[str]
    second: list[str]
    scores: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.first)

    def subset(self, index: Sequence[int] | torch.Tensor) -> SentencePairs:
        """The pairs at ``index`` (in that order)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        pick = idx.tolist()
        return SentencePairs(
            [self.first[i] for i in pick],
            [self.second[i] for i in pick],
            None if self.scores is None else self.scores[idx],
            None if self.labels is None else self.labels[idx],
            self.source,
        )

    def positives(self, min_score: float) -> SentencePairs:
        """The pairs whose gold score is at least ``min_score`` (e.g. STS pairs scored 4 or more
        as positive pairs for in-batch negatives), without their scores."""
        if self.scores is None:
            raise PairLossError(f"{self.source}: the pairs have no scores to select positives by")
        keep = (self.scores >= check_real(min_score, "min_score")).nonzero().flatten()
        out = self.subset(keep)
        out.scores = None
        return out


def _text(value: object, source: str, line: int, column: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PairLossError(
            f"{source}:{line}: column {column!r} is empty or not text; expected a sentence"
        )
    return value


def _score(value: object, source: str, line: int, column: str) -> float:
    try:
        x = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x):
        raise PairLossError(
            f"{source}:{line}: column {column!r} holds {value!r}; expected a finite number"
        )
    return x


def _label(value: object, source: str, line: int, column: str) -> int:
    if isinstance(value, bool):
        value = str(value)
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x) or x != int(x) or abs(x) > 2**62:
        raise PairLossError(
            f"{source}:{line}: column {column!r} holds {value!r}; expected an integer label"
        )
    return int(x)


def _decode(path: Path) -> str:
    raw = read_bytes(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PairLossError(
            f"{path}:{line}: bytes that are not UTF-8 text ({exc.reason})"
        ) from None
    return text


def _sts_root(root: str | Path | None) -> Path:
    if root is None:
        root = env_data_dir(STS_DIR)
        if root is None:
            raise PairLossError(
                "root: expected the STS Benchmark folder (holding sts-train.csv, sts-dev.csv, "
                "sts-test.csv), got None and PAIRLOSS_DATA is not set"
            )
    root = as_path(root, "root")
    if not root.is_dir():
        raise PairLossError(f"root: {root} is not a folder; expected the STS Benchmark folder")
    return root


def load_sts_benchmark(split: str, root: str | Path | None = None) -> SentencePairs:
    """One split of the STS Benchmark (Cer et al., SemEval 2017): 5,749 train, 1,500 dev and
    1,379 test sentence pairs with gold similarity scores from 0 to 5.

    Args:
        split: ``"train"``, ``"dev"`` or ``"test"``.
        root: the folder holding ``sts-{split}.csv`` (tab-separated: genre, file, year, id,
            score, sentence1, sentence2; extra trailing columns are ignored); ``None`` means
            ``$PAIRLOSS_DATA/stsbenchmark``.

    Returns:
        :class:`SentencePairs` with ``scores`` (float64, 0-5).
    """
    check_choice(split, "split", STS_SPLITS)
    path = _sts_root(root) / f"sts-{split}.csv"
    text = _decode(path)
    first, second, scores = [], [], []
    for line, row in enumerate(text.splitlines(), start=1):
        if not row.strip():
            continue
        fields = row.split("\t")
        if len(fields) < _STS_COLUMNS:
            raise PairLossError(
                f"{path}:{line}: has {len(fields)} tab-separated fields; expected at least "
                f"{_STS_COLUMNS} (genre, file, year, id, score, sentence1, sentence2)"
            )
        scores.append(_score(fields[_STS_SCORE], str(path), line, "score"))
        first.append(_text(fields[_STS_FIRST], str(path), line, "sentence1"))
        second.append(_text(fields[_STS_SECOND], str(path), line, "sentence2"))
    if not first:
        raise PairLossError(f"{path}: holds no sentence pair")
    return SentencePairs(first, second, torch.tensor(scores, dtype=torch.float64), None, str(path))


FORMATS = ("tsv", "csv", "jsonl")


def read_sentence_pairs(
    path: str | Path,
    format: str | None = None,
    first: str = "sentence1",
    second: str = "sentence2",
    score: str | None = "score",
    label: str | None = "label",
) -> SentencePairs:
    """Sentence pairs from a TSV, CSV (with a header row naming the columns) or JSONL file (one
    JSON object per line).

    Args:
        path: the file (gzip-compressed files are read too).
        format: ``"tsv"``, ``"csv"`` or ``"jsonl"``; by default from the file's suffix
            (``.tsv``/``.txt``, ``.csv``, ``.jsonl``/``.json``).
        first, second: the columns (keys) of the two texts.
        score: the column of a gold score, if the file has it (None: never read one).
        label: the column of an integer label, if the file has it (None: never read one).

    A file with neither a score nor a label column gives positive pairs. TSV fields are taken
    as they are (no quoting); CSV follows the usual quoting rules.

    Returns:
        :class:`SentencePairs` (``scores`` float64 and/or ``labels`` int64 when present).
    """
    path = as_path(path, "path")
    fmt = format if format is not None else _format_of(path)
    check_choice(fmt, "format", FORMATS)
    text = _decode(path)
    rows = _jsonl_rows(text, path) if fmt == "jsonl" else _table_rows(text, path, fmt)
    firsts, seconds, scores, labels = [], [], [], []
    has_score = has_label = None
    for line, row in rows:
        for column in (first, second):
            if column not in row:
                raise PairLossError(
                    f"{path}:{line}: no column {column!r}; expected the columns {first!r} and "
                    f"{second!r} (found {sorted(row)})"
                )
        if has_score is None:
            has_score = score is not None and score in row
            has_label = label is not None and label in row
        firsts.append(_text(row[first], str(path), line, first))
        seconds.append(_text(row[second], str(path), line, second))
        if has_score:
            scores.append(_score(row.get(score), str(path), line, score))
        if has_label:
            labels.append(_label(row.get(label), str(path), line, label))
    if not firsts:
        raise PairLossError(f"{path}: holds no sentence pair")
    return SentencePairs(
        firsts,
        seconds,
        torch.tensor(scores, dtype=torch.float64) if has_score else None,
        torch.tensor(labels, dtype=torch.int64) if has_label else None,
        str(path),
    )


def _format_of(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    suffix = suffixes[-1] if suffixes else ""
    table = {".tsv": "tsv", ".txt": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
    if suffix not in table:
        raise PairLossError(
            f"format: cannot tell the format of {path} from its suffix; expected .tsv, .csv or "
            ".jsonl, or format= one of " + ", ".join(FORMATS)
        )
    return table[suffix]


def _table_rows(text: str, path: Path, fmt: str):
    if fmt == "tsv":
        reader = csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(io.StringIO(text))
    header = None
    try:
        for row in reader:
            line = reader.line_num
            if not row or all(not field.strip() for field in row):
                continue
            if header is None:
                header = [field.strip() for field in row]
                continue
            if len(row) != len(header):
                raise PairLossError(
                    f"{path}:{line}: has {len(row)} fields but the header has {len(header)}; "
                    "expected one field per column"
                )
            yield line, dict(zip(header, row))
    except csv.Error as exc:
        raise PairLossError(f"{path}:{reader.line_num}: not valid {fmt.upper()} ({exc})") from None


def _jsonl_rows(text: str, path: Path):
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise PairLossError(f"{path}:{line}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise PairLossError(
                f"{path}:{line}: expected a JSON object per line, got {type(row).__name__}"
            )
        yield line, row
