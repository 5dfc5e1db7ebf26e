"""Pieces shared by the command-line commands: progress bars, option checks, output
writing, and turning detector construction errors into usage errors."""

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from .detect.detector import Detector

WEIGHTS_HELP = ("Cascade weights: 'default' (mtcnnkit's own), 'reference' (the original MTCNN "
                "weights, for comparison; see `mtcnnkit fetch-reference`), or a path to an "
                "mtcnnkit .pt file or a folder with pnet.pt/rnet.pt/onet.pt.")
WeightsOption = Annotated[str, typer.Option(help=WEIGHTS_HELP)]


def parse_thresholds(value: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or not all(0.0 <= p <= 1.0 for p in parts):
        raise typer.BadParameter(
            f"expected three comma-separated scores in [0, 1] (PNet,RNet,ONet), "
            f"e.g. 0.6,0.7,0.7; got {value!r}")
    return parts  # type: ignore[return-value]


def positive(value: float) -> float:
    if not value > 0:
        raise typer.BadParameter(f"must be greater than 0, got {value:g}")
    return value


def scale_factor_option(value: float) -> float:
    if not 0 < value < 1:
        raise typer.BadParameter(f"must lie strictly between 0 and 1, got {value:g}")
    return value


def device_option(value: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:\d+)?", value):
        raise typer.BadParameter(f"expected 'cpu', 'cuda' or 'cuda:N', got {value!r}")
    return value


def fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(code)


class RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        speed = task.completed / elapsed if task.completed and elapsed else None
        return Text(f"{speed:.1f} images/s" if speed else "- images/s",
                    style="progress.data.speed")


def progress_bar(console: Console, quiet: bool) -> Progress:
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                    MofNCompleteColumn(), RateColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console, disable=quiet)


def write_json_atomic(data: object, path: Path) -> None:
    """Write ``data`` as JSON to a temporary file beside ``path``, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is too strict for a result file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise




def make_detector(**options) -> Detector:
    """`Detector(**options)`, or exit 2 with the reason (weights missing, bad values)."""
    try:
        return Detector(**options)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        hint = ("\nOn the command line: --weights reference, or --weights PATH."
                if options.get("weights", "default") == "default"
                and isinstance(e, FileNotFoundError) else "")
        raise fail(f"{e}{hint}", 2) from None
