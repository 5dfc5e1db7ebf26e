"""CPU latency of mtcnnkit vs facenet-pytorch 2.6.0, both with the original MTCNN weights.

What is measured
----------------
* **Image**: insightface 2.1's ``insightface/data/images/t1.jpg`` (1280x886, six faces), fetched
  at bench time with ``pip download --no-deps insightface==2.1`` into
  ``mtcnnkit.reference.cache_dir() / "bench"``, read from the wheel, resized to exactly 640x480
  with ``cv2.INTER_AREA`` and kept in memory as RGB ``uint8`` (never written to the repo).
  ``--image PATH`` uses another image instead (resized to 640x480 unless ``--no-resize``).
* **Pipelines**: ``Detector(weights=<reference dir>, min_face_size=20).detect(rgb_array)`` and
  facenet-pytorch's ``MTCNN(keep_all=True, device="cpu", min_face_size=20)
  .detect(pil_image, landmarks=True)`` (PIL input, as its users call it). facenet-pytorch is
  loaded from its cached wheel by ``mtcnnkit.reference.load_reference_implementation()``; the
  script checks that both load byte-identical weight files.
* **Agreement**: both must find the same faces (same count, every facenet box matched one-to-one
  with IoU >= 0.95), otherwise the script exits with status 1 before timing anything.
* **Totals**: for each thread count (``torch.set_num_threads``), 5 warm-up runs of each
  pipeline, then ``--repeats`` runs *interleaved* (ours, facenet, ours, facenet, ...) so that
  machine noise hits both equally. Reported: median, p10, p90 (ms) and the speed-up
  facenet median / ours median (target: >= 3x at 1 thread).
* **Per-stage** (separate instrumented runs, ``--stage-runs`` each, since timers add
  overhead; medians per stage, so the rows need not add up exactly to the total):
  ours from ``Detector.detect_tensors([image], StageTimes())``; facenet by temporarily
  wrapping the ``forward`` of its ``pnet``/``rnet``/``onet`` modules and the module-level
  ``imresample`` of ``facenet_pytorch.models.utils.detect_face`` with timers (restored
  afterwards). ``imresample`` calls made while PNet still has levels to process are pyramid
  resampling, the later ones (RNet/ONet inputs) crop resampling. Glue = total - the named
  stages (NMS, box arithmetic, normalisation, tensor conversions, Python).
* **Counts**: PNet candidates (boxes entering RNet), RNet survivors (entering ONet), faces.
* **Own weights** (unless ``--no-own-weights``): ``Detector(min_face_size=20)`` with mtcnnkit's
  shipped weights (or the weights file ``--own-weights PATH``, e.g. earlier shipped ones),
  timed in the same interleaved rounds and instrumented runs (a third row and column). Not
  part of the agreement check: other weights find other faces and pass other numbers of
  candidates, which is what sets their speed.
* ``--cuda-batch`` (only when CUDA is available): images/s for a batch of 32 frames of mixed
  sizes (t1 resized to 32 distinct seeded random sizes between 320x240 and 1280x960) through one
  ``Detector(device="cuda").detect(list)`` call, vs facenet-pytorch batched. facenet only
  accepts equal-size batches, so it gets 32 frames of 640x480 (ours is shown on that batch too).

How to run
----------
    python bench/latency.py --threads 1,2 --repeats 30 --markdown docs/BENCHMARKS-latency.md

The Markdown report goes to stdout (and to ``--markdown FILE``), progress to stderr, raw numbers
to ``--json FILE``. Run it on a quiet machine: medians are robust, but not to a busy neighbour.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
import types
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from common import machine_meta, positive, torch_threads
from mtcnnkit import Detector
from mtcnnkit.detect.boxes import iou as box_iou
from mtcnnkit.detect.cascade import StageTimes
from mtcnnkit.imageio import load_image
from mtcnnkit.reference import (
    WEIGHT_FILES,
    cache_dir,
    fetch_reference_weights,
    load_reference_implementation,
)
from mtcnnkit.weights import BUNDLED_FILE

INSIGHTFACE_REQUIREMENT = "insightface==2.1"
INSIGHTFACE_IMAGE = "insightface/data/images/t1.jpg"
BENCH_SIZE = (640, 480)  # width, height
MIN_FACE = 20
IOU_MATCH = 0.95
SPEEDUP_TARGET = 3.0
CUDA_FRAMES = 32
OWN_LABEL = "mtcnnkit, own weights"
STAGES = ("pyramid resampling", "PNet", "crop resampling", "RNet", "ONet", "glue")
COUNTS = ("pnet_candidates", "rnet_survivors", "faces")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- inputs


def fetch_insightface_image() -> tuple[np.ndarray, str]:
    """t1.jpg from the insightface 2.1 wheel (downloaded once into the cache), as RGB uint8."""
    dest = cache_dir() / "bench"
    wheels = sorted(dest.glob("insightface-2.1-*.whl"))
    if not wheels:
        dest.mkdir(parents=True, exist_ok=True)
        log(f"downloading {INSIGHTFACE_REQUIREMENT} (no deps) into {dest} ...")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps",
               "--disable-pip-version-check", "-d", str(dest), INSIGHTFACE_REQUIREMENT]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(dest.glob("insightface-2.1-*.whl"))
        if result.returncode != 0 or not wheels:
            raise SystemExit(f"could not download {INSIGHTFACE_REQUIREMENT}: "
                             f"{result.stderr.strip()[-500:]}\n(use --image PATH instead)")
    with zipfile.ZipFile(wheels[0]) as zf:
        data = zf.read(INSIGHTFACE_IMAGE)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"could not decode {INSIGHTFACE_IMAGE} from {wheels[0].name}")
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), \
        f"insightface 2.1 `{INSIGHTFACE_IMAGE}`"


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = image.shape[:2]
    shrink = width <= w and height <= h
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(image, (width, height), interpolation=interpolation))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_same_weights(ours_dir: Path, facenet_module: types.ModuleType) -> str:
    """The weight files facenet-pytorch loads must be those given to mtcnnkit."""
    facenet_dir = Path(facenet_module.__file__).resolve().parent.parent / "data"
    digests = []
    for name in WEIGHT_FILES:
        a, b = sha256(ours_dir / name), sha256(facenet_dir / name)
        if a != b:
            raise SystemExit(f"weights differ: {ours_dir / name} vs {facenet_dir / name}")
        digests.append(f"{name} {a[:12]}")
    return ", ".join(digests)


# --------------------------------------------------------------------------- agreement


def match_faces(facenet_boxes: np.ndarray, our_boxes: np.ndarray) -> list[float]:
    """Greedy one-to-one matching by IoU; the IoU of each facenet box's match (0 if none)."""
    if len(facenet_boxes) == 0 or len(our_boxes) == 0:
        return [0.0] * len(facenet_boxes)
    iou = box_iou(torch.as_tensor(facenet_boxes), torch.as_tensor(our_boxes)).numpy()
    matched = [0.0] * len(facenet_boxes)
    used_f, used_o = set(), set()
    for flat in np.argsort(-iou, axis=None):
        i, j = np.unravel_index(flat, iou.shape)
        if i in used_f or j in used_o:
            continue
        used_f.add(i)
        used_o.add(j)
        matched[i] = float(iou[i, j])
    return matched


@dataclass
class Agreement:
    facenet_faces: int
    our_faces: int
    ious: list[float]

    @property
    def ok(self) -> bool:
        return (self.facenet_faces == self.our_faces
                and all(v >= IOU_MATCH for v in self.ious))

    def describe(self) -> str:
        worst = f"{min(self.ious):.4f}" if self.ious else "n/a"
        verdict = "same faces" if self.ok else "DIFFERENT FACES"
        return (f"{verdict}: facenet {self.facenet_faces}, ours {self.our_faces}; "
                f"lowest matched IoU {worst} (need >= {IOU_MATCH})")


def facenet_box_array(result: tuple) -> np.ndarray:
    boxes = result[0]
    return np.zeros((0, 4)) if boxes is None else np.asarray(boxes, dtype=np.float64)[:, :4]


def agreement(facenet_result: tuple, our_faces: list) -> Agreement:
    fb = facenet_box_array(facenet_result)
    ob = np.array([f.box for f in our_faces], dtype=np.float64).reshape(-1, 4)
    return Agreement(len(fb), len(ob), match_faces(fb, ob))


# --------------------------------------------------------------------------- timing


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {"median": float(np.median(ms)), "p10": float(np.percentile(ms, 10)),
            "p90": float(np.percentile(ms, 90)), "mean": float(ms.mean()),
            "min": float(ms.min()), "max": float(ms.max())}


@dataclass
class _FacenetRun:
    resample: list[tuple[int, float]] = field(default_factory=list)  # (pnet calls before, s)
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("pnet", "rnet", "onet"), 0.0))
    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("pnet", "rnet", "onet"), 0))
    inputs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("pnet", "rnet", "onet"), 0))


class FacenetProbe:
    """Timers around facenet-pytorch's nets and ``imresample``, installed only inside ``with``."""

    def __init__(self, mtcnn: torch.nn.Module, mtcnn_module: types.ModuleType) -> None:
        self.mtcnn = mtcnn
        self.detect_face_module = sys.modules[mtcnn_module.detect_face.__module__]
        self.run = _FacenetRun()

    def __enter__(self) -> FacenetProbe:
        self._resample = self.detect_face_module.imresample
        run_ref = self

        def imresample(img, sz):
            t = time.perf_counter()
            out = run_ref._resample(img, sz)
            run_ref.run.resample.append((run_ref.run.calls["pnet"], time.perf_counter() - t))
            return out

        self.detect_face_module.imresample = imresample
        for name in ("pnet", "rnet", "onet"):
            net = getattr(self.mtcnn, name)
            net.forward = self._timed_forward(name, net.forward)
        return self

    def _timed_forward(self, name: str, forward: Callable) -> Callable:
        def wrapper(x, *args, **kwargs):
            t = time.perf_counter()
            out = forward(x, *args, **kwargs)
            self.run.seconds[name] += time.perf_counter() - t
            self.run.calls[name] += 1
            self.run.inputs[name] += len(x)
            return out
        return wrapper

    def __exit__(self, *exc: object) -> None:
        self.detect_face_module.imresample = self._resample
        for name in ("pnet", "rnet", "onet"):
            del getattr(self.mtcnn, name).forward  # the class's forward shows through again

    def new_run(self) -> None:
        self.run = _FacenetRun()

    def stages(self, total: float) -> tuple[dict[str, float], dict[str, int]]:
        r = self.run
        pnet_calls = r.calls["pnet"]
        pyramid = sum(s for before, s in r.resample if before < pnet_calls)
        crops = sum(s for before, s in r.resample if before >= pnet_calls)
        stages = {"pyramid resampling": pyramid, "PNet": r.seconds["pnet"],
                  "crop resampling": crops, "RNet": r.seconds["rnet"], "ONet": r.seconds["onet"]}
        stages["glue"] = total - sum(stages.values())
        stages["total"] = total
        counts = {"pnet_candidates": r.inputs["rnet"], "rnet_survivors": r.inputs["onet"]}
        return stages, counts


def our_stages(times: StageTimes, total: float) -> dict[str, float]:
    s = times.seconds
    stages = {"pyramid resampling": s.get("integral", 0.0) + s.get("pyramid", 0.0),
              "PNet": s.get("pnet", 0.0),
              "crop resampling": s.get("rnet_crops", 0.0) + s.get("onet_crops", 0.0),
              "RNet": s.get("rnet", 0.0), "ONet": s.get("onet", 0.0)}
    stages["glue"] = total - sum(stages.values())
    stages["total"] = total
    return stages


def bench_threads(n: int, args: argparse.Namespace, detector: Detector, mtcnn: torch.nn.Module,
                  mtcnn_module: types.ModuleType, image: np.ndarray, pil: Image.Image,
                  own: Detector | None = None) -> dict:
    """``own`` (mtcnnkit's shipped weights) is timed in the same interleaved rounds; it is not
    part of the agreement check (other weights find other faces)."""
    def ours() -> list:
        return detector.detect(image)

    def own_weights() -> list:
        assert own is not None
        return own.detect(image)

    def facenet() -> tuple:
        return mtcnn.detect(pil, landmarks=True)

    with torch_threads(n):
        log(f"[{n} thread(s)] warm-up: {args.warmup} runs each")
        for _ in range(args.warmup):
            our_faces = ours()
            facenet_result = facenet()
        agree = agreement(facenet_result, our_faces)
        log(f"[{n} thread(s)] {agree.describe()}")
        if not agree.ok:
            return {"threads": n, "agreement": agree.__dict__, "ok": False}

        log(f"[{n} thread(s)] {args.repeats} interleaved timed runs each")
        ours_s, facenet_s, own_s = [], [], []
        for _ in range(args.repeats):
            ours_s.append(timed(ours)[0])
            facenet_s.append(timed(facenet)[0])
            if own is not None:
                own_s.append(timed(own_weights)[0])

        log(f"[{n} thread(s)] per-stage: {args.stage_runs} instrumented runs each")
        ours_runs, facenet_runs, own_runs = [], [], []
        ours_counts, facenet_counts, own_counts = [], [], []
        with FacenetProbe(mtcnn, mtcnn_module) as probe:
            for _ in range(args.stage_runs):
                instrumented = [(detector, ours_runs, ours_counts)]
                if own is not None:
                    instrumented.append((own, own_runs, own_counts))
                for det, runs, counts in instrumented:
                    times = StageTimes()
                    total, _ = timed(lambda det=det, times=times:
                                     det.detect_tensors([image], times))
                    runs.append(our_stages(times, total))
                    counts.append({k: int(times.counts.get(k, 0)) for k in COUNTS})

                probe.new_run()
                total, result = timed(facenet)
                stages, counts = probe.stages(total)
                counts["faces"] = len(facenet_box_array(result))
                facenet_runs.append(stages)
                facenet_counts.append(counts)

    ours_sum, facenet_sum = summary_ms(ours_s), summary_ms(facenet_s)
    stage_runs = {"ours": ours_runs, "facenet": facenet_runs}
    counts = {"ours": ours_counts[-1], "facenet": facenet_counts[-1]}
    result = {
        "threads": n, "ok": True, "agreement": agree.__dict__,
        "ours": {**ours_sum, "runs_s": ours_s},
        "facenet": {**facenet_sum, "runs_s": facenet_s},
        "ratio": facenet_sum["median"] / ours_sum["median"],
    }
    if own is not None:
        own_sum = summary_ms(own_s)
        result["own"] = {**own_sum, "runs_s": own_s}
        result["own_ratio"] = facenet_sum["median"] / own_sum["median"]
        stage_runs["own"] = own_runs
        counts["own"] = own_counts[-1]
    result["stages_ms"] = {
        pipeline: {k: float(np.median([r[k] for r in runs]) * 1e3) for k in (*STAGES, "total")}
        for pipeline, runs in stage_runs.items()}
    result["stage_runs_s"] = stage_runs
    result["counts"] = counts
    return result


# --------------------------------------------------------------------------- CUDA batch


def cuda_batch(args: argparse.Namespace, original: np.ndarray, image: np.ndarray,
               weights_dir: Path, mtcnn_module: types.ModuleType, device: str = "cuda") -> dict:
    """Images/s: 32 mixed-size frames through ours; 32 equal-size frames through both."""
    rng = np.random.default_rng(args.seed)
    sizes: list[tuple[int, int]] = []
    while len(sizes) < CUDA_FRAMES:
        size = (int(rng.integers(320, 1281)), int(rng.integers(240, 961)))
        if size not in sizes:
            sizes.append(size)
    mixed = [resize(original, w, h) for w, h in sizes]
    same = [image] * CUDA_FRAMES
    same_pil = [Image.fromarray(image)] * CUDA_FRAMES

    detector = Detector(weights=weights_dir, device=device, min_face_size=MIN_FACE)
    mtcnn = mtcnn_module.MTCNN(keep_all=True, device=device, min_face_size=MIN_FACE)
    runs: dict[str, Callable[[], object]] = {
        "ours_mixed": lambda: detector.detect(mixed),
        "ours_same": lambda: detector.detect(same),
        "facenet_same": lambda: mtcnn.detect(same_pil, landmarks=True),
    }

    def sync_timed(fn: Callable[[], object]) -> tuple[float, object]:
        if device == "cuda":
            torch.cuda.synchronize()
        return timed(fn)

    log(f"[cuda] warm-up: {args.warmup} batches each")
    last: dict[str, object] = {}
    for _ in range(args.warmup):
        for name, fn in runs.items():
            last[name] = fn()
    faces = {
        "ours_mixed": sum(len(f) for f in last["ours_mixed"]),
        "ours_same": sum(len(f) for f in last["ours_same"]),
        "facenet_same": sum(0 if b is None else len(b) for b in last["facenet_same"][0]),
    }
    log(f"[cuda] {args.cuda_repeats} interleaved timed batches each")
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.cuda_repeats):
        for name, fn in runs.items():
            seconds[name].append(sync_timed(fn)[0])
    rows = {}
    for name, s in seconds.items():
        median = float(np.median(s))
        rows[name] = {"median_s": median, "images_per_s": CUDA_FRAMES / median,
                      "faces": faces[name], "runs_s": s}
    return {"device": torch.cuda.get_device_name() if device == "cuda" else device,
            "frames": CUDA_FRAMES, "mixed_sizes": sizes, "same_size": list(image.shape[1::-1]),
            "detector_batch_size": detector.batch_size, "rows": rows}


# --------------------------------------------------------------------------- report


def markdown(meta: dict, results: list[dict], cuda: dict | None, cuda_note: str | None) -> str:
    out = ["## Latency: mtcnnkit vs facenet-pytorch 2.6.0", ""]
    out += [
        f"- Machine: {meta['cpu']}, {meta['cores']} logical cores (`os.cpu_count()`), "
        f"load average at start {meta['loadavg']}; torch {meta['torch']}, "
        f"Python {meta['python']}",
        f"- Date: {meta['date']}; mtcnnkit revision {meta['revision']}",
        f"- Command: `{meta['command']}`",
        f"- Image: {meta['image']}, {meta['image_size_in']} → {meta['image_size']}, RGB uint8 "
        f"in memory; min face {MIN_FACE}; thresholds (0.6, 0.7, 0.7), scale factor 0.709",
        f"- Weights: the original MTCNN weights from the facenet-pytorch 2.6.0 wheel, "
        f"byte-identical for both ({meta['weights']})",
        "- Inputs: ours an RGB numpy array (`Detector.detect`); facenet-pytorch a PIL image "
        "(`MTCNN(keep_all=True).detect(img, landmarks=True)`)",
        f"- Method: {meta['warmup']} warm-up runs each, then {meta['repeats']} runs "
        f"interleaved (ours, facenet, ours, …); per-stage times from {meta['stage_runs']} "
        f"separate instrumented runs each (median per stage)",
    ]
    if meta.get("own_weights"):
        out.append(f"- {OWN_LABEL}: `Detector(min_face_size={MIN_FACE})` with mtcnnkit's "
                   f"weights ({meta['own_weights']}), timed in the same interleaved "
                   "rounds; not in the agreement check (other weights, other faces)")
    for r in results:
        n = r["threads"]
        out += ["", f"### {n} thread{'s' if n > 1 else ''}", ""]
        a = r["agreement"]
        agree = Agreement(a["facenet_faces"], a["our_faces"], a["ious"])
        out += [f"Agreement: {agree.describe()}.", ""]
        if not r["ok"]:
            out += ["**Not timed: the pipelines disagree, so the comparison is meaningless.**"]
            continue
        own = "own" in r
        rows = [("facenet-pytorch 2.6.0", "facenet", "1.00×"),
                ("mtcnnkit", "ours", f"**{r['ratio']:.2f}×**")]
        if own:
            rows.append((OWN_LABEL, "own", f"{r['own_ratio']:.2f}×"))
        out += ["| pipeline | median ms | p10 | p90 | ratio |", "|---|---:|---:|---:|---:|"]
        for name, key, ratio in rows:
            s = r[key]
            out.append(f"| {name} | {s['median']:.1f} | {s['p10']:.1f} | {s['p90']:.1f} "
                       f"| {ratio} |")
        if n == 1:
            met = "met" if r["ratio"] >= SPEEDUP_TARGET else "**not met**"
            out += ["", f"Target ≥ {SPEEDUP_TARGET:.0f}× faster than facenet-pytorch at 1 "
                        f"thread: {met} ({r['ratio']:.2f}×)."]
        keys = ("facenet", "ours", "own") if own else ("facenet", "ours")
        heads = " | ".join(("facenet", "ours", "ours, own weights")[:len(keys)])
        rule = "|---" + "|---:" * len(keys) + "|"
        st = r["stages_ms"]
        out += ["", f"Per stage (ms, median of {meta['stage_runs']} instrumented runs):", "",
                f"| stage | {heads} |", rule]
        for stage in (*STAGES, "total"):
            label = "total (instrumented)" if stage == "total" else stage
            out.append(f"| {label} | " + " | ".join(f"{st[k][stage]:.1f}" for k in keys) + " |")
        c = r["counts"]
        out += ["", f"| per image | {heads} |", rule]
        for key, label in zip(COUNTS, ("PNet candidates (into RNet)", "RNet survivors (into ONet)",
                                       "faces"), strict=True):
            out.append(f"| {label} | " + " | ".join(str(c[k][key]) for k in keys) + " |")
    out += ["", "Stages: *pyramid resampling* — ours: integral image + pyramid levels; facenet: "
            "`imresample` of the whole image per scale. *Crop resampling* — RNet/ONet inputs "
            "(ours: `rnet_crops` + `onet_crops`; facenet: per-box `imresample`). *Glue* — total "
            "minus the named stages: NMS, box arithmetic, normalisation, conversions, Python."]
    if cuda_note:
        out += ["", "### CUDA batch", "", cuda_note]
    if cuda:
        w, h = cuda["same_size"]
        out += ["", "### CUDA batch", "",
                f"{cuda['device']}; {cuda['frames']} frames per call, median of "
                f"{meta['cuda_repeats']} interleaved calls after {meta['warmup']} warm-up calls. "
                f"Mixed sizes: t1 resized to {cuda['frames']} distinct random sizes between "
                f"320×240 and 1280×960 (seed {meta['seed']}), one `Detector(device=\"cuda\")"
                f".detect(list)` call (Detector batch_size {cuda['detector_batch_size']}). "
                f"facenet-pytorch only accepts equal-size batches, so it gets {cuda['frames']} "
                f"frames of {w}×{h}; ours is shown on that batch too.", "",
                "| pipeline | batch | median s per call | images/s | faces found |",
                "|---|---|---:|---:|---:|"]
        same = f"{cuda['frames']} × {w}×{h}"
        for key, label, batch in (("ours_mixed", "mtcnnkit", f"{cuda['frames']} mixed sizes"),
                                  ("ours_same", "mtcnnkit", same),
                                  ("facenet_same", "facenet-pytorch 2.6.0", same)):
            row = cuda["rows"][key]
            out.append(f"| {label} | {batch} | {row['median_s']:.3f} | "
                       f"{row['images_per_s']:.1f} | {row['faces']} |")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- main


def thread_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"thread counts must be positive, got {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="CPU latency of mtcnnkit vs facenet-pytorch 2.6.0 (same original MTCNN "
                    "weights, same 640x480 photo, min face 20), with per-stage times.",
        epilog="example: python bench/latency.py --threads 1,2 --repeats 30 "
               "--markdown docs/BENCHMARKS-latency.md")
    p.add_argument("--threads", type=thread_list, default=[1, 2],
                   help="comma-separated torch thread counts (default: 1,2)")
    p.add_argument("--repeats", type=positive, default=30,
                   help="timed runs per pipeline and thread count (default: 30)")
    p.add_argument("--warmup", type=positive, default=5,
                   help="warm-up runs per pipeline before timing (default: 5)")
    p.add_argument("--stage-runs", type=positive, default=10,
                   help="instrumented runs per pipeline for per-stage times (default: 10)")
    p.add_argument("--no-own-weights", action="store_true",
                   help="do not also time mtcnnkit with its own shipped weights")
    p.add_argument("--own-weights", type=Path, default=BUNDLED_FILE,
                   help="the own weights to time: an mtcnnkit weights file (default: the "
                   "shipped mtcnnkit.pt)")
    p.add_argument("--image", type=Path,
                   help="use this image instead of insightface 2.1's t1.jpg")
    p.add_argument("--no-resize", action="store_true",
                   help="with --image: keep its size instead of resizing to 640x480")
    p.add_argument("--markdown", type=Path, metavar="FILE",
                   help="also write the Markdown report to FILE")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the raw numbers to FILE")
    p.add_argument("--cuda-batch", action="store_true",
                   help="also measure images/s on a 32-frame batch on CUDA (skipped without CUDA)")
    p.add_argument("--cuda-repeats", type=positive, default=10,
                   help="timed batches per pipeline for --cuda-batch (default: 10)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed for the --cuda-batch frame sizes (default: 0)")
    args = p.parse_args(argv)
    if args.no_resize and args.image is None:
        p.error("--no-resize only applies with --image")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.image is not None:
        original = load_image(args.image)
        source = f"`{args.image}`"
    else:
        original, source = fetch_insightface_image()
    image = original if args.no_resize else resize(original, *BENCH_SIZE)

    weights_dir = fetch_reference_weights()
    mtcnn_module = load_reference_implementation()
    weights = check_same_weights(weights_dir, mtcnn_module)
    detector = Detector(weights=weights_dir, min_face_size=MIN_FACE)
    mtcnn = mtcnn_module.MTCNN(keep_all=True, device="cpu", min_face_size=MIN_FACE)
    own = None if args.no_own_weights else Detector(args.own_weights, min_face_size=MIN_FACE)
    pil = Image.fromarray(image)

    meta = {
        **machine_meta(),
        "image": source, "image_size_in": f"{original.shape[1]}×{original.shape[0]}",
        "image_size": f"{image.shape[1]}×{image.shape[0]}", "weights": weights,
        "warmup": args.warmup, "repeats": args.repeats, "stage_runs": args.stage_runs,
        "cuda_repeats": args.cuda_repeats, "seed": args.seed,
        "own_weights": None if own is None else (
            f"{args.own_weights.name} {sha256(args.own_weights)[:12]}"),
    }
    results = [bench_threads(n, args, detector, mtcnn, mtcnn_module, image, pil, own)
               for n in args.threads]
    ok = all(r["ok"] for r in results)

    cuda, cuda_note = None, None
    if args.cuda_batch and ok:
        if torch.cuda.is_available():
            cuda = cuda_batch(args, original, image, weights_dir, mtcnn_module)
        else:
            cuda_note = "Skipped: `--cuda-batch` was given but CUDA is not available."
            log("[cuda] skipped: CUDA is not available")

    report = markdown(meta, results, cuda, cuda_note)
    print(report, end="")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "threads": results, "cuda": cuda},
                                        indent=1))
    if not ok:
        log("the pipelines found different faces: benchmark not meaningful (exit 1)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
