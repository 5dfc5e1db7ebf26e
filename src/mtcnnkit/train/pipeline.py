"""The three-stage MTCNN training pipeline: a plain sequence of resumable steps.

Steps (each writes into ``out/<step>/`` and, when complete, ``out/<step>/.done``, a JSON
file with the step's result, written atomically; a step whose ``.done`` exists is skipped):

``prepare_pnet``       12 px positives / part faces / negatives from the training faces
                       (WIDER_train + the val images of ``splits/wider_val_train.txt``)
``prepare_landmarks``  12, 24 and 48 px landmark samples from the CNN_FacePoint train list
                       (PNet and RNet have no landmark head: with ``landmark_positives`` they
                       learn from them as faces, else they skip them)
``train_pnet``         PNet on the 12 px samples
``mine_rnet``          24 px samples: PNet's detections on the training images
``prepare_crops``      24 and 48 px positives / part faces / negatives cut around the training
                       faces, as for PNet (they add the positives that mining alone finds
                       too few of; ``rnet.samples`` / ``onet.samples``, zero counts: none)
``train_rnet``         RNet on the mined + cut + landmark 24 px samples
``mine_onet``          48 px samples: PNet + RNet's detections on the training images
``train_onet``         ONet on the mined + cut + landmark 48 px samples
``assemble``           ``out/weights.pt`` (mtcnnkit weights file; meta: config + best metrics)
``evaluate``           WIDER AP (easy/medium/hard) of ``weights.pt`` on the dev images,
                       written to ``out/eval.json``

A killed run continues where it stopped: finished steps are skipped, the sample generators
and miners resume from their journals and the trainer from ``last.pt``.

Configuration (:class:`PipelineConfig`) comes from YAML (see ``configs/default.yaml``) plus
dotted overrides (``pnet.epochs=2``); unknown keys raise ``ValueError`` naming them.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import nets
from ..data.annotations import FaceBoxes, read_landmark_list, read_wider_txt
from ..data.augment import BatchAugment
from ..data.mining import MiningConfig, mine, mining_detector
from ..data.samples import SampleConfig, generate_detection_samples, generate_landmark_samples
from ..data.shards import shard_dirs, write_json_atomic
from .trainer import TrainConfig, train_stage

StrPath = str | os.PathLike[str]
Progress = Callable[[str, int, int], None]  # (description, done, total)
Echo = Callable[[str], None]

STEPS = ("prepare_pnet", "prepare_landmarks", "train_pnet", "mine_rnet", "prepare_crops",
         "train_rnet", "mine_onet", "train_onet", "assemble", "evaluate")
DONE = ".done"
WEIGHTS_FILE = "weights.pt"
EVAL_FILE = "eval.json"


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass
class DataConfig:
    """Paths relative to the ``--data`` folder, and optional limits (for quick runs)."""

    train_gt: str = "WIDER_FACE/wider_face_split/wider_face_train_bbx_gt.txt"
    train_images: str = "WIDER_FACE/WIDER_train/images"
    val_gt: str = "WIDER_FACE/wider_face_split/wider_face_val_bbx_gt.txt"
    val_images: str = "WIDER_FACE/WIDER_val/images"
    val_train_list: str = "splits/wider_val_train.txt"
    dev_list: str = "splits/wider_val_dev.txt"
    eval_ground_truth: str = "WIDER_FACE/eval_tools/ground_truth"
    landmark_list: str = "CNN_FacePoint/train/trainImageList.txt"
    landmark_images: str = "CNN_FacePoint/train"
    max_train_images: int | None = None  # first N of WIDER_train (None: all)
    max_val_train_images: int | None = None  # first N of the val-train list
    max_landmark_samples: int | None = None  # first N landmark faces


def _pnet_samples() -> SampleConfig:
    return SampleConfig(size=12, negatives_random=50, negatives_near=5, positive_attempts=30,
                        crop_scale=(0.6, 1.25), workers=2)


def _landmark_samples(attempts: int = 10) -> SampleConfig:
    return SampleConfig(size=24, landmark_attempts=attempts, workers=2)


def _crop_samples() -> SampleConfig:
    return SampleConfig(size=24, negatives_random=10, negatives_near=3, positive_attempts=20,
                        workers=2)


@dataclass
class PNetStageConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        stage="pnet", epochs=240, batch_size=384, batches_per_epoch=300, lr=1e-3,
        batch_ratio=(3, 1, 1, 1), loss_weights=(1.0, 1.0, 0.5), landmark_positives=True))
    samples: SampleConfig = field(default_factory=_pnet_samples)
    landmarks: SampleConfig = field(default_factory=_landmark_samples)


@dataclass
class RNetStageConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        stage="rnet", epochs=64, batch_size=256, batches_per_epoch=300, lr=1e-3,
        batch_ratio=(2, 1, 1, 1), landmark_positives=True))
    mining: MiningConfig = field(default_factory=lambda: MiningConfig(
        stage="rnet", pnet_threshold=0.6, min_face_size=20.0, max_negatives=60,
        positive_iou=0.5))
    landmarks: SampleConfig = field(default_factory=_landmark_samples)
    samples: SampleConfig = field(default_factory=_crop_samples)


@dataclass
class ONetStageConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        stage="onet", arch="onet_wide", epochs=48, batch_size=256, batches_per_epoch=200,
        lr=1e-3, batch_ratio=(2, 1, 1, 2), regression="wing",
        loss_weights=(1.0, 1.0, 1.0),  # box weight 1 (runs 62, 66, 70)
        landmark_positives=True,
        augment=BatchAugment(jitter_p=0.5)))  # colour jitter (runs 53, 56, 57)
    mining: MiningConfig = field(default_factory=lambda: MiningConfig(
        stage="onet", pnet_threshold=0.6, rnet_threshold=0.6, min_face_size=20.0,
        max_negatives=60, positive_iou=0.5))
    landmarks: SampleConfig = field(default_factory=lambda: _landmark_samples(30))
    samples: SampleConfig = field(default_factory=_crop_samples)


@dataclass
class EvalConfig:
    max_images: int | None = None  # first N dev images (None: all 344)
    min_face_size: float = 20.0
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    scale_factor: float = 0.709
    max_side: int | None = None  # downscale larger images before detection (None: never)
    batch_size: int = 8


@dataclass
class PipelineConfig:
    device: str = "cpu"  # for training, mining and evaluation: "cpu", "cuda", "cuda:N"
    data: DataConfig = field(default_factory=DataConfig)
    pnet: PNetStageConfig = field(default_factory=PNetStageConfig)
    rnet: RNetStageConfig = field(default_factory=RNetStageConfig)
    onet: ONetStageConfig = field(default_factory=ONetStageConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        """The YAML layout: stage sections hold the training settings directly."""
        out: dict[str, Any] = {"device": self.device,
                               "data": dataclasses.asdict(self.data)}
        for stage in nets.STAGES:
            section = getattr(self, stage)
            train = section.train.to_dict()
            for key in ("stage", "device"):
                train.pop(key)
            for name in ("samples", "mining", "landmarks"):
                if hasattr(section, name):
                    sub = {k: list(v) if isinstance(v, tuple) else v
                           for k, v in dataclasses.asdict(getattr(section, name)).items()}
                    sub.pop("size" if name != "mining" else "stage")
                    train[name] = sub
            out[stage] = train
        ev = dataclasses.asdict(self.eval)
        ev["thresholds"] = list(self.eval.thresholds)
        out["eval"] = ev
        return out


def _check_keys(data: Any, allowed: Sequence[str], where: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(allowed)}")
    return dict(data)


def _fields(cls: type, exclude: Sequence[str] = ()) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name not in exclude]


def _leaf(cls: type, base: Any, data: Any, where: str, fixed: Mapping[str, Any]) -> Any:
    """``base`` (a dataclass instance) with the keys of ``data`` replaced, ``fixed`` forced."""
    values = _check_keys(data, _fields(cls, tuple(fixed)), where)
    try:
        return dataclasses.replace(base, **values, **fixed)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from e


def _stage(stage: str, base: Any, data: Any, device: str) -> Any:
    subs = {"landmarks": SampleConfig, "samples": SampleConfig} if stage == "pnet" else {
        "mining": MiningConfig, "landmarks": SampleConfig, "samples": SampleConfig}
    allowed = [*_fields(TrainConfig, ("stage", "device")), *subs]
    values = _check_keys(data, allowed, stage)
    train_values = {k: v for k, v in values.items() if k not in subs}
    train = _leaf(TrainConfig, base.train, train_values, stage,
                  {"stage": stage, "device": device})
    kwargs = {"train": train}
    for name, cls in subs.items():
        fixed: dict[str, Any] = ({"stage": stage} if cls is MiningConfig
                                 else {"size": nets.INPUT_SIZE[stage]})
        kwargs[name] = _leaf(cls, getattr(base, name), values.get(name), f"{stage}.{name}",
                             fixed)
    return type(base)(**kwargs)


def build_config(data: Mapping[str, Any] | None) -> PipelineConfig:
    """A :class:`PipelineConfig` from its YAML layout (missing keys keep their defaults)."""
    base = PipelineConfig()
    values = _check_keys(data, _fields(PipelineConfig), "config")
    device = values.get("device", base.device)
    if not isinstance(device, str):
        raise ValueError(f"device: expected a string, got {device!r}")
    data_cfg = _leaf(DataConfig, base.data, values.get("data"), "data", {})
    eval_values = _check_keys(values.get("eval"), _fields(EvalConfig), "eval")
    if "thresholds" in eval_values:
        thresholds = eval_values["thresholds"]
        if not isinstance(thresholds, Sequence) or len(thresholds) != 3:
            raise ValueError(f"eval.thresholds: expected 3 numbers, got {thresholds!r}")
        eval_values["thresholds"] = tuple(float(t) for t in thresholds)
    eval_cfg = _leaf(EvalConfig, base.eval, eval_values, "eval", {})
    return PipelineConfig(
        device=device, data=data_cfg, eval=eval_cfg,
        pnet=_stage("pnet", base.pnet, values.get("pnet"), device),
        rnet=_stage("rnet", base.rnet, values.get("rnet"), device),
        onet=_stage("onet", base.onet, values.get("onet"), device))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"pnet.epochs=2"`` -> (["pnet", "epochs"], 2); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(p.strip() for p in parts):
        raise ValueError(f"override {text!r}: expected key.path=value, e.g. pnet.epochs=2")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ValueError(f"override {text!r}: bad value ({e})") from e
    return [p.strip() for p in parts], value


def apply_overrides(data: Mapping[str, Any] | None,
                    overrides: Mapping[str, Any] | Sequence[str] | None) -> dict[str, Any]:
    """``data`` with dotted overrides set (a mapping ``{"pnet.epochs": 2}`` or a list of
    ``"pnet.epochs=2"`` strings)."""
    out = copy.deepcopy(dict(data or {}))
    if not overrides:
        return out
    if isinstance(overrides, Mapping):
        items = [(str(k).split("."), v) for k, v in overrides.items()]
    else:
        items = [parse_override(text) for text in overrides]
    for path, value in items:
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {'.'.join(path)}: "
                                 f"{'.'.join(path[:i + 1])} is not a section")
            node = child
        node[path[-1]] = value
    return out


def load_config(path: StrPath | None = None,
                overrides: Mapping[str, Any] | Sequence[str] | None = None) -> PipelineConfig:
    """Read a YAML config (None: the built-in defaults) and apply dotted overrides."""
    data: Any = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML ({e})") from e
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: expected a mapping at the top level")
    merged = _merge(PipelineConfig().to_dict(), data)
    return build_config(apply_overrides(merged, overrides))


def _merge(base: dict[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``data`` laid over it, section by section."""
    out = dict(base)
    for key, value in data.items():
        if isinstance(out.get(key), dict) and isinstance(value, Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# Running


@dataclass
class Run:
    data_dir: Path
    out_dir: Path
    config: PipelineConfig
    progress: Progress | None = None
    echo: Echo | None = print

    def path(self, relative: str) -> Path:
        return self.data_dir / relative

    def step_dir(self, step: str) -> Path:
        return self.out_dir / step

    def say(self, text: str) -> None:
        if self.echo is not None:
            self.echo(text)

    def reporter(self, description: str) -> Callable[[int, int], None] | None:
        if self.progress is None:
            return None
        progress = self.progress
        return lambda done, total: progress(description, done, total)


@dataclass
class StepReport:
    step: str
    status: str  # "ran" | "skipped" | "not needed"
    seconds: float
    result: dict[str, Any]


def _read_list(path: Path) -> list[str]:
    return [line.strip().replace("\\", "/") for line in path.read_text(encoding="utf-8")
            .splitlines() if line.strip()]


def _limit(items: list[Any], n: int | None) -> list[Any]:
    return items if n is None else items[:n]


def training_faces(run: Run) -> list[FaceBoxes]:
    """WIDER_train faces + the val-train images' faces, image paths relative to the data
    folder."""
    d = run.config.data
    train, _ = read_wider_txt(run.path(d.train_gt))
    train = _limit(train, d.max_train_images)
    val, _ = read_wider_txt(run.path(d.val_gt))
    by_name = {f.image: f for f in val}
    wanted = _limit(_read_list(run.path(d.val_train_list)), d.max_val_train_images)
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise ValueError(f"{d.val_train_list}: {len(missing)} image(s) not in {d.val_gt}, "
                         f"e.g. {missing[0]!r}")
    faces = [dataclasses.replace(f, image=f"{d.train_images}/{f.image}") for f in train]
    faces += [dataclasses.replace(by_name[n], image=f"{d.val_images}/{n}") for n in wanted]
    return faces


def link_shards(target: Path, sources: Sequence[Path]) -> Path:
    """A folder of symlinks to the shards of ``sources`` (renumbered), so that one
    `ShardDataset` reads them all."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    n = 0
    for source in sources:
        for shard in shard_dirs(source):
            link = target / f"shard-{n:05d}"
            link.symlink_to(os.path.relpath(shard.resolve(), target.resolve()),
                            target_is_directory=True)
            n += 1
    return target


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _weights_folder(run: Run, folder: Path, trained: Sequence[str]) -> Path:
    """pnet.pt/rnet.pt/onet.pt in ``folder``: the trained nets' best.pt, placeholders (fresh
    nets, never run by the mining stage) for the others."""
    return nets_folder(folder, {s: run.step_dir(f"train_{s}") / "best.pt" for s in trained})


def nets_folder(folder: Path, given: Mapping[str, Path]) -> Path:
    """``folder`` with pnet.pt/rnet.pt/onet.pt: copies of the ``given`` per-net files, and
    placeholders (fresh nets, seed 0) for the stages not given — a cascade that loads, for
    work that never runs the missing nets (mining)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    for stage in nets.STAGES:
        target = folder / f"{stage}.pt"
        if stage in given:
            if Path(given[stage]).resolve() != target.resolve():
                shutil.copyfile(given[stage], target)
        else:
            torch.manual_seed(0)
            torch.save({"arch": stage, "state_dict": nets.create(stage).state_dict()}, target)
    return folder


def _mine(run: Run, stage: str, trained: Sequence[str]) -> dict[str, Any]:
    from ..weights import load_weights

    cfg = getattr(run.config, stage).mining
    out = run.step_dir(f"mine_{stage}")
    cascade = load_weights(_weights_folder(run, out / "weights", trained))
    # the miner's resume fingerprint sees source and meta: tie it to the weights' content
    cascade.meta = {s: _sha256(out / "weights" / f"{s}.pt") for s in trained}
    detector = mining_detector(cascade, cfg, device=run.config.device)
    counts = mine(detector, training_faces(run), run.data_dir, out / "samples", cfg,
                  progress=run.reporter(f"mine {stage}"))
    if counts.get("positive", 0) + counts.get("part", 0) == 0:
        run.say(f"[mine_{stage}] warning: no face among {counts.get('candidates', 0)} "
                f"candidates of {counts.get('images', 0)} images; {stage} learns faces from "
                "the cut and landmark samples only. Train the earlier net(s) longer or lower "
                f"{stage}.mining thresholds.")
    return counts


def _train(run: Run, stage: str, sources: Sequence[Path]) -> dict[str, Any]:
    cfg = getattr(run.config, stage).train
    out = run.step_dir(f"train_{stage}")
    data = link_shards(out / "data", sources)
    result = train_stage(cfg, data, None, out, resume=True,
                         progress=run.reporter(f"train {stage}"), echo=run.echo)
    history = result.history
    return {"best_epoch": result.best_epoch, "best_value": result.best_value,
            "best_metric": cfg.best_metric, "epochs": len(history),
            "first_train_cls_loss": history[0]["train_cls_loss"] if history else None,
            "last_train_cls_loss": history[-1]["train_cls_loss"] if history else None,
            "best_metrics": history[result.best_epoch] if history else {}}


def prepare_pnet(run: Run) -> dict[str, Any]:
    return generate_detection_samples(training_faces(run), run.data_dir,
                                      run.step_dir("prepare_pnet") / "samples",
                                      run.config.pnet.samples,
                                      progress=run.reporter("samples 12px"))


def train_pnet(run: Run) -> dict[str, Any]:
    sources = [run.step_dir("prepare_pnet") / "samples"]
    if run.config.pnet.train.landmark_positives:  # else PNet (no landmark head) skips them
        sources.append(run.step_dir("prepare_landmarks") / str(nets.INPUT_SIZE["pnet"]))
    return _train(run, "pnet", sources)


def mine_rnet(run: Run) -> dict[str, Any]:
    return _mine(run, "rnet", ["pnet"])


def prepare_landmarks(run: Run) -> dict[str, Any]:
    d = run.config.data
    samples = _limit(read_landmark_list(run.path(d.landmark_list)), d.max_landmark_samples)
    out = {}
    for stage in nets.STAGES:
        cfg = getattr(run.config, stage).landmarks
        out[str(cfg.size)] = generate_landmark_samples(
            samples, run.path(d.landmark_images),
            run.step_dir("prepare_landmarks") / str(cfg.size), cfg,
            progress=run.reporter(f"landmarks {cfg.size}px"))
    return out


def prepare_crops(run: Run) -> dict[str, Any]:
    faces = training_faces(run)
    out = {}
    for stage in ("rnet", "onet"):
        cfg = getattr(run.config, stage).samples
        out[str(cfg.size)] = generate_detection_samples(
            faces, run.data_dir, run.step_dir("prepare_crops") / str(cfg.size), cfg,
            progress=run.reporter(f"samples {cfg.size}px"))
    return out


def _sources(run: Run, stage: str) -> list[Path]:
    """The shard folders RNet / ONet train on: mined, cut around faces, landmarks."""
    size = str(nets.INPUT_SIZE[stage])
    return [run.step_dir(f"mine_{stage}") / "samples", run.step_dir("prepare_crops") / size,
            run.step_dir("prepare_landmarks") / size]


def train_rnet(run: Run) -> dict[str, Any]:
    return _train(run, "rnet", _sources(run, "rnet"))


def mine_onet(run: Run) -> dict[str, Any]:
    return _mine(run, "onet", ["pnet", "rnet"])


def train_onet(run: Run) -> dict[str, Any]:
    return _train(run, "onet", _sources(run, "onet"))


def assemble(run: Run) -> dict[str, Any]:
    from ..weights import load_net, save_weights

    loaded = {s: load_net(run.step_dir(f"train_{s}") / "best.pt", s) for s in nets.STAGES}
    metrics = {s: _done_result(run, f"train_{s}") for s in nets.STAGES}
    meta = {"config": run.config.to_dict(), "metrics": metrics,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = save_weights({s: net for s, (_, net) in loaded.items()}, run.out_dir / WEIGHTS_FILE,
                        archs={s: arch for s, (arch, _) in loaded.items()}, meta=meta)
    return {"weights": str(path), "bytes": path.stat().st_size}


def evaluate(run: Run) -> dict[str, Any]:
    from ..detect.detector import Detector
    from ..evaluate.wider import evaluate_wider, image_key, load_ground_truth, predict

    d, ev = run.config.data, run.config.eval
    names = _limit(_read_list(run.path(d.dev_list)), ev.max_images)
    paths = [run.path(d.val_images) / name for name in names]
    detector = Detector(weights=run.out_dir / WEIGHTS_FILE, device=run.config.device,
                        min_face_size=ev.min_face_size, thresholds=ev.thresholds,
                        scale_factor=ev.scale_factor, max_side=ev.max_side)
    predictions = predict(detector, paths, batch_size=ev.batch_size,
                          progress=run.reporter("evaluate"))
    gt = load_ground_truth(run.path(d.eval_ground_truth))
    result = evaluate_wider(predictions, gt, [image_key(p) for p in paths])
    out = {**{level: float(ap) for level, ap in result.ap.items()},
           "images": result.n_images, "faces": result.n_faces,
           "predictions": result.n_predictions}
    write_json_atomic(run.out_dir / EVAL_FILE, out)
    return out


STEP_FUNCTIONS: dict[str, Callable[[Run], dict[str, Any]]] = {
    "prepare_pnet": prepare_pnet, "train_pnet": train_pnet, "mine_rnet": mine_rnet,
    "prepare_landmarks": prepare_landmarks, "prepare_crops": prepare_crops,
    "train_rnet": train_rnet, "mine_onet": mine_onet,
    "train_onet": train_onet, "assemble": assemble, "evaluate": evaluate,
}
REQUIRES: dict[str, tuple[str, ...]] = {
    "prepare_pnet": (), "train_pnet": ("prepare_pnet", "prepare_landmarks"),
    "mine_rnet": ("train_pnet",),
    "prepare_landmarks": (), "prepare_crops": (),
    "train_rnet": ("mine_rnet", "prepare_landmarks", "prepare_crops"),
    "mine_onet": ("train_pnet", "train_rnet"),
    "train_onet": ("mine_onet", "prepare_landmarks", "prepare_crops"),
    "assemble": ("train_pnet", "train_rnet", "train_onet"), "evaluate": ("assemble",),
}
# what a step leaves outside its own folder
EXTRA_OUTPUTS = {"assemble": (WEIGHTS_FILE,), "evaluate": (EVAL_FILE,)}


def _done_path(run: Run, step: str) -> Path:
    return run.step_dir(step) / DONE


def _done_result(run: Run, step: str) -> dict[str, Any]:
    return json.loads(_done_path(run, step).read_text(encoding="utf-8"))


class PipelineUsageError(ValueError):
    """A request the run cannot honour as given (conflicting options, missing earlier steps,
    a given net that contradicts the run folder); the message says what to change."""


def _check_step(step: str | None, option: str) -> None:
    if step is not None and step not in STEPS:
        raise PipelineUsageError(f"{option} {step!r}: expected one of {', '.join(STEPS)}")


def reset_from(run: Run, step: str) -> None:
    """Delete the outputs of ``step`` and every later step."""
    for later in STEPS[STEPS.index(step):]:
        if run.step_dir(later).exists():
            shutil.rmtree(run.step_dir(later))
        for name in EXTRA_OUTPUTS.get(later, ()):
            (run.out_dir / name).unlink(missing_ok=True)


def unneeded_steps(given: Collection[str]) -> set[str]:
    """The steps whose outputs only serve the training of the ``given`` nets (stages), e.g.
    ``prepare_pnet`` and ``mine_rnet`` when PNet and RNet are given."""
    adopted = {f"train_{stage}" for stage in given}
    unneeded: set[str] = set()
    for step in reversed(STEPS):  # a step's users come after it
        users = [s for s in STEPS if step in REQUIRES[s]]
        if step not in adopted and users and all(u in adopted | unneeded for u in users):
            unneeded.add(step)
    return unneeded


def adopt_nets(run: Run, given: Mapping[str, StrPath]) -> None:
    """Use trained nets instead of training them: each ``given`` stage's net (a per-net file
    such as a run's ``train_pnet/best.pt``, or that net of a cascade file) becomes the
    ``train_<stage>`` step's ``best.pt``, the step marked done with where the net came from.
    Idempotent; a run whose step already holds a different net is refused."""
    from ..weights import atomic_save, load_net, net_digest

    for stage, spec in given.items():
        if stage not in nets.STAGES:
            raise PipelineUsageError(f"given net {stage!r}: expected one of "
                                     f"{', '.join(nets.STAGES)}")
        step = f"train_{stage}"
        arch, net = load_net(spec, stage)
        digest = net_digest(net)
        done = _done_path(run, step)
        if done.is_file():
            if _done_result(run, step).get("net_sha256") == digest:
                continue
            raise PipelineUsageError(f"{run.step_dir(step)} already holds another {stage} "
                                     "(trained or given before): use a new run folder, or "
                                     f"--from {step}")
        run.step_dir(step).mkdir(parents=True, exist_ok=True)
        atomic_save({"arch": arch, "stage": stage, "state_dict": net.state_dict()},
                    run.step_dir(step) / "best.pt")
        write_json_atomic(done, {"given": os.fspath(spec), "arch": arch, "net_sha256": digest,
                                 "seconds": 0.0})
        run.say(f"[{step}] uses the given {stage}: {os.fspath(spec)}")


def run_pipeline(data_dir: StrPath, out_dir: StrPath, config: PipelineConfig, *,
                 only: str | None = None, from_step: str | None = None,
                 given: Mapping[str, StrPath] | None = None,
                 progress: Progress | None = None,
                 echo: Echo | None = print) -> list[StepReport]:
    """Run the steps not yet done (see the module docstring). ``only`` runs that one step
    (even when marked done; its prerequisites must be done); ``from_step`` deletes the
    outputs of that step and the later ones, then runs them. ``given`` maps stages to
    already trained nets used instead of training them (:func:`adopt_nets`); the steps only
    their training needs are then not run."""
    _check_step(only, "--only")
    _check_step(from_step, "--from")
    if only is not None and from_step is not None:
        raise PipelineUsageError("--only and --from cannot be combined")
    given = dict(given or {})
    if only is not None and only in {f"train_{stage}" for stage in given}:
        raise PipelineUsageError(f"--only {only} trains the net that is also given; give "
                                 "one of them")
    run = Run(Path(data_dir), Path(out_dir), config, progress, echo)
    if not run.data_dir.is_dir():
        raise FileNotFoundError(f"data folder {run.data_dir} does not exist")
    run.out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run.out_dir / "config.json", config.to_dict())
    if from_step is not None:
        reset_from(run, from_step)
    adopt_nets(run, given)
    unneeded = unneeded_steps(given)
    steps = [only] if only is not None else list(STEPS)
    if only is not None:
        missing = [s for s in REQUIRES[only] if not _done_path(run, s).is_file()]
        if missing:
            raise PipelineUsageError(f"step {only} needs {', '.join(missing)} to be done first")
    reports = []
    for step in steps:
        done = _done_path(run, step)
        if done.is_file() and only is None:
            run.say(f"[{step}] done already, skipped")
            reports.append(StepReport(step, "skipped", 0.0, _done_result(run, step)))
            continue
        if step in unneeded and only is None:
            run.say(f"[{step}] not needed: it only serves the training of given nets")
            reports.append(StepReport(step, "not needed", 0.0, {}))
            continue
        run.say(f"[{step}] running")
        run.step_dir(step).mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        result = STEP_FUNCTIONS[step](run)
        seconds = time.perf_counter() - t0
        write_json_atomic(done, {**_jsonable(result), "seconds": seconds})
        run.say(f"[{step}] finished in {seconds:.1f} s")
        reports.append(StepReport(step, "ran", seconds, _done_result(run, step)))
    return reports


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def describe(report: StepReport) -> str:
    """One line summarising a step's result, for the stage table."""
    r = report.result
    if report.step.startswith(("prepare", "mine")):
        if report.step in ("prepare_landmarks", "prepare_crops"):
            return ", ".join(f"{size}px: {c.get('total', 0)}" for size, c in r.items()
                             if isinstance(c, dict))
        counts = (f"{k} {r[k]}" for k in ("positive", "part", "negative", "landmark")
                  if k in r)
        return f"{r.get('total', 0)} samples ({', '.join(counts)})"
    if report.step.startswith("train"):
        if "given" in r:
            return f"given: {r['given']}"
        first, last = r.get("first_train_cls_loss"), r.get("last_train_cls_loss")
        loss = f"train cls loss {first:.4f} -> {last:.4f}, " if first is not None else ""
        metric = r.get("best_metric")
        named = "cls_loss" if metric == "last" else metric
        return (f"{loss}{'last' if metric == 'last' else 'best'} epoch {r.get('best_epoch')} "
                f"({named}={r.get('best_value', float('nan')):.4f})")
    if report.step == "assemble":
        return str(r.get("weights", ""))
    if report.step == "evaluate":
        return " ".join(f"{lv}={r[lv]:.4f}" for lv in ("easy", "medium", "hard") if lv in r)
    return ""
