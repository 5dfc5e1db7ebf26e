"""``mtcnnkit train``: run the three-stage training pipeline (see :mod:`.pipeline`).

Exit status: 0 when the run completed, 2 on usage errors (bad config, override, step
name, missing data folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..cli_support import device_option, fail, progress_bar
from . import pipeline

train_app = typer.Typer(add_completion=False,
                        context_settings={"help_option_names": ["-h", "--help"]})

STEPS_HELP = ", ".join(pipeline.STEPS)


@train_app.command("train")
def train_command(
    data: Annotated[Path, typer.Option(
        help="The shared data folder (WIDER_FACE, splits, CNN_FacePoint).")],
    out: Annotated[Path, typer.Option(help="Run folder: every step's output goes here.")],
    config: Annotated[Path | None, typer.Option(
        help="YAML config (default: the built-in defaults, as configs/default.yaml).")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a setting, e.g. --set pnet.epochs=2 (repeatable).")] = None,
    only: Annotated[str | None, typer.Option(help=f"Run only this step: {STEPS_HELP}.")] = None,
    from_step: Annotated[str | None, typer.Option(
        "--from", help="Delete the outputs of this step and the later ones, rerun them.")
    ] = None,
    device: Annotated[str | None, typer.Option(
        callback=lambda v: v if v is None else device_option(v),
        help="cpu, cuda or cuda:N (overrides the config's device).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Train PNet, RNet and ONet, assemble OUT/weights.pt and evaluate it on WIDER dev."""
    overrides = list(set_ or [])
    if device is not None:
        overrides.append(f"device={device}")
    try:
        cfg = pipeline.load_config(config, overrides)
    except (ValueError, OSError) as e:
        raise fail(str(e), 2) from None
    if not data.is_dir():
        raise fail(f"--data {data}: no such folder", 2)
    for option, step in (("--only", only), ("--from", from_step)):
        if step is not None and step not in pipeline.STEPS:
            raise fail(f"{option} {step!r}: expected one of {STEPS_HELP}", 2)
    if only is not None and from_step is not None:
        raise fail("--only and --from cannot be combined", 2)

    console = Console(stderr=True)
    with progress_bar(console, quiet) as bar:
        tasks: dict[str, int] = {}

        def progress(description: str, done: int, total: int) -> None:
            if description not in tasks:
                tasks[description] = bar.add_task(description, total=total)
            bar.update(tasks[description], completed=done, total=total)

        try:
            reports = pipeline.run_pipeline(data, out, cfg, only=only, from_step=from_step,
                                            progress=progress, echo=bar.console.print)
        except ValueError as e:
            if only is not None and "needs" in str(e):
                raise fail(str(e), 2) from None
            raise
    _print_table(reports)


def _print_table(reports: list[pipeline.StepReport]) -> None:
    table = Table(title="mtcnnkit training pipeline")
    table.add_column("step")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    table.add_column("result")
    for r in reports:
        seconds = r.result.get("seconds", r.seconds)
        table.add_row(r.step, r.status, f"{seconds:.1f}", pipeline.describe(r))
    Console().print(table)
