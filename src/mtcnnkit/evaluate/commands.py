"""``mtcnnkit eval …``: score detectors on face benchmarks (argument handling and output only;
the protocols live in `wider`, `fddb`, `landmarks`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..cli_support import (
    device_option,
    fail,
    make_detector,
    parse_thresholds,
    positive,
    progress_bar,
    write_json_atomic,
)
from . import wider
from .plots import plot_wider_pr

eval_app = typer.Typer(help="Score detectors on face benchmarks (WIDER FACE, …).",
                       no_args_is_help=True)

WeightsOption = Annotated[str | None, typer.Option(
    help="Weights to run: 'default', 'reference' or a path. Without it and with --pred-dir, "
         "existing predictions are scored instead.", show_default=False)]
MinFaceOption = Annotated[float, typer.Option(callback=positive,
                                              help="Smallest face searched for, in pixels.")]
ThresholdsOption = Annotated[str, typer.Option(callback=parse_thresholds, metavar="P,R,O",
                                               help="PNet, RNet and ONet score thresholds.")]
DeviceOption = Annotated[str, typer.Option(callback=device_option, help="cpu, cuda or cuda:N.")]
ThreadsOption = Annotated[int | None, typer.Option(min=1, show_default=False,
                                                   help="CPU threads for the nets.")]
BatchOption = Annotated[int, typer.Option(min=1, help="Images per detector call.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


def _image_list(data: Path, images: Path | None) -> list[Path]:
    root = data / "WIDER_val" / "images"
    if images is None:
        found = sorted(root.glob("*/*.jpg"))
        if not found:
            raise typer.BadParameter(f"no images under {root}", param_hint="'--data'")
        return found
    try:
        names = [line.strip() for line in images.read_text().splitlines() if line.strip()]
    except OSError as e:
        raise typer.BadParameter(f"cannot read {images}: {e.strerror}",
                                 param_hint="'--images'") from None
    paths = [root / name for name in names]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise typer.BadParameter(f"{len(missing)} listed image(s) missing under {root}, e.g. "
                                 f"{missing[0]}", param_hint="'--images'")
    if not paths:
        raise typer.BadParameter(f"{images} lists no images", param_hint="'--images'")
    return paths


@eval_app.command("wider")
def wider_command(
    data: Annotated[Path, typer.Option(
        help="WIDER FACE root: holds WIDER_val/images and eval_tools/ground_truth.")],
    images: Annotated[Path | None, typer.Option(
        metavar="LIST", show_default=False,
        help="Text file of images to evaluate, one 'event/name.jpg' per line (e.g. "
             "splits/wider_val_dev.txt); default: every val image present.")] = None,
    weights: WeightsOption = None,
    pred_dir: Annotated[Path | None, typer.Option(
        metavar="DIR", show_default=False,
        help="Predictions in the official format (<event>/<name>.txt). Scored as they are "
             "when --weights is not given; otherwise the detector's predictions are written "
             "here (default: OUT/predictions).")] = None,
    out: Annotated[Path, typer.Option(
        metavar="DIR", help="Where the summary, per-event table and PR plots go.")
    ] = Path("out/wider-eval"),
    min_face: MinFaceOption = 20.0,
    thresholds: ThresholdsOption = "0.6,0.7,0.7",
    device: DeviceOption = "cpu",
    threads: ThreadsOption = None,
    batch_size: BatchOption = 8,
    quiet: QuietOption = False,
) -> None:
    """WIDER FACE val, official protocol: prints easy/medium/hard AP; writes predictions,
    summary.json, events.md (AP per event) and pr_<level>.png."""
    try:
        gt = wider.load_ground_truth(data / "eval_tools" / "ground_truth")
    except (FileNotFoundError, ValueError) as e:
        raise fail(str(e), 2) from None
    paths = _image_list(data, images)
    keys = [wider.image_key(p) for p in paths]
    err = Console(stderr=True)
    started = time.perf_counter()
    if weights is None and pred_dir is not None:
        try:
            predictions = wider.read_predictions(pred_dir)
        except (FileNotFoundError, ValueError) as e:
            raise fail(str(e), 2) from None
        source = str(pred_dir)
    else:
        weights = weights or "default"
        detector = make_detector(weights=weights, device=device, min_face_size=min_face,
                                 thresholds=thresholds, num_threads=threads,
                                 batch_size=batch_size)
        with progress_bar(err, quiet) as progress:
            task = progress.add_task("detecting", total=len(paths))
            predictions = wider.predict(
                detector, paths, batch_size,
                progress=lambda done, _total: progress.update(task, completed=done))
        pred_dir = pred_dir or out / "predictions"
        wider.write_predictions(pred_dir, predictions)
        source = weights
    detect_seconds = time.perf_counter() - started
    try:
        result = wider.evaluate_wider(predictions, gt, keys)
    except (KeyError, ValueError) as e:
        raise fail(str(e).strip("'\""), 2) from None
    seconds = time.perf_counter() - started

    out.mkdir(parents=True, exist_ok=True)
    per_event_images: dict[str, int] = {}
    for key in keys:
        event = key.split("/", 1)[0]
        per_event_images[event] = per_event_images.get(event, 0) + 1
    (out / "events.md").write_text(wider.event_table(result, per_event_images) + "\n")
    plot_wider_pr({source: result.curves}, out)
    write_json_atomic({
        "source": source, "images": len(keys), "image_list": str(images) if images else None,
        "ap": result.ap, "faces": result.n_faces, "predictions": result.n_predictions,
        "settings": None if source == str(pred_dir) else {"min_face": min_face,
                                                           "thresholds": list(thresholds)},
        "predictions_dir": str(pred_dir), "seconds": {"detect": round(detect_seconds, 2),
                                                     "total": round(seconds, 2)},
    }, out / "summary.json")
    typer.echo(result.summary())
    if not quiet:
        err.print(f"{len(keys)} images, {result.n_predictions} predictions, "
                  f"{seconds:.1f} s; predictions in {pred_dir}; plots, events.md and "
                  f"summary.json in {out}", highlight=False, markup=False, soft_wrap=True)
