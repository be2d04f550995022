"""Self-contained HTML reports of a training run and of a comparison of runs.

:func:`write_report` and :func:`write_leaderboard` take plain data (dicts, lists, tensors or
arrays) and write one HTML file with every plot embedded as a base64 PNG (matplotlib, Agg
canvas) and inline CSS: no external files, scripts or URLs. Every string that comes from the
caller is HTML-escaped. :func:`pca_2d` projects embeddings to two dimensions for the scatter.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import PairLossError

__all__ = ["pca_2d", "write_leaderboard", "write_report"]

_MAX_POINTS = 20_000  # points drawn per scatter series (deterministic subsample above this)
_POS_COLOUR = "#1f77b4"
_NEG_COLOUR = "#d62728"

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto;
       max-width: 1100px; padding: 0 16px; color: #222; background: #fff; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0 16px 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.best td { font-weight: 600; background: #f4faf4; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
figure { margin: 8px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { margin-top: 2px; }
.note { color: #777; font-style: italic; margin: 6px 0; }
.sub { color: #666; margin-top: 0; }
"""


# --------------------------------------------------------------------------------------------
# helpers


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _to_numpy(value: object, name: str) -> np.ndarray:
    """A float numpy array from a tensor, array, list or scalar; raises naming ``name``."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise PairLossError(
            f"{name}: expected numbers (a tensor, array or list), got {type(value).__name__}"
        ) from exc
    return arr


def _as_1d(value: object, name: str) -> np.ndarray:
    """A 1-D float array of the finite entries of ``value``."""
    arr = _to_numpy(value, name).reshape(-1)
    return arr[np.isfinite(arr)]


def _scalar(value: object) -> float | None:
    """``value`` as a float, or None if it is not a single number."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, torch.Tensor):
        return float(value.item()) if value.numel() == 1 else None
    if isinstance(value, np.ndarray):
        return float(value.reshape(-1)[0]) if value.size == 1 else None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    return None


def _fmt(value: object, digits: int = 4) -> str:
    x = _scalar(value)
    if x is None:
        return _esc(value)
    if math.isnan(x):
        return "n/a"
    if x == int(x) and abs(x) < 1e15 and not isinstance(value, (float, np.floating)):
        return str(int(x))
    return f"{x:.{digits}f}"


def _fmt_seconds(value: object) -> str:
    x = _scalar(value)
    if x is None or not math.isfinite(x):
        return _esc(value)
    if x < 60:
        return f"{x:.1f} s"
    minutes, seconds = divmod(x, 60)
    if minutes < 60:
        return f"{int(minutes)} min {seconds:02.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes):02d} min"


def _figure(width: float, height: float) -> Any:  # matplotlib is imported only when drawing
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig


def _png(fig: Any, alt: str = "") -> str:
    """The figure as an ``<img>`` tag with a base64 PNG data URI."""
    buf = io.BytesIO()
    # drawn at 1.5x and shown at the 100-dpi size, so that it stays sharp on dense screens
    fig.savefig(buf, format="png", dpi=150, metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    width = int(round(fig.get_figwidth() * 100))
    return f'<img src="data:image/png;base64,{data}" width="{width}" alt="{_esc(alt)}">'


def _figure_html(fig: Any, caption: str = "", alt: str = "") -> str:
    cap = f"<figcaption class='note'>{_esc(caption)}</figcaption>" if caption else ""
    return f"<figure>{_png(fig, alt)}{cap}</figure>"


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def _subsample(n: int, limit: int = _MAX_POINTS) -> np.ndarray:
    """Deterministic subset of ``range(n)`` of at most ``limit`` indices (sorted)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size=limit, replace=False))


def _flatten(config: Mapping[str, Any], prefix: str = "") -> list[tuple[str, object]]:
    items: list[tuple[str, object]] = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            items.extend(_flatten(value, name + "."))
        else:
            items.append((name, value))
    return items


def _metric_order(keys: Sequence[str]) -> list[str]:
    """Metric names ordered MAP@R first, then recall@K by K, then the rest as given."""

    def rank(key: str) -> tuple[int, float, int]:
        low = key.lower().removeprefix("val_")
        if low == "map@r":
            return (0, 0.0, 0)
        m = re.fullmatch(r"(recall|precision|ndcg)@(\d+)", low)
        if m:
            group = {"recall": 1, "precision": 2, "ndcg": 3}[m.group(1)]
            return (group, float(m.group(2)), 0)
        return (4, 0.0, list(keys).index(key))

    return sorted(dict.fromkeys(keys), key=rank)


def _pretty_metric(key: str) -> str:
    if key.lower().startswith("val_"):
        return "validation " + _pretty_metric(key[4:])
    low = key.lower()
    if low in ("map@r", "mrr"):
        return low.upper()
    m = re.fullmatch(r"(recall|precision|ndcg|map)@(\d+)", low)
    if m:
        name = m.group(1).upper() if m.group(1) in ("ndcg", "map") else m.group(1).capitalize()
        return f"{name}@{m.group(2)}"
    return key


def _check_mapping(value: object, name: str) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise PairLossError(f"{name}: expected a dict or None, got {type(value).__name__}")
    return value


def _table(
    header: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[str] = ()
) -> str:
    """An HTML table; ``header`` is escaped here, cells must already be HTML."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if i < len(classes) and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _num_cell(value: object) -> str:
    return f'<td class="num">{_fmt(value)}</td>'


def _page(title: str, subtitle: str, sections: Sequence[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_esc(title)}</h1>\n"
        + (f"<p class='sub'>{_esc(subtitle)}</p>\n" if subtitle else "")
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )


def _write(path: str | Path, text: str) -> Path:
    if not isinstance(path, (str, Path)):
        raise PairLossError(f"path: expected a str or pathlib.Path, got {type(path).__name__}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


def _check_title(title: object) -> str:
    if not isinstance(title, str):
        raise PairLossError(f"title: expected a str, got {type(title).__name__}")
    return title


# --------------------------------------------------------------------------------------------
# projection


def pca_2d(x: torch.Tensor) -> torch.Tensor:
    """Project rows of ``x`` onto their first two principal components.

    The rows are centred and the components come from an exact SVD; each component's sign is
    fixed so that its largest-magnitude loading is positive, so the result is deterministic.

    Args:
        x: ``[N, D]`` tensor (any real dtype; computed in float64, returned in float32 unless
            ``x`` is float64). N >= 1, D >= 1.

    Returns:
        ``[N, 2]`` coordinates. When D == 1 (or the data has rank < 2) the missing
        coordinates are zero.
    """
    if not isinstance(x, torch.Tensor):
        raise PairLossError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise PairLossError(
            f"x: expected a 2-D tensor of shape [N >= 1, D >= 1], got {tuple(x.shape)}"
        )
    if x.is_complex() or x.dtype == torch.bool:
        raise PairLossError(f"x: expected a real-valued tensor, got dtype {x.dtype}")
    out_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    xd = x.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(xd).all()):
        raise PairLossError("x: contains NaN or Inf; expected finite values")
    xd = xd - xd.mean(dim=0, keepdim=True)
    _, s, vh = torch.linalg.svd(xd, full_matrices=False)
    k = min(2, vh.shape[0])
    comps = vh[:k]
    # rank-deficient directions carry no signal; zero them so the output does not depend on
    # the arbitrary basis LAPACK picks for a null space
    tol = s.max() * max(xd.shape) * torch.finfo(torch.float64).eps if s.numel() else 0.0
    keep = (s[:k] > tol).to(torch.float64).unsqueeze(1)
    comps = comps * keep
    idx = comps.abs().argmax(dim=1, keepdim=True)
    sign = torch.sign(comps.gather(1, idx))
    sign[sign == 0] = 1.0
    comps = comps * sign
    out = torch.zeros(x.shape[0], 2, dtype=torch.float64)
    out[:, :k] = xd @ comps.T
    return out.to(out_dtype)


# --------------------------------------------------------------------------------------------
# report sections


def _config_section(config: Mapping[str, Any] | None) -> str:
    parts = ["<h2>Configuration</h2>"]
    if not config:
        return parts[0] + _note("No configuration given.")
    rows = []
    for key, value in _flatten(config):
        if isinstance(value, float):
            shown = f"{value:g}"
        elif isinstance(value, (list, tuple)):
            shown = ", ".join(str(v) for v in value)
        else:
            shown = str(value)
        rows.append([f"<td>{_esc(key)}</td>", f"<td>{_esc(shown)}</td>"])
    parts.append(_table(["setting", "value"], rows))
    return "".join(parts)


def _history_metric_keys(
    history: Sequence[Mapping[str, Any]], columns: Sequence[str] = ()
) -> list[str]:
    keys: list[str] = []
    for row in history:
        for key in row:
            low = key.lower().removeprefix("val_")
            listed = key.startswith("val_") and low in columns
            if listed or low == "map@r" or re.fullmatch(r"(recall|precision|ndcg)@\d+", low):
                keys.append(key)
    return _metric_order(keys)


def _epochs(history: Sequence[Mapping[str, Any]]) -> list[float]:
    xs = []
    for i, row in enumerate(history):
        e = _scalar(row.get("epoch"))
        xs.append(e if e is not None else float(i + 1))
    return xs


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for x, row in zip(_epochs(history), history):
        y = _scalar(row.get(key))
        if y is not None and math.isfinite(y):
            xs.append(x)
            ys.append(y)
    return xs, ys


def _epoch_axis(ax: Any, epochs: Sequence[float]) -> None:
    """Label the x axis with whole epochs (no 0.96 ... 1.04 ticks for a single epoch)."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    lo, hi = min(epochs), max(epochs)
    if hi - lo < 2:
        ax.set_xlim(lo - 0.5, hi + 0.5)
        ax.set_xticks(sorted(set(epochs)))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _history_section(
    history: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]] = ()
) -> str:
    parts = ["<h2>Training curves</h2>"]
    if not history:
        return parts[0] + _note("No training history given (no epochs run).")
    figures = []
    loss_keys = [k for k in dict.fromkeys(k for row in history for k in row) if "loss" in k.lower()]
    drawn = False
    if loss_keys:
        fig = _figure(5.2, 3.5)
        ax = fig.add_subplot()
        for key in loss_keys:
            xs, ys = _series(history, key)
            if ys:
                ax.plot(xs, ys, marker="o", markersize=3, label=key)
                drawn = True
        _epoch_axis(ax, _epochs(history))
        ax.set_ylabel("loss")
        ax.set_title("Training loss per epoch")
        ax.grid(alpha=0.3)
        if len(loss_keys) > 1:
            ax.legend(fontsize=9)
        if drawn:
            figures.append(_figure_html(fig, alt="Training loss per epoch"))
    if not drawn:
        figures.append(_note("No loss values in the history."))
    metric_keys = _history_metric_keys(history, [k for k, _ in columns])
    lead = columns[0][0] if columns else "map@r"
    labels = dict(columns)
    if metric_keys:
        fig = _figure(5.2, 3.5)
        ax = fig.add_subplot()
        for key in metric_keys:
            xs, ys = _series(history, key)
            if ys:
                low = key.lower().removeprefix("val_")
                main = low == lead
                style = "-" if main else "--"
                width = 2.2 if main else 1.2
                label = labels.get(low, _pretty_metric(key))
                ax.plot(xs, ys, style, lw=width, marker="o", markersize=3, label=label)
        _epoch_axis(ax, _epochs(history))
        ax.set_ylabel("score")
        best = _scalar(history[-1].get("best_epoch"))
        if best is not None:
            ax.axvline(best, color="#2ca02c", lw=1, ls=":", label=f"kept: epoch {best:g}")
        ax.set_title("Validation metrics per epoch (the best epoch is kept)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9, loc="best", ncol=2 if len(metric_keys) > 4 else 1)
        figures.append(_figure_html(fig, alt="Validation metrics per epoch"))
    else:
        figures.append(_note("No Recall@K or MAP@R values in the history."))
    parts.append(f"<div class='plots'>{''.join(figures)}</div>")
    # table of the last epoch
    last = history[-1]
    rows = []
    for key, value in last.items():
        if key == "seconds":
            rows.append([f"<td>{_esc(key)}</td>", f'<td class="num">{_fmt_seconds(value)}</td>'])
        else:
            rows.append([f"<td>{_esc(_pretty_metric(key))}</td>", _num_cell(value)])
    total = [_scalar(r.get("seconds")) for r in history]
    if len(history) > 1 and all(t is not None for t in total):
        rows.append(["<td>total seconds</td>", f'<td class="num">{_fmt_seconds(sum(total))}</td>'])
    parts.append("<h2>Last epoch</h2>" + _table(["metric", "value"], rows))
    return "".join(parts)


_PARTS = (("before", "Before training"), ("after", "After training"))


def _prep_similarities(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> list[tuple[str, np.ndarray, np.ndarray, list[str]]]:
    """``[(label, pos, neg, ["AUC 0.912", ...])]`` for the parts given (validated)."""
    out = []
    for (name, label), part in zip(_PARTS, (before, after)):
        if not part:
            continue
        pos = _as_1d(part.get("pos", []), f"{name}['pos']")
        neg = _as_1d(part.get("neg", []), f"{name}['neg']")
        extras = []
        for key, pretty in (("auc", "AUC"), ("overlap", "overlap")):
            v = _scalar(part.get(key))
            if v is not None:
                extras.append(f"{pretty} {v:.3f}")
        out.append((label, pos, neg, extras))
    return out


def _similarity_section(parts: list[tuple[str, np.ndarray, np.ndarray, list[str]]]) -> str:
    head = "<h2>Positive and negative pair similarities (test split)</h2>"
    if not parts:
        return head + _note("No pair similarities given.")
    given = {label for label, *_ in parts}
    drawn = [p for p in parts if p[1].size or p[2].size]
    notes = [f"{label}: not given." for _, label in _PARTS if label not in given]
    notes += [f"{p[0]}: no similarities given." for p in parts if not (p[1].size or p[2].size)]
    summary = "; ".join(f"{label}: {', '.join(extras)}" for label, _, _, extras in parts if extras)
    if not drawn:
        return head + "".join(_note(n) for n in notes)
    values = np.concatenate([a for _, pos, neg, _ in drawn for a in (pos, neg)])
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    bins = np.linspace(lo, hi, 61)  # shared, so that before and after line up
    fig = _figure(5.2 * len(drawn), 3.6)
    axes = fig.subplots(1, len(drawn), squeeze=False)[0]
    for ax, (label, pos, neg, extras) in zip(axes, drawn):
        if neg.size:
            ax.hist(
                neg,
                bins=bins,
                density=True,
                histtype="stepfilled",
                alpha=0.5,
                color=_NEG_COLOUR,
                label=f"S- ({neg.size:,})",
            )
        if pos.size:
            ax.hist(
                pos,
                bins=bins,
                density=True,
                histtype="stepfilled",
                alpha=0.5,
                color=_POS_COLOUR,
                label=f"S+ ({pos.size:,})",
            )
        ax.set_ylim(0, ax.get_ylim()[1] * 1.25)  # headroom for the legend
        ax.set_title(label + (f"  ({', '.join(extras)})" if extras else ""), fontsize=11)
        ax.set_xlabel("similarity")
        ax.set_ylabel("density")
        ax.legend(fontsize=9, loc="best")
        ax.grid(alpha=0.3)
    alt = "Histograms of positive (S+) and negative (S-) pair similarities"
    return head + _figure_html(fig, caption=summary, alt=alt) + "".join(_note(n) for n in notes)


def _prep_pair_weights(
    curve: Mapping[str, Any] | None,
) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """``[(label, colour, sim, weight)]`` for the series given (validated, finite only)."""
    if not curve:
        return []
    out = []
    for kind, colour, label in (
        ("pos", _POS_COLOUR, "positive pairs"),
        ("neg", _NEG_COLOUR, "negative pairs"),
    ):
        sim = curve.get(f"{kind}_sim")
        weight = curve.get(f"{kind}_weight")
        if sim is None and weight is None:
            continue
        if sim is None or weight is None:
            missing = f"{kind}_sim" if sim is None else f"{kind}_weight"
            raise PairLossError(
                f"pair_weight_curve: '{missing}' is missing; expected both '{kind}_sim' and "
                f"'{kind}_weight'"
            )
        s = _to_numpy(sim, f"pair_weight_curve['{kind}_sim']").reshape(-1)
        w = _to_numpy(weight, f"pair_weight_curve['{kind}_weight']").reshape(-1)
        if s.shape != w.shape:
            raise PairLossError(
                f"pair_weight_curve: '{kind}_sim' and '{kind}_weight' must have the same length, "
                f"got {s.size} and {w.size}"
            )
        ok = np.isfinite(s) & np.isfinite(w)
        if ok.any():
            out.append((label, colour, s[ok], w[ok]))
    return out


def _pair_weight_section(
    series: list[tuple[str, str, np.ndarray, np.ndarray]], loss: object, ylabel: object
) -> str:
    head = "<h2>Pair weight against similarity</h2>"
    if not series:
        return head + _note("No pair weights given.")
    fig = _figure(6.5, 4.0)
    ax = fig.add_subplot()
    caption = []
    for label, colour, s, w in series:
        keep = _subsample(s.size)
        if keep.size < s.size:
            caption.append(f"{keep.size:,} of {s.size:,} {label} drawn (random subset)")
        ax.scatter(
            s[keep],
            w[keep],
            s=6,
            alpha=0.35,
            color=colour,
            label=f"{label} ({s.size:,})",
            edgecolors="none",
        )
    name = f" ({loss})" if loss else ""
    ax.set_title("Pair weight vs similarity" + name)
    ax.set_xlabel("similarity")
    ax.set_ylabel(str(ylabel) if ylabel else "pair weight")
    ax.grid(alpha=0.3)
    leg = ax.legend(fontsize=9, markerscale=2.5)
    for handle in leg.legend_handles:
        handle.set_alpha(1.0)
    alt = "Scatter of pair weight against similarity" + name
    return head + _figure_html(fig, caption="; ".join(caption), alt=alt)


def _prep_projection(
    projection: Mapping[str, Any] | None,
) -> tuple[np.ndarray, np.ndarray, Sequence[Any] | None] | None:
    """``(xy [N, 2], labels [N], class_names)`` (validated), or None if not given."""
    if not projection:
        return None
    xy = _to_numpy(projection.get("xy", []), "projection['xy']")
    if xy.size == 0:
        return np.zeros((0, 2)), np.zeros(0, dtype=int), None
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise PairLossError(f"projection['xy']: expected shape [N, 2], got {xy.shape}")
    labels_raw = projection.get("labels")
    if labels_raw is None:
        labels = np.zeros(xy.shape[0], dtype=int)
    else:
        labels = _to_numpy(labels_raw, "projection['labels']").reshape(-1)
        if labels.size != xy.shape[0]:
            raise PairLossError(
                f"projection['labels']: expected {xy.shape[0]} labels (one per point), "
                f"got {labels.size}"
            )
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise PairLossError("projection['labels']: expected integer class labels")
        labels = labels.astype(int)
    names = projection.get("class_names")
    if names is not None and (isinstance(names, str) or not isinstance(names, Sequence)):
        raise PairLossError(
            f"projection['class_names']: expected a list of names or None, got "
            f"{type(names).__name__}"
        )
    ok = np.isfinite(xy).all(axis=1)
    return xy[ok], labels[ok], names


def _projection_section(
    data: tuple[np.ndarray, np.ndarray, Sequence[Any] | None] | None,
) -> str:
    head = "<h2>Test embeddings, 2-D PCA</h2>"
    if data is None:
        return head + _note("No projection given.")
    xy, labels, names = data
    if xy.shape[0] == 0:
        return head + _note("No projected points given.")
    n_all = xy.shape[0]
    keep = _subsample(n_all, 10_000)
    xy, labels = xy[keep], labels[keep]
    classes = np.unique(labels)
    fig = _figure(7.5, 5.2)
    ax = fig.add_subplot()
    from matplotlib import colormaps

    cmap = colormaps["tab10" if classes.size <= 10 else "tab20"]
    for i, c in enumerate(classes):
        mask = labels == c
        name = str(names[c]) if names is not None and 0 <= c < len(names) else str(c)
        ax.scatter(
            xy[mask, 0],
            xy[mask, 1],
            s=7,
            alpha=0.6,
            color=cmap(i % cmap.N),
            label=_shorten(name, 24),
            edgecolors="none",
        )
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("Embeddings projected on the first two principal components")
    ax.grid(alpha=0.3)
    caption = []
    if classes.size <= 20:
        leg = ax.legend(
            fontsize=9,
            markerscale=2.5,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            frameon=False,
            title="class",
        )
        for handle in leg.legend_handles:
            handle.set_alpha(1.0)
    else:
        caption.append(f"{classes.size} classes; colours repeat, legend omitted")
    if keep.size < n_all:
        caption.append(f"{keep.size:,} of {n_all:,} points drawn (random subset)")
    alt = f"2-D PCA scatter of {n_all:,} embeddings coloured by class"
    return head + _figure_html(fig, caption="; ".join(caption), alt=alt)


def _prep_predictions(
    predictions: Sequence[Mapping[str, Any] | None] | None,
) -> list[tuple[str, np.ndarray, np.ndarray, str, str]]:
    """``[(part, gold, predicted, gold_label, predicted_label)]`` of the parts given."""
    if predictions is None:
        return []
    if isinstance(predictions, (str, bytes, Mapping)) or len(predictions) != 2:
        raise PairLossError("predictions: expected (before, after), each a dict or None")
    out = []
    for (name, label), part in zip(_PARTS, predictions):
        part = _check_mapping(part, f"predictions[{name!r}]")
        if not part:
            continue
        gold = _to_numpy(part.get("gold", []), f"predictions[{name!r}]['gold']").reshape(-1)
        pred = _to_numpy(part.get("predicted", []), f"predictions[{name!r}]['predicted']")
        pred = pred.reshape(-1)
        if gold.shape != pred.shape:
            raise PairLossError(
                f"predictions[{name!r}]: {gold.size} gold values but {pred.size} predictions; "
                "expected one prediction per gold value"
            )
        ok = np.isfinite(gold) & np.isfinite(pred)
        out.append(
            (
                label,
                gold[ok],
                pred[ok],
                str(part.get("gold_label", "gold")),
                str(part.get("predicted_label", "predicted")),
            )
        )
    return out


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation (ties averaged), or None when undefined."""
    if a.size < 2:
        return None
    from ..metrics.sts import average_ranks

    ra = average_ranks(torch.as_tensor(a, dtype=torch.float64)).numpy()
    rb = average_ranks(torch.as_tensor(b, dtype=torch.float64)).numpy()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum()) / denominator if denominator > 0 else None


def _prediction_section(parts: list[tuple[str, np.ndarray, np.ndarray, str, str]]) -> str:
    """Predicted against gold on the test data, before and after training, side by side."""
    if not parts:
        return ""
    head = "<h2>Predicted against gold (test data)</h2>"
    fig = _figure(5.0 * len(parts), 4.4)
    axes = fig.subplots(1, len(parts), squeeze=False)[0]
    for ax, (label, gold, pred, gold_label, pred_label) in zip(axes, parts):
        keep = _subsample(gold.size)
        ax.scatter(gold[keep], pred[keep], s=8, alpha=0.45, color=_POS_COLOUR, edgecolors="none")
        rho = _rank_correlation(gold, pred)
        shown = "undefined" if rho is None else f"{100 * rho:.2f}"
        ax.set_title(f"{label}: Spearman x100 {shown}")
        ax.set_xlabel(gold_label)
        ax.set_ylabel(pred_label)
        ax.grid(alpha=0.3)
    if len(parts) == 2:
        low = min(float(a.get_ylim()[0]) for a in axes)
        high = max(float(a.get_ylim()[1]) for a in axes)
        for ax in axes:
            ax.set_ylim(low, high)
    n = parts[-1][1].size
    alt = f"scatter of {n:,} predictions against their gold values"
    return head + _figure_html(fig, caption=f"{n:,} test items; one point each", alt=alt)


def _check_representations(representations: Mapping[str, Any] | None) -> None:
    for name, results in (representations or {}).items():
        if not isinstance(results, Mapping) or not all(
            isinstance(v, Mapping) for v in results.values()
        ):
            raise PairLossError(
                f"representations[{name!r}]: expected {{setting: {{metric: value}}}}, got "
                f"{type(results).__name__}"
            )


VERDICT_COLUMNS = (("map@r", "MAP@R"), ("recall@1", "Recall@1"))
"""The columns of the first table, for each setting (labelled data's default)."""


def _verdict_section(
    representations: Mapping[str, Mapping[str, Mapping[str, Any]]] | None,
    settings: Mapping[str, str],
    headline: str | None,
    verdict: str | None,
    notes: Sequence[str],
    columns: Sequence[tuple[str, str]] = VERDICT_COLUMNS,
    sort_by: str | None = None,
) -> str:
    """The first screen: the verdict line and the representations, best first."""
    metrics = [k for k, _ in columns]
    labels = dict(columns)
    retrieval = tuple(columns) == VERDICT_COLUMNS
    head = f"<h2>Which representation {'retrieves' if retrieval else 'does'} best (test data)</h2>"
    text = f"<p><b>{_esc(verdict)}</b></p>" if verdict else ""
    if not representations:
        return head + text + _note("No evaluated representation given.")
    order = list(settings) or list(dict.fromkeys(s for r in representations.values() for s in r))
    lead = headline if headline in order else order[0]
    sort_by = metrics[0] if sort_by is None else sort_by

    def score(name: str) -> float:
        v = _scalar(representations[name].get(lead, {}).get(sort_by))
        return v if v is not None and math.isfinite(v) else -math.inf

    ranked = sorted(representations, key=lambda n: -score(n))
    best = {
        (s, k): max(
            (v for n in ranked if (v := _scalar(representations[n].get(s, {}).get(k))) is not None),
            default=None,
        )
        for s in order
        for k in metrics
    }
    header = ["#", "representation"] + [
        f"{labels[k]}, {settings.get(s, s)}" for s in order for k in metrics
    ]
    rows = []
    for rank, name in enumerate(ranked, start=1):
        cells = [f'<td class="num">{rank}</td>', f"<td>{_esc(name)}</td>"]
        for s in order:
            for k in metrics:
                v = _scalar(representations[name].get(s, {}).get(k))
                cell = "" if v is None else _fmt(v)
                if v is not None and best[(s, k)] == v and len(ranked) > 1:
                    cell = f"<b>{cell}</b>"
                cells.append(f'<td class="num">{cell}</td>')
        rows.append(cells)
    caption = _note(
        f"Sorted by {labels.get(sort_by, _pretty_metric(sort_by))} on "
        f"{settings.get(lead, lead)}; the best value of each column in bold."
    )
    return head + text + _table(header, rows) + caption + "".join(_note(n) for n in notes)


def _details_section(
    representations: Mapping[str, Mapping[str, Mapping[str, Any]]] | None,
    settings: Mapping[str, str],
) -> str:
    """Every metric of every representation, one table per setting."""
    if not representations:
        return ""
    parts = ["<h2>All test metrics</h2>"]
    order = list(settings) or list(dict.fromkeys(s for r in representations.values() for s in r))
    for setting in order:
        keys = _metric_order(
            [k for r in representations.values() for k in r.get(setting, {}) if k != "seconds"]
        )
        if not keys:
            continue
        rows = [
            [f"<td>{_esc(name)}</td>"] + [_num_cell(r.get(setting, {}).get(k, "")) for k in keys]
            for name, r in representations.items()
        ]
        parts.append(f"<h3>{_esc(settings.get(setting, setting))}</h3>")
        parts.append(_table(["representation"] + [_pretty_metric(k) for k in keys], rows))
    return "".join(parts)


def write_report(
    path: str | Path,
    *,
    title: str,
    config: Mapping[str, Any] | None = None,
    history: Sequence[Mapping[str, Any]] | None = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    representations: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    settings: Mapping[str, str] | None = None,
    headline: str | None = None,
    verdict: str | None = None,
    notes: Sequence[str] = (),
    pair_weight_curve: Mapping[str, Any] | None = None,
    projection: Mapping[str, Any] | None = None,
    columns: Sequence[tuple[str, str]] = VERDICT_COLUMNS,
    sort_by: str | None = None,
    predictions: Sequence[Mapping[str, Any] | None] | None = None,
) -> Path:
    """Write a self-contained HTML report of one training run to ``path``.

    The first screen is the verdict: ``verdict`` (one line, e.g. what training changed) and the
    table of representations, best first. Every other part may be None (or empty) and is then
    skipped with a short note. Arrays may be torch tensors, numpy arrays or lists; non-finite
    values are dropped from the plots.

    Args:
        path: the HTML file to write (parent folders are created).
        title: page title.
        config: run settings, shown as a table (nested dicts are flattened to ``a.b`` keys).
        history: one dict per epoch, e.g. ``{"epoch": 1, "mean_loss": 0.7, "val_map@r": 0.3,
            "best_epoch": 1}``. Keys containing ``loss`` are drawn in the loss plot;
            ``[val_]recall@K``, ``precision@K``, ``ndcg@K`` and ``map@r`` in the metric plot
            (with the kept epoch ``best_epoch`` marked); the last epoch is also a table.
        before, after: ``{"pos": [P] S+ similarities, "neg": [Q] S- similarities}`` on test
            data before and after training; optional ``"auc"`` / ``"overlap"`` numbers are
            shown in the histogram titles.
        representations: ``{name: {setting: {metric: value}}}``, e.g. raw inputs, PCA, the
            untrained and the trained model, evaluated on every setting.
        settings: ``{setting: display name}`` in column order (default: as found).
        headline: the setting that sorts the table (default: the first).
        verdict: one line shown above the table.
        notes: short remarks shown under the table (e.g. a baseline left out, and why).
        pair_weight_curve: ``{"pos_sim": [P], "pos_weight": [P], "neg_sim": [Q],
            "neg_weight": [Q], "loss": name}`` and optionally ``"weight_label"``; a scatter of
            weight against similarity (at most 20,000 points per series are drawn).
        projection: ``{"xy": [N, 2], "labels": [N] ints, "class_names": optional list}``
            (e.g. from :func:`pca_2d`); a scatter coloured by class (at most 10,000 points).
        columns: ``(metric, display name)`` of the first table (default MAP@R and Recall@1);
            the first sorts it and is the main line of the validation plot.
        predictions: ``(before, after)``, each ``{"gold": [N], "predicted": [N],
            "gold_label": str, "predicted_label": str}`` or None: predicted-vs-gold scatter
            plots of the test data before and after training, with Spearman's rank
            correlation in the titles (e.g. cosine similarity against STS gold scores).
        sort_by: the metric that sorts the first table (default: the first of ``columns``).

    Returns:
        the path written.

    Raises:
        PairLossError: a part of the wrong type or shape.
    """
    title = _check_title(title)
    config = _check_mapping(config, "config")
    before = _check_mapping(before, "before")
    after = _check_mapping(after, "after")
    representations = _check_mapping(representations, "representations")
    settings = _check_mapping(settings, "settings") or {}
    pair_weight_curve = _check_mapping(pair_weight_curve, "pair_weight_curve")
    projection = _check_mapping(projection, "projection")
    if history is None:
        history = []
    if isinstance(history, (str, bytes, Mapping)) or not isinstance(history, Sequence):
        raise PairLossError(
            f"history: expected a list of dicts (one per epoch) or None, got {type(history).__name__}"
        )
    for i, row in enumerate(history):
        if not isinstance(row, Mapping):
            raise PairLossError(f"history[{i}]: expected a dict, got {type(row).__name__}")
    # convert and check every part before drawing anything
    _check_representations(representations)
    similarities = _prep_similarities(before, after)
    weights = _prep_pair_weights(pair_weight_curve)
    points = _prep_projection(projection)
    predicted = _prep_predictions(predictions)
    sections = [
        _verdict_section(representations, settings, headline, verdict, notes, columns, sort_by),
        _history_section(history, columns),
        _prediction_section(predicted),
        _similarity_section(similarities),
        _pair_weight_section(
            weights,
            (pair_weight_curve or {}).get("loss"),
            (pair_weight_curve or {}).get("weight_label"),
        ),
        _projection_section(points),
        _details_section(representations, settings),
        _config_section(config),
    ]
    n_epochs = len(history)
    subtitle = f"{n_epochs} epoch{'s' if n_epochs != 1 else ''}" if n_epochs else ""
    return _write(path, _page(title, subtitle, sections))


# --------------------------------------------------------------------------------------------
# leaderboard


def _label_key(rows: Sequence[Mapping[str, Any]]) -> str | None:
    for key in ("name", "run", "loss", "model"):
        if any(key in r for r in rows):
            return key
    for key in dict.fromkeys(k for r in rows for k in r):
        if all(isinstance(r.get(key), str) for r in rows if key in r):
            return key
    return None


def write_leaderboard(
    path: str | Path,
    *,
    title: str,
    rows: Sequence[Mapping[str, Any]],
    sort_key: str = "map@r",
) -> Path:
    """Write an HTML leaderboard of runs sorted by ``sort_key`` (best first) to ``path``.

    Each row is a dict of plain values, e.g. ``{"name": "ms", "map@r": 0.41, "map@r_std":
    0.01, "recall@1": 0.8, "seconds": 95.0}``. A ``<key>_std`` entry is shown as
    ``mean ± std`` in the ``<key>`` column (and as an error bar in the chart); ``seconds`` is
    shown as wall time. Rows without ``sort_key`` come last. The row label is taken from the
    first of ``name``, ``run``, ``loss``, ``model`` present (else the first text column).

    Args:
        path: the HTML file to write (parent folders are created).
        title: page title.
        rows: one dict per run (may be empty: the page then says so).
        sort_key: the column to sort by, descending (default ``"map@r"``); also drawn as a
            horizontal bar chart.

    Returns:
        the path written.

    Raises:
        PairLossError: rows not a list of dicts, or sort_key not a str.
    """
    title = _check_title(title)
    if not isinstance(sort_key, str):
        raise PairLossError(
            f"sort_key: expected a str (a column name), got {type(sort_key).__name__}"
        )
    if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Sequence):
        raise PairLossError(
            f"rows: expected a list of dicts (one per run), got {type(rows).__name__}"
        )
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise PairLossError(f"rows[{i}]: expected a dict, got {type(row).__name__}")
    if not rows:
        return _write(path, _page(title, "", [_note("No runs to compare.")]))

    def score(row: Mapping[str, Any]) -> float:
        v = _scalar(row.get(sort_key))
        return v if v is not None and math.isfinite(v) else -math.inf

    order = sorted(range(len(rows)), key=lambda i: (-score(rows[i]), i))
    ranked = [rows[i] for i in order]
    label_key = _label_key(ranked)
    columns = [k for k in dict.fromkeys(k for r in ranked for k in r) if not k.endswith("_std")]
    if label_key in columns:
        columns.remove(label_key)
    numeric = [
        c for c in columns if c != "seconds" and any(_scalar(r.get(c)) is not None for r in ranked)
    ]
    text = [c for c in columns if c not in numeric and c != "seconds"]
    metric_cols = _metric_order(numeric)
    if sort_key in metric_cols:
        metric_cols.remove(sort_key)
        metric_cols.insert(0, sort_key)
    ordered = text + metric_cols + (["seconds"] if "seconds" in columns else [])

    def labels() -> list[str]:
        out = []
        for i, r in enumerate(ranked):
            out.append(str(r.get(label_key, f"run {i + 1}")) if label_key else f"run {i + 1}")
        return out

    names = labels()
    header = ["#", label_key or "run"] + [
        ("wall time" if c == "seconds" else _pretty_metric(c)) for c in ordered
    ]
    table_rows = []
    for rank, (row, name) in enumerate(zip(ranked, names), start=1):
        cells = [f'<td class="num">{rank}</td>', f"<td>{_esc(name)}</td>"]
        for c in ordered:
            if c not in row:
                cells.append("<td></td>")
            elif c == "seconds":
                cells.append(f'<td class="num">{_fmt_seconds(row[c])}</td>')
            elif c in metric_cols:
                cell = _fmt(row[c])
                std = _scalar(row.get(f"{c}_std"))
                if std is not None and f"{c}_std" in row:
                    cell += f" ± {std:.4f}"
                cells.append(f'<td class="num">{cell}</td>')
            else:
                cells.append(f"<td>{_esc(row[c])}</td>")
        table_rows.append(cells)
    classes = ["best"] + [""] * (len(ranked) - 1) if score(ranked[0]) > -math.inf else []
    sections = [_table(header, table_rows, classes)]

    scored = [(n, r) for n, r in zip(names, ranked) if score(r) > -math.inf]
    if scored:
        n = len(scored)
        times = [_scalar(r.get("seconds")) for _, r in scored]
        show_time = any(t is not None and math.isfinite(t) for t in times)
        fig = _figure(10.5 if show_time else 8.0, max(1.6, 0.42 * n + 1.1))
        if show_time:
            ax, ax_t = fig.subplots(1, 2, sharey=True, width_ratios=[3, 1.2])
            fig.get_layout_engine().set(wspace=0.06)
        else:
            ax, ax_t = fig.add_subplot(), None
        ys = np.arange(n)
        vals = np.array([score(r) for _, r in scored])
        errs = np.array([_scalar(r.get(f"{sort_key}_std")) or 0.0 for _, r in scored])
        has_err = bool(np.any(errs > 0))
        colours = ["#2ca02c"] + ["#4c72b0"] * (n - 1)
        ax.barh(
            ys,
            vals,
            xerr=errs if has_err else None,
            color=colours,
            alpha=0.85,
            error_kw={"ecolor": "#333", "capsize": 3, "lw": 1},
        )
        ax.set_yticks(ys, [_shorten(nm) for nm, _ in scored])
        ax.invert_yaxis()
        top = float(np.max(vals + errs))
        low = float(min(0.0, np.min(vals - errs)))
        span = top - low if top > low else 1.0
        ax.set_xlim(low, top + 0.14 * span)
        for y, v, e in zip(ys, vals, errs):
            ax.text(v + e + 0.01 * span, y, f"{v:.3f}", va="center", fontsize=9)
        ax.set_xlabel(_pretty_metric(sort_key) + (" (mean ± std)" if has_err else ""))
        ax.set_title(f"Runs ranked by {_pretty_metric(sort_key)}")
        ax.grid(axis="x", alpha=0.3)
        if ax_t is not None:
            t = np.array([v if v is not None and math.isfinite(v) else np.nan for v in times])
            tmax = float(np.nanmax(t)) if np.any(np.isfinite(t)) else 0.0
            scale, unit = (60.0, "min") if tmax >= 120 else (1.0, "s")
            tt = np.nan_to_num(t) / scale
            ax_t.barh(ys, tt, color="#999999", alpha=0.8)
            top_t = tmax / scale if tmax > 0 else 1.0
            ax_t.set_xlim(0, top_t * 1.05)
            for y, v, raw in zip(ys, tt, t):
                if not np.isfinite(raw):
                    continue
                inside = v > 0.5 * top_t  # long bar: label inside, else just right of it
                ax_t.text(
                    v - 0.02 * top_t if inside else v + 0.02 * top_t,
                    y,
                    _fmt_seconds(raw),
                    va="center",
                    ha="right" if inside else "left",
                    color="black",
                    fontsize=8,
                )
            ax_t.set_xlabel(f"wall time ({unit})")
            ax_t.set_title("Wall time")
            ax_t.grid(axis="x", alpha=0.3)
            ax_t.tick_params(axis="y", left=False)
        sections.append(
            f"<h2>{_esc(_pretty_metric(sort_key))}</h2>"
            + _figure_html(fig, alt=f"Bar chart of {sort_key} per run")
        )
    else:
        sections.append(_note(f"No run has a value for {sort_key!r}; no chart drawn."))
    subtitle = f"{len(rows)} run{'s' if len(rows) != 1 else ''}, sorted by {_pretty_metric(sort_key)} (best first)"
    return _write(path, _page(title, subtitle, sections))


def _shorten(text: str, width: int = 32) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
