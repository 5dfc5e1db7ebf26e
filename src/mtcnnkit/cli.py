"""The ``mtcnnkit`` command line: argument parsing and output only.

Detection itself is `Detector`'s job; this module finds the images, feeds them to it in
batches, and writes JSON, annotated images and face crops.

Exit status: 0 when every image was read and processed, 1 when some failed (their JSON
entries carry ``"error"``), 2 on usage errors (bad option values, no image found, weights
that cannot be loaded).
"""

import glob
import importlib.util
import json
import os
import time
from collections import Counter
from enum import Enum
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
from PIL import Image
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import __version__
from .allocator import keep_freed_memory
from .cli_support import (
    WeightsOption,
    device_option,
    fail,
    make_detector,
    parse_thresholds,
    positive,
    progress_bar,
    scale_factor_option,
    write_json_atomic,
)
from .deploy.commands import export_command
from .detect.align import crop_faces
from .detect.detector import BACKENDS, Detector
from .detect.draw import annotate
from .detect.face import Face
from .evaluate.commands import eval_app
from .imageio import IMAGE_SUFFIXES, load_image
from .reference import WEIGHT_FILES, cache_dir, fetch_reference_weights
from .train.commands import mine_command, prepare_command, train_command

app = typer.Typer(
    name="mtcnnkit",
    help="MTCNN face detection: find faces and their 5 landmarks in images.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.add_typer(eval_app, name="eval")
app.command("export")(export_command)
app.command("prepare")(prepare_command)
app.command("mine")(mine_command)
app.command("train")(train_command)

TABLE_MAX_ROWS = 20  # above this many images, a summary line replaces the table


class CropMode(str, Enum):
    align = "align"
    margin = "margin"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mtcnnkit {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True,
        help="Show mtcnnkit's version and exit.")] = False,
) -> None:
    """MTCNN face detection: find faces and their 5 landmarks in images."""
    keep_freed_memory()  # this process is ours: spare the kernel re-zeroing big tensors
    # ... and its float arithmetic: subnormal numbers count as zero, before torch starts its
    # threads (they inherit the setting). Late in training, weight decay leaves weights, Adam
    # moments and gradients subnormal, and each operation on one takes a slow path on x86
    # (RNet epochs 16 -> 32 s on an Intel Xeon; docs/BENCHMARKS.md)
    torch.set_flush_denormal(True)


# ---------------------------------------------------------------- option checks


def _check_writable(folder: Path | None, option: str) -> None:
    """Create ``folder`` now, so that an unusable output path stops the run before it starts."""
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise typer.BadParameter(f"cannot create {folder}: {e.strerror or e}",
                                 param_hint=f"'{option}'") from None
    if not os.access(folder, os.W_OK):
        raise typer.BadParameter(f"{folder} is not writable", param_hint=f"'{option}'")


# ---------------------------------------------------------------- finding images


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if _is_image(p))


def collect_images(specs: list[str]) -> list[Path]:
    """Files as given, folders searched recursively and glob patterns expanded (both keep
    only files with an image suffix, sorted); duplicates dropped, order kept."""
    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found += _images_in(path)
        elif path.exists():
            found.append(path)
        elif glob.has_magic(spec):
            for match in map(Path, sorted(glob.glob(spec, recursive=True))):
                if match.is_dir():
                    found += _images_in(match)
                elif _is_image(match):
                    found.append(match)
        else:
            raise typer.BadParameter(f"no such file or folder: {spec}", param_hint="PATH")
    unique = {os.path.abspath(p): p for p in reversed(found)}  # first occurrence wins
    images = list(reversed(unique.values()))
    if not images:
        raise typer.BadParameter(
            "no image found (looked for " + ", ".join(sorted(IMAGE_SUFFIXES)) + ")",
            param_hint="PATH")
    return images


def common_root(images: list[Path]) -> Path:
    """The deepest folder holding all ``images``."""
    return Path(os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in images]))


def output_stems(images: list[Path]) -> list[Path]:
    """Per image, its path relative to the inputs' common folder, without suffix (so
    same-named files from different folders do not collide; ``a.jpg`` and ``a.png`` in one
    folder become ``a_jpg`` and ``a_png``)."""
    root = common_root(images)
    absolute = [Path(os.path.abspath(p)) for p in images]
    stems = [a.relative_to(root).with_suffix("") for a in absolute]
    clashes = Counter(stems)
    return [s.with_name(f"{s.name}_{a.suffix.lstrip('.')}") if clashes[s] > 1 else s
            for s, a in zip(stems, absolute, strict=True)]


# ---------------------------------------------------------------- outputs


def _save_image(array: np.ndarray, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path, **({"quality": 92} if path.suffix == ".jpg" else {}))
    except OSError as e:
        raise fail(f"cannot write {path}: {e}", 1) from None


def _detect_batch(detector: Detector, arrays: list[np.ndarray], names: list[str]
                  ) -> list[list[Face] | str]:
    """Faces per array. If the batch fails, each image is retried alone and one that still
    fails gets the error message instead of faces, so the run goes on."""
    try:
        return detector.detect(arrays)
    except Exception:  # retried and reported per image below
        pass
    out: list[list[Face] | str] = []
    for array, name in zip(arrays, names, strict=True):
        try:
            out.append(detector.detect(array))
        except Exception as e:
            out.append(f"{name}: detection failed ({type(e).__name__}: {e})")
    return out


def _detect_chunk(detector: Detector, paths: list[Path]
                  ) -> list[tuple[np.ndarray | None, list[Face] | str]]:
    """Per path ``(image, faces)``, or ``(None, message)`` when it could not be read or
    processed."""
    out: list = [None] * len(paths)
    arrays: dict[int, np.ndarray] = {}
    for i, path in enumerate(paths):
        try:
            arrays[i] = load_image(path)
        except ValueError as e:
            out[i] = (None, str(e))
    if arrays:
        found = _detect_batch(detector, list(arrays.values()), [str(paths[i]) for i in arrays])
        for (i, array), faces in zip(arrays.items(), found, strict=True):
            out[i] = (None, faces) if isinstance(faces, str) else (array, faces)
    return out


def _shown(image: str, root: Path) -> str:
    return os.path.relpath(os.path.abspath(image), root)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _summary_table(records: list[dict], root: Path) -> Table:
    where = min(os.path.relpath(root), str(root), key=len)
    table = Table(box=None, header_style="bold", title=f"in {where}", title_justify="left",
                  title_style="")
    table.add_column("image", overflow="fold")
    table.add_column("size")
    table.add_column("faces", justify="right")
    table.add_column("best score", overflow="fold")
    for rec in records:
        if "error" in rec:
            table.add_row(_shown(rec["image"], root), "", Text("error", style="red"),
                          Text(rec["error"], style="red"))
        else:
            best = max((f["score"] for f in rec["faces"]), default=None)
            table.add_row(_shown(rec["image"], root), f"{rec['width']}x{rec['height']}",
                          str(len(rec["faces"])), "-" if best is None else f"{best:.3f}")
    return table


# ---------------------------------------------------------------- commands


@app.command()
def detect(
    paths: Annotated[list[str], typer.Argument(
        metavar="PATH", show_default=False,
        help="Image files, folders (searched recursively for image files) or glob patterns "
             "such as 'photos/**/*.jpg' (quote them; ** matches any depth).")],
    weights: WeightsOption = "default",
    min_face: Annotated[float, typer.Option(
        callback=positive, help="Smallest face to look for, in pixels.")] = 20.0,
    thresholds: Annotated[str, typer.Option(
        callback=parse_thresholds, metavar="P,R,O",
        help="Score thresholds of the PNet, RNet and ONet stages.")] = "0.6,0.7,0.7",
    scale_factor: Annotated[float, typer.Option(
        callback=scale_factor_option,
        help="Image pyramid step between scales (0 < f < 1; larger is slower and finds "
             "more).")] = 0.709,
    device: Annotated[str, typer.Option(
        callback=device_option, help="Where to run the nets: cpu, cuda or cuda:N.")] = "cpu",
    backend: Annotated[str, typer.Option(
        help=f"Inference backend (available: {', '.join(BACKENDS)}).")] = "torch",
    threads: Annotated[int | None, typer.Option(
        min=1, show_default=False,
        help="CPU threads for the nets (default: torch's choice).")] = None,
    max_side: Annotated[int | None, typer.Option(
        min=12, show_default=False,
        help="Downsize larger images to this longest side before detection (results stay in "
             "original pixels; default: no downsizing).")] = None,
    batch_size: Annotated[int, typer.Option(
        min=1, help="Images loaded and sent through the cascade together.")] = 16,
    json_out: Annotated[Path | None, typer.Option(
        "--json", metavar="FILE", show_default=False,
        help="Write all results to this JSON file (written at the end, atomically); "
             "'-' writes to stdout.")] = None,
    save_dir: Annotated[Path | None, typer.Option(
        metavar="DIR", show_default=False,
        help="Write annotated copies (boxes, scores, landmarks) as DIR/<name>.jpg, mirroring "
             "the input folders.")] = None,
    crops: Annotated[Path | None, typer.Option(
        metavar="DIR", show_default=False,
        help="Write one image per face as DIR/<name>_<k>.png (k = index in the JSON "
             "faces list).")] = None,
    crop_mode: Annotated[CropMode, typer.Option(
        help="'align': warp the 5 landmarks onto the ArcFace template; 'margin': the box "
             "plus --margin, resized (facenet-pytorch style).")] = CropMode.align,
    crop_size: Annotated[int | None, typer.Option(
        min=1, show_default=False,
        help="Side of the square crops (default: 112 for align, 160 for margin).")] = None,
    margin: Annotated[float, typer.Option(
        min=0, help="Margin around the box in crop pixels (--crop-mode margin only).")] = 0.0,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="No progress bar or notes on stderr (errors are still shown).")
    ] = False,
) -> None:
    """Detect faces in images; print a summary, write JSON, annotated images or crops."""
    size = crop_size if crop_size is not None else (112 if crop_mode is CropMode.align else 160)
    if crop_mode is CropMode.margin and margin >= size:
        raise typer.BadParameter(f"must be smaller than the crop size ({size})",
                                 param_hint="'--margin'")
    images = collect_images(paths)
    to_stdout = json_out is not None and str(json_out) == "-"
    _check_writable(None if to_stdout or json_out is None else json_out.parent, "--json")
    if json_out is not None and json_out.is_dir():
        raise typer.BadParameter(f"{json_out} is a folder; give a file name", param_hint="'--json'")
    _check_writable(save_dir, "--save-dir")
    _check_writable(crops, "--crops")
    detector = make_detector(weights=weights, device=device, min_face_size=min_face,
                             thresholds=thresholds, scale_factor=scale_factor, backend=backend,
                             max_side=max_side, num_threads=threads, batch_size=batch_size)

    stems = output_stems(images) if (save_dir or crops) else [None] * len(images)
    err = Console(stderr=True)
    records: list[dict] = []
    started = time.perf_counter()
    with progress_bar(err, quiet) as progress:
        task = progress.add_task("detecting", total=len(images))
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            for path, stem, (array, result) in zip(
                    batch, stems[start:start + batch_size], _detect_chunk(detector, batch),
                    strict=True):
                if array is None:
                    records.append({"image": str(path), "error": result})
                    progress.console.print(Text.assemble(("error: ", "red"), result),
                                           soft_wrap=True)
                    continue
                h, w = array.shape[:2]
                records.append({"image": str(path), "width": w, "height": h,
                                "faces": [f.to_dict() for f in result]})
                if save_dir:
                    _save_image(annotate(array, result), save_dir / stem.with_suffix(".jpg"))
                if crops:
                    chips = crop_faces(array, result, mode=crop_mode.value, size=size,
                                       margin=margin)
                    for k, chip in enumerate(chips):
                        _save_image(chip, crops / stem.with_name(f"{stem.name}_{k}.png"))
            progress.advance(task, len(batch))
    elapsed = time.perf_counter() - started

    failed = sum("error" in r for r in records)
    n_faces = sum(len(r.get("faces", ())) for r in records)
    summary = (f"{_count(len(records), 'image')}, {_count(n_faces, 'face')}, {failed} failed "
               f"in {elapsed:.1f} s ({len(records) / max(elapsed, 1e-9):.1f} images/s)")
    if json_out is None:
        out = Console(highlight=False)
        if len(records) <= TABLE_MAX_ROWS:
            out.print(_summary_table(records, common_root(images)))
        out.print(summary)
    else:
        if to_stdout:
            typer.echo(json.dumps(records, indent=2))
        else:
            write_json_atomic(records, json_out)
        if not quiet:
            err.print(summary + ("" if to_stdout else f"; results in {json_out}"),
                      highlight=False, markup=False, soft_wrap=True)
    if not quiet and save_dir:
        err.print(f"annotated images in {save_dir}", highlight=False, markup=False)
    if not quiet and crops:
        err.print(f"face crops in {crops}", highlight=False, markup=False)
    if failed:
        raise typer.Exit(1)


@app.command("fetch-reference")
def fetch_reference(
    directory: Annotated[Path | None, typer.Option(
        "--dir", metavar="DIR", show_default=False,
        help="Where to put pnet.pt, rnet.pt and onet.pt "
             "(default: ~/.cache/mtcnnkit/reference, or $MTCNNKIT_CACHE/reference).")] = None,
) -> None:
    """Download the original MTCNN weights, for comparisons (`--weights reference`).

    They come from the MIT-licensed facenet-pytorch 2.6.0 wheel on PyPI; only its three
    weight files are kept. They are not mtcnnkit's own weights.
    """
    try:
        where = fetch_reference_weights(directory)
    except (RuntimeError, OSError) as e:
        raise fail(f"could not fetch the reference weights: {e}", 1) from None
    typer.echo(f"Reference weights in {where}: {', '.join(WEIGHT_FILES)}")
    typer.echo("These are the original MTCNN weights (Zhang et al., 2016), the MIT-licensed "
               "copy shipped by facenet-pytorch, for comparison only.")
    default = Path(os.path.abspath(cache_dir() / "reference"))
    if Path(os.path.abspath(where)) == default:
        typer.echo("Use them with: mtcnnkit detect --weights reference ...")
    else:
        typer.echo(f"Use them with: mtcnnkit detect --weights {where} ... "
                   f"(or set MTCNNKIT_REFERENCE_DIR={where} for --weights reference)")


@app.command()
def bench(
    backends: Annotated[str, typer.Option(
        "--backend", metavar="B1,B2,…",
        help="Backends to compare (torch is the baseline; missing runtimes are skipped with "
             "a note).")] = ",".join(BACKENDS),
    threads: Annotated[str, typer.Option(metavar="N1,N2,…", help="Thread counts.")] = "1,2",
    weights: WeightsOption = "default",
    image: Annotated[Path, typer.Option(
        metavar="PATH", help="Photo for the whole-pipeline timing (resized to 640×480).")
    ] = Path("examples/astronaut.jpg"),
    min_face: Annotated[float, typer.Option(callback=positive,
                                            help="Smallest face searched for.")] = 20.0,
    repeats: Annotated[int, typer.Option(min=1, help="Timed rounds.")] = 30,
    markdown_out: Annotated[Path | None, typer.Option(
        "--markdown", metavar="FILE", show_default=False,
        help="Also write the tables to this Markdown file.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Per-net latency (min/avg/max at fixed input sizes) and whole-pipeline latency on a
    640×480 photo, for every backend and thread count, interleaved, torch as baseline."""
    import cv2

    from .deploy.bench import markdown, run_benchmark

    wanted = [b.strip() for b in backends.split(",") if b.strip()]
    unknown = [b for b in wanted if b not in BACKENDS]
    if unknown:
        raise typer.BadParameter(f"unknown backend(s) {unknown}; available: {BACKENDS}",
                                 param_hint="'--backend'")
    try:
        counts = [int(t) for t in threads.split(",")]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {threads!r}",
                                 param_hint="'--threads'") from None
    if any(t < 1 for t in counts):
        raise typer.BadParameter("thread counts must be positive", param_hint="'--threads'")
    err = Console(stderr=True)
    available = []
    for backend in wanted:  # each runtime's Python package is named like the backend
        if backend != "torch" and importlib.util.find_spec(backend) is None:
            err.print(f"skipping {backend}: not installed (pip install 'mtcnnkit[deploy]')",
                      highlight=False, markup=False)
            continue
        available.append(backend)
    try:
        photo = cv2.resize(load_image(image), (640, 480), interpolation=cv2.INTER_AREA)
    except ValueError as e:
        raise fail(str(e), 2) from None
    try:
        with progress_bar(err, quiet) as progress:
            task = progress.add_task("benchmark rounds", total=None)
            rows = run_benchmark(available, counts, photo, weights, min_face, repeats,
                                 progress=lambda done, total: progress.update(
                                     task, completed=done, total=total))
    except (FileNotFoundError, ValueError, ImportError) as e:
        raise fail(str(e), 2) from None
    text = markdown(rows)
    typer.echo(text)
    if markdown_out is not None:
        markdown_out.parent.mkdir(parents=True, exist_ok=True)
        markdown_out.write_text(text)
