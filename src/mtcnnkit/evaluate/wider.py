"""WIDER FACE evaluation, faithful to the official MATLAB protocol (``wider_eval.m``).

Protocol (each step as the official code does it; see docs/EVAL.md):

1. Predictions per image: ``x y w h score`` boxes, sorted by decreasing score.
2. Scores are min-max normalised over **all** predictions of the evaluated set.
3. Per difficulty level (easy, medium, hard), the ground truth of an image is every face in
   ``wider_face_val.mat``; the level's ``gt_list`` says which of them count. Boxes are turned
   into corners with ``x2 = x + w`` and overlaps use the +1 pixel convention.
4. Predictions are taken in score order; each is matched to the face it overlaps most. If
   that IoU is >= 0.5: a face outside the level's list makes the prediction *ignored*
   (neither true nor false positive); a listed face becomes recalled (a duplicate match adds
   nothing to recall but still counts as a proposal, i.e. a false positive).
5. At 1,000 thresholds ``1 - (t + 1) / 1000``: proposals (non-ignored predictions with
   normalised score >= threshold) and recalled faces are summed over images; precision =
   recalled / proposals, recall = recalled / (listed faces of all evaluated images).
6. AP: VOC all-points interpolation.

Only the evaluated images count: the official ``.mat`` files cover all 3,226 val images;
listed faces of an evaluated image without any prediction count as misses.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import torch

from ..data.annotations import WIDER_ATTRIBUTES
from ..detect.boxes import iou

LEVELS = ("easy", "medium", "hard")
N_THRESHOLDS = 1000
IOU_THRESHOLD = 0.5
# Names of the values of each WIDER face attribute (the dataset's readme), in the order of
# ``WIDER_ATTRIBUTES``; wider_face_val.mat stores them as ``<attribute>_label_list`` cells.
ATTRIBUTE_VALUES = {
    "blur": ("clear", "normal blur", "heavy blur"),
    "expression": ("typical", "exaggerated"),
    "illumination": ("normal", "extreme"),
    "invalid": ("valid", "invalid"),
    "occlusion": ("none", "partial", "heavy"),
    "pose": ("typical", "atypical"),
}
GT_FILES = {"all": "wider_face_val.mat", "easy": "wider_easy_val.mat",
            "medium": "wider_medium_val.mat", "hard": "wider_hard_val.mat"}


@dataclass(frozen=True)
class WiderGroundTruth:
    """Official evaluation ground truth, keyed by ``"<event>/<image name without .jpg>"``."""

    boxes: dict[str, np.ndarray]  # (N, 4) x, y, w, h as stored in wider_face_val.mat
    keep: dict[str, dict[str, np.ndarray]]  # level -> key -> 0-based indices of listed faces
    # key -> (N, 6) int labels in WIDER_ATTRIBUTES order; None where the .mat has none
    attributes: dict[str, np.ndarray] | None = None

    def restrict(self, keys: Iterable[str]) -> WiderGroundTruth:
        """The ground truth of ``keys`` only (raises for an unknown key)."""
        keys = list(keys)
        unknown = [k for k in keys if k not in self.boxes]
        if unknown:
            raise KeyError(f"{len(unknown)} image(s) not in the WIDER val ground truth, "
                           f"e.g. {unknown[0]!r}")
        attributes = (None if self.attributes is None
                      else {k: self.attributes[k] for k in keys})
        return WiderGroundTruth({k: self.boxes[k] for k in keys},
                                {lv: {k: self.keep[lv][k] for k in keys} for lv in self.keep},
                                attributes)

    def faces(self, level: str) -> int:
        return sum(len(v) for v in self.keep[level].values())


def image_key(path: str | os.PathLike) -> str:
    """``"0--Parade/0_Parade_marchingband_1_465"`` from any path ending in event/name.jpg."""
    p = Path(path)
    return f"{p.parent.name}/{p.stem}"


def load_ground_truth(gt_dir: str | os.PathLike) -> WiderGroundTruth:
    """Read the four official ``.mat`` files (``eval_tools/ground_truth``)."""
    gt_dir = Path(gt_dir)
    mats = {}
    for level, name in GT_FILES.items():
        path = gt_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (expected the official WIDER eval files "
                                    f"{', '.join(GT_FILES.values())})")
        try:
            mats[level] = scipy.io.loadmat(path)
        except Exception as e:  # corrupt .mat
            raise ValueError(f"{path}: not a readable .mat file ({e})") from e
    boxes: dict[str, np.ndarray] = {}
    keep: dict[str, dict[str, np.ndarray]] = {level: {} for level in LEVELS}
    whole = mats["all"]
    label_lists = [whole.get(f"{name}_label_list") for name in WIDER_ATTRIBUTES]
    attributes: dict[str, np.ndarray] | None = (
        {} if all(cells is not None for cells in label_lists) else None)
    for e, event_cell in enumerate(whole["event_list"][:, 0]):
        event = str(event_cell[0])
        files = whole["file_list"][e, 0][:, 0]
        face_boxes = whole["face_bbx_list"][e, 0][:, 0]
        for i, file_cell in enumerate(files):
            key = f"{event}/{file_cell[0]}"
            boxes[key] = np.asarray(face_boxes[i], dtype=np.float64).reshape(-1, 4)
            for level in LEVELS:
                listed = mats[level]["gt_list"][e, 0][i, 0]
                keep[level][key] = np.asarray(listed, dtype=np.int64).reshape(-1) - 1
            if attributes is not None:
                labels = [np.asarray(cells[e, 0][i, 0], dtype=np.int64).reshape(-1)
                          for cells in label_lists]
                if any(len(lab) != len(boxes[key]) for lab in labels):
                    raise ValueError(f"{gt_dir / GT_FILES['all']}: {key}: attribute labels "
                                     f"do not match its {len(boxes[key])} face boxes")
                attributes[key] = np.stack(labels, axis=1).reshape(-1, len(WIDER_ATTRIBUTES))
    return WiderGroundTruth(boxes, keep, attributes)


@dataclass(frozen=True)
class PrCurve:
    """Precision/recall at the protocol's thresholds (decreasing), and the AP."""

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    ap: float


@dataclass(frozen=True)
class WiderResult:
    curves: dict[str, PrCurve]  # per level
    per_event: dict[str, dict[str, float]]  # event -> level -> AP
    n_images: int
    n_faces: dict[str, int]  # listed faces per level
    n_predictions: int

    @property
    def ap(self) -> dict[str, float]:
        return {level: curve.ap for level, curve in self.curves.items()}

    def summary(self) -> str:
        return " ".join(f"{level}={self.curves[level].ap:.4f}" for level in LEVELS)


def thresholds(n: int = N_THRESHOLDS) -> np.ndarray:
    return 1.0 - (np.arange(n) + 1) / n


def normalise_scores(predictions: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Min-max normalise column 4 over all predictions (a set of equal scores becomes 1)."""
    scores = [p[:, 4] for p in predictions.values() if len(p)]
    if not scores:
        return {k: p.copy() for k, p in predictions.items()}
    all_scores = np.concatenate(scores)
    low, high = float(all_scores.min()), float(all_scores.max())
    out = {}
    for key, pred in predictions.items():
        pred = pred.astype(np.float64, copy=True)
        pred[:, 4] = (pred[:, 4] - low) / (high - low) if high > low else 1.0
        out[key] = pred
    return out


def image_pr(pred: np.ndarray, gt_xywh: np.ndarray, listed: np.ndarray,
             levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Proposals and recalled faces of one image at each threshold in ``levels``.

    ``pred``: (M, 5) ``x y w h score`` with normalised scores; ``listed``: 0-based indices of
    the faces that count. Returns two int arrays of ``len(levels)``.
    """
    n_t = len(levels)
    if len(pred) == 0 or len(gt_xywh) == 0:
        return np.zeros(n_t, np.int64), np.zeros(n_t, np.int64)
    pred = pred[np.argsort(-pred[:, 4], kind="stable")]
    overlaps = iou(_corners(pred[:, :4]), _corners(gt_xywh), plus_one=True).numpy()
    best = overlaps.argmax(axis=1)
    matched = overlaps[np.arange(len(pred)), best] >= IOU_THRESHOLD
    counts = np.zeros(len(gt_xywh), dtype=bool)
    counts[listed] = True
    ignored = matched & ~counts[best]  # matched to a face that does not count at this level
    proposal = ~ignored
    # a listed face is recalled from the first prediction matching it onwards
    first = np.full(len(gt_xywh), len(pred))
    hits = np.flatnonzero(matched & counts[best])
    np.minimum.at(first, best[hits], hits)
    recalled_by = np.bincount(first[first < len(pred)], minlength=len(pred)).cumsum()
    proposals_by = np.cumsum(proposal)
    # predictions with score >= threshold form a prefix of the sorted list
    above = np.searchsorted(-pred[:, 4], -levels, side="right")
    has = above > 0
    proposals = np.where(has, proposals_by[np.maximum(above - 1, 0)], 0)
    recalled = np.where(has, recalled_by[np.maximum(above - 1, 0)], 0)
    return proposals.astype(np.int64), recalled.astype(np.int64)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-points AP: area under the precision envelope (NaN precision counts as 0)."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], np.nan_to_num(precision, nan=0.0), [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changed = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[changed + 1] - mrec[changed]) * mpre[changed + 1]))


def to_corners(xywh: np.ndarray) -> np.ndarray:
    """``x y w h [...]`` rows -> ``x1 y1 x2 y2`` (float64; the inverse of `to_wider_boxes`)."""
    b = np.asarray(xywh, dtype=np.float64)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:4]], axis=1)


def _corners(xywh: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(to_corners(xywh))


def _curve(proposals: np.ndarray, recalled: np.ndarray, n_faces: int, levels: np.ndarray
           ) -> PrCurve:
    """PR curve from summed counts; AP is NaN when no face counts (nothing to recall)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = recalled / proposals
        recall = recalled / n_faces if n_faces else np.full(len(levels), np.nan)
    ap = voc_ap(recall, precision) if n_faces else float("nan")
    return PrCurve(levels, precision, recall, ap)


def evaluate_wider(predictions: Mapping[str, np.ndarray], ground_truth: WiderGroundTruth,
                   images: Iterable[str] | None = None) -> WiderResult:
    """Score predictions (key -> (M, 5) ``x y w h score``) on ``images`` (default: the keys
    of ``predictions``). An evaluated image missing from ``predictions`` has no
    predictions."""
    keys = sorted(images if images is not None else predictions)
    gt = ground_truth.restrict(keys)
    preds = normalise_scores({k: _as_pred(predictions.get(k)) for k in keys})
    levels = thresholds()
    events = sorted({k.split("/", 1)[0] for k in keys})
    curves, per_event = {}, {e: {} for e in events}
    for level in LEVELS:
        totals = {e: [np.zeros(len(levels), np.int64), np.zeros(len(levels), np.int64), 0]
                  for e in events}
        for key in keys:
            proposals, recalled = image_pr(preds[key], gt.boxes[key], gt.keep[level][key], levels)
            entry = totals[key.split("/", 1)[0]]
            entry[0] += proposals
            entry[1] += recalled
            entry[2] += len(gt.keep[level][key])
        for event, (p, r, n) in totals.items():
            per_event[event][level] = _curve(p, r, n, levels).ap
        p = sum(t[0] for t in totals.values())
        r = sum(t[1] for t in totals.values())
        curves[level] = _curve(p, r, gt.faces(level), levels)
    return WiderResult(curves, per_event, len(keys), {lv: gt.faces(lv) for lv in LEVELS},
                       sum(len(p) for p in preds.values()))


def stage_recall(boxes: Mapping[str, np.ndarray], ground_truth: WiderGroundTruth,
                 images: Iterable[str], iou_threshold: float = IOU_THRESHOLD
                 ) -> dict[str, float]:
    """Per level, the share of the listed faces of ``images`` that some box of their image
    overlaps with IoU >= ``iou_threshold`` (+1 pixel convention, as the protocol matches).

    ``boxes``: key -> (M, 4) ``x1 y1 x2 y2`` (a missing key: no boxes), e.g. the candidates a
    cascade stage passes on. This is recall regardless of score and of which face a box
    overlaps most: an upper bound on what the later stages can still find from these boxes,
    up to box calibration (the later stages only keep or drop candidates, but their box
    regression can move one onto a face it missed). Faces are counted over all images
    together; NaN for a level with no listed face.
    """
    gt = ground_truth.restrict(images)
    recalled = {level: 0 for level in LEVELS}
    for key, faces in gt.boxes.items():
        found = _covered(boxes.get(key), faces, iou_threshold)
        for level in LEVELS:
            recalled[level] += int(found[gt.keep[level][key]].sum())
    return {level: recalled[level] / n if (n := gt.faces(level)) else float("nan")
            for level in LEVELS}


@dataclass(frozen=True)
class AttributeRecall:
    """Recall of the listed faces that carry one value of one WIDER attribute."""

    attribute: str  # e.g. "pose"
    value: int  # the label in the .mat, e.g. 1
    name: str  # the readme's name of the value, e.g. "atypical"
    faces: dict[str, int]  # listed faces with this value, per level
    recall: dict[str, float]  # share of them found, per level (NaN without faces)


def attribute_recall(boxes: Mapping[str, np.ndarray], ground_truth: WiderGroundTruth,
                     images: Iterable[str], iou_threshold: float = IOU_THRESHOLD
                     ) -> list[AttributeRecall]:
    """`stage_recall` split by WIDER's face attributes (blur, expression, illumination,
    invalid, occlusion, pose): one row per attribute value that some listed face of
    ``images`` carries, in ``ATTRIBUTE_VALUES`` order. Shows which faces a detector misses,
    e.g. the final predictions' recall of atypical poses."""
    gt = ground_truth.restrict(images)
    if gt.attributes is None:
        raise ValueError("the ground truth has no face attributes (the official "
                         "wider_face_val.mat has them as <attribute>_label_list)")
    shape = (len(WIDER_ATTRIBUTES), max(len(v) for v in ATTRIBUTE_VALUES.values()))
    faces = {level: np.zeros(shape, np.int64) for level in LEVELS}
    found = {level: np.zeros(shape, np.int64) for level in LEVELS}
    for key, face_boxes in gt.boxes.items():
        covered = _covered(boxes.get(key), face_boxes, iou_threshold)
        labels = gt.attributes[key]
        for j, name in enumerate(WIDER_ATTRIBUTES):
            if len(labels) and not np.isin(labels[:, j],
                                           np.arange(len(ATTRIBUTE_VALUES[name]))).all():
                raise ValueError(f"{key}: {name} labels {np.unique(labels[:, j]).tolist()} "
                                 f"outside 0..{len(ATTRIBUTE_VALUES[name]) - 1}")
            for level in LEVELS:
                listed = gt.keep[level][key]
                np.add.at(faces[level][j], labels[listed, j], 1)
                np.add.at(found[level][j], labels[listed, j], covered[listed].astype(np.int64))
    rows = []
    for j, name in enumerate(WIDER_ATTRIBUTES):
        for value, value_name in enumerate(ATTRIBUTE_VALUES[name]):
            n = {level: int(faces[level][j, value]) for level in LEVELS}
            if any(n.values()):
                rows.append(AttributeRecall(
                    name, value, value_name, n,
                    {level: float(found[level][j, value] / n[level]) if n[level]
                     else float("nan") for level in LEVELS}))
    return rows


def _covered(boxes: np.ndarray | None, faces_xywh: np.ndarray, iou_threshold: float
             ) -> np.ndarray:
    """Per face (x y w h), whether some box (x1 y1 x2 y2) overlaps it enough."""
    b = np.zeros((0, 4)) if boxes is None else np.asarray(boxes, dtype=np.float64)
    if len(b) == 0 or len(faces_xywh) == 0:
        return np.zeros(len(faces_xywh), dtype=bool)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be (M, 4) x1 y1 x2 y2, got shape {b.shape}")
    overlaps = iou(torch.as_tensor(b), _corners(faces_xywh), plus_one=True).numpy()
    return overlaps.max(axis=0) >= iou_threshold


def _as_pred(pred: np.ndarray | None) -> np.ndarray:
    if pred is None:
        return np.zeros((0, 5))
    pred = np.asarray(pred, dtype=np.float64)
    if pred.ndim != 2 or pred.shape[1] != 5:
        raise ValueError(f"predictions must be (M, 5) x y w h score, got shape {pred.shape}")
    return pred


# --------------------------------------------------------------------------- predictions


def to_wider_boxes(boxes: np.ndarray | torch.Tensor, scores: np.ndarray | torch.Tensor
                   ) -> np.ndarray:
    """Detector boxes ``x1 y1 x2 y2`` + scores -> WIDER ``x y w h score`` rows."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2], s], axis=1)


def write_predictions(pred_dir: str | os.PathLike, predictions: Mapping[str, np.ndarray]
                      ) -> None:
    """Official submission format: ``<pred_dir>/<event>/<name>.txt`` holding the image name,
    the box count, then ``x y w h score`` lines."""
    root = Path(pred_dir)
    for key, pred in predictions.items():
        path = root / f"{key}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [Path(key).name, str(len(pred))]
        lines += [" ".join(f"{v:.3f}" for v in row[:4]) + f" {row[4]:.6f}" for row in pred]
        tmp = path.with_suffix(".txt.part")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(path)


def read_predictions(pred_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read ``<event>/<name>.txt`` files of the official format (keyed by file name, as the
    official evaluation does). Malformed files raise ValueError naming file and line."""
    root = Path(pred_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: prediction folder not found")
    out = {}
    for path in sorted(root.glob("*/*.txt")):
        lines = path.read_text().splitlines()
        if len(lines) < 2:
            raise ValueError(f"{path}: expected the image name and a box count, got "
                             f"{len(lines)} line(s)")
        try:
            count = int(lines[1].strip())
        except ValueError:
            raise ValueError(f"{path}:2: box count {lines[1]!r} is not an integer") from None
        rows = []
        for n, line in enumerate(lines[2:2 + count], start=3):
            parts = line.split()
            if len(parts) < 5:
                raise ValueError(f"{path}:{n}: expected 'x y w h score', got {line!r}")
            try:
                rows.append([float(v) for v in parts[:5]])
            except ValueError:
                raise ValueError(f"{path}:{n}: not numbers: {line!r}") from None
        if len(rows) != count:
            raise ValueError(f"{path}: count says {count} boxes but the file has {len(rows)}")
        out[f"{path.parent.name}/{path.stem}"] = np.asarray(rows, np.float64).reshape(-1, 5)
    return out


Progress = Callable[[int, int], None]


def predict(detector, image_paths: Sequence[str | os.PathLike], batch_size: int = 8,
            progress: Progress | None = None, times: Any = None, last_stage: str = "onet"
            ) -> dict[str, np.ndarray]:
    """Run a `Detector` over WIDER images; returns key -> (M, 5) ``x y w h score``.
    ``times`` (a :class:`mtcnnkit.detect.cascade.StageTimes`) collects stage times and
    candidate counts over all images; ``last_stage="pnet"|"rnet"`` returns that stage's
    candidates instead of the faces."""
    out: dict[str, np.ndarray] = {}
    for start in range(0, len(image_paths), batch_size):
        chunk = image_paths[start:start + batch_size]
        found = detector.detect_tensors(list(chunk), times=times, last_stage=last_stage)
        for path, det in zip(chunk, found, strict=True):
            out[image_key(path)] = to_wider_boxes(det.boxes.numpy(), det.scores.numpy())
        if progress is not None:
            progress(min(start + batch_size, len(image_paths)), len(image_paths))
    return out


def event_table(result: WiderResult, images_per_event: Mapping[str, int]) -> str:
    """Markdown table: AP per event and level, worst hard AP first."""
    lines = ["| event | images | easy | medium | hard |", "|---|---:|---:|---:|---:|"]
    order = sorted(result.per_event, key=lambda e: np.nan_to_num(result.per_event[e]["hard"]))
    for event in order:
        ap = result.per_event[event]
        lines.append(f"| {event} | {images_per_event.get(event, 0)} | "
                     + " | ".join("–" if np.isnan(ap[lv]) else f"{ap[lv]:.3f}" for lv in LEVELS)
                     + " |")
    return "\n".join(lines)
