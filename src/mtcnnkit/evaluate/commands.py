"""``mtcnnkit eval …``: score detectors on face benchmarks (argument handling and output only;
the protocols live in `wider`, `fddb`, `landmarks`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import numpy as np
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
from ..detect.cascade import StageTimes
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
DataOption = Annotated[Path, typer.Option(
    help="WIDER FACE root: holds WIDER_val/images and eval_tools/ground_truth.")]
ImagesOption = Annotated[Path | None, typer.Option(
    metavar="LIST", show_default=False,
    help="Text file of images to evaluate, one 'event/name.jpg' per line (e.g. "
         "splits/wider_val_dev.txt); default: every val image present.")]


def _predict_with_progress(detector, paths: list[Path], batch_size: int, label: str,
                           quiet: bool, times: StageTimes | None = None,
                           last_stage: str = "onet") -> dict:
    with progress_bar(Console(stderr=True), quiet) as progress:
        task = progress.add_task(label, total=len(paths))
        return wider.predict(detector, paths, batch_size,
                             progress=lambda done, _total: progress.update(task, completed=done),
                             times=times, last_stage=last_stage)


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
    data: DataOption,
    images: ImagesOption = None,
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
        predictions = _predict_with_progress(detector, paths, batch_size, "detecting", quiet)
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


@eval_app.command("fddb")
def fddb_command(
    folds: Annotated[Path, typer.Option(
        metavar="DIR", help="FDDB-folds folder (FDDB-fold-XX-ellipseList.txt, "
                            "FDDB-fold-XX.txt).")],
    images: Annotated[Path | None, typer.Option(
        metavar="DIR", show_default=False,
        help="originalPics folder (<image>.jpg as listed in the folds). Needed to run a "
             "detector and to cut regions at the image border.")] = None,
    weights: WeightsOption = None,
    detections: Annotated[Path | None, typer.Option(
        metavar="FILE", show_default=False,
        help="Detections in the official FDDB format, scored as they are when --weights is "
             "not given; otherwise the detector's detections are written here (default: "
             "OUT/detections.txt).")] = None,
    vertical_scale: Annotated[float, typer.Option(
        callback=positive, help="Stretch rectangle height by this factor, keeping the bottom "
                                "edge (MTCNN boxes are tighter than FDDB's head ellipses; "
                                "1.2 is common).")] = 1.0,
    shift: Annotated[float, typer.Option(
        help="Then move rectangles down by this fraction of their height.")] = 0.0,
    out: Annotated[Path, typer.Option(metavar="DIR", help="Where results go.")
                   ] = Path("out/fddb-eval"),
    min_face: MinFaceOption = 20.0,
    thresholds: ThresholdsOption = "0.6,0.7,0.7",
    device: DeviceOption = "cpu",
    threads: ThreadsOption = None,
    batch_size: BatchOption = 16,
    quiet: QuietOption = False,
) -> None:
    """FDDB, official protocol: discrete and continuous ROC; prints TPR at 1,000 and 2,000
    false positives; writes DiscROC.txt, ContROC.txt, roc.png and summary.json."""
    from ..data.annotations import read_fddb_folds
    from . import fddb

    try:
        truth = read_fddb_folds(folds)
    except (FileNotFoundError, ValueError) as e:
        raise fail(str(e), 2) from None
    err = Console(stderr=True)
    try:
        sizes = fddb.read_image_sizes(images, truth) if images is not None else None
        if weights is None and detections is not None:
            found = fddb.read_detections(detections)
            source = str(detections)
        else:
            if images is None:
                raise typer.BadParameter("running a detector needs --images",
                                         param_hint="'--images'")
            weights = weights or "default"
            detector = make_detector(weights=weights, device=device, min_face_size=min_face,
                                     thresholds=thresholds, num_threads=threads,
                                     batch_size=batch_size)
            with progress_bar(err, quiet) as progress:
                task = progress.add_task("detecting", total=len(truth))
                found = fddb.detect_fddb(
                    detector, images, truth, batch_size,
                    progress=lambda done, _total: progress.update(task, completed=done))
            detections = detections or out / "detections.txt"
            fddb.write_detections(detections, found, [t.image for t in truth],
                                  vertical_scale=vertical_scale, shift=shift)
            source = weights
        result = fddb.evaluate_fddb(found, truth, sizes, vertical_scale=vertical_scale,
                                    shift=shift)
    except (FileNotFoundError, ValueError) as e:
        raise fail(str(e), 2) from None
    out.mkdir(parents=True, exist_ok=True)
    fddb.write_roc(f"{out}/", result.discrete, result.continuous)
    fddb.plot_roc({f"{source} (discrete)": result.discrete,
                   f"{source} (continuous)": result.continuous}, out / "roc.png")
    write_json_atomic({"source": source, **result.to_dict()}, out / "summary.json")
    typer.echo(result.summary())


@eval_app.command("landmarks")
def landmarks_command(
    image_list: Annotated[Path, typer.Option(
        "--list", metavar="FILE",
        help="Landmark list in the CNN_FacePoint format (e.g. testImageList.txt).")],
    root: Annotated[Path | None, typer.Option(
        metavar="DIR", show_default=False,
        help="Folder the listed image paths are relative to (default: the list's folder).")
    ] = None,
    weights: Annotated[str, typer.Option(help="Weights to run: 'default', 'reference' or a "
                                              "path.")] = "default",
    out: Annotated[Path, typer.Option(metavar="DIR", help="Where summary.json goes.")
                   ] = Path("out/landmark-eval"),
    min_face: MinFaceOption = 20.0,
    thresholds: ThresholdsOption = "0.6,0.7,0.7",
    device: DeviceOption = "cpu",
    threads: ThreadsOption = None,
    batch_size: BatchOption = 32,
    quiet: QuietOption = False,
) -> None:
    """5-point landmark error: NME (by inter-ocular distance), per point, failure rate (> 10 %)
    on the detected faces; faces not detected are counted apart."""
    from ..data.annotations import read_landmark_list
    from .landmarks import detect_landmarks, evaluate_landmarks, landmark_table

    try:
        samples = read_landmark_list(image_list)
    except (OSError, ValueError) as e:
        raise fail(str(e), 2) from None
    root = root or image_list.parent
    detector = make_detector(weights=weights, device=device, min_face_size=min_face,
                             thresholds=thresholds, num_threads=threads, batch_size=batch_size)
    err = Console(stderr=True)
    try:
        with progress_bar(err, quiet) as progress:
            task = progress.add_task("detecting", total=len(samples))
            predictions = detect_landmarks(
                detector, samples, root, batch_size,
                progress=lambda done, _total: progress.update(task, completed=done))
    except (FileNotFoundError, ValueError) as e:
        raise fail(str(e), 2) from None
    result = evaluate_landmarks(predictions, samples)
    write_json_atomic({"source": weights, "list": str(image_list), **result.as_dict()},
                      out / "summary.json")
    typer.echo(landmark_table({weights: result}))


def parse_run(spec: str) -> tuple[str, str, dict]:
    """``NAME=WEIGHTS[;min_face=F][;thresholds=P/R/O][;scale_factor=S]`` -> parts."""
    head, *options = spec.split(";")
    name, sep, weights = head.partition("=")
    if not sep or not name or not weights:
        raise typer.BadParameter(f"expected NAME=WEIGHTS[;key=value...], got {spec!r}",
                                 param_hint="'--run'")
    settings: dict = {}
    for option in options:
        key, _, value = option.partition("=")
        try:
            if key == "min_face":
                settings["min_face_size"] = float(value)
            elif key == "thresholds":
                settings["thresholds"] = tuple(float(v) for v in value.split("/"))
            elif key == "scale_factor":
                settings["scale_factor"] = float(value)
            else:
                raise typer.BadParameter(f"unknown setting {key!r} in {spec!r} (known: "
                                         "min_face, thresholds, scale_factor)",
                                         param_hint="'--run'")
        except ValueError:
            raise typer.BadParameter(f"bad value for {key} in {spec!r}",
                                     param_hint="'--run'") from None
    return name, weights, settings


STAGES = ("pnet", "rnet", "onet")


def _stage_rows(name: str, detector, paths: list[Path], batch_size: int, quiet: bool,
                gt: wider.WiderGroundTruth, keys: list[str], final: dict) -> list[str]:
    """Stage-recall table rows of one run: PNet and RNet candidates from two more passes
    (``last_stage``), ONet from the run's ``final`` predictions (x y w h score)."""
    found = {stage: _predict_with_progress(detector, paths, batch_size, f"{name} ({stage})",
                                           quiet, last_stage=stage)
             for stage in STAGES[:-1]}
    found["onet"] = final
    rows = []
    for stage in STAGES:
        corners = {k: wider.to_corners(p) for k, p in found[stage].items()}
        recall = wider.stage_recall(corners, gt, keys)
        per_image = sum(len(p) for p in corners.values()) / max(len(keys), 1)
        rows.append(f"| {name} | {stage} | {per_image:.1f} | "
                    + " | ".join("–" if np.isnan(recall[lv]) else f"{recall[lv]:.4f}"
                                 for lv in wider.LEVELS) + " |")
    return rows


def _attribute_table(by_run: dict[str, list[wider.AttributeRecall]]) -> str:
    """Markdown table of each run's final-prediction recall per WIDER face attribute."""
    def cells(values: dict, fmt: str) -> str:
        return " / ".join("–" if isinstance(v, float) and np.isnan(v) else format(v, fmt)
                          for v in (values[lv] for lv in wider.LEVELS))

    names = list(by_run)
    first = by_run[names[0]]
    lines = ["", "Recall by face attribute (WIDER's labels): share of the listed faces with "
             "that label that a final prediction overlaps with IoU >= 0.5, at any score; "
             "easy / medium / hard.", "",
             "| attribute | faces | " + " | ".join(names) + " |",
             "|---|---:|" + "---:|" * len(names)]
    for i, row in enumerate(first):
        lines.append(f"| {row.attribute}: {row.name} | {cells(row.faces, ',')} | "
                     + " | ".join(cells(by_run[n][i].recall, '.3f') for n in names) + " |")
    return "\n".join(lines) + "\n"


@eval_app.command("compare")
def compare_command(
    data: DataOption,
    runs: Annotated[list[str], typer.Option(
        "--run", metavar="NAME=WEIGHTS[;key=value]",
        help="A configuration to score; repeat for each. Settings: min_face=F, "
             "thresholds=P/R/O, scale_factor=S, e.g. "
             "--run 'ref=reference' --run 'ref-mf12=reference;min_face=12'.")],
    images: ImagesOption = None,
    out: Annotated[Path, typer.Option(metavar="DIR", help="Where the report goes.")
                   ] = Path("out/compare"),
    device: DeviceOption = "cpu",
    threads: ThreadsOption = None,
    batch_size: BatchOption = 8,
    stages: Annotated[bool, typer.Option(
        "--stages", help="Also run each configuration stopped after PNet and after RNet and "
                         "add a table of stage recall: per stage, the share of listed faces "
                         "some box overlaps (IoU >= 0.5, any score). Two more detector "
                         "passes per run.")] = False,
    quiet: QuietOption = False,
) -> None:
    """Run several weight sets / settings on the same WIDER images; write compare.md (AP
    table; with --stages recall per cascade stage; recall per WIDER face attribute: blur,
    occlusion, pose, ...) and overlaid PR curves (pr_<level>.png)."""
    parsed = [parse_run(spec) for spec in runs]
    names = [name for name, _, _ in parsed]
    if len(set(names)) != len(names):
        raise typer.BadParameter("run names must differ", param_hint="'--run'")
    try:
        gt = wider.load_ground_truth(data / "eval_tools" / "ground_truth")
    except (FileNotFoundError, ValueError) as e:
        raise fail(str(e), 2) from None
    paths = _image_list(data, images)
    keys = [wider.image_key(p) for p in paths]
    err = Console(stderr=True)
    rows, stage_rows, curves, by_attribute = [], [], {}, {}
    for name, weights, settings in parsed:
        detector = make_detector(weights=weights, device=device, num_threads=threads,
                                 batch_size=batch_size, **settings)
        started = time.perf_counter()
        counts = StageTimes(synchronize=False)
        predictions = _predict_with_progress(detector, paths, batch_size, name, quiet, counts)
        seconds = time.perf_counter() - started
        per_image = {k: v / max(len(paths), 1) for k, v in counts.counts.items()}
        wider.write_predictions(out / name / "predictions", predictions)
        result = wider.evaluate_wider(predictions, gt, keys)
        curves[name] = result.curves
        if gt.attributes is not None:
            by_attribute[name] = wider.attribute_recall(
                {k: wider.to_corners(p) for k, p in predictions.items()}, gt, keys)
        c = detector.config
        rows.append(f"| {name} | {weights} | {c.min_face_size:g} | "
                    f"{'/'.join(f'{t:g}' for t in c.thresholds)} | {c.scale_factor:g} | "
                    + " | ".join(f"{result.ap[lv]:.4f}" for lv in wider.LEVELS)
                    + f" | {result.n_predictions} | {per_image.get('pnet_candidates', 0):.1f}"
                    f" | {per_image.get('rnet_survivors', 0):.1f} | {seconds:.1f} |")
        if not quiet:
            err.print(f"{name}: {result.summary()}", highlight=False, markup=False)
        if stages:
            stage_rows += _stage_rows(name, detector, paths, batch_size, quiet, gt, keys,
                                      predictions)
    table = "\n".join([
        f"WIDER FACE val, {len(keys)} images"
        + (f" ({images})" if images else "") + ", official protocol.", "",
        "| run | weights | min face | thresholds | scale factor | easy | medium | hard "
        "| predictions | PNet candidates / image | RNet survivors / image | detect s |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|", *rows, ""])
    if stages:
        table += "\n".join([
            "", "Stage recall: share of the listed faces that some box a stage passes on "
            "overlaps with IoU >= 0.5, at any score (onet: the final predictions).", "",
            "| run | stage | boxes / image | easy | medium | hard |",
            "|---|---|---:|---:|---:|---:|", *stage_rows, ""])
    if by_attribute:
        table += _attribute_table(by_attribute)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(table)
    plot_wider_pr(curves, out)
    typer.echo(table)


@eval_app.command("nets")
def nets_command(
    run: Annotated[Path, typer.Option(metavar="RUN_DIR",
                                      help="Output folder of `mtcnnkit train`.")],
    compare: Annotated[list[str] | None, typer.Option(
        "--compare", metavar="NAME=WEIGHTS",
        help="Other weights scored on the same samples; repeat, e.g. --compare "
             "reference=reference.")] = None,
    stages: Annotated[str, typer.Option(help="Comma-separated nets to score.")
                      ] = "pnet,rnet,onet",
    out: Annotated[Path | None, typer.Option(metavar="FILE", show_default=False,
                                             help="Also write the table (markdown) here.")
                   ] = None,
    device: DeviceOption = "cpu",
) -> None:
    """Per-net validation table of a training run: each net's held-out samples (the ones
    the run's trainer set aside) scored by the run's nets (RUN_DIR/weights.pt) and by the
    --compare weights: cls loss, offset loss, landmark loss, cls accuracy, positive recall."""
    from ..weights import load_weights
    from .report import validate_run, validation_table

    chosen = tuple(s.strip() for s in stages.split(",") if s.strip())
    unknown = [s for s in chosen if s not in ("pnet", "rnet", "onet")]
    if unknown or not chosen:
        raise typer.BadParameter(f"unknown net(s) {unknown}; use pnet, rnet, onet",
                                 param_hint="'--stages'")
    specs = [("this run", str(run / "weights.pt"))]
    for spec in compare or []:
        name, sep, weights = spec.partition("=")
        if not sep or not name or not weights:
            raise typer.BadParameter(f"expected NAME=WEIGHTS, got {spec!r}",
                                     param_hint="'--compare'")
        specs.append((name, weights))
    try:
        loaded = {name: load_weights(weights) for name, weights in specs}
        results = validate_run(run, loaded, chosen, device=device)
    except (FileNotFoundError, ValueError) as e:
        raise fail(str(e), 2) from None
    table = validation_table(results)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table + "\n", encoding="utf-8")
    typer.echo(table)
