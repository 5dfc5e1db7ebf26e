"""``mtcnnkit export``: write the cascade's nets as ONNX, OpenVINO IR or ncnn, verified against
torch (argument handling and output only; the work is `export.export`'s).

Exit status: 0 on success, 1 when verification fails (nothing is written) or a converter
fails, 2 on usage errors (weights that cannot be loaded, a missing package, an output path
that is not an export directory).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..cli_support import WeightsOption, fail
from ..weights import load_weights
from . import export as exporting


class ExportFormat(str, Enum):
    onnx = "onnx"
    openvino = "openvino"
    ncnn = "ncnn"


def export_command(
    format: Annotated[ExportFormat, typer.Option(
        "--format", "-f", show_default=False,
        help="onnx (onnxruntime), openvino (OpenVINO IR) or ncnn (via pnnx).")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", show_default=False,
        help="Output directory: new, empty, or an earlier export (replaced whole). Gets "
             "manifest.json and one file set per net.")],
    weights: WeightsOption = "default",
    tolerance: Annotated[float, typer.Option(
        min=0.0, help="Largest absolute difference from the torch nets' outputs accepted.")
    ] = exporting.DEFAULT_TOLERANCE,
    no_verify: Annotated[bool, typer.Option(
        "--no-verify", help="Skip running the exported nets and comparing them with torch.")
    ] = False,
    image: Annotated[list[Path] | None, typer.Option(
        "--image", metavar="PATH", show_default=False,
        help="Also verify on this image (pyramid levels for PNet, crops for RNet/ONet); "
             "repeatable. Fills the 'real' column.")] = None,
) -> None:
    """Export the three nets to ONNX, OpenVINO or ncnn and check them against torch."""
    fmt = format.value
    try:
        exporting.require(fmt, verify=not no_verify)
        cascade = load_weights(weights)
    except exporting.MissingPackageError as e:
        raise fail(str(e), 2) from None
    except (FileNotFoundError, ValueError) as e:
        hint = ("\nOn the command line: --weights reference, or --weights PATH."
                if weights == "default" and isinstance(e, FileNotFoundError) else "")
        raise fail(f"{e}{hint}", 2) from None
    for path in image or []:
        if not path.is_file():
            raise typer.BadParameter(f"no such file: {path}", param_hint="'--image'")

    status = Console(stderr=True)
    try:
        with status.status(f"exporting to {fmt}…") as spinner:
            report = exporting.export(
                cascade, fmt, out, source=weights, verify=not no_verify, tolerance=tolerance,
                images=image, progress=lambda message: spinner.update(f"{message}…"))
    except exporting.VerificationError as e:
        _print_report(e.report, written=False)
        raise fail(f"verification failed: an exported net differs from torch by more than "
                   f"{tolerance:g}; nothing was written to {out}. Use a larger --tolerance "
                   "or --no-verify to write it anyway.", 1) from None
    except (exporting.MissingPackageError, FileExistsError, ValueError) as e:
        raise fail(str(e), 2) from None
    except exporting.ExportError as e:
        raise fail(str(e), 1) from None
    except OSError as e:  # the output folder or its parent cannot be written
        raise fail(f"cannot write {out}: {e}", 2) from None
    _print_report(report, written=True)


def _diff(value: float | None, tolerance: float, verified: bool) -> Text:
    if value is None:
        return Text("-")
    return Text(f"{value:.2e}", style="" if not verified or value <= tolerance else "red")


def _print_report(report: exporting.ExportReport, written: bool) -> None:
    console = Console()
    table = Table(box=None, header_style="bold")
    table.add_column("net")
    table.add_column("file(s)", overflow="fold")
    table.add_column("max|diff| random", justify="right")
    table.add_column("max|diff| real", justify="right")
    table.add_column("ok")
    for n in report.nets.values():
        ok = (Text("-") if n.ok is None
              else Text("yes", style="green") if n.ok else Text("NO", style="bold red"))
        table.add_row(n.stage, ", ".join(n.files),
                      _diff(n.max_abs_diff_random, report.tolerance, report.verified),
                      _diff(n.max_abs_diff_real, report.tolerance, report.verified), ok)
    console.print(table)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    if report.verified:
        check = (f"verified with {report.runtime} against torch, tolerance "
                 f"{report.tolerance:g}: {'ok' if report.ok else 'FAILED'}")
    else:
        check = "not verified (--no-verify)"
    where = f"-> {report.out_dir}" if written else "(not written)"
    console.print(f"{report.format} export of {report.source} via {report.exporter} {where} "
                  f"in {report.seconds:.1f} s; {check}", highlight=False, soft_wrap=True)
