"""HTML reports: self-contained, escaped, robust to missing parts; leaderboard order; PCA."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
import torch

from pairloss.errors import PairLossError
from pairloss.train.report import pca_2d, write_leaderboard, write_report

IMG = '<img src="data:image/png;base64,'


def _history(n: int = 3) -> list[dict]:
    return [
        {
            "epoch": e,
            "train_loss": 1.0 / e,
            "recall@1": 0.5 + 0.1 * e,
            "recall@2": 0.6 + 0.1 * e,
            "map@r": 0.2 + 0.05 * e,
            "seconds": 1.5,
        }
        for e in range(1, n + 1)
    ]


def _full_report(path, **over):
    g = torch.Generator().manual_seed(0)
    parts = dict(
        title="run <script>alert(1)</script>",
        config={"loss": "ms", "lr": 1e-3, "note": "<script>alert('x')</script>", "batch": {"m": 4}},
        history=_history(),
        before={"pos": torch.rand(50, generator=g), "neg": np.random.default_rng(0).random(300)},
        after={
            "pos": [0.9, 0.8, 0.7, float("nan")],
            "neg": torch.rand(80, generator=g),
            "auc": 0.91,
        },
        representations={
            "raw pixels": {"seen": {"map@r": 0.1, "recall@1": 0.7}, "unseen": {"map@r": 0.4}},
            "trained": {"seen": {"map@r": 0.3, "recall@1": 0.8}, "unseen": {"map@r": 0.2}},
        },
        settings={"seen": "seen classes", "unseen": "unseen classes"},
        headline="seen",
        verdict="training changed MAP@R 0.100 -> 0.300",
        notes=["a <note>"],
        pair_weight_curve={
            "pos_sim": torch.linspace(-1, 1, 40),
            "pos_weight": torch.rand(40, generator=g),
            "neg_sim": np.linspace(-1, 1, 60),
            "neg_weight": np.ones(60),
            "loss": "multi_similarity",
        },
        projection={
            "xy": torch.randn(60, 2, generator=g),
            "labels": torch.arange(60) % 3,
            "class_names": ["a", "b", "<c>"],
        },
    )
    parts.update(over)
    return write_report(path, **parts)


def _images(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'base64,([A-Za-z0-9+/=]+)"', text)]


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "sub" / "report.html"
    out = _full_report(path)
    assert out == path and out.exists()
    return out.read_text(encoding="utf-8")


def test_full_report_is_self_contained(full_report):
    text = full_report
    assert IMG in text
    images = _images(text)
    assert len(images) == 5  # loss, metrics, histograms, pair weights, projection
    assert all(img.startswith(b"\x89PNG") for img in images)
    assert "http://" not in text and "https://" not in text
    assert "<link" not in text and "<script" not in text.lower() and 'src="data:' in text
    for expected in ("MAP@R", "Recall@1", "raw pixels", "trained", "0.3000", "AUC 0.910"):
        assert expected in text


def test_first_screen_is_the_verdict_and_the_table_best_first(full_report):
    text = full_report
    first_heading = text.index("<h2>")
    assert text.index("training changed MAP@R 0.100 -&gt; 0.300") < text.index(
        "<h2>", first_heading + 1
    )
    table = text[first_heading : text.index("</table>")]
    assert table.index("trained") < table.index("raw pixels")  # 0.3 before 0.1 on "seen"
    assert "MAP@R, seen classes" in table and "MAP@R, unseen classes" in table
    assert "<b>0.4000</b>" in table  # best of its column even in a lower row
    assert "a &lt;note&gt;" in text
    assert text.index("Training curves") < text.index("Configuration")


def test_strings_are_escaped(full_report):
    text = full_report
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "<script>" not in text


def test_missing_parts_are_skipped_with_notes(tmp_path):
    out = write_report(
        tmp_path / "empty.html",
        title="nothing",
        config=None,
        history=[],
        before=None,
        after=None,
        representations=None,
        pair_weight_curve=None,
        projection=None,
    )
    text = out.read_text(encoding="utf-8")
    assert IMG not in text
    assert "No training history given" in text and "No pair similarities given" in text
    assert "No pair weights given" in text and "No projection given" in text


def test_partial_parts(tmp_path):
    out = _full_report(
        tmp_path / "partial.html",
        history=[{"epoch": 1, "train_loss": 0.5}],  # no metrics yet
        before={"pos": [], "neg": []},
        after={"pos": torch.rand(10), "neg": torch.rand(10)},
        pair_weight_curve={"pos_sim": [0.1, 0.2], "pos_weight": [1.0, 0.5]},  # no negatives
        projection={"xy": np.zeros((0, 2)), "labels": []},
    )
    text = out.read_text(encoding="utf-8")
    assert "No Recall@K or MAP@R values" in text
    assert "Before training: no similarities given." in text
    assert "No projected points given" in text
    assert len(_images(text)) == 3  # loss, histogram (after only), pair weights


@pytest.mark.parametrize(
    "over, arg",
    [
        ({"title": 3}, "title"),
        ({"config": [1, 2]}, "config"),
        ({"history": {"epoch": 1}}, "history"),
        ({"history": [1, 2]}, r"history\[0\]"),
        ({"representations": {"raw": 0.3}}, r"representations\['raw'\]"),
        ({"representations": {"raw": {"seen": 0.3}}}, r"representations\['raw'\]"),
        ({"projection": {"xy": torch.zeros(4, 3), "labels": [0] * 4}}, r"projection\['xy'\]"),
        ({"projection": {"xy": torch.zeros(4, 2), "labels": [0] * 3}}, r"projection\['labels'\]"),
        ({"pair_weight_curve": {"pos_sim": [0.1], "pos_weight": [1, 2]}}, "pair_weight_curve"),
        ({"pair_weight_curve": {"neg_sim": [0.1]}}, "pair_weight_curve: 'neg_weight' is missing"),
        ({"projection": {"xy": torch.zeros(2, 2), "labels": [0.5, 1]}}, r"projection\['labels'\]"),
        ({"before": {"pos": ["a"], "neg": []}}, r"before\['pos'\]"),
    ],
)
def test_bad_parts_raise(tmp_path, over, arg):
    with pytest.raises(PairLossError, match=f"^{arg}"):
        _full_report(tmp_path / "bad.html", **over)


def test_bad_path(tmp_path):
    with pytest.raises(PairLossError, match="^path: "):
        write_report(42, title="t")


def test_leaderboard_order_std_and_time(tmp_path):
    rows = [
        {"name": "b", "map@r": 0.30, "map@r_std": 0.01, "recall@1": 0.7, "seconds": 100.0},
        {"name": "<a>", "map@r": 0.50, "map@r_std": 0.02, "recall@1": 0.8, "seconds": 30.0},
        {"name": "c", "recall@1": 0.9},  # no sort key: last
        {"name": "d", "map@r": 0.40, "recall@1": 0.75, "seconds": 4000.0},
    ]
    out = write_leaderboard(tmp_path / "lb.html", title="board <x>", rows=rows)
    text = out.read_text(encoding="utf-8")
    assert IMG in text and "http://" not in text and "https://" not in text
    assert "&lt;a&gt;" in text and "board &lt;x&gt;" in text and "<a>" not in text
    positions = [text.index(f"<td>{n}</td>") for n in ("&lt;a&gt;", "d", "b", "c")]
    assert positions == sorted(positions)
    assert "0.5000 ± 0.0200" in text and "0.3000 ± 0.0100" in text
    assert "30.0 s" in text and "1 min 40 s" in text and "1 h 06 min" in text
    assert len(_images(text)) == 1


def test_leaderboard_other_sort_key_and_empty(tmp_path):
    rows = [{"loss": "x", "recall@1": 0.1}, {"loss": "y", "recall@1": 0.9}]
    text = write_leaderboard(tmp_path / "a.html", title="t", rows=rows, sort_key="recall@1")
    body = text.read_text(encoding="utf-8")
    assert body.index("<td>y</td>") < body.index("<td>x</td>")
    empty = write_leaderboard(tmp_path / "e.html", title="t", rows=[]).read_text(encoding="utf-8")
    assert "No runs to compare" in empty and IMG not in empty
    none = write_leaderboard(tmp_path / "n.html", title="t", rows=rows, sort_key="map@r")
    assert "no chart drawn" in none.read_text(encoding="utf-8")


def test_leaderboard_bad_args(tmp_path):
    with pytest.raises(PairLossError, match="^rows: "):
        write_leaderboard(tmp_path / "x.html", title="t", rows={"a": 1})
    with pytest.raises(PairLossError, match=r"^rows\[1\]: "):
        write_leaderboard(tmp_path / "x.html", title="t", rows=[{}, 3])
    with pytest.raises(PairLossError, match="^sort_key: "):
        write_leaderboard(tmp_path / "x.html", title="t", rows=[], sort_key=1)


def test_pca_2d_matches_projection_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 5, generator=g) * torch.tensor([5.0, 3.0, 1.0, 0.5, 0.1]) + 7.0
    xy = pca_2d(x)
    assert xy.shape == (100, 2) and xy.dtype == torch.float32
    assert torch.allclose(xy.mean(dim=0), torch.zeros(2), atol=1e-4)
    # the first axis carries the most variance, the two axes are uncorrelated
    var = xy.var(dim=0)
    assert var[0] >= var[1]
    assert abs(float((xy[:, 0] * xy[:, 1]).mean())) < 1e-3 * float(var[0])
    # same as the top-2 eigenvectors of the covariance, up to sign
    xc = (x - x.mean(0)).double()
    _, vecs = torch.linalg.eigh(xc.T @ xc)
    ref = (xc @ vecs[:, [-1, -2]]).float()
    assert torch.allclose(xy.abs(), ref.abs(), atol=1e-3)
    # sign convention: independent of a sign flip of the input features
    assert torch.allclose(pca_2d(-x), pca_2d(-x)) and torch.allclose(pca_2d(x), xy)
    assert torch.allclose(pca_2d(x.double()).float(), xy, atol=1e-5)


def test_pca_2d_low_rank_and_bad_input():
    assert torch.equal(pca_2d(torch.ones(4, 3)), torch.zeros(4, 2))
    one = pca_2d(torch.arange(5.0).unsqueeze(1))
    assert one.shape == (5, 2) and torch.equal(one[:, 1], torch.zeros(5))
    assert pca_2d(torch.ones(1, 3)).shape == (1, 2)
    for bad in (torch.zeros(3), torch.zeros(0, 2), torch.tensor([[float("nan"), 0.0]])):
        with pytest.raises(PairLossError, match="^x: "):
            pca_2d(bad)
    with pytest.raises(PairLossError, match="^x: "):
        pca_2d([[0.0, 1.0]])
