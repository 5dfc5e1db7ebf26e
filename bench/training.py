"""Training-side throughput: sample generation, hard-example mining, net training.

What is measured
----------------
All settings are the training pipeline's built-in defaults (``mtcnnkit.train.pipeline
.load_config()``, the values of ``configs/default.yaml``) except where said otherwise; inputs
are the first ``--images`` WIDER_train images (``read_wider_txt`` of
``WIDER_FACE/wider_face_split/wider_face_train_bbx_gt.txt``, images under
``WIDER_FACE/WIDER_train/images``) and the first ``--landmarks`` faces of the CNN_FacePoint
train list, all under ``--data`` (default ``../shared/data``). Every output goes into a fresh
temporary folder, removed at the end.

* **Sample generation** (crops/s): ``generate_detection_samples`` for 12, 24 and 48 px
  (``pnet.samples``, ``rnet.samples``, ``onet.samples``: 50/10/10 random negatives per
  image, 5/3/3 near-face attempts and 20 positive attempts per face) and
  ``generate_landmark_samples`` for 24 and 48 px (``rnet.landmarks`` / ``onet.landmarks``,
  10 augmented attempts per face), for each ``--workers`` count (``SampleConfig.workers``).
  Before the first timed run with more than one worker, an untimed 2-image run starts the
  generators' forkserver (a one-off per process, reported on its own), so that the figures
  are the steady rate of a long run. The output is the same whatever the worker count.
* **Mining** (images/s, candidates/image): ``mine`` with ``mining_detector(--weights, cfg)``,
  ``cfg`` the pipeline's ``rnet.mining`` (24 px samples from PNet's candidates) and
  ``onet.mining`` (48 px samples from PNet + RNet's), for each ``--threads`` count
  (``torch.set_num_threads``), after one untimed detector call on the first image.
* **Training** (samples/s): ``train_stage`` with the pipeline's ``<stage>.train`` settings
  (batch 384 / 256 / 256, balanced batches, OHEM, flip augmentation, Adam) but ``epochs=1``,
  ``batches_per_epoch=--batches`` and ``val_fraction=0`` (no validation pass: the trainer
  times only its batch loop anyway, so this only saves wall time), on the shards of the
  sample generation step: detection crops of the net's size, plus the landmark crops of that
  size (one folder of symlinks, ``pipeline.link_shards``, as the pipeline does; RNet has no
  landmark head, so its batches simply skip them). For each ``--threads`` count. Reported:
  ``TrainResult.samples_per_s`` (the trainer's own figure: samples over the epoch's batch
  loop, data loading and augmentation included, validation and checkpointing excluded), the
  same excluding the first batch (timed from the trainer's per-batch progress callback: the
  first batch carries oneDNN's one-off set-up), and ms per batch.

How to run
----------
    python bench/training.py --out /tmp/training.md
    python bench/training.py --images 4 --landmarks 20 --batches 2 --threads 1 --workers 1
    python bench/training.py --malloc glibc      # without keep_freed_memory, for the ratio
    python bench/training.py --device cuda --amp --threads 4 --workers 8   # on a GPU

``--device`` moves mining and training to that device (``--amp``: mixed-precision training);
sample generation is CPU work whatever the device.

The Markdown report goes to stdout (and to ``--out FILE``), progress to stderr. About 3-5
minutes at the defaults on a quiet 2-core machine. Run it with nothing else on the cores:
the report shows the load average at start so that a noisy run can be spotted.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from common import machine_meta, positive, torch_threads
from mtcnnkit import nets
from mtcnnkit.allocator import keep_freed_memory
from mtcnnkit.data.annotations import FaceBoxes, read_landmark_list, read_wider_txt
from mtcnnkit.data.mining import MiningConfig, mine, mining_detector
from mtcnnkit.data.samples import (
    SampleConfig,
    generate_detection_samples,
    generate_landmark_samples,
)
from mtcnnkit.data.shards import summary
from mtcnnkit.imageio import load_image
from mtcnnkit.train.pipeline import PipelineConfig, link_shards, load_config
from mtcnnkit.train.trainer import TrainConfig, train_stage

DETECTION_SIZES = (12, 24, 48)
LANDMARK_SIZES = (24, 48)
SIZE_STAGE = {12: "pnet", 24: "rnet", 48: "onet"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def positive_list(text: str) -> list[int]:
    """``"1,2"`` -> ``[1, 2]`` (comma-separated integers >= 1, duplicates dropped)."""
    try:
        values = [positive(v.strip()) for v in text.split(",") if v.strip()]
    except (ValueError, argparse.ArgumentTypeError) as e:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers >= 1, got {text!r}") from e
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return list(dict.fromkeys(values))


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


# --------------------------------------------------------------------------- inputs


@dataclasses.dataclass
class Inputs:
    faces: list[FaceBoxes]  # image paths relative to image_root
    image_root: Path
    landmarks: list  # LandmarkSample, image paths relative to landmark_root
    landmark_root: Path


def read_inputs(data: Path, config: PipelineConfig, images: int, landmarks: int) -> Inputs:
    if not data.is_dir():
        raise SystemExit(f"data folder {data} does not exist: pass --data DIR, the folder "
                         "holding WIDER_FACE/ and CNN_FacePoint/ (default ../shared/data)")
    d = config.data
    needed = [data / d.train_gt, data / d.train_images, data / d.landmark_list,
              data / d.landmark_images]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise SystemExit(f"{data} lacks the training data this benchmark reads: "
                         f"{', '.join(missing)}")
    faces, _ = read_wider_txt(data / d.train_gt)
    marks = read_landmark_list(data / d.landmark_list)
    if len(faces) < images:
        log(f"note: only {len(faces)} WIDER_train images, using them all")
    if len(marks) < landmarks:
        log(f"note: only {len(marks)} landmark faces, using them all")
    return Inputs(faces[:images], data / d.train_images, marks[:landmarks],
                  data / d.landmark_images)


# --------------------------------------------------------------------------- measurements


def sample_configs(config: PipelineConfig) -> list[tuple[str, int, SampleConfig]]:
    """(kind, size, settings) of every generator run, in order."""
    runs = [("detection", size, getattr(config, SIZE_STAGE[size]).samples)
            for size in DETECTION_SIZES]
    runs += [("landmark", size, getattr(config, SIZE_STAGE[size]).landmarks)
             for size in LANDMARK_SIZES]
    return runs


def generate(kind: str, inputs: Inputs, out: Path, cfg: SampleConfig,
             limit: int | None = None) -> dict[str, int]:
    if kind == "detection":
        return generate_detection_samples(inputs.faces[:limit], inputs.image_root, out, cfg)
    return generate_landmark_samples(inputs.landmarks[:limit], inputs.landmark_root, out, cfg)


def bench_samples(args: argparse.Namespace, inputs: Inputs, config: PipelineConfig,
                  tmp: Path) -> tuple[list[dict], dict[int, float], dict[tuple[str, int], Path]]:
    rows: list[dict] = []
    startup: dict[int, float] = {}
    shards: dict[tuple[str, int], Path] = {}  # (kind, size) -> one output (any worker count)
    for workers in args.workers:
        if workers > 1 and len(inputs.faces) >= 2:
            cfg = dataclasses.replace(config.pnet.samples, workers=workers)
            out = tmp / f"warmup-w{workers}"
            seconds, _ = timed(lambda cfg=cfg, out=out: generate(
                "detection", inputs, out, cfg, limit=2))
            startup[workers] = seconds
            log(f"[samples] {workers} workers: forkserver start-up + 2 images {seconds:.1f} s "
                "(untimed warm-up)")
        for kind, size, base in sample_configs(config):
            cfg = dataclasses.replace(base, workers=workers)
            out = tmp / f"samples-w{workers}" / f"{kind}-{size}"
            seconds, counts = timed(lambda kind=kind, out=out, cfg=cfg: generate(
                kind, inputs, out, cfg))
            n_in = len(inputs.faces) if kind == "detection" else len(inputs.landmarks)
            row = {"kind": kind, "size": size, "workers": workers, "inputs": n_in,
                   "counts": counts, "crops": int(counts.get("total", 0)), "seconds": seconds,
                   "settings": cfg}
            rows.append(row)
            shards.setdefault((kind, size), out)
            log(f"[samples] {kind} {size}px, {workers} worker(s): {row['crops']} crops in "
                f"{seconds:.2f} s = {row['crops'] / seconds:.0f} crops/s")
    return rows, startup, shards


def bench_mining(args: argparse.Namespace, inputs: Inputs, config: PipelineConfig,
                 tmp: Path) -> list[dict]:
    rows = []
    warm = load_image(os.fspath(inputs.image_root / inputs.faces[0].image))
    for threads in args.threads:
        with torch_threads(threads):
            for stage in ("rnet", "onet"):
                cfg: MiningConfig = getattr(config, stage).mining
                detector = mining_detector(args.weights, cfg, device=args.device)
                detector.detect_tensors([warm], last_stage=cfg.last_stage)  # untimed warm-up
                out = tmp / f"mine-{stage}-t{threads}"
                seconds, counts = timed(lambda detector=detector, out=out, cfg=cfg: mine(
                    detector, inputs.faces, inputs.image_root, out, cfg))
                row = {"stage": stage, "threads": threads, "seconds": seconds,
                       "images": int(counts["images"]), "candidates": int(counts["candidates"]),
                       "samples": int(counts.get("total", 0)), "counts": counts,
                       "settings": cfg}
                rows.append(row)
                log(f"[mining] {stage} samples, {threads} thread(s): {row['images']} images "
                    f"in {seconds:.2f} s = {row['images'] / seconds:.2f} images/s, "
                    f"{counts['candidates_per_image']:.1f} candidates/image")
    return rows


class BatchClock:
    """The trainer's progress callback: a timestamp after every training batch."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def __call__(self, done: int, total: int) -> None:
        self.stamps.append(time.perf_counter())


def train_roots(shards: dict[tuple[str, int], Path], tmp: Path) -> dict[str, Path]:
    """Per stage, a folder of symlinks to the detection and landmark shards of its size."""
    roots = {}
    for stage in nets.STAGES:
        size = nets.INPUT_SIZE[stage]
        sources = [shards[(kind, size)] for kind in ("detection", "landmark")
                   if (kind, size) in shards]
        roots[stage] = link_shards(tmp / f"train-data-{stage}", sources)
    return roots


def bench_training(args: argparse.Namespace, config: PipelineConfig, roots: dict[str, Path],
                   tmp: Path) -> list[dict]:
    rows = []
    for threads in args.threads:
        with torch_threads(threads):
            for stage in nets.STAGES:
                base: TrainConfig = getattr(config, stage).train
                cfg = dataclasses.replace(base, epochs=1, batches_per_epoch=args.batches,
                                          val_fraction=0.0, device=args.device,
                                          amp=args.amp)
                clock = BatchClock()
                out = tmp / f"train-{stage}-t{threads}"
                wall, result = timed(lambda cfg=cfg, out=out, stage=stage, clock=clock:
                                     train_stage(cfg, roots[stage], None, out, progress=clock,
                                                 echo=None))
                stamps = clock.stamps
                steady = (math.nan if len(stamps) < 2 else
                          (len(stamps) - 1) * cfg.batch_size / (stamps[-1] - stamps[0]))
                loop_s = result.history[-1]["seconds"] if result.history else math.nan
                row = {"stage": stage, "threads": threads, "batch_size": cfg.batch_size,
                       "batches": len(stamps), "samples_per_s": result.samples_per_s,
                       "steady_samples_per_s": steady, "loop_s": loop_s, "wall_s": wall,
                       "ms_per_batch": 1e3 * loop_s / max(len(stamps), 1),
                       "train_samples": _count(roots[stage])}
                rows.append(row)
                log(f"[train] {stage}, {threads} thread(s): {row['samples_per_s']:.0f} "
                    f"samples/s ({steady:.0f} without the first batch), "
                    f"{row['ms_per_batch']:.1f} ms/batch; call {wall:.1f} s")
    return rows


def _count(root: Path) -> int:
    return int(summary(root).get("total", 0))


# --------------------------------------------------------------------------- report


def fmt(value: float, digits: int = 0) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def per_s(n: float, seconds: float, digits: int = 0) -> str:
    return fmt(n / seconds if seconds > 0 else math.nan, digits)


def counts_text(counts: dict[str, Any], names: tuple[str, ...]) -> str:
    return " / ".join(f"{int(counts.get(n, 0)):,}" for n in names)


def markdown(meta: dict, samples: list[dict], startup: dict[int, float], mining: list[dict],
             training: list[dict]) -> str:
    out = ["## Training (`bench/training.py`)", ""]
    out += [
        f"- Machine: {meta['cpu']}, {meta['cores']} logical cores (`os.cpu_count()`), "
        f"load average at start {meta['loadavg']}; torch {meta['torch']}, "
        f"Python {meta['python']}",
        f"- Date: {meta['date']}; mtcnnkit revision {meta['revision']}; total run "
        f"{meta['total_s']:.0f} s",
        f"- Command: `{meta['command']}`",
        f"- Data: `{meta['data']}`: the first {meta['images']} WIDER_train images "
        f"({meta['faces']:,} annotated faces) and the first {meta['landmarks']} CNN_FacePoint "
        f"train faces; settings: the pipeline's defaults (`configs/default.yaml`)",
        f"- Threads: sample generation runs one torch/OpenCV thread per worker process "
        f"(workers {', '.join(map(str, meta['workers']))}); mining and training at "
        f"{', '.join(map(str, meta['threads']))} torch thread(s) (`torch.set_num_threads`)",
        f"- Memory allocator: {meta['malloc']} (`--malloc`)",
        f"- Mining and training device: {meta['device']} (`--device`, `--amp`)",
    ]

    out += ["", "### Sample generation", "",
            "Crops written per second (whole images: reading, planning, resampling, shard "
            "writing). Detection crops: positive / part / negative; landmark crops: augmented "
            "attempts kept.", "",
            "| samples | settings | workers | input | crops (pos / part / neg) | s | crops/s |",
            "|---|---|---:|---|---:|---:|---:|"]
    for r in samples:
        cfg: SampleConfig = r["settings"]
        if r["kind"] == "detection":
            label = f"detection {r['size']} px"
            settings = (f"{cfg.negatives_random} rnd neg/img, {cfg.negatives_near} near + "
                        f"{cfg.positive_attempts} pos attempts/face")
            inputs = f"{r['inputs']} images"
            split = counts_text(r["counts"], ("positive", "part", "negative"))
            crops = f"{r['crops']:,} ({split})"
        else:
            label = f"landmark {r['size']} px"
            settings = f"{cfg.landmark_attempts} attempts/face"
            inputs = f"{r['inputs']} faces"
            crops = f"{r['crops']:,}"
        out.append(f"| {label} | {settings} | {r['workers']} | {inputs} | {crops} | "
                   f"{r['seconds']:.2f} | {per_s(r['crops'], r['seconds'])} |")
    if startup:
        parts = ", ".join(f"{w} workers {s:.1f} s" for w, s in startup.items())
        out += ["", f"Not in the table: the one-off forkserver start (plus 2 images), untimed "
                    f"warm-up before the first multi-worker run: {parts}."]

    out += ["", "### Mining", "",
            f"`mine()` with `mining_detector(\"{meta['weights']}\", cfg)` over the same "
            f"{meta['images']} images (batches of the config's `batch_size`), after one untimed "
            "detector call. Candidates: regions the detector handed on (before the per-image "
            "cap on negatives); samples: kept crops, positive / part / negative.", "",
            "| samples | detector | thresholds, min face, max neg/img | threads | images | s "
            "| images/s | candidates/image | samples (pos / part / neg) |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in mining:
        cfg: MiningConfig = r["settings"]
        nets_used = "PNet" if r["stage"] == "rnet" else "PNet + RNet"
        thresholds = (f"PNet {cfg.pnet_threshold}" if r["stage"] == "rnet"
                      else f"PNet {cfg.pnet_threshold}, RNet {cfg.rnet_threshold}")
        out.append(
            f"| {r['stage'].upper().replace('NET', 'Net')} ({cfg.size} px) | {nets_used} | "
            f"{thresholds}; {cfg.min_face_size:g}; {cfg.max_negatives} | {r['threads']} | "
            f"{r['images']} | {r['seconds']:.2f} | {per_s(r['images'], r['seconds'], 2)} | "
            f"{per_s(r['candidates'], r['images'], 1)} | {r['samples']:,} "
            f"({counts_text(r['counts'], ('positive', 'part', 'negative'))}) |")

    out += ["", "### Training", "",
            f"`train_stage` with the pipeline's settings, 1 epoch of {meta['batches']} "
            "batches, no validation split; on the detection + landmark shards of the net's "
            "size from the sample generation above. *samples/s*: `TrainResult.samples_per_s` "
            "(the epoch's batch loop: loading, augmentation, forward, OHEM loss, backward, "
            "Adam); *steady*: the same without the first batch (oneDNN set-up), from "
            "per-batch timestamps.", "",
            "| net | batch | threads | batches | training samples | samples/s | steady "
            "samples/s | ms/batch |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in training:
        out.append(f"| {r['stage'].upper().replace('NET', 'Net')} | {r['batch_size']} | "
                   f"{r['threads']} | {r['batches']} | {r['train_samples']:,} | "
                   f"{fmt(r['samples_per_s'])} | {fmt(r['steady_samples_per_s'])} | "
                   f"{fmt(r['ms_per_batch'], 1)} |")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Throughput of the training side: sample generation (crops/s), "
                    "hard-example mining (images/s) and training (samples/s), with the "
                    "pipeline's default settings on the first WIDER_train images.",
        epilog="example: python bench/training.py --out /tmp/training.md; quick check: "
               "python bench/training.py --images 4 --landmarks 20 --batches 2 --threads 1 "
               "--workers 1")
    p.add_argument("--data", type=Path, default=Path("../shared/data"),
                   help="folder holding WIDER_FACE/ and CNN_FacePoint/ (default: "
                        "../shared/data)")
    p.add_argument("--images", type=positive, default=60,
                   help="first N WIDER_train images for samples and mining (default: 60)")
    p.add_argument("--landmarks", type=positive, default=300,
                   help="first M CNN_FacePoint train faces for landmark samples (default: 300)")
    p.add_argument("--batches", type=positive, default=30,
                   help="training batches per net and thread count (default: 30)")
    p.add_argument("--threads", type=positive_list, default=[1, 2],
                   help="comma-separated torch thread counts for mining and training "
                        "(default: 1,2)")
    p.add_argument("--workers", type=positive_list, default=[1, 2],
                   help="comma-separated worker process counts for sample generation "
                        "(default: 1,2)")
    p.add_argument("--weights", default="reference",
                   help="cascade weights for mining: 'reference', 'default' or a path "
                        "(default: reference)")
    p.add_argument("--malloc", choices=("keep", "glibc"), default="keep",
                   help="keep: keep freed memory in the process (`keep_freed_memory`, what "
                        "the mtcnnkit command does); glibc: glibc's own defaults, to measure "
                        "the difference (default: keep)")
    p.add_argument("--device", default="cpu",
                   help="torch device for mining and training: cpu, cuda, cuda:N "
                        "(sample generation always runs on the CPU; default: cpu)")
    p.add_argument("--amp", action="store_true",
                   help="mixed-precision training (takes effect on CUDA only)")
    p.add_argument("--out", type=Path, metavar="FILE",
                   help="also write the Markdown report to FILE")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: CUDA is not available here")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    malloc = ("kept freed memory (`keep_freed_memory`, as the mtcnnkit command)"
              if args.malloc == "keep" and keep_freed_memory() else "glibc defaults")
    config = load_config()
    inputs = read_inputs(args.data, config, args.images, args.landmarks)
    meta = {
        **machine_meta(),
        "data": os.fspath(args.data), "images": len(inputs.faces),
        "faces": sum(len(f.boxes) for f in inputs.faces), "landmarks": len(inputs.landmarks),
        "workers": args.workers, "threads": args.threads, "batches": args.batches,
        "weights": args.weights, "malloc": malloc,
        "device": device_name(args.device) + (", AMP" if args.amp else ""),
    }
    with tempfile.TemporaryDirectory(prefix="mtcnnkit-bench-training-") as name:
        tmp = Path(name)
        samples, startup, shards = bench_samples(args, inputs, config, tmp)
        mining = bench_mining(args, inputs, config, tmp)
        training = bench_training(args, config, train_roots(shards, tmp), tmp)
    meta["total_s"] = time.perf_counter() - t_start

    report = markdown(meta, samples, startup, mining, training)
    print(report, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
