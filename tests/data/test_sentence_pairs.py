"""Sentence-pair readers: the STS Benchmark and TSV / CSV / JSONL pairs; bad files name the file
and the line."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from pairloss.data.sentence_pairs import load_sts_benchmark, read_sentence_pairs
from pairloss.errors import PairLossError

STS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "stsbenchmark"


@pytest.mark.skipif(not STS.is_dir(), reason="the shared STS Benchmark copy is not here")
def test_sts_benchmark_splits():
    sizes = {"train": 5749, "dev": 1500, "test": 1379}
    for split, n in sizes.items():
        pairs = load_sts_benchmark(split, STS)
        assert len(pairs) == n and pairs.scores.shape == (n,)
        assert float(pairs.scores.min()) >= 0.0 and float(pairs.scores.max()) <= 5.0
    test = load_sts_benchmark("test", STS)
    assert test.first[0] == "A girl is styling her hair."
    assert test.second[0] == "A girl is brushing her hair."
    assert float(test.scores[0]) == 2.5
    positives = load_sts_benchmark("train", STS).positives(4.0)
    assert len(positives) == 1406 and positives.scores is None


def test_sts_layout_and_env(tmp_path, monkeypatch):
    folder = tmp_path / "stsbenchmark"
    folder.mkdir()
    line = "main-captions\tMSRvid\t2012test\t0001\t{}\tA {}.\tThe {}.\textra\tcolumns\r\n"
    (folder / "sts-dev.csv").write_text("".join(line.format(s, s, s) for s in (1.0, 4.5, 0.0)))
    monkeypatch.setenv("PAIRLOSS_DATA", str(tmp_path))
    pairs = load_sts_benchmark("dev")
    assert pairs.first == ["A 1.0.", "A 4.5.", "A 0.0."]
    assert torch.equal(pairs.scores, torch.tensor([1.0, 4.5, 0.0], dtype=torch.float64))
    (folder / "sts-test.csv").write_text("g\tf\ty\t1\tfive\ta\tb\n")
    with pytest.raises(PairLossError, match=r"sts-test.csv:1: column 'score'"):
        load_sts_benchmark("test")
    (folder / "sts-train.csv").write_text("g\tf\ty\t1\t2.0\ta\tb\ng\tf\ty\t2\t3.0\tonly six\n")
    with pytest.raises(PairLossError, match=r"sts-train.csv:2: has 6 tab-separated fields"):
        load_sts_benchmark("train")
    with pytest.raises(PairLossError, match="split"):
        load_sts_benchmark("validation")
    monkeypatch.delenv("PAIRLOSS_DATA")
    with pytest.raises(PairLossError, match="PAIRLOSS_DATA"):
        load_sts_benchmark("dev")


def test_tsv_csv_jsonl_with_scores_labels_or_neither(tmp_path):
    (tmp_path / "a.tsv").write_text(
        'sentence1\tsentence2\tscore\nA "quoted" cat.\tA cat.\t4.2\nx\ty\t0\n'
    )
    pairs = read_sentence_pairs(tmp_path / "a.tsv")
    assert pairs.first == ['A "quoted" cat.', "x"] and pairs.labels is None
    assert pairs.scores.tolist() == [4.2, 0.0]
    (tmp_path / "b.csv").write_text('premise,hypothesis,label\n"A, b",c,2\nd,e,0\n')
    pairs = read_sentence_pairs(tmp_path / "b.csv", first="premise", second="hypothesis")
    assert pairs.first == ["A, b", "d"] and pairs.labels.tolist() == [2, 0] and pairs.scores is None
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as f:
        f.write(
            '{"sentence1": "q1", "sentence2": "d1"}\n\n{"sentence1": "q2", "sentence2": "d2"}\n'
        )
    pairs = read_sentence_pairs(tmp_path / "c.jsonl.gz")
    assert pairs.second == ["d1", "d2"] and pairs.scores is None and pairs.labels is None


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("m.tsv", "sentence1\tother\nx\ty\n", r"m.tsv:2: no column 'sentence2'"),
        ("f.tsv", "sentence1\tsentence2\nx\ty\tz\n", r"f.tsv:2: has 3 fields"),
        ("s.csv", "sentence1,sentence2,score\nx,y,nan\n", r"s.csv:2: column 'score' holds 'nan'"),
        ("l.csv", "sentence1,sentence2,label\nx,y,1.5\n", r"l.csv:2: column 'label' holds '1.5'"),
        (
            "e.jsonl",
            '{"sentence1": "", "sentence2": "y"}\n',
            r"e.jsonl:1: column 'sentence1' is empty",
        ),
        (
            "j.jsonl",
            '{"sentence1": "x", "sentence2": "y"}\n[1, 2]\n',
            r"j.jsonl:2: expected a JSON object",
        ),
        ("b.jsonl", '{"sentence1": "x", "sentence2": "y"}\n{oops}\n', r"b.jsonl:2: not valid JSON"),
        (
            "t.jsonl",
            '{"sentence1": 3, "sentence2": "y"}\n',
            r"t.jsonl:1: column 'sentence1' is empty or not text",
        ),
        ("n.tsv", "sentence1\tsentence2\n", r"n.tsv: holds no sentence pair"),
        ("x.xml", "<a/>", r"format: cannot tell the format"),
    ],
)
def test_bad_files_name_the_file_and_line(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(PairLossError, match=message):
        read_sentence_pairs(tmp_path / name)


def test_unreadable_files(tmp_path):
    (tmp_path / "u.tsv").write_bytes(b"sentence1\tsentence2\nok\tfine\n\xff\xfe\tbad\n")
    with pytest.raises(PairLossError, match=r"u.tsv:3: bytes that are not UTF-8"):
        read_sentence_pairs(tmp_path / "u.tsv")
    with pytest.raises(PairLossError, match="file not found"):
        read_sentence_pairs(tmp_path / "missing.tsv")
    with pytest.raises(PairLossError, match="path"):
        read_sentence_pairs(3)
