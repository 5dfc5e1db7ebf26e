"""Evaluation plots (matplotlib's object API: no global pyplot state)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .wider import LEVELS, PrCurve


def plot_wider_pr(runs: Mapping[str, Mapping[str, PrCurve]], out_dir: str | os.PathLike
                  ) -> list[Path]:
    """One PNG per difficulty level (``pr_easy.png`` …), one precision-recall line per run
    (name -> level -> curve), labelled with its AP."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for level in LEVELS:
        fig = Figure(figsize=(5.5, 4.5), dpi=110)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for name, curves in runs.items():
            curve = curves[level]
            keep = ~np.isnan(curve.precision)
            ax.plot(curve.recall[keep], curve.precision[keep], linewidth=2,
                    label=f"{name} (AP {curve.ap:.3f})")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="Recall", ylabel="Precision",
               title=f"WIDER FACE {level}")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left")
        fig.tight_layout()
        path = out_dir / f"pr_{level}.png"
        fig.savefig(path)
        paths.append(path)
    return paths
