"""``mtcnnkit train`` (the three-stage training pipeline, see :mod:`.pipeline`) and the stage
commands that run one piece of it alone, with explicit inputs and outputs (for your own data):

``mtcnnkit prepare --stage pnet|rnet|onet|landmarks``  annotations + images -> sample shards
``mtcnnkit mine --stage rnet|onet``                    weights + annotations + images -> shards
``mtcnnkit train --stage pnet|rnet|onet``              shards -> best.pt (one trained net)

Settings come from the pipeline's YAML layout (``--config``, as configs/default.yaml) through
:func:`.pipeline.load_config`; a stage command reads its stage's section, and its ``--set``
keys are relative to that section (``--set epochs=2`` means ``rnet.epochs=2`` for RNet).

Exit status: 0 when the run completed, 2 on usage errors and bad inputs (options, config,
override, step name, unreadable annotations, missing images, data folder or shards, an output
folder holding samples made otherwise), 1 when a run fails (I/O errors).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .. import nets
from ..cli_support import device_option, fail, progress_bar
from ..data.annotations import (
    FaceBoxes,
    LandmarkSample,
    read_custom_json,
    read_landmark_list,
    read_wider_mat,
    read_wider_txt,
)
from ..data.samples import generate_detection_samples, generate_landmark_samples
from ..data.shards import ShardDataset
from ..weights import CascadeNets, is_net_file, load_net, load_weights, net_digest
from . import pipeline
from .trainer import TrainResult, train_stage

train_app = typer.Typer(add_completion=False,
                        context_settings={"help_option_names": ["-h", "--help"]})

STEPS_HELP = ", ".join(pipeline.STEPS)
CLASSES = ("positive", "part", "negative", "landmark")  # the order of the summary tables
LANDMARK_SECTIONS = {nets.INPUT_SIZE[s]: s for s in nets.STAGES}  # 12 -> pnet, 24 -> rnet, …
MINING_NETS = {"rnet": ("pnet",), "onet": ("pnet", "rnet")}  # nets each mining stage runs
LINKED_SAMPLES = "data"  # OUT/data: symlinks to the shards of several --samples folders
MINING_WEIGHTS = "weights"  # OUT/weights: the nets a mining run used (see _mining_cascade)

Report = Callable[[int, int], None]
Echo = Callable[[str], None]


class Net(str, Enum):
    pnet = "pnet"
    rnet = "rnet"
    onet = "onet"


class PrepareStage(str, Enum):
    pnet = "pnet"
    rnet = "rnet"
    onet = "onet"
    landmarks = "landmarks"


class MineStage(str, Enum):
    rnet = "rnet"
    onet = "onet"


def _optional_device(value: str | None) -> str | None:
    return value if value is None else device_option(value)


ConfigOption = Annotated[Path | None, typer.Option(
    metavar="FILE", show_default=False,
    help="YAML config in the layout of configs/default.yaml (default: the built-in "
         "defaults, which that file spells out).")]
StageSetOption = Annotated[list[str] | None, typer.Option(
    "--set", metavar="KEY=VALUE", show_default=False,
    help="Override a setting of the stage's config section (repeatable), e.g. --set "
         "samples.workers=1 or --set mining.pnet_threshold=0.5; the section's name may be "
         "spelt out (rnet.mining.pnet_threshold=0.5), and device=cuda sets the device.")]
DeviceOption = Annotated[str | None, typer.Option(
    callback=_optional_device, show_default=False,
    help="cpu, cuda or cuda:N (overrides the config's device).")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
FACES_HELP = ("Face annotations: a WIDER FACE *_bbx_gt.txt or wider_face_*.mat, or custom JSON "
              "(images with path and faces, each a box x1 y1 x2 y2 and optional landmarks; "
              "see mtcnnkit.data.annotations)")
FORMAT_NOTE = " The format is recognised by extension and content."
AnnotationsOption = Annotated[Path, typer.Option(
    metavar="FILE", show_default=False,
    help=f"{FACES_HELP}, or, for --stage landmarks, a CNN_FacePoint list "
         f"(trainImageList.txt).{FORMAT_NOTE}")]
FacesOption = Annotated[Path, typer.Option(metavar="FILE", show_default=False,
                                           help=f"{FACES_HELP}.{FORMAT_NOTE}")]
ImagesOption = Annotated[Path, typer.Option(
    metavar="DIR", show_default=False,
    help="Folder the annotations' image paths are relative to (e.g. WIDER_train/images).")]


# ---------------------------------------------------------------- shared pieces


def _in_section(override: str, section: str) -> str:
    """``epochs=2`` -> ``rnet.epochs=2``; ``device=...`` and keys already starting with the
    section are kept."""
    first = override.partition("=")[0].strip().split(".")[0]
    if first in (section, "device"):
        return override
    return f"{section}.{override.strip()}"


def _load_config(config: Path | None, overrides: Sequence[str], section: str | None = None,
                 device: str | None = None) -> pipeline.PipelineConfig:
    """The pipeline config (``section``: overrides are relative to it), or exit 2."""
    items = [_in_section(o, section) for o in overrides] if section else list(overrides)
    if device is not None:
        items.append(f"device={device}")
    try:
        return pipeline.load_config(config, items)
    except OSError as e:
        raise fail(f"--config {config}: {e.strerror or e}", 2) from None
    except ValueError as e:
        raise fail(str(e), 2) from None


def _require_folder(folder: Path, option: str) -> None:
    if not folder.is_dir():
        raise fail(f"{option} {folder}: no such folder", 2)


@contextlib.contextmanager
def _failures() -> Iterator[None]:
    """Bad inputs found while running (``ValueError``) exit 2, I/O failures exit 1."""
    try:
        yield
    except ValueError as e:
        raise fail(str(e), 2) from None
    except OSError as e:
        raise fail(str(e), 1) from None


@contextlib.contextmanager
def _progress(description: str, quiet: bool) -> Iterator[tuple[Report, Echo]]:
    """A progress bar on stderr: ``(report(done, total), echo(line))``."""
    with progress_bar(Console(stderr=True), quiet) as bar:
        task = bar.add_task(description, total=None)

        def report(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield report, _plain(bar.console)


def _plain(console: Console) -> Echo:
    """Print lines as they are: no Rich markup (step names look like ``[train_pnet]``)."""
    return lambda line: console.print(line, markup=False, highlight=False)


def _counts_table(counts: Mapping[str, Any], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("class")
    table.add_column("samples", justify="right")
    table.add_column("share", justify="right")
    total = int(counts.get("total", 0))
    for name in CLASSES:
        n = int(counts.get(name, 0))
        table.add_row(name, str(n), f"{100 * n / total:.1f} %" if total else "-")
    table.add_row("total", str(total), "", style="bold")
    return table


def _print_counts(counts: Mapping[str, Any], title: str, out: Path, *extra: str) -> None:
    console = Console(highlight=False)
    console.print(_counts_table(counts, title))
    for line in (*extra, f"{counts.get('shards', 0)} shard(s), "
                         f"{counts.get('bytes', 0) / 1e6:.1f} MB in {out}"):
        console.print(line, markup=False)


# ---------------------------------------------------------------- annotations


def _annotation_kind(path: Path) -> str:
    """``wider-txt``, ``wider-mat``, ``json`` or ``landmark-list``, by extension, then content
    (MATLAB header, a leading ``{``, 15 fields on the first line)."""
    suffix = path.suffix.lower()
    if suffix in (".json", ".mat"):
        return "json" if suffix == ".json" else "wider-mat"
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"MATLAB"):
        return "wider-mat"
    text = head.decode("utf-8-sig", errors="replace").lstrip()
    if text.startswith("{"):
        return "json"
    first = text.splitlines()[0].split() if text else []
    return "landmark-list" if len(first) == 15 else "wider-txt"


def _read_annotations(path: Path, landmarks: bool) -> list[FaceBoxes] | list[LandmarkSample]:
    """The faces (``landmarks``: the landmark faces) of an annotation file, or exit 2."""
    if not path.is_file():
        raise fail(f"--annotations {path}: no such file", 2)
    try:
        kind = _annotation_kind(path)
        if landmarks:
            if kind in ("wider-txt", "wider-mat"):
                raise ValueError(f"{path}: WIDER annotations have no landmarks; --stage "
                                 "landmarks needs a CNN_FacePoint list or custom JSON")
            found: list = (read_landmark_list(path) if kind == "landmark-list"
                           else read_custom_json(path)[1])
        else:
            if kind == "landmark-list":
                raise ValueError(f"{path}: a CNN_FacePoint landmark list does not box every "
                                 "face of its images; detection samples need WIDER or JSON")
            readers = {"wider-txt": read_wider_txt, "wider-mat": read_wider_mat,
                       "json": read_custom_json}
            found = readers[kind](path)[0]
    except (ValueError, ImportError) as e:
        raise fail(str(e), 2) from None
    except OSError as e:
        raise fail(f"--annotations {path}: {e.strerror or e}", 2) from None
    if not found:
        raise fail(f"--annotations {path}: no {'landmark faces' if landmarks else 'images'}", 2)
    return found


def _annotated(path: Path, images: Path, landmarks: bool = False
               ) -> list[FaceBoxes] | list[LandmarkSample]:
    """The annotations, once every image they name was found under ``images`` (or exit 2)."""
    _require_folder(images, "--images")
    found = _read_annotations(path, landmarks)
    missing = sorted({a.image for a in found if not (images / a.image).is_file()})
    if missing:
        raise fail(f"--images {images}: {len(missing)} annotated image(s) missing, e.g. "
                   f"{images / missing[0]}", 2)
    return found


# ---------------------------------------------------------------- mtcnnkit prepare


def _prepare_target(stage: PrepareStage, size: int | None) -> tuple[str, str, int]:
    """(config section, sample settings in it, crop size) of a ``prepare`` stage."""
    if stage is PrepareStage.landmarks:
        if size not in LANDMARK_SECTIONS:
            raise fail(f"--stage landmarks needs --size {', '.join(map(str, LANDMARK_SECTIONS))}"
                       f" (PNet, RNet or ONet samples){'' if size is None else f', got {size}'}",
                       2)
        return LANDMARK_SECTIONS[size], "landmarks", size
    implied = nets.INPUT_SIZE[stage.value]
    if size is not None and size != implied:
        raise fail(f"--size {size}: --stage {stage.value} makes {implied} px samples", 2)
    return stage.value, "samples", implied


def prepare_command(
    stage: Annotated[PrepareStage, typer.Option(
        show_default=False,
        help="pnet, rnet or onet: 12, 24 or 48 px positives, part faces and negatives cut "
             "around the annotated faces; landmarks: 12, 24 or 48 px landmark samples (--size).")],
    annotations: AnnotationsOption,
    images: ImagesOption,
    out: Annotated[Path, typer.Option(
        metavar="DIR", show_default=False,
        help="Output folder: shard-NNNNN/ sample shards, summary.json (counts per class) and "
             "done.json (the journal a rerun resumes from).")],
    size: Annotated[int | None, typer.Option(
        show_default=False,
        help="Crop side in px: 12, 24 or 48 for --stage landmarks; implied by the other stages "
             "(12, 24, 48).")] = None,
    config: ConfigOption = None,
    set_: StageSetOption = None,
    quiet: QuietOption = False,
) -> None:
    """Cut training samples for one net from annotated images, as shards in OUT.

    In: an annotation file (--annotations) and its image folder (--images). Out: OUT/shard-NNNNN
    (input of `mtcnnkit train --stage`), OUT/summary.json; prints the samples per class.
    Settings: the config's <stage>.samples section (<stage>.landmarks for --stage
    landmarks), e.g. --set samples.negatives_random=20. Resumable: rerun the same command
    after an interruption.
    """
    section, key, size = _prepare_target(stage, size)
    settings = getattr(getattr(_load_config(config, set_ or [], section), section), key)
    landmarks = stage is PrepareStage.landmarks
    found = _annotated(annotations, images, landmarks)
    generate = generate_landmark_samples if landmarks else generate_detection_samples
    kind = "landmark" if landmarks else "detection"
    with _failures(), _progress(f"{kind} samples {size}px", quiet) as (report, _):
        counts = generate(found, images, out, settings, progress=report)
    _print_counts(counts, f"{size} px {kind} samples ({stage.value})", out)


# ---------------------------------------------------------------- mtcnnkit mine


def _given_nets(weights: str, stage: str) -> dict[str, Path] | None:
    """The net files to copy when ``weights`` is not a whole cascade: a folder holding only
    the nets mining runs, or (RNet samples) one PNet file; None: a whole cascade."""
    path = Path(weights).expanduser()
    used = MINING_NETS[stage]
    if path.is_dir() and not all((path / f"{s}.pt").is_file() for s in nets.STAGES):
        missing = [f"{s}.pt" for s in used if not (path / f"{s}.pt").is_file()]
        if missing:
            raise fail(f"--weights {path}: missing {', '.join(missing)} (mining {stage} "
                       f"samples runs {' and '.join(used)})", 2)
        return {s: path / f"{s}.pt" for s in used}
    if path.is_file() and is_net_file(path):
        if stage != "rnet":
            raise fail(f"--weights {path}: one net file; mining onet samples runs PNet and "
                       "RNet: give a folder with pnet.pt and rnet.pt, or a cascade file", 2)
        return {"pnet": path}
    return None


def _assemble(folder: Path, given: Mapping[str, Path]) -> Path:
    """pnet.pt/rnet.pt/onet.pt in ``folder``: copies of the ``given`` nets, fresh nets (never
    run by the mining stage) for the others, as the pipeline's mining steps do."""
    return pipeline.nets_folder(folder, given)


def _mining_cascade(weights: str, stage: str, out: Path) -> CascadeNets:
    """The cascade that mines ``stage`` samples. A whole cascade (anything `load_weights`
    takes) is used as it is; a folder with only the nets mining runs, or one PNet file, is
    completed with placeholders in OUT/weights. The resume fingerprint sees the used nets'
    content (``meta``), so changed weights never extend old samples."""
    given = _given_nets(weights, stage)
    source = weights if given is None else _assemble(out / MINING_WEIGHTS, given)
    try:
        cascade = load_weights(source)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise fail(f"--weights {weights}: {e}", 2) from None
    cascade.meta = {s: net_digest(cascade.stage(s)) for s in MINING_NETS[stage]}
    return cascade


def mine_command(
    stage: Annotated[MineStage, typer.Option(
        show_default=False,
        help="rnet: 24 px samples from PNet's detections; onet: 48 px samples from PNet + "
             "RNet's.")],
    weights: Annotated[str, typer.Option(
        metavar="PATH", show_default=False,
        help="The nets that detect: a cascade (an mtcnnkit .pt file, a folder with "
             "pnet.pt/rnet.pt/onet.pt, 'default' or 'reference'), a folder with just the nets "
             "mining runs (pnet.pt; pnet.pt and rnet.pt for onet), or, for rnet, one PNet "
             "file such as the best.pt of `mtcnnkit train --stage pnet`.")],
    annotations: FacesOption,
    images: ImagesOption,
    out: Annotated[Path, typer.Option(
        metavar="DIR", show_default=False,
        help="Output folder: shard-NNNNN/ sample shards, summary.json (counts, candidates), "
             "done.json (the journal a rerun resumes from) and, when the cascade was "
             "completed with placeholders, weights/.")],
    config: ConfigOption = None,
    set_: StageSetOption = None,
    device: DeviceOption = None,
    quiet: QuietOption = False,
) -> None:
    """Mine hard examples for RNet or ONet from the earlier nets' detections, into OUT.

    The detections on annotated images are labelled by IoU with the faces. In: weights
    (--weights), an annotation file (--annotations) and its image folder (--images). Out:
    OUT/shard-NNNNN (input of `mtcnnkit train --stage`), OUT/summary.json; prints the
    samples per class and the candidates per image. Settings: the config's <stage>.mining
    section, e.g. --set mining.pnet_threshold=0.5. Resumable: rerun the same command after
    an interruption.
    """
    from ..data.mining import mine, mining_detector

    cfg = _load_config(config, set_ or [], stage.value, device)
    settings = getattr(cfg, stage.value).mining
    faces = _annotated(annotations, images)
    cascade = _mining_cascade(weights, stage.value, out)
    try:
        detector = mining_detector(cascade, settings, device=cfg.device)
    except ValueError as e:
        raise fail(str(e), 2) from None
    with _failures(), _progress(f"mine {stage.value}", quiet) as (report, _):
        counts = mine(detector, faces, images, out, settings, progress=report)
    _print_counts(counts, f"{settings.size} px mined samples ({stage.value})", out,
                  f"{counts['images']} image(s), {counts['candidates']} candidates "
                  f"({counts['candidates_per_image']:g} per image)")


# ---------------------------------------------------------------- mtcnnkit train


def _check_samples(folder: Path, stage: str, option: str) -> None:
    """``folder`` holds shards of ``stage``'s input size, or exit 2."""
    _require_folder(folder, option)
    try:
        data = ShardDataset(folder)
    except (ValueError, OSError) as e:
        raise fail(f"{option} {folder}: {e}", 2) from None
    if len(data) == 0:
        raise fail(f"{option} {folder}: no sample shards (shard-NNNNN folders; make them with "
                   "mtcnnkit prepare or mtcnnkit mine)", 2)
    size = nets.INPUT_SIZE[stage]
    if data.size != size:
        raise fail(f"{option} {folder}: {data.size} px samples, {stage} needs {size} px", 2)


def _training_data(samples: Sequence[Path], out: Path) -> Path:
    """The one folder to train on: ``samples[0]``, or OUT/data linking all their shards."""
    if len(samples) == 1:
        return samples[0]
    linked = (out / LINKED_SAMPLES).resolve()
    for folder in samples:
        if folder.resolve().is_relative_to(linked):
            raise fail(f"--samples {folder}: lies in {linked}, which is rebuilt from the "
                       "--samples folders; use another --out", 2)
    return pipeline.link_shards(out / LINKED_SAMPLES, samples)


def _reject(reason: str, given: Mapping[str, object]) -> None:
    """Exit 2 when an option that does not apply (``reason``) was given."""
    for option, value in given.items():
        if value not in (None, [], ()):
            raise fail(f"{option} {reason}", 2)


def _train_one(stage: str, samples: Sequence[Path], val: Path | None, out: Path,
               cfg: pipeline.PipelineConfig, resume: bool, quiet: bool) -> None:
    """``mtcnnkit train --stage``: one net on shards, with `train_stage`."""
    for folder in samples:
        _check_samples(folder, stage, "--samples")
    if val is not None:
        _check_samples(val, stage, "--val")
    settings = getattr(cfg, stage).train
    started = time.perf_counter()
    with _failures():
        data = _training_data(samples, out)
        with _progress(f"train {stage}", quiet) as (report, echo):
            result = train_stage(settings, data, val, out, resume=resume, progress=report,
                                 echo=echo)
    _print_training(stage, result, time.perf_counter() - started)


def _print_training(stage: str, result: TrainResult, seconds: float) -> None:
    """The step table of the pipeline, one row, then where the net is."""
    history = result.history
    summary = {"best_epoch": result.best_epoch, "best_value": result.best_value,
               "best_metric": result.config.best_metric,
               "first_train_cls_loss": history[0]["train_cls_loss"] if history else None,
               "last_train_cls_loss": history[-1]["train_cls_loss"] if history else None}
    status = "ran" if result.epochs_run else "done already"
    _print_table([pipeline.StepReport(f"train_{stage}", status, seconds, summary)],
                 f"mtcnnkit train --stage {stage}")
    console = Console(highlight=False)
    if not result.epochs_run:
        console.print(f"{result.last_path} has all {len(history)} epochs: --no-resume trains "
                      "again, --set epochs=N trains longer", markup=False)
    console.print(f"best net: {result.best_path} (a {stage}.pt for a weights folder)",
                  markup=False)


def _given_for_pipeline(specs: Sequence[str]) -> dict[str, str]:
    """``--nets STAGE=WEIGHTS`` options -> {stage: weights}, each net loaded once to check it."""
    given: dict[str, str] = {}
    for spec in specs:
        stage, sep, weights = spec.partition("=")
        stage = stage.strip().lower()
        if not sep or stage not in nets.STAGES or not weights:
            raise fail(f"--nets {spec!r}: expected STAGE=WEIGHTS with STAGE one of "
                       f"{', '.join(nets.STAGES)}, e.g. --nets pnet=runs/a/train_pnet/best.pt", 2)
        if stage in given:
            raise fail(f"--nets: {stage} given twice", 2)
        try:
            load_net(weights, stage)
        except (FileNotFoundError, ValueError, KeyError) as e:
            raise fail(f"--nets {spec}: {e}", 2) from None
        given[stage] = weights
    return given


def _run_pipeline(data: Path, out: Path, cfg: pipeline.PipelineConfig, only: str | None,
                  from_step: str | None, given: Mapping[str, str], quiet: bool) -> None:
    """``mtcnnkit train`` without ``--stage``: the whole pipeline."""
    _require_folder(data, "--data")
    for option, step in (("--only", only), ("--from", from_step)):
        if step is not None and step not in pipeline.STEPS:
            raise fail(f"{option} {step!r}: expected one of {STEPS_HELP}", 2)

    console = Console(stderr=True)
    with progress_bar(console, quiet) as bar:
        tasks: dict[str, int] = {}

        def progress(description: str, done: int, total: int) -> None:
            if description not in tasks:
                tasks[description] = bar.add_task(description, total=total)
            bar.update(tasks[description], completed=done, total=total)

        try:
            reports = pipeline.run_pipeline(data, out, cfg, only=only, from_step=from_step,
                                            given=given, progress=progress,
                                            echo=_plain(bar.console))
        except pipeline.PipelineUsageError as e:
            raise fail(str(e), 2) from None
    _print_table(reports)


@train_app.command("train")
def train_command(
    out: Annotated[Path, typer.Option(
        metavar="DIR", show_default=False,
        help="Pipeline: the run folder, every step's output goes here. With --stage: the "
             "net's folder: best.pt (the best epoch's net), last.pt (resume point), "
             "metrics.csv, metrics.png.")],
    data: Annotated[Path | None, typer.Option(
        metavar="DIR", show_default=False,
        help="The shared data folder (WIDER_FACE, splits, CNN_FacePoint); required without "
             "--stage.")] = None,
    config: ConfigOption = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", metavar="KEY=VALUE", show_default=False,
        help="Override a setting, e.g. --set pnet.epochs=2 (repeatable). With --stage, "
             "keys are relative to the stage's section: --set epochs=2.")] = None,
    only: Annotated[str | None, typer.Option(
        show_default=False, help=f"Run only this pipeline step: {STEPS_HELP}.")] = None,
    from_step: Annotated[str | None, typer.Option(
        "--from", show_default=False,
        help="Delete the outputs of this pipeline step and the later ones, rerun them.")
    ] = None,
    given_nets: Annotated[list[str] | None, typer.Option(
        "--nets", metavar="STAGE=WEIGHTS", show_default=False,
        help="Pipeline: use this already trained net instead of training it (repeatable), "
             "e.g. --nets pnet=runs/a/train_pnet/best.pt --nets rnet=default: a per-net file "
             "(a run's best.pt, or its last.pt checkpoint) or that net of a cascade (file, "
             "folder, 'default'). The steps only its training needs are not run.")] = None,
    stage: Annotated[Net | None, typer.Option(
        show_default=False,
        help="Train only this net on --samples instead of running the pipeline.")] = None,
    samples: Annotated[list[Path] | None, typer.Option(
        metavar="DIR", show_default=False,
        help="With --stage: a folder of sample shards (from mtcnnkit prepare / mine) of the "
             "net's size; repeat for several (linked into OUT/data).")] = None,
    val: Annotated[Path | None, typer.Option(
        metavar="DIR", show_default=False,
        help="With --stage: validation shards (default: the config's val_fraction of the "
             "--samples source images is held out).")] = None,
    resume: Annotated[bool | None, typer.Option(
        "--resume/--no-resume", show_default=False,
        help="With --stage: continue from OUT/last.pt (the default), or train from "
             "scratch.")] = None,
    device: DeviceOption = None,
    quiet: QuietOption = False,
) -> None:
    """Train the MTCNN cascade, or (--stage) one net of it.

    Without --stage: the whole resumable pipeline on --data (prepare, PNet, mine, RNet, mine,
    ONet), writing OUT/weights.pt and OUT/eval.json (WIDER dev AP), then a table of the steps.

    With --stage pnet|rnet|onet: that net alone on the shards of --samples, with the config's
    <stage> section; writes OUT/best.pt, OUT/last.pt (rerun to resume), OUT/metrics.csv and
    OUT/metrics.png, then prints the best epoch.
    """
    overrides = list(set_ or [])
    if stage is None:
        _reject("needs --stage", {"--samples": samples, "--val": val,
                                  "--resume/--no-resume": resume})
        cfg = _load_config(config, overrides, device=device)
        if data is None:
            raise fail("Missing option '--data' (or give --stage and --samples to train one "
                       "net)", 2)
        _run_pipeline(data, out, cfg, only, from_step, _given_for_pipeline(given_nets or []),
                      quiet)
        return
    _reject("applies to the whole pipeline, not --stage",
            {"--data": data, "--only": only, "--from": from_step, "--nets": given_nets})
    if not samples:
        raise fail("--stage needs --samples DIR (sample shards of the net's size)", 2)
    cfg = _load_config(config, overrides, stage.value, device)
    _train_one(stage.value, samples, val, out, cfg, resume is not False, quiet)


def _print_table(reports: list[pipeline.StepReport],
                 title: str = "mtcnnkit training pipeline") -> None:
    table = Table(title=title)
    table.add_column("step")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    table.add_column("result")
    for r in reports:
        seconds = r.result.get("seconds", r.seconds)
        table.add_row(r.step, r.status, f"{seconds:.1f}", pipeline.describe(r))
    Console().print(table)
