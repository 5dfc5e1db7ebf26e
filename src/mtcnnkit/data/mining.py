"""Hard-example mining: the training samples of RNet (ONet) from PNet's (PNet + RNet's)
detections on the training images.

Rules (DESIGN.md: "RNet data = PNet's detections on training images labelled by IoU; ONet
data = PNet+RNet's"):

* The detector runs over the images in chunks of ``batch_size`` (one
  ``detect_tensors(images, last_stage=...)`` call per chunk), ``last_stage="pnet"`` for the
  24 px RNet samples, ``"rnet"`` for the 48 px ONet samples. Its thresholds and minimum face
  size are those of :class:`MiningConfig` (applied to a `Detector` for the duration of the
  call, restored afterwards; see :func:`mining_detector`).
* Every candidate box is turned into the region the cascade itself would cut for the next
  stage, :func:`mtcnnkit.detect.boxes.crop_regions` (truncated, clipped to the image: a box
  crossing the border gives its in-image part, later stretched to the net's input), and
  that region is cut and area-resized by :func:`mtcnnkit.data.samples.cut_crops`, i.e.
  :func:`mtcnnkit.detect.sampling.sample_regions`, the inference sampler: training crops
  are exactly inference crops. Candidates whose region is empty are dropped.
* The candidate is labelled by the largest IoU of its box (the square box the cascade hands
  to the next stage, not clipped) with the image's faces, ``< 0.3`` negative (0),
  ``[0.4, positive_iou)`` part (-1), ``>= positive_iou`` positive (1), ``[0.3, 0.4)``
  dropped (``positive_iou`` 0.65 by default, the paper's rule; a lower value such as 0.5
  teaches the next net to accept the looser boxes it will be handed around faces); box targets
  refer to the face of largest IoU, in the cascade's own convention: the offsets that
  :func:`mtcnnkit.detect.boxes.calibrate` (``plus_one=True``, as RNet and ONet outputs are
  applied) turns the candidate box into that face with, ``(g - b) / (w + 1, h + 1, ...)``.
  So a box crossing the image border learns the offsets that inference applies to it,
  although its crop is only its in-image part (``crops.npy`` holds that region).
* With ``skip_invalid`` (default) faces flagged invalid by WIDER (attribute column 3) are
  ignored as matches (they give no positives or part faces), but a candidate that would be
  a negative and overlaps one of them with IoU ``>= 0.3`` is dropped rather than taught as
  background.
* Negatives: at most ``max_negatives`` per image, the highest-scoring ones (the hardest);
  ties keep the detector's order. Positives and part faces are all kept.
* Resuming: ``out_dir/done.json`` (the journal of :mod:`mtcnnkit.data.samples`) records the
  settings' fingerprint and every shard with the range of images it holds; shards are cut at
  chunk boundaries only, so a rerun carries on at the first image of a chunk and detects the
  same batches as an uninterrupted run. ``summary.json`` holds the counts per class plus
  ``images``, ``candidates`` (regions considered) and ``candidates_per_image``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..detect.boxes import crop_regions
from ..imageio import load_image
from .annotations import FaceBoxes
from .samples import (
    INVALID,
    JOURNAL,
    NEGATIVE_IOU,
    PART_IOU,
    POSITIVE_IOU,
    SUMMARY,
    Progress,
    StrPath,
    _open_journal,
    _targets,
    best_overlap,
    check_positive_iou,
    cut_crops,
)
from .shards import NEGATIVE, PART, POSITIVE, Samples, ShardWriter, summary, write_json_atomic

STAGES = {"rnet": ("pnet", 24), "onet": ("rnet", 48)}  # produced stage -> (last stage, size)


@dataclass(frozen=True)
class MiningConfig:
    """Settings of hard-example mining (see the module docstring for the rules)."""

    stage: str = "rnet"  # samples to produce: "rnet" (24 px, PNet) or "onet" (48 px, PNet+RNet)
    pnet_threshold: float = 0.6  # lower values (e.g. 0.3-0.5) mine more, harder negatives
    rnet_threshold: float = 0.7  # used for stage "onet"
    min_face_size: float = 20.0
    max_negatives: int | None = 100  # per image, highest scores kept; None: all
    positive_iou: float = POSITIVE_IOU  # IoU from which a candidate is a positive (else part)
    batch_size: int = 16  # images per detector call (and per resumable chunk)
    skip_invalid: bool = True
    seed: int = 0  # recorded in the shards; mining itself draws no random numbers
    samples_per_shard: int = 50_000  # shards are cut at the first chunk end past this

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"MiningConfig.stage must be 'rnet' or 'onet', got {self.stage!r}")
        for name in ("pnet_threshold", "rnet_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"MiningConfig.{name} must lie in [0, 1]")
        if self.min_face_size <= 0:
            raise ValueError("MiningConfig.min_face_size must be positive")
        check_positive_iou("MiningConfig", self.positive_iou)
        if self.max_negatives is not None and self.max_negatives < 0:
            raise ValueError("MiningConfig.max_negatives must be >= 0 or None")
        for name in ("batch_size", "samples_per_shard"):
            if getattr(self, name) < 1:
                raise ValueError(f"MiningConfig.{name} must be >= 1")

    @property
    def last_stage(self) -> str:
        return STAGES[self.stage][0]

    @property
    def size(self) -> int:
        return STAGES[self.stage][1]

    def fingerprint_fields(self) -> dict[str, Any]:
        """Everything that decides the output."""
        fields = dataclasses.asdict(self)
        if self.positive_iou == POSITIVE_IOU:  # added later: shards made before it stay valid
            del fields["positive_iou"]
        return fields


class MiningDetector(Protocol):
    def detect_tensors(self, images: Sequence[Any], *, last_stage: str) -> list[Any]: ...


def mining_detector(weights: Any, config: MiningConfig, device: str = "cpu", **kwargs: Any):
    """A `Detector` with the mining thresholds and minimum face size of ``config``."""
    from ..detect.detector import Detector

    return Detector(weights=weights, device=device, min_face_size=config.min_face_size,
                    thresholds=(config.pnet_threshold, config.rnet_threshold, 0.7), **kwargs)


@contextlib.contextmanager
def _configured(detector: Any, config: MiningConfig) -> Iterator[None]:
    """Apply the config's thresholds / min face size to a `Detector` (anything with a
    `CascadeConfig` as ``.config``) for the duration, then restore it; other objects (test
    doubles) are used as they are."""
    from ..detect.cascade import CascadeConfig

    before = getattr(detector, "config", None)
    if not isinstance(before, CascadeConfig):
        yield
        return
    detector.config = dataclasses.replace(
        before, min_face_size=float(config.min_face_size),
        thresholds=(float(config.pnet_threshold), float(config.rnet_threshold),
                    before.thresholds[2]))
    try:
        yield
    finally:
        detector.config = before


# ---------------------------------------------------------------------------------------------
# Labelling one image's candidates (no pixels)


@dataclass(frozen=True)
class MinedPlan:
    regions: np.ndarray  # (M, 4) int64 [x0, x1) x [y0, y1) as crop_regions cuts them
    labels: np.ndarray  # (M,) int8
    boxes: np.ndarray  # (M, 4) float32 regression targets (zeros for negatives)
    scores: np.ndarray  # (M,) float32 detector scores
    candidates: int  # non-empty regions considered


def label_candidates(boxes: np.ndarray, scores: np.ndarray, faces: FaceBoxes, width: int,
                     height: int, config: MiningConfig) -> MinedPlan:
    """Regions, labels and targets of one image's detections ``boxes`` (x1y1x2y2 floats)."""
    cand = torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4))
    scores = np.asarray(scores, np.float32).reshape(-1)
    regions, valid = crop_regions(cand, width, height)
    regions, scores = regions[valid].numpy(), scores[valid.numpy()]
    cand_boxes = cand[valid].numpy()
    gt = np.asarray(faces.boxes, np.float64).reshape(-1, 4)
    usable = np.ones(len(gt), bool)
    if config.skip_invalid and faces.attributes is not None and len(faces.attributes):
        usable = np.asarray(faces.attributes)[:, INVALID] == 0
    best, which = best_overlap(cand_boxes, gt[usable])
    labels = np.full(len(regions), 2, np.int8)  # 2: dropped
    labels[best < NEGATIVE_IOU] = NEGATIVE
    labels[(best >= PART_IOU) & (best < config.positive_iou)] = PART
    labels[best >= config.positive_iou] = POSITIVE
    if (~usable).any():
        near_invalid = best_overlap(cand_boxes, gt[~usable])[0] >= NEGATIVE_IOU
        labels[(labels == NEGATIVE) & near_invalid] = 2
    negative = np.flatnonzero(labels == NEGATIVE)
    if config.max_negatives is not None and len(negative) > config.max_negatives:
        order = np.argsort(-scores[negative], kind="stable")
        labels[negative[order[config.max_negatives:]]] = 2
    keep = labels != 2
    targets = np.zeros((len(regions), 4), np.float32)
    faces_pos = labels != NEGATIVE
    if len(gt[usable]):
        match = keep & faces_pos
        targets[match] = _targets(cand_boxes[match], gt[usable][which[match]], plus_one=True)
    return MinedPlan(regions[keep], labels[keep], targets[keep], scores[keep], len(regions))


def image_samples(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, faces: FaceBoxes,
                  config: MiningConfig) -> tuple[Samples, int]:
    """The samples of one image and the number of candidates considered."""
    height, width = image.shape[:2]
    plan = label_candidates(boxes, scores, faces, width, height, config)
    crops = cut_crops([image], np.zeros(len(plan.regions), np.int64), plan.regions, config.size)
    n = len(plan.labels)
    return Samples(crops, plan.labels, plan.boxes, np.zeros((n, 10), np.float32),
                   plan.regions.astype(np.float32)), plan.candidates


# ---------------------------------------------------------------------------------------------
# Driving


def _detector_id(detector: Any) -> str:
    nets = getattr(detector, "nets", None)
    cascade = getattr(detector, "config", None)
    settings = ({k: v for k, v in dataclasses.asdict(cascade).items()
                 if not k.endswith(("_batch", "_pixels"))}
                if dataclasses.is_dataclass(cascade) else repr(cascade))
    parts = [type(detector).__qualname__, repr(settings),
             repr(getattr(detector, "max_side", None))]
    if nets is not None:
        parts += [str(getattr(nets, "source", "")), json.dumps(getattr(nets, "meta", {}),
                                                               sort_keys=True, default=str)]
    return "\0".join(parts)


def _fingerprint(config: MiningConfig, faces: Sequence[FaceBoxes], detector: Any) -> str:
    digest = hashlib.sha256(json.dumps(["mining", config.fingerprint_fields()],
                                       sort_keys=True).encode())
    with _configured(detector, config):
        digest.update(_detector_id(detector).encode())
    for f in faces:
        attrs = b"" if f.attributes is None else np.asarray(f.attributes).tobytes()
        part = b"%s\0%s\0%s" % (f.image.encode(), np.asarray(f.boxes, np.float32).tobytes(),
                                attrs)
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def mine(detector: MiningDetector, faces: Sequence[FaceBoxes], image_root: StrPath,
         out_dir: StrPath, config: MiningConfig, progress: Progress | None = None,
         *, max_chunks: int | None = None) -> dict[str, Any]:
    """Mine the ``config.stage`` samples of ``faces`` (images relative to ``image_root``)
    into shards in ``out_dir``; resumes an interrupted run. ``max_chunks`` stops after that
    many chunks this call (for tests and time-boxed runs; a rerun carries on). Returns (and,
    once finished, writes to ``summary.json``) the counts per class, ``total``, ``shards``,
    ``bytes``, ``images``, ``candidates``, ``candidates_per_image`` and ``finished``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    total = len(faces)
    fingerprint = _fingerprint(config, faces, detector)
    journal = _open_journal(out, f"mining-{config.stage}", fingerprint, total, config)
    start = _done(journal)
    if progress is not None:
        progress(total if journal["finished"] else start, total)
    if not journal["finished"]:
        writer = ShardWriter(out, config.size, 2**62, source=f"mining-{config.stage}",
                             seed=config.seed, first_item=start)
        buffered, candidates, first, chunks = 0, 0, start, 0
        with _configured(detector, config):
            for begin in range(start, total, config.batch_size):
                batch = faces[begin:begin + config.batch_size]
                images = [load_image(os.fspath(Path(image_root) / f.image)) for f in batch]
                found = detector.detect_tensors(images, last_stage=config.last_stage)
                if len(found) != len(batch):
                    raise RuntimeError(f"detector returned {len(found)} results for "
                                       f"{len(batch)} images")
                for image, f, det in zip(images, batch, found, strict=True):
                    samples, n = image_samples(image, _numpy(det.boxes), _numpy(det.scores),
                                               f, config)
                    writer.add(samples)
                    buffered += len(samples)
                    candidates += n
                chunks += 1
                end = begin + len(batch)
                stop = max_chunks is not None and chunks >= max_chunks
                if buffered >= config.samples_per_shard or end == total or stop:
                    info = writer.flush()  # shards end at chunk boundaries only
                    journal["chunks"].append({"items": [first, end], "candidates": candidates,
                                              "shard": info.name if info else None})
                    if info is not None:
                        journal["shards"].append({"name": info.name, "items": [first, end],
                                                  "counts": info.counts})
                    journal["finished"] = end == total
                    write_json_atomic(out / JOURNAL, journal)
                    buffered, candidates, first = 0, 0, end
                if progress is not None:
                    progress(end, total)
                if stop:
                    break
        if total == 0 and not journal["finished"]:
            journal["finished"] = True
            write_json_atomic(out / JOURNAL, journal)
    return _summary(out, journal)


def _done(journal: dict[str, Any]) -> int:
    """Images already mined (the journal's chunk records; shards hold whole chunks)."""
    journal.setdefault("chunks", [])
    return journal["chunks"][-1]["items"][1] if journal["chunks"] else 0


def _summary(out: Path, journal: dict[str, Any]) -> dict[str, Any]:
    counts: dict[str, Any] = summary(out)
    done = _done(journal)
    candidates = sum(int(c["candidates"]) for c in journal["chunks"])
    counts.update(images=done, candidates=candidates,
                  candidates_per_image=round(candidates / done, 3) if done else 0.0,
                  finished=bool(journal["finished"]))
    if journal["finished"]:
        write_json_atomic(out / SUMMARY, counts)
    return counts


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)
