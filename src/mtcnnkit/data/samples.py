"""Training samples for the 12/24/48 px nets: positives, part faces, negatives, landmarks.

Rules (MTCNN data preparation, Zhang et al. 2016; IoU from :func:`mtcnnkit.detect.boxes.iou`,
continuous coordinates, crops are integer squares ``[x0, x0 + s) x [y0, y0 + s)``):

* A crop is labelled by its largest IoU with *any* annotated face of the image: ``< 0.3``
  negative (0), ``[0.4, positive_iou)`` part face (-1), ``>= positive_iou`` positive (1)
  (``positive_iou`` defaults to the paper's 0.65; a square crop around a face taller than
  1.61x its width never reaches 0.65, 0.5 lets faces up to 2.2x be positives); candidates in
  ``[0.3, 0.4)`` are dropped. Box targets refer to the face of largest IoU. Landmark
  samples always need 0.65.
* Faces used as sources of positives, part faces and near-face negatives must be at least
  ``min_face`` px in width *and* height (default 12 for the 12 px net, 20 for 24/48 px:
  smaller faces are mostly blur at those resolutions) and, with ``skip_invalid``, not
  flagged invalid by WIDER. Every face, used or not, counts when labelling a crop.
* Random negatives: ``negatives_random`` per image, squares of side
  ``[negative_min_side, min(W, H) // 2]`` placed uniformly (a few vectorised rounds of
  candidates; an image crowded with faces may give fewer).
* Near-face negatives: ``negatives_near`` attempts per used face, squares of the same side
  range whose left/top edge is ``x1 + U(-s, w)``, ``y1 + U(-s, h)`` (clamped at 0), kept
  when the IoU rule says negative.
* Positives and part faces: ``positive_attempts`` per used face, squares of side
  ``crop_scale * max(w, h)`` (default ``[0.8, 1.25]``) centred on the face centre shifted
  by ``U(-0.2, 0.2) * (w, h)``. With ``atypical_attempts`` set, faces that WIDER labels
  with a non-zero value of one of ``atypical_attributes`` (default: atypical pose, partial
  or heavy occlusion, extreme illumination) get that many attempts instead: the faces
  detectors miss most are rare in the data, this oversamples them.
* Every crop lies inside the image (candidates that do not are skipped) and is cut and
  area-resized with :func:`mtcnnkit.detect.sampling.sample_regions`, the function the
  detector uses at inference, all crops of an image in one call (in blocks of
  ``CROP_BLOCK`` crops to bound memory), then stored as uint8 ``round(x * 128 + 127.5)``.
* Landmark samples (label -2): ``landmark_attempts`` squares per annotated face, drawn as
  positives around the annotated box, kept when their IoU with the box is ``>= 0.65``, they
  lie inside the image and all five points lie inside the crop. Each attempt draws its own
  augmentation: rotation by ``U(-max_rotation, max_rotation)`` degrees about the box centre
  (probability ``rotation_p``; the image is rotated with ``cv2.warpAffine``, bilinear,
  reflected border, directly into the crop's frame, and the points with the same matrix),
  colour jitter (probability ``jitter_p``: brightness ``x * b``, then contrast about the
  crop mean, ``b, c`` in ``1 +- brightness/contrast``) and a horizontal flip (probability
  ``flip_p``: crop mirrored, ``x -> 1 - x``, left/right eyes and mouth corners swapped so
  that point 0 stays the eye on the image's left). Box targets of landmark samples refer to
  the annotated (unrotated) box, mirrored with the crop when flipped. ``crops.npy`` holds
  the crop in the (rotated) image frame.
* Determinism: every image (landmark face) draws from ``default_rng([seed, index])``, its
  index in the input list, and all random numbers are drawn whatever the outcome, so the
  shards are byte-identical for a seed whatever the worker count or order.
* Resuming: ``out_dir/done.json`` records the settings' fingerprint and every shard written
  with the range of images it holds (shards hold whole images). A rerun with the same
  inputs removes leftover temporary folders and shards missing from the journal and carries
  on after the last recorded image; the result is the one of an uninterrupted run.

Workers are started by a ``forkserver`` (``spawn`` where there is none), never by a plain
``fork`` of a process that may have run torch: a script calling the generators with
``workers > 1`` needs the usual ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import cv2
import numpy as np
import torch

from ..detect.boxes import iou
from ..detect.sampling import IntegralImages, sample_regions
from ..imageio import load_image
from .annotations import WIDER_ATTRIBUTES, FaceBoxes, LandmarkSample
from .augment import adjust_colour, mirror_box_targets, mirror_landmarks
from .shards import (
    LANDMARK,
    NEGATIVE,
    PART,
    POSITIVE,
    SHARD_PATTERN,
    Samples,
    ShardInfo,
    ShardWriter,
    remove_temporary,
    shard_dirs,
    summary,
    write_json_atomic,
)

StrPath = str | os.PathLike[str]
Progress = Callable[[int, int], None]

NEGATIVE_IOU, PART_IOU, POSITIVE_IOU = 0.3, 0.4, 0.65
CROP_SCALE = (0.8, 1.25)  # default side range of positive / part crops, x longest face side
NEGATIVE_ROUNDS = 4  # vectorised candidate rounds for the random negatives of one image
CROP_BLOCK = 4096  # crops resampled per sample_regions call (bounds memory on huge images)
IOU_BLOCK = 4096  # candidate crops per IoU matrix
INVALID = WIDER_ATTRIBUTES.index("invalid")
# WIDER labels whose non-zero values mark the faces `atypical_attempts` oversamples
ATYPICAL_ATTRIBUTES = ("pose", "occlusion", "illumination")
JOURNAL = "done.json"
SUMMARY = "summary.json"


def check_positive_iou(owner: str, value: float) -> None:
    """The positive / part-face border must lie above the part faces' lower bound."""
    if not PART_IOU < value <= 1.0:
        raise ValueError(f"{owner}.positive_iou must lie in ({PART_IOU}, 1], got {value}")


@dataclass(frozen=True)
class SampleConfig:
    """Settings of sample generation (see the module docstring for the rules)."""

    size: int = 12  # side of the stored crops: 12 (PNet), 24 (RNet), 48 (ONet)
    seed: int = 0
    negatives_random: int = 50  # per image
    negatives_near: int = 5  # attempts per used face
    positive_attempts: int = 20  # per used face (positives and part faces)
    atypical_attempts: int | None = None  # per face with an atypical_attributes label; None:
    # positive_attempts
    atypical_attributes: tuple[str, ...] = ATYPICAL_ATTRIBUTES  # WIDER attribute names
    crop_scale: tuple[float, float] = CROP_SCALE  # side range of those crops, x longest side
    positive_iou: float = POSITIVE_IOU  # IoU from which such a crop is a positive (else part)
    negative_min_side: int = 12  # smallest negative square, px in the image
    min_face: int | None = None  # None: 12 for size 12, 20 otherwise (width and height)
    skip_invalid: bool = True  # WIDER "invalid" faces give no positives (still avoided)
    landmark_attempts: int = 10  # per annotated landmark face
    flip_p: float = 0.5
    rotation_p: float = 0.5
    max_rotation: float = 15.0  # degrees
    jitter_p: float = 0.5
    brightness: float = 0.2  # factor in 1 +- brightness
    contrast: float = 0.2  # factor in 1 +- contrast
    workers: int = 1  # processes; does not change the result
    samples_per_shard: int = 50_000

    def __post_init__(self) -> None:
        scale = tuple(float(v) for v in self.crop_scale)
        if len(scale) != 2 or not 0.0 < scale[0] <= scale[1]:
            raise ValueError(f"SampleConfig.crop_scale must be [low, high] with 0 < low <= "
                             f"high, got {self.crop_scale}")
        object.__setattr__(self, "crop_scale", scale)
        counts = ("size", "seed", "negatives_random", "negatives_near", "positive_attempts",
                  "negative_min_side", "landmark_attempts")
        for name in counts:
            if getattr(self, name) < 0:
                raise ValueError(f"SampleConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name, low in (("size", 1), ("negative_min_side", 1), ("workers", 1),
                          ("samples_per_shard", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"SampleConfig.{name} must be >= {low}")
        for name in ("flip_p", "rotation_p", "jitter_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SampleConfig.{name} must lie in [0, 1]")
        for name in ("brightness", "contrast"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"SampleConfig.{name} must lie in [0, 1)")
        object.__setattr__(self, "atypical_attributes", tuple(self.atypical_attributes))
        unknown = [a for a in self.atypical_attributes if a not in WIDER_ATTRIBUTES]
        if unknown:
            raise ValueError(f"SampleConfig.atypical_attributes: unknown {unknown}; expected "
                             f"names from {', '.join(WIDER_ATTRIBUTES)}")
        if self.atypical_attempts is not None and self.atypical_attempts < 0:
            raise ValueError(f"SampleConfig.atypical_attempts must be >= 0 or None, got "
                             f"{self.atypical_attempts}")
        check_positive_iou("SampleConfig", self.positive_iou)
        if self.max_rotation < 0 or (self.min_face is not None and self.min_face < 1):
            raise ValueError("SampleConfig: max_rotation must be >= 0 and min_face >= 1")

    @property
    def face_min(self) -> int:
        if self.min_face is not None:
            return self.min_face
        return 12 if self.size <= 12 else 20

    def fingerprint_fields(self) -> dict[str, Any]:
        """Everything that decides the output (not ``workers``)."""
        fields = dataclasses.asdict(self)
        del fields["workers"]
        fields["min_face"] = self.face_min
        if self.crop_scale == CROP_SCALE:  # added later: shards made before it stay valid
            del fields["crop_scale"]
        if self.atypical_attempts is None:  # likewise
            del fields["atypical_attempts"], fields["atypical_attributes"]
        if self.positive_iou == POSITIVE_IOU:  # likewise
            del fields["positive_iou"]
        return fields


# ---------------------------------------------------------------------------------------------
# Pure planning: which crops, with which labels and targets (no pixels)


class CropPlan(NamedTuple):
    crops: np.ndarray  # (M, 4) int64 x0, y0, x1, y1 (squares inside the image)
    labels: np.ndarray  # (M,) int8
    boxes: np.ndarray  # (M, 4) float32 regression targets (zeros for negatives)


def usable_faces(faces: FaceBoxes, config: SampleConfig) -> np.ndarray:
    """Which faces of an image may give positives, part faces and near-face negatives."""
    boxes = np.asarray(faces.boxes, dtype=np.float64).reshape(-1, 4)
    keep = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= config.face_min
    if config.skip_invalid and faces.attributes is not None and len(faces.attributes):
        keep &= np.asarray(faces.attributes)[:, INVALID] == 0
    return keep


def positive_attempts(faces: FaceBoxes, config: SampleConfig) -> np.ndarray:
    """Positive / part-face attempts for each face of an image: ``positive_attempts``, or
    ``atypical_attempts`` for a face with a non-zero label of one of ``atypical_attributes``
    (when set and the faces carry WIDER attributes)."""
    n = len(np.asarray(faces.boxes).reshape(-1, 4))
    attempts = np.full(n, config.positive_attempts, dtype=np.int64)
    if config.atypical_attempts is None or faces.attributes is None or not n:
        return attempts
    columns = [WIDER_ATTRIBUTES.index(a) for a in config.atypical_attributes]
    atypical = (np.asarray(faces.attributes)[:, columns] != 0).any(axis=1)
    attempts[atypical] = config.atypical_attempts
    return attempts


def best_overlap(crops: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest IoU of each crop with the faces (float64) and the index of that face."""
    crops = np.asarray(crops, dtype=np.float64).reshape(-1, 4)
    faces = np.asarray(faces, dtype=np.float64).reshape(-1, 4)
    best = np.zeros(len(crops))
    which = np.zeros(len(crops), dtype=np.int64)
    if not len(faces):
        return best, which
    face_tensor = torch.from_numpy(faces)
    for start in range(0, len(crops), IOU_BLOCK):
        overlap = iou(torch.from_numpy(crops[start:start + IOU_BLOCK]), face_tensor)
        value, index = overlap.max(dim=1)
        best[start:start + IOU_BLOCK] = value.numpy()
        which[start:start + IOU_BLOCK] = index.numpy()
    return best, which


def _squares(x0: np.ndarray, y0: np.ndarray, side: np.ndarray) -> np.ndarray:
    x0, y0, side = (np.asarray(v, dtype=np.int64) for v in (x0, y0, side))
    return np.stack([x0, y0, x0 + side, y0 + side], axis=1).reshape(-1, 4)


def _inside(crops: np.ndarray, width: int, height: int) -> np.ndarray:
    return ((crops[:, 0] >= 0) & (crops[:, 1] >= 0) & (crops[:, 2] <= width)
            & (crops[:, 3] <= height) & (crops[:, 2] > crops[:, 0]))


def _targets(crops: np.ndarray, boxes: np.ndarray, plus_one: bool = False) -> np.ndarray:
    """Regression targets of ``boxes`` relative to ``crops`` (fractions of the crop size,
    ``x2 - x1``, or ``x2 - x1 + 1`` with ``plus_one``: the inverse of
    :func:`mtcnnkit.detect.boxes.calibrate` with the same flag)."""
    crops = crops.astype(np.float64)
    extra = 1.0 if plus_one else 0.0
    w = crops[:, 2] - crops[:, 0] + extra
    h = crops[:, 3] - crops[:, 1] + extra
    scale = np.stack([w, h, w, h], axis=1)
    return ((np.asarray(boxes, np.float64) - crops) / scale).astype(np.float32)


def _around(boxes: np.ndarray, rng: np.random.Generator,
            scale: tuple[float, float] = CROP_SCALE) -> np.ndarray:
    """One positive-style square per box: side ``scale * max(w, h)`` (an integer drawn
    uniformly from that range), centre shifted by ``U(-0.2, 0.2) * (w, h)`` (may lie partly
    outside the image)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    longest = np.maximum(w, h)
    low = np.maximum(np.floor(scale[0] * longest), 1).astype(np.int64)
    side = rng.integers(low, np.ceil(scale[1] * longest).astype(np.int64) + 1)
    dx = rng.uniform(-0.2, 0.2, len(boxes)) * w
    dy = rng.uniform(-0.2, 0.2, len(boxes)) * h
    x0 = np.round(boxes[:, 0] + w / 2 + dx - side / 2)
    y0 = np.round(boxes[:, 1] + h / 2 + dy - side / 2)
    return _squares(x0, y0, side)


def plan_detection_crops(boxes: np.ndarray, usable: np.ndarray, width: int, height: int,
                         config: SampleConfig, rng: np.random.Generator,
                         attempts: np.ndarray | None = None) -> CropPlan:
    """The crops of one ``width x height`` image with faces ``boxes`` (``(F, 4)`` x1y1x2y2),
    ``usable`` marking the faces that may serve as sources, ``attempts`` the positive / part
    attempts of each face (default: ``config.positive_attempts`` each). Order: random
    negatives, near-face negatives, then positives and part faces."""
    faces = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    usable = np.asarray(usable, dtype=bool)
    sources = faces[usable]
    per_source = (np.full(len(sources), config.positive_attempts, dtype=np.int64)
                  if attempts is None else np.asarray(attempts, dtype=np.int64)[usable])
    low, high = config.negative_min_side, min(width, height) // 2
    parts: list[CropPlan] = []

    # Random negatives, in a few vectorised rounds.
    need = config.negatives_random if high >= low else 0
    for _ in range(NEGATIVE_ROUNDS):
        if need <= 0:
            break
        n = 2 * need + 8
        side = rng.integers(low, high + 1, n)
        crops = _squares(rng.integers(0, width - side + 1), rng.integers(0, height - side + 1),
                         side)
        crops = crops[best_overlap(crops, faces)[0] < NEGATIVE_IOU][:need]
        need -= len(crops)
        parts.append(_negatives(crops))

    # Negatives next to the faces.
    if config.negatives_near and len(sources) and high >= low:
        f = np.repeat(sources, config.negatives_near, axis=0)
        side = rng.integers(low, high + 1, len(f))
        x0 = np.maximum(np.floor(f[:, 0] + rng.uniform(-side, f[:, 2] - f[:, 0])), 0)
        y0 = np.maximum(np.floor(f[:, 1] + rng.uniform(-side, f[:, 3] - f[:, 1])), 0)
        crops = _squares(x0, y0, side)
        crops = crops[_inside(crops, width, height)]
        parts.append(_negatives(crops[best_overlap(crops, faces)[0] < NEGATIVE_IOU]))

    # Positives and part faces around the faces.
    if len(sources) and per_source.sum():
        crops = _around(np.repeat(sources, per_source, axis=0), rng, config.crop_scale)
        crops = crops[_inside(crops, width, height)]
        best, which = best_overlap(crops, faces)
        keep = best >= PART_IOU
        crops, best, which = crops[keep], best[keep], which[keep]
        labels = np.where(best >= config.positive_iou, POSITIVE, PART).astype(np.int8)
        parts.append(CropPlan(crops, labels, _targets(crops, faces[which])))

    if not parts:
        return _negatives(np.zeros((0, 4), np.int64))
    return CropPlan(*(np.concatenate([getattr(p, f) for p in parts]) for f in CropPlan._fields))


def _negatives(crops: np.ndarray) -> CropPlan:
    crops = crops.reshape(-1, 4).astype(np.int64)
    return CropPlan(crops, np.full(len(crops), NEGATIVE, np.int8),
                    np.zeros((len(crops), 4), np.float32))


class LandmarkPlan(NamedTuple):
    crops: np.ndarray  # (K, 4) int64 squares, in the frame of the rotated image
    angles: np.ndarray  # (K,) degrees, counter-clockwise on screen; 0: not rotated
    flips: np.ndarray  # (K,) bool
    brightness: np.ndarray  # (K,) factor (1: none)
    contrast: np.ndarray  # (K,) factor (1: none)
    boxes: np.ndarray  # (K, 4) float32 box targets (after the flip)
    landmarks: np.ndarray  # (K, 10) float32 five x then five y (after rotation and flip)


def rotation(angle: np.ndarray) -> np.ndarray:
    """``(K, 2, 2)`` matrices rotating by ``angle`` degrees as ``cv2.getRotationMatrix2D``
    (counter-clockwise on screen, y pointing down)."""
    a = np.deg2rad(np.asarray(angle, dtype=np.float64))
    cos, sin = np.cos(a), np.sin(a)
    return np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], -2)


def plan_landmark_crops(box: Sequence[float], points: np.ndarray, width: int, height: int,
                        config: SampleConfig, rng: np.random.Generator) -> LandmarkPlan:
    """The augmented crops of one landmark face (see the module docstring)."""
    k = config.landmark_attempts
    b = np.asarray(box, dtype=np.float64).reshape(1, 4)
    pts = np.asarray(points, dtype=np.float64).reshape(5, 2)
    # Draw everything first, whatever is kept, so the stream never depends on outcomes.
    crops = _around(np.repeat(b, k, axis=0), rng, config.crop_scale)
    flips = rng.random(k) < config.flip_p
    angles = np.where(rng.random(k) < config.rotation_p,
                      rng.uniform(-config.max_rotation, config.max_rotation, k), 0.0)
    jitter = rng.random(k) < config.jitter_p
    bright = np.where(jitter, 1.0 + rng.uniform(-config.brightness, config.brightness, k), 1.0)
    contrast = np.where(jitter, 1.0 + rng.uniform(-config.contrast, config.contrast, k), 1.0)

    centre = np.array([(b[0, 0] + b[0, 2]) / 2, (b[0, 1] + b[0, 3]) / 2])
    rotated = np.einsum("kij,pj->kpi", rotation(angles), pts - centre) + centre  # (K, 5, 2)
    side = (crops[:, 2] - crops[:, 0]).astype(np.float64)
    norm = (rotated - crops[:, None, :2]) / side[:, None, None]
    keep = _inside(crops, width, height)
    keep &= best_overlap(crops, b)[0] >= POSITIVE_IOU
    keep &= ((norm >= 0) & (norm <= 1)).all(axis=(1, 2))
    face_small = min(b[0, 2] - b[0, 0], b[0, 3] - b[0, 1]) < config.face_min
    if face_small:
        keep[:] = False

    targets = _targets(crops, np.repeat(b, k, axis=0))
    targets = np.where(flips[:, None], mirror_box_targets(targets), targets)
    landmarks = np.concatenate([norm[:, :, 0], norm[:, :, 1]], axis=1)
    landmarks = np.where(flips[:, None], mirror_landmarks(landmarks), landmarks).astype(np.float32)
    return LandmarkPlan(crops[keep], angles[keep], flips[keep], bright[keep], contrast[keep],
                        targets[keep], landmarks[keep])


# ---------------------------------------------------------------------------------------------
# Pixels


def to_uint8(crops: torch.Tensor) -> np.ndarray:
    """Normalised ``(N, C, S, S)`` crops (as `sample_regions` returns them) back to uint8
    ``(N, S, S, C)``: ``round(x * 128 + 127.5)`` clipped to [0, 255]."""
    x = crops.permute(0, 2, 3, 1)
    return x.mul(128.0).add_(127.5).round_().clamp_(0, 255).to(torch.uint8).numpy()


def integral_images(images: Sequence[np.ndarray]) -> IntegralImages:
    """:meth:`IntegralImages.build` of HxWx3 uint8 arrays, the same integers in the same
    layout, computed with ``cv2.integral`` (about 10x faster than torch's cumsum on CPU)."""
    if not images:
        raise ValueError("no images")
    largest = max(im.shape[0] * im.shape[1] for im in images)
    small = largest * 255 < 2**31  # the dtype rule of IntegralImages.build
    blocks = []
    for im in images:
        if small:
            block = cv2.integral(np.ascontiguousarray(im), sdepth=cv2.CV_32S)
        else:  # float64 sums are exact below 2**53
            block = cv2.integral(np.ascontiguousarray(im), sdepth=cv2.CV_64F).astype(np.int64)
        blocks.append(block.reshape(-1, im.shape[2]))
    sizes = [len(b) for b in blocks]
    return IntegralImages(
        flat=torch.from_numpy(np.concatenate(blocks)),
        bases=torch.tensor([0] + sizes[:-1]).cumsum(0),
        heights=torch.tensor([im.shape[0] for im in images]),
        widths=torch.tensor([im.shape[1] for im in images]),
    )


def cut_crops(images: Sequence[np.ndarray], image_index: np.ndarray, regions: np.ndarray,
              size: int) -> np.ndarray:
    """Area-resize integer regions ``[x0, y0, x1, y1)`` of HxWx3 uint8 ``images`` to
    ``size x size`` exactly as the detector does (`sample_regions`); uint8
    ``(N, size, size, 3)``."""
    regions = torch.as_tensor(np.asarray(regions, dtype=np.int64).reshape(-1, 4))
    index = torch.as_tensor(np.asarray(image_index, dtype=np.int64).reshape(-1))
    out = np.empty((len(regions), size, size, 3), np.uint8)
    if not len(regions):
        return out
    integral = integral_images(images)
    for start in range(0, len(regions), CROP_BLOCK):
        end = start + CROP_BLOCK
        out[start:end] = to_uint8(
            sample_regions(integral, index[start:end], regions[start:end], size, size))
    return out


# ---------------------------------------------------------------------------------------------
# Per-image work (runs in worker processes)


class DetectionItem(NamedTuple):
    index: int
    path: str
    boxes: np.ndarray  # (F, 4) float32
    usable: np.ndarray  # (F,) bool
    attempts: np.ndarray  # (F,) int64 positive / part-face attempts


class LandmarkItem(NamedTuple):
    path: str
    samples: tuple[tuple[int, tuple[float, float, float, float], np.ndarray], ...]


def detection_samples(config: SampleConfig, item: DetectionItem) -> Samples:
    """All detection samples of one image."""
    image = load_image(item.path)
    height, width = image.shape[:2]
    rng = np.random.default_rng([config.seed, item.index])
    plan = plan_detection_crops(item.boxes, item.usable, width, height, config, rng,
                                item.attempts)
    images = cut_crops([image], np.zeros(len(plan.crops), np.int64), plan.crops, config.size)
    return Samples(images, plan.labels, plan.boxes.astype(np.float32),
                   np.zeros((len(plan.crops), 10), np.float32), plan.crops.astype(np.float32))


def landmark_samples(config: SampleConfig, item: LandmarkItem) -> Samples:
    """All landmark samples of the faces of one image."""
    image = load_image(item.path)
    height, width = image.shape[:2]
    sources = [image]
    image_index: list[int] = []
    regions: list[np.ndarray] = []
    plans: list[LandmarkPlan] = []
    for index, box, points in item.samples:
        rng = np.random.default_rng([config.seed, index])
        plan = plan_landmark_crops(box, points, width, height, config, rng)
        plans.append(plan)
        centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]) - 0.5  # pixel centres
        for crop, angle, matrix in zip(plan.crops, plan.angles, rotation(plan.angles),
                                       strict=True):
            if angle == 0:
                image_index.append(0)
                regions.append(crop)
                continue
            # Rotated image, straight into the crop's frame: dst = A (src - c) + c - crop origin.
            side = int(crop[2] - crop[0])
            affine = np.concatenate([matrix, (centre - matrix @ centre - crop[:2])[:, None]], 1)
            patch = cv2.warpAffine(image, affine, (side, side), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT_101)
            sources.append(patch)
            image_index.append(len(sources) - 1)
            regions.append(np.array([0, 0, side, side]))
    if not plans or not image_index:
        return Samples.empty(config.size)
    plan = LandmarkPlan(*(np.concatenate([getattr(p, f) for p in plans])
                          for f in LandmarkPlan._fields))
    crops = cut_crops(sources, np.array(image_index), np.stack(regions), config.size)
    crops = adjust_colour(crops, plan.brightness, plan.contrast)
    crops[plan.flips] = crops[plan.flips][:, :, ::-1]
    return Samples(crops, np.full(len(crops), LANDMARK, np.int8), plan.boxes, plan.landmarks,
                   plan.crops.astype(np.float32))


def _init_worker() -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


# ---------------------------------------------------------------------------------------------
# Driving: parallel map in input order, shards, journal


Item = TypeVar("Item")


def _map_in_order(worker: Callable[[SampleConfig, Item], Samples], config: SampleConfig,
                  items: Sequence[Item]) -> Iterator[Samples]:
    function = functools.partial(worker, config)
    workers = min(config.workers, len(items))
    if workers <= 1:
        with _single_threaded():
            yield from map(function, items)
        return
    chunk = max(1, min(16, len(items) // (workers * 8)))
    # Not multiprocessing.Pool: its terminate() can hang for good when the consumer stops
    # early (a kill, Ctrl-C) while results wait in its pipe (CPython issue 96995). Here at
    # most two chunks per worker are queued; stopping cancels them and waits only for the
    # chunks already running.
    queued: collections.deque[concurrent.futures.Future[list[Samples]]] = collections.deque()
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=_context(),
                                                initializer=_init_worker) as pool:
        try:
            for start in range(0, len(items), chunk):
                queued.append(pool.submit(_map_chunk, function, items[start:start + chunk]))
                if len(queued) >= 2 * workers:
                    yield from queued.popleft().result()
            while queued:
                yield from queued.popleft().result()
        finally:
            for future in queued:
                future.cancel()


def _map_chunk(function: Callable[[Any], Samples], chunk: Sequence[Any]) -> list[Samples]:
    return [function(item) for item in chunk]


@contextlib.contextmanager
def _single_threaded() -> Iterator[None]:
    """One torch/OpenCV thread while working in the caller's process, as in the workers
    (the tensors per image are small: extra threads cost far more than they give, about 7x
    on a 2-core machine); the caller's settings are restored afterwards."""
    torch_threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        cv2.setNumThreads(cv2_threads)


def _context() -> multiprocessing.context.BaseContext:
    """``forkserver`` where available (its server imports torch and this module once, later
    pools start at once), else ``spawn``; never plain ``fork`` (torch's thread pools are not
    fork-safe)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


def _fingerprint(kind: str, config: SampleConfig, parts: Sequence[bytes]) -> str:
    digest = hashlib.sha256(json.dumps([kind, config.fingerprint_fields()],
                                       sort_keys=True).encode())
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def _open_journal(out: Path, kind: str, fingerprint: str, total: int,
                  config: SampleConfig) -> dict[str, Any]:
    """Load (checking it matches) or start ``done.json``, and clean up after a kill."""
    path = out / JOURNAL
    if path.exists():
        journal = json.loads(path.read_text(encoding="utf-8"))
        if journal.get("fingerprint") != fingerprint:
            raise ValueError(
                f"{out} holds samples made with other settings or annotations "
                f"(done.json fingerprint differs); use an empty folder or delete it")
    else:
        if shard_dirs(out):
            raise ValueError(f"{out} holds shards but no {JOURNAL}; use an empty folder")
        journal = {"format": 1, "kind": kind, "fingerprint": fingerprint, "items": total,
                   "size": config.size, "seed": config.seed, "shards": [], "finished": False}
        write_json_atomic(path, journal)
    remove_temporary(out)
    listed = {shard["name"] for shard in journal["shards"]}
    for d in sorted(out.iterdir()):
        if SHARD_PATTERN.fullmatch(d.name) and d.name not in listed:
            shutil.rmtree(d)  # renamed into place, but the kill came before the journal entry
    missing = sorted(listed - {d.name for d in shard_dirs(out)})
    if missing:
        raise ValueError(f"{out}: shards {missing} listed in {JOURNAL} are missing")
    return journal


def _generate(kind: str, worker: Callable[[SampleConfig, Any], Samples], items: Sequence[Any],
              fingerprint: str, out_dir: StrPath, config: SampleConfig,
              progress: Progress | None) -> dict[str, int]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    total = len(items)
    journal = _open_journal(out, kind, fingerprint, total, config)
    start = journal["shards"][-1]["items"][1] if journal["shards"] else 0
    if progress is not None:
        progress(total if journal["finished"] else start, total)
    if not journal["finished"]:
        writer = ShardWriter(out, config.size, config.samples_per_shard, source=kind,
                             seed=config.seed, first_item=start)

        def record(info: ShardInfo | None) -> None:
            if info is not None:
                journal["shards"].append(
                    {"name": info.name, "items": list(info.items), "counts": info.counts})
                write_json_atomic(out / JOURNAL, journal)

        with contextlib.closing(_map_in_order(worker, config, items[start:])) as results:
            for done, samples in enumerate(results, start + 1):
                record(writer.add(samples))
                if progress is not None:
                    progress(done, total)
        record(writer.close())
        journal["finished"] = True
        write_json_atomic(out / JOURNAL, journal)
    counts = summary(out)
    write_json_atomic(out / SUMMARY, counts)
    return counts


def generate_detection_samples(faces: Sequence[FaceBoxes], image_root: StrPath,
                               out_dir: StrPath, config: SampleConfig,
                               progress: Progress | None = None) -> dict[str, int]:
    """Positives, part faces and negatives of ``faces`` (images relative to ``image_root``)
    as shards in ``out_dir``; resumes an interrupted run. Returns (and writes to
    ``summary.json``) the counts per class, ``total``, ``shards`` and ``bytes``."""
    items = [
        DetectionItem(i, os.fspath(Path(image_root) / f.image),
                      np.asarray(f.boxes, np.float32).reshape(-1, 4), usable_faces(f, config),
                      positive_attempts(f, config))
        for i, f in enumerate(faces)
    ]
    parts = [b"%s\0%s\0%s" % (f.image.encode(), it.boxes.tobytes(), it.usable.tobytes())
             + (it.attempts.tobytes() if config.atypical_attempts is not None else b"")
             for f, it in zip(faces, items, strict=True)]
    fingerprint = _fingerprint("detection", config, parts)
    return _generate("detection", detection_samples, items, fingerprint, out_dir, config,
                     progress)


def generate_landmark_samples(samples: Sequence[LandmarkSample], image_root: StrPath,
                              out_dir: StrPath, config: SampleConfig,
                              progress: Progress | None = None) -> dict[str, int]:
    """Augmented landmark samples (label -2) of ``samples`` as shards in ``out_dir``, faces
    of one image processed together; resumes an interrupted run. Returns the summary."""
    groups: dict[str, list[tuple[int, tuple[float, float, float, float], np.ndarray]]] = {}
    for i, s in enumerate(samples):
        box = tuple(float(v) for v in s.box)
        points = np.asarray(s.points, np.float32).reshape(5, 2)
        groups.setdefault(s.image, []).append((i, box, points))  # type: ignore[arg-type]
    items = [LandmarkItem(os.fspath(Path(image_root) / image), tuple(faces))
             for image, faces in groups.items()]
    parts = [b"%s\0%s\0%s" % (s.image.encode(), np.asarray(s.box, np.float64).tobytes(),
                              np.asarray(s.points, np.float32).tobytes()) for s in samples]
    fingerprint = _fingerprint("landmark", config, parts)
    return _generate("landmark", landmark_samples, items, fingerprint, out_dir, config,
                     progress)

