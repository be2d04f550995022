"""Plain-text tables for the ``table()`` methods of the result classes."""

from __future__ import annotations


def format_value(value: object) -> str:
    """A float with 4 decimals, ``-`` for None, anything else as ``str``."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_table(title: str, rows: list[tuple[str, object]]) -> str:
    """``title`` above a two-column table of (name, value) rows."""
    width = max([len("metric")] + [len(name) for name, _ in rows])
    lines = [title, f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 10}"]
    lines += [f"{name:<{width}}  {format_value(value)}" for name, value in rows]
    return "\n".join(lines)
