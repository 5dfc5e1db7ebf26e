"""Per-epoch training metrics, the metrics table (CSV) and its plot (PNG).

:class:`EpochMetrics` accumulates, over the batches of one epoch and one split:

* ``cls_loss``, ``box_loss``, ``landmark_loss``: the per-task losses, each averaged over
  batches weighted by the number of samples the task used in the batch;
* ``cls_acc``: classification accuracy on positives and negatives (face when the face
  probability > 0.5);
* ``pos_recall``: the fraction of positives classified as faces.

A metric without samples is NaN (written as an empty CSV cell).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..data.shards import NEGATIVE, POSITIVE
from .losses import LossParts, flatten_output

if TYPE_CHECKING:
    from matplotlib.axes import Axes

METRICS: tuple[str, ...] = ("cls_loss", "box_loss", "landmark_loss", "cls_acc", "pos_recall")


class EpochMetrics:
    """Running sums of the metrics of one split during one epoch."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._loss_sum = {"cls": 0.0, "box": 0.0, "landmark": 0.0}
        self._loss_n = {"cls": 0, "box": 0, "landmark": 0}
        self.n_samples = 0
        self.n_cls = 0
        self.n_correct = 0
        self.n_pos = 0
        self.n_pos_found = 0

    @torch.no_grad()
    def update(self, parts: LossParts, cls_logits: Tensor, labels: Tensor) -> None:
        """Add one batch: its loss parts, the net's classification logits and the labels."""
        for task, n in (("cls", parts.n_cls), ("box", parts.n_box),
                        ("landmark", parts.n_landmark)):
            if n:
                self._loss_sum[task] += float(getattr(parts, task)) * n
                self._loss_n[task] += n
        self.n_samples += len(labels)
        logits = flatten_output(cls_logits, 2).float()
        labels = labels.to(logits.device)
        face = logits[:, 1] > logits[:, 0]  # softmax probability > 0.5
        pos, neg = labels == POSITIVE, labels == NEGATIVE
        self.n_cls += int((pos | neg).sum())
        self.n_correct += int((face & pos).sum() + (~face & neg).sum())
        self.n_pos += int(pos.sum())
        self.n_pos_found += int((face & pos).sum())

    def as_row(self, prefix: str = "") -> dict[str, float]:
        """The metrics as ``{prefix + name: value}`` (NaN where undefined)."""

        def ratio(a: float, b: int) -> float:
            return a / b if b else math.nan

        values = {
            "cls_loss": ratio(self._loss_sum["cls"], self._loss_n["cls"]),
            "box_loss": ratio(self._loss_sum["box"], self._loss_n["box"]),
            "landmark_loss": ratio(self._loss_sum["landmark"], self._loss_n["landmark"]),
            "cls_acc": ratio(self.n_correct, self.n_cls),
            "pos_recall": ratio(self.n_pos_found, self.n_pos),
        }
        return {prefix + k: v for k, v in values.items()}


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_csv(path: str | os.PathLike[str], rows: Sequence[Mapping[str, object]]) -> Path:
    """Write the whole table (columns of the first row, then any new ones) via a temp file
    and a rename, so a reader never sees a half-written file."""
    path = Path(path)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c, "")) for c in columns])
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(buffer.getvalue(), encoding="utf-8")
    os.replace(tmp, path)
    return path


def append_csv(path: str | os.PathLike[str], row: Mapping[str, object]) -> Path:
    """Append one row: re-read the table, add the row, rewrite it atomically."""
    path = Path(path)
    rows: list[dict[str, object]] = []
    if path.is_file():
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    return write_csv(path, [*rows, dict(row)])


def read_csv(path: str | os.PathLike[str]) -> list[dict[str, float]]:
    """The table back as floats (NaN for empty cells)."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        return [{k: float(v) if v != "" else math.nan for k, v in row.items()}
                for row in csv.DictReader(f)]


def plot_metrics(path: str | os.PathLike[str], rows: Sequence[Mapping[str, float]]) -> Path:
    """Plot losses (left) and accuracy / positive recall (right) per epoch to a PNG, for
    the ``train_`` and ``val_`` columns present. Uses the Figure API (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    epochs = [float(r["epoch"]) for r in rows]
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    loss_ax, acc_ax = fig.subplots(1, 2)
    for split, style in (("train", "-"), ("val", "--")):
        for name in ("cls_loss", "box_loss", "landmark_loss"):
            _plot(loss_ax, epochs, rows, f"{split}_{name}", style)
        for name in ("cls_acc", "pos_recall"):
            _plot(acc_ax, epochs, rows, f"{split}_{name}", style)
    loss_ax.set_title("losses")
    acc_ax.set_title("classification")
    acc_ax.set_ylim(0.0, 1.02)
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.12, top=0.92, wspace=0.18)
    tmp = path.with_name(f".tmp-{path.name}")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path


def _plot(ax: Axes, epochs: list[float], rows: Sequence[Mapping[str, float]], column: str,
          style: str) -> None:
    values = [float(r.get(column, math.nan)) for r in rows]
    if any(not math.isnan(v) for v in values):
        ax.plot(epochs, values, style, marker="o", markersize=3, label=column)
