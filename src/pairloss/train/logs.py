"""The logs of a run, next to each other in the run folder.

- ``metrics.jsonl``: one JSON object per epoch (the record the trainer returns);
- ``metrics.csv``: the same records as a table (one column per key, in order of appearance);
- ``tensorboard/``: TensorBoard event files (``torch.utils.tensorboard.SummaryWriter``): per
  epoch every number of the record under ``epoch/<key>``, and the loss of every training batch
  under ``batch/loss``. Open with ``tensorboard --logdir RUN``. Needs the ``tensorboard``
  package (``pip install tensorboard``); without it this log is left out, with a notice.

The JSON and CSV files are rewritten from the whole history after every epoch, so a resumed run
(which keeps the history up to its checkpoint) never shows the epochs it threw away.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import PairLossError

METRICS = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
TENSORBOARD = "tensorboard"


def write_history(path: Path, history: list[dict[str, Any]]) -> None:
    """One JSON object per line, per epoch."""
    path.write_text("".join(json.dumps(r) + "\n" for r in history))


def read_history(path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (empty when missing); a line that is not a JSON object
    raises :class:`PairLossError` naming the file and the line."""
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PairLossError(f"{path}: not UTF-8 text ({exc.reason}); expected JSON lines") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PairLossError(
                f"{path}: line {number} is not valid JSON ({exc.msg}); expected one JSON object "
                "per epoch"
            ) from None
        if not isinstance(record, dict):
            raise PairLossError(f"{path}: line {number} is not a JSON object")
        records.append(record)
    return records


def write_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """The records as CSV: a header of every key (in order of first appearance), one row each."""
    columns: list[str] = []
    for record in history:
        columns.extend(k for k in record if k not in columns)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(history)


def _summary_writer(folder: Path) -> Any | None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(folder))


class RunLogs:
    """Writes a run's logs (see the module docstring).

    Args:
        out: the run folder.
        tensorboard: also write TensorBoard events (when the package is installed).
        notice: called once with a message when TensorBoard is wanted but not installed.
    """

    def __init__(
        self, out: Path, tensorboard: bool = True, notice: Callable[[str], None] = print
    ) -> None:
        self.out = Path(out)
        self.writer = _summary_writer(self.out / TENSORBOARD) if tensorboard else None
        if tensorboard and self.writer is None:
            notice("TensorBoard log left out: `pip install tensorboard` to get one")

    def batch(self, step: int, loss: float) -> None:
        """Log the loss of training step ``step`` (TensorBoard only)."""
        if self.writer is not None:
            self.writer.add_scalar("batch/loss", loss, step)

    def epoch(self, history: list[dict[str, Any]], step: int) -> None:
        """Rewrite the JSON and CSV files from ``history`` and log its last record."""
        write_history(self.out / METRICS, history)
        write_csv(self.out / METRICS_CSV, history)
        if self.writer is not None and history:
            for key, value in history[-1].items():
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                if number and math.isfinite(value) and key != "epoch":
                    self.writer.add_scalar(f"epoch/{key}", value, history[-1]["epoch"])
            self.writer.flush()

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
