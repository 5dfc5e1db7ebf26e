"""Landmark accuracy of a detector on a 5-point annotated set (e.g. CNN_FacePoint).

Three steps, kept apart so the arithmetic can be tested without running a network:

1. :func:`detect_landmarks` runs a detector over the images of a list of
   :class:`~mtcnnkit.data.annotations.LandmarkSample` and, for each sample, returns the five
   points of the detection that matches the annotated face (or ``None``: a miss).
2. :func:`evaluate_landmarks` (pure) scores those predictions against the annotations:
   normalised mean error (NME), per-point NME, failure rate and misses.
3. :func:`landmark_table` renders several results as a Markdown table.

Normalisation
    Every error is the Euclidean distance between a predicted and an annotated point divided
    by the *inter-ocular distance* of the annotation: the distance between its points 0 and 1
    (left and right eye). The 5-point set annotates eye *centres*, so "inter-ocular" here is
    eye centre to eye centre (what some papers call inter-pupil normalisation), not outer eye
    corner to outer eye corner as in 68-point benchmarks; figures are therefore not directly
    comparable to NMEs normalised by outer corners (those distances are larger, so those NMEs
    are smaller).

Matching
    The annotated boxes of CNN_FacePoint come from another face detector and are framed
    differently from MTCNN's boxes (the two disagree on how much forehead, chin and cheek a
    "face" box holds), so even a perfect detection typically overlaps the annotated box with
    an IoU well below 1. A sample is matched to the detection with the *highest IoU* with its
    annotated box (not the highest score: other, partly visible faces may be in the picture)
    provided that IoU is at least :data:`MATCH_IOU` (0.4): loose enough for the framing
    difference, tight enough to reject a neighbouring face or a background false positive.

Misses
    A sample without a matched detection is a *miss*. Misses are counted separately
    (:attr:`LandmarkResult.missed`) and left out of the NME, the per-point NME and the failure
    rate: a miss has no predicted points to measure, and charging it any fixed error would
    mix two different failure modes (the detector's recall and the landmark regressor's
    precision) into one number whose value depends on that arbitrary charge. Read NME
    together with the detected count.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..data.annotations import LandmarkSample
from ..detect.boxes import iou
from ..detect.cascade import Detections

__all__ = [
    "FAILURE_THRESHOLD",
    "FAILURE_TOLERANCE",
    "MATCH_IOU",
    "POINT_NAMES",
    "LandmarkResult",
    "detect_landmarks",
    "evaluate_landmarks",
    "landmark_table",
    "match_detection",
    "normalised_errors",
]

#: The five points, in annotation order.
POINT_NAMES = ("left eye", "right eye", "nose", "left mouth", "right mouth")
#: A matched sample fails when its mean normalised error is strictly greater than this.
FAILURE_THRESHOLD = 0.10
#: Slack on the failure comparison so that an error equal to the threshold in exact
#: arithmetic is not turned into a failure by float rounding (e.g. 0.1 * 5 / 5).
FAILURE_TOLERANCE = 1e-9
#: Minimum IoU between a detection and the annotated box for the two to match.
MATCH_IOU = 0.4

Progress = Callable[[int, int], None]


class LandmarkDetector(Protocol):
    """What :func:`detect_landmarks` needs of a detector (`mtcnnkit.Detector` has it)."""

    def detect_tensors(self, images: Sequence[str | os.PathLike]) -> list[Detections]: ...


def normalised_errors(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-point errors ``(N, 5)``: ``|pred - truth|`` divided by the inter-ocular distance.

    ``pred`` and ``truth`` are ``(N, 5, 2)`` arrays (x, y per point, in the order of
    :data:`POINT_NAMES`). The inter-ocular distance is that of ``truth``: the distance
    between its points 0 and 1, the eye centres. Computed in float64. Raises ``ValueError``
    on mismatched shapes or an annotation whose two eyes coincide.
    """
    pred = np.asarray(pred, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if truth.ndim != 3 or truth.shape[1:] != (5, 2):
        raise ValueError(f"truth must have shape (N, 5, 2), got {truth.shape}")
    if pred.shape != truth.shape:
        raise ValueError(f"pred shape {pred.shape} does not match truth shape {truth.shape}")
    inter_ocular = np.linalg.norm(truth[:, 0] - truth[:, 1], axis=1)
    if np.any(~(inter_ocular > 0)):
        bad = np.flatnonzero(~(inter_ocular > 0)).tolist()
        raise ValueError(f"zero (or non-finite) inter-ocular distance in annotations {bad}")
    return np.linalg.norm(pred - truth, axis=2) / inter_ocular[:, None]


@dataclass(frozen=True, eq=False)
class LandmarkResult:
    """Landmark accuracy on one annotated set.

    ``nme``, ``per_point_nme`` and ``failure_rate`` are over *matched* samples only and are
    fractions of the inter-ocular distance (NaN when nothing matched). A sample whose annotated
    face was not found (no detection with IoU >= :data:`MATCH_IOU` with the annotated box) is a
    miss: it is counted in ``missed`` and kept out of the error figures, because it has no
    points to measure and charging it a made-up error would blur detection recall into
    landmark precision (read ``nme`` together with ``n_detected``).

    Fields:
        n_samples: annotated faces evaluated.
        n_detected: of those, how many were matched by a detection.
        nme: mean normalised error over the 5 points and the matched samples.
        per_point_nme: ``(5,)`` mean normalised error of each point, in
            :data:`POINT_NAMES` order.
        failure_rate: fraction of matched samples whose mean (over the 5 points) normalised
            error is greater than :data:`FAILURE_THRESHOLD` (0.10; exactly 0.10 is not a
            failure).
        missed: ``n_samples - n_detected``.
    """

    n_samples: int
    n_detected: int
    nme: float
    per_point_nme: np.ndarray
    failure_rate: float
    missed: int

    @property
    def detection_rate(self) -> float:
        """Fraction of samples matched (NaN for an empty set)."""
        return self.n_detected / self.n_samples if self.n_samples else math.nan

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-friendly values (per-point NME keyed by point name)."""
        return {
            "n_samples": self.n_samples,
            "n_detected": self.n_detected,
            "missed": self.missed,
            "nme": self.nme,
            "per_point_nme": dict(zip(POINT_NAMES, map(float, self.per_point_nme),
                                      strict=True)),
            "failure_rate": self.failure_rate,
        }


def evaluate_landmarks(
    predictions: Sequence[np.ndarray | None], samples: Sequence[LandmarkSample]
) -> LandmarkResult:
    """Score per-sample predictions (a ``(5, 2)`` array, or ``None`` for a miss)."""
    if len(predictions) != len(samples):
        raise ValueError(f"{len(predictions)} predictions for {len(samples)} samples")
    matched = [i for i, p in enumerate(predictions) if p is not None]
    if not matched:
        nan = math.nan
        per_point = np.full(5, nan)
        per_point.flags.writeable = False
        return LandmarkResult(len(samples), 0, nan, per_point, nan, len(samples))
    pred = np.stack([np.asarray(predictions[i], dtype=np.float64) for i in matched])
    truth = np.stack([np.asarray(samples[i].points, dtype=np.float64) for i in matched])
    if pred.shape[1:] != (5, 2):
        raise ValueError(f"each prediction must have shape (5, 2), got {pred.shape[1:]}")
    errors = normalised_errors(pred, truth)
    per_sample = errors.mean(axis=1)
    per_point = errors.mean(axis=0)
    per_point.flags.writeable = False
    failures = per_sample > FAILURE_THRESHOLD + FAILURE_TOLERANCE
    return LandmarkResult(
        n_samples=len(samples),
        n_detected=len(matched),
        nme=float(errors.mean()),
        per_point_nme=per_point,
        failure_rate=float(failures.mean()),
        missed=len(samples) - len(matched),
    )


def match_detection(detections: Detections, box: Sequence[float],
                    min_iou: float = MATCH_IOU) -> int | None:
    """Index of the detection with the highest IoU with ``box`` (x1, y1, x2, y2), or None
    when there is none or the best IoU is below ``min_iou``. Ties go to the earlier one."""
    if detections.boxes.numel() == 0:
        return None
    target = torch.tensor([list(box)], dtype=torch.float64)
    overlaps = iou(detections.boxes.to(torch.float64).reshape(-1, 4), target)[:, 0]
    best = int(torch.argmax(overlaps))
    return best if float(overlaps[best]) >= min_iou else None


def detect_landmarks(
    detector: LandmarkDetector,
    samples: Sequence[LandmarkSample],
    root: str | os.PathLike,
    batch_size: int = 32,
    progress: Progress | None = None,
    min_iou: float = MATCH_IOU,
) -> list[np.ndarray | None]:
    """Run ``detector`` on ``root / sample.image`` and return, per sample, the ``(5, 2)``
    float32 landmarks of its matched detection, or ``None`` (see :func:`match_detection`
    and the module notes on matching). Images go to ``detector.detect_tensors``
    ``batch_size`` at a time; ``progress(done, total)`` is called after each batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    root = Path(root)
    total = len(samples)
    out: list[np.ndarray | None] = []
    for start in range(0, total, batch_size):
        chunk = samples[start:start + batch_size]
        found = detector.detect_tensors([root / s.image for s in chunk])
        if len(found) != len(chunk):
            raise RuntimeError(f"detector returned {len(found)} results for {len(chunk)} images")
        for sample, det in zip(chunk, found, strict=True):
            best = match_detection(det, sample.box, min_iou)
            out.append(None if best is None else
                       det.landmarks[best].detach().cpu().numpy().astype(np.float32).reshape(5, 2))
        if progress is not None:
            progress(len(out), total)
    return out


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}"


def landmark_table(results: Mapping[str, LandmarkResult]) -> str:
    """Markdown table, one row per named result; errors in % of the inter-ocular distance."""
    header = ["name", "samples", "detected", "NME %",
              *(f"{name} %" for name in POINT_NAMES), "failure rate %"]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for name, r in results.items():
        row = [name, str(r.n_samples), str(r.n_detected), _pct(r.nme),
               *(_pct(float(v)) for v in r.per_point_nme), _pct(r.failure_rate)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
