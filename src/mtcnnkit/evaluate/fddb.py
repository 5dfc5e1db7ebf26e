"""FDDB evaluation, faithful to the official ``evaluate`` program.

Reference: V. Jain and E. Learned-Miller, *FDDB: A Benchmark for Face Detection in
Unconstrained Settings*, UMass Amherst tech. report UM-CS-2010-009, and the C++ program
distributed with it (``evaluate.cpp``, ``Matching.cpp``, ``Results.cpp``, ``EllipseR.cpp``,
``RectangleR.cpp``). Each step below says what the official code does and what we do.

Ground truth and detections
    Faces are the annotated ellipses (:class:`~mtcnnkit.data.annotations.Ellipse`: semi-axes,
    angle in radians, centre). Detections of an image are one float array: ``(N, 5)``
    rectangles ``x1 y1 x2 y2 score`` (what the detector gives) or ``(N, 6)`` ellipses
    ``major minor angle cx cy score`` (the official "ellipse" detection format).

Rectangle stretch (:func:`box_to_fddb_rect`)
    MTCNN boxes hug the face; FDDB ellipses cover the whole head, so published MTCNN numbers
    usually grow the box height by about 20 % upwards before matching. We make that explicit
    and configurable: the height becomes ``vertical_scale * h`` with the bottom edge kept, and
    the box then moves down by ``shift * h`` (negative: up). The default ``(1.0, 0.0)`` is
    the plain box; :class:`FddbResult` records the setting its numbers used. Ellipse
    detections are never changed.

Overlap of a detection with a face (:func:`overlap_matrix`)
    Area of intersection over area of union of the two *regions*, counted in pixels of the
    rasterised shapes, like the official program, which fills each region on an image-sized
    mask and counts pixels of the AND and the OR of two masks. Shapes are drawn exactly as
    the official code draws them (OpenCV, 8-connected, filled):

    * ellipse: centre rounded to the nearest pixel (``cvRound`` of the float32 value),
      semi-axes truncated to integers (``static_cast<int>``), rotation ``degrees(angle)``
      (the official reader stores ``(pi - angle) * 180 / pi`` and draws at 180 degrees minus
      that);
    * rectangle ``x y w h``: filled between the rounded corners ``(x, y)`` and
      ``(x + w, y + h)``, both included, so it covers ``(w + 1) * (h + 1)`` pixels.

    We draw on the union of the two shapes' bounding boxes, cut to the image (``image_sizes``
    gives ``(width, height)``, as in :mod:`mtcnnkit.data.annotations`): the same pixels the
    official image-sized masks hold (parts outside the image do not count), at a fraction of
    the cost. A pair whose bounding boxes do not meet has overlap 0 without drawing. Without
    an image size the shapes are not cut at the border (this differs from the official
    program only for regions that cross it).

Matching (:func:`match`, :func:`image_counts`)
    Per image, the official program loops over the image's distinct detection scores ``t``;
    for each it keeps the detections with ``score >= t`` and re-runs the matching from
    scratch: a one-to-one assignment of faces to detections maximising the total overlap
    (Hungarian algorithm on the overlap matrix). Pairs with overlap 0 are not matches. We
    do the same with :func:`scipy.optimize.linear_sum_assignment`. So the pairing may change
    with the threshold (a face taken by a better detection that only appears at a lower
    threshold). Where several assignments reach the same total, scipy and the official
    Hungarian code may choose different ones (this needs exactly equal sums).

Scores (``Results.cpp``)
    * discrete: a matched pair with overlap **> 0.5** (strictly) is a true positive;
    * continuous: every matched pair adds its overlap to the true positives, also pairs
      with overlap <= 0.5;
    * false positives, *the same number in both curves*: kept detections minus discrete
      true positives. A matched detection with overlap <= 0.5 is therefore a false positive
      in both curves while also adding its overlap to the continuous true positives; that
      is what the official program computes, and its ``ContROC.txt`` has the same FP
      column as ``DiscROC.txt``.

ROC (:func:`roc_curves`)
    One point per distinct detection score ``t`` over all images, in decreasing order here
    (:class:`RocCurve`). At ``t`` every image contributes its counts at its own smallest
    score ``>= t`` (nothing when ``t`` is above all its scores), which is what the
    official ``Results::merge`` computes. TPR = true positives / annotated faces of all
    evaluated images (faces of images without detections count as misses).

Output files (:func:`write_roc`, :func:`read_roc`)
    ``<prefix>DiscROC.txt`` holds ``tpr fp threshold`` and ``<prefix>ContROC.txt`` holds
    ``tpr fp``, one line per threshold, in the official order: increasing threshold, so the
    first line is the lowest threshold (all detections, most false positives). Two official
    quirks are not reproduced: a line ``0 0 1.79769e+308`` that appears when some image has no
    detection (it carries no information), and 6-significant-digit numbers (we write 10).

TPR at k false positives (:func:`tpr_at`)
    Linear interpolation in FP along the curve in decreasing-threshold order, which starts
    at (0 FP, TPR 0) for an infinite threshold: between the first point with more than k
    false positives and the point before it. When the curve never passes k false positives,
    its last TPR (the detector made no more detections; nothing is extrapolated).

Detection files (:func:`write_detections`, :func:`read_detections`)
    The official input format (FDDB README): per image its name, the number of regions,
    then one line per region, ``left_x top_y width height score`` or ``major_axis_radius
    minor_axis_radius angle center_x center_y score``. Images are written in the order
    given (the official program needs the order of the annotation list).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from ..data.annotations import Ellipse, FddbImage

__all__ = [
    "DISCRETE_MIN_OVERLAP",
    "FddbResult",
    "ImageCounts",
    "RocCurve",
    "box_to_fddb_rect",
    "detect_fddb",
    "evaluate_fddb",
    "image_counts",
    "match",
    "overlap_matrix",
    "plot_roc",
    "read_detections",
    "read_image_sizes",
    "read_roc",
    "region_overlap",
    "roc_curves",
    "tpr_at",
    "write_detections",
    "write_roc",
]

StrPath = str | os.PathLike[str]
Progress = Callable[[int, int], None]
ImageSize = tuple[int, int]  # (width, height)

DISCRETE_MIN_OVERLAP = 0.5  # discrete score: overlap > 0.5
RECT_COLUMNS = 5  # x1 y1 x2 y2 score
ELLIPSE_COLUMNS = 6  # major minor angle cx cy score
REPORTED_FP = (1000, 2000)


# --------------------------------------------------------------------------- rectangles


def box_to_fddb_rect(boxes: np.ndarray | Sequence[float], vertical_scale: float = 1.0,
                     shift: float = 0.0) -> np.ndarray:
    """Corner boxes ``x1 y1 x2 y2 [extra...]`` (one box or ``(N, 4+)``) -> FDDB rectangles
    ``x y w h [extra...]`` (extra columns, such as the score, are passed through).

    The height becomes ``vertical_scale * h`` with the bottom edge kept (growth goes
    upwards), then the box moves down by ``shift * h`` (``h`` = the original height;
    negative moves it up). ``vertical_scale=1.2`` is the usual "20 % taller, upwards" MTCNN
    setting; the defaults leave the box unchanged.
    """
    if not vertical_scale > 0:
        raise ValueError(f"vertical_scale must be positive, got {vertical_scale}")
    b = np.array(boxes, dtype=np.float64)
    if b.shape[-1] < 4:
        raise ValueError(f"boxes need x1 y1 x2 y2 in their last axis, got shape {b.shape}")
    x1, y1, x2, y2 = (b[..., i] for i in range(4))
    h = y2 - y1
    bottom = y2 + shift * h
    out = b.copy()
    out[..., 0] = x1
    out[..., 1] = bottom - vertical_scale * h
    out[..., 2] = x2 - x1
    out[..., 3] = vertical_scale * h
    return out


# --------------------------------------------------------------------------- rasterising


class _Shape(NamedTuple):
    """A region ready for OpenCV: integer drawing parameters and inclusive pixel bounds."""

    is_ellipse: bool
    centre_or_p1: tuple[int, int]
    axes_or_p2: tuple[int, int]
    angle_deg: float
    bounds: tuple[int, int, int, int]  # x0, y0, x1, y1, inclusive


def _cv_round(value: float) -> int:
    """``cvPointFrom32f(cvPoint2D32f(v))``: float32, then round half to even."""
    return int(np.rint(np.float32(value)))


def _ellipse_shape(major: float, minor: float, angle: float, cx: float, cy: float) -> _Shape:
    centre = (_cv_round(cx), _cv_round(cy))
    a, b = max(int(major), 0), max(int(minor), 0)  # static_cast<int>: truncation
    degrees = math.degrees(angle)
    c, s = math.cos(angle), math.sin(angle)
    # half extents of the rotated ellipse, +2 pixels for OpenCV's polygon approximation
    ex = math.ceil(math.hypot(a * c, b * s)) + 2
    ey = math.ceil(math.hypot(a * s, b * c)) + 2
    bounds = (centre[0] - ex, centre[1] - ey, centre[0] + ex, centre[1] + ey)
    return _Shape(True, centre, (a, b), degrees, bounds)


def _rect_shape(x: float, y: float, w: float, h: float) -> _Shape:
    p1 = (_cv_round(x), _cv_round(y))
    p2 = (_cv_round(x + w), _cv_round(y + h))
    bounds = (min(p1[0], p2[0]), min(p1[1], p2[1]), max(p1[0], p2[0]), max(p1[1], p2[1]))
    return _Shape(False, p1, p2, 0.0, bounds)


def _draw(mask: np.ndarray, shape: _Shape, ox: int, oy: int) -> np.ndarray:
    """Fill ``shape`` with 1 on ``mask``, whose pixel (0, 0) is image pixel (ox, oy)."""
    u = (shape.centre_or_p1[0] - ox, shape.centre_or_p1[1] - oy)
    if shape.is_ellipse:
        cv2.ellipse(mask, u, shape.axes_or_p2, shape.angle_deg, 0, 360, 1, thickness=-1)
    else:
        v = (shape.axes_or_p2[0] - ox, shape.axes_or_p2[1] - oy)
        cv2.rectangle(mask, u, v, 1, thickness=-1)
    return mask


def _shape_overlap(a: _Shape, b: _Shape, image_size: ImageSize | None) -> float:
    """Pixel intersection over union of two shapes, on the union of their bounds cut to the
    image (the official program counts the same pixels on image-sized masks)."""
    x0, y0 = min(a.bounds[0], b.bounds[0]), min(a.bounds[1], b.bounds[1])
    x1, y1 = max(a.bounds[2], b.bounds[2]), max(a.bounds[3], b.bounds[3])
    if image_size is not None:
        width, height = image_size
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width - 1), min(y1, height - 1)
    if x1 < x0 or y1 < y0:
        return 0.0
    size = (y1 - y0 + 1, x1 - x0 + 1)
    ma = _draw(np.zeros(size, np.uint8), a, x0, y0)
    mb = _draw(np.zeros(size, np.uint8), b, x0, y0)
    union = np.count_nonzero(ma | mb)
    return np.count_nonzero(ma & mb) / union if union else 0.0


def _as_detections(detections: np.ndarray | None) -> np.ndarray:
    """A float64 ``(N, 5)`` rectangle or ``(N, 6)`` ellipse array (``None``: no detections)."""
    if detections is None:
        return np.zeros((0, RECT_COLUMNS))
    d = np.asarray(detections, dtype=np.float64)
    if d.size == 0:
        columns = d.shape[1] if d.ndim == 2 and d.shape[1] == ELLIPSE_COLUMNS else RECT_COLUMNS
        return d.reshape(0, columns)
    if d.ndim != 2 or d.shape[1] not in (RECT_COLUMNS, ELLIPSE_COLUMNS):
        raise ValueError("detections must be (N, 5) x1 y1 x2 y2 score or (N, 6) major minor "
                         f"angle cx cy score, got shape {d.shape}")
    if not np.isfinite(d).all():
        raise ValueError("detections contain NaN or infinite values")
    return d


def _detection_shapes(d: np.ndarray, vertical_scale: float, shift: float) -> list[_Shape]:
    if d.shape[1] == ELLIPSE_COLUMNS:
        return [_ellipse_shape(*row[:5]) for row in d.tolist()]
    rects = box_to_fddb_rect(d[:, :4], vertical_scale, shift)
    return [_rect_shape(*row) for row in rects.tolist()]


def overlap_matrix(faces: Sequence[Ellipse], detections: np.ndarray | None,
                   image_size: ImageSize | None = None, *, vertical_scale: float = 1.0,
                   shift: float = 0.0) -> np.ndarray:
    """``(faces, detections)`` region overlaps (rasterised intersection over union).

    ``detections``: ``(N, 5)`` ``x1 y1 x2 y2 score`` (stretched by :func:`box_to_fddb_rect`
    with ``vertical_scale``/``shift``) or ``(N, 6)`` ellipses; ``image_size``: ``(width,
    height)`` to cut regions at the image border as the official program does.
    """
    d = _as_detections(detections)
    face_shapes = [_ellipse_shape(f.major, f.minor, f.angle, f.cx, f.cy) for f in faces]
    det_shapes = _detection_shapes(d, vertical_scale, shift)
    out = np.zeros((len(face_shapes), len(det_shapes)))
    if not face_shapes or not det_shapes:
        return out
    fb = np.array([s.bounds for s in face_shapes])
    db = np.array([s.bounds for s in det_shapes])
    meet = ((fb[:, None, 0] <= db[None, :, 2]) & (db[None, :, 0] <= fb[:, None, 2])
            & (fb[:, None, 1] <= db[None, :, 3]) & (db[None, :, 1] <= fb[:, None, 3]))
    for i, j in zip(*np.nonzero(meet), strict=True):
        out[i, j] = _shape_overlap(face_shapes[i], det_shapes[j], image_size)
    return out


def region_overlap(face: Ellipse, detection: Sequence[float] | np.ndarray,
                   image_size: ImageSize | None = None, *, vertical_scale: float = 1.0,
                   shift: float = 0.0) -> float:
    """Overlap of one face with one detection row (``x1 y1 x2 y2 score`` or ``major minor
    angle cx cy score``)."""
    row = np.asarray(detection, dtype=np.float64).reshape(1, -1)
    return float(overlap_matrix([face], row, image_size, vertical_scale=vertical_scale,
                                shift=shift)[0, 0])


# --------------------------------------------------------------------------- matching


def match(overlaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of faces (rows) to detections (columns) maximising the total
    overlap (Hungarian). Returns ``(face indices, detection indices)`` of the matched pairs;
    pairs with overlap 0 are not matches."""
    o = np.asarray(overlaps, dtype=np.float64)
    if o.size == 0 or not (o > 0).any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows, cols = linear_sum_assignment(o, maximize=True)
    keep = o[rows, cols] > 0
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64)


class ImageCounts(NamedTuple):
    """Counts of one image at each of its distinct detection scores (increasing)."""

    thresholds: np.ndarray
    tp_discrete: np.ndarray  # matched pairs with overlap > 0.5
    tp_continuous: np.ndarray  # sum of the overlaps of all matched pairs
    false_positives: np.ndarray  # kept detections - discrete true positives


def image_counts(overlaps: np.ndarray, scores: np.ndarray) -> ImageCounts:
    """Official per-image statistics: for each distinct score ``t`` (increasing), keep the
    detections with ``score >= t``, re-run :func:`match` and count."""
    o = np.asarray(overlaps, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if o.shape[1] != len(s):
        raise ValueError(f"{o.shape[1]} overlap columns but {len(s)} scores")
    thresholds = np.unique(s)
    kept = len(s) - np.searchsorted(np.sort(s), thresholds, side="left")
    tp_disc = np.zeros(len(thresholds))
    tp_cont = np.zeros(len(thresholds))
    if (o > 0).any():  # otherwise nothing ever matches: every kept detection is an FP
        for k, t in enumerate(thresholds):
            sub = o[:, s >= t]
            value = sub[match(sub)]
            tp_disc[k] = np.count_nonzero(value > DISCRETE_MIN_OVERLAP)
            tp_cont[k] = value.sum()
    return ImageCounts(thresholds, tp_disc, tp_cont, kept - tp_disc)


# --------------------------------------------------------------------------- ROC


class RocCurve(NamedTuple):
    """FDDB ROC points in decreasing threshold order: false positives (counts), true
    positive rate, threshold (``score >= threshold`` kept; NaN when read from a file without
    thresholds)."""

    fp: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


def roc_curves(counts: Iterable[ImageCounts], n_faces: int) -> tuple[RocCurve, RocCurve]:
    """Discrete and continuous ROC from per-image counts (the official merge over images).

    Each image's counts form a step function of the threshold; its change at each of its
    scores is summed over images and accumulated from the highest threshold down.
    """
    thresholds, deltas = [], []
    for c in counts:
        if len(c.thresholds) == 0:
            continue
        values = np.stack([c.tp_discrete, c.tp_continuous, c.false_positives], axis=1)
        above = np.vstack([values[1:], np.zeros((1, 3))])  # counts at the next higher score
        thresholds.append(c.thresholds)
        deltas.append(values - above)
    if not thresholds:
        empty = RocCurve(np.zeros(0), np.zeros(0), np.zeros(0))
        return empty, empty
    unique, inverse = np.unique(np.concatenate(thresholds), return_inverse=True)
    delta = np.concatenate(deltas)
    sums = np.stack([np.bincount(inverse, weights=delta[:, k], minlength=len(unique))
                     for k in range(3)], axis=1)
    totals = np.cumsum(sums[::-1], axis=0)  # decreasing threshold
    tp_disc, tp_cont, fp = totals[:, 0], totals[:, 1], np.rint(totals[:, 2])
    scale = 1.0 / n_faces if n_faces else 0.0
    desc = unique[::-1]
    return (RocCurve(fp.copy(), np.rint(tp_disc) * scale, desc.copy()),
            RocCurve(fp.copy(), tp_cont * scale, desc.copy()))


def tpr_at(curve: RocCurve, fp: float = 1000) -> float:
    """TPR at ``fp`` false positives, interpolated linearly along the curve (from (0, 0) at
    an infinite threshold); the last TPR when the curve never exceeds ``fp``."""
    xs = np.concatenate([[0.0], np.asarray(curve.fp, dtype=np.float64)])
    ys = np.concatenate([[0.0], np.asarray(curve.tpr, dtype=np.float64)])
    past = np.flatnonzero(xs > fp)
    if len(past) == 0:
        return float(ys[-1])
    i = past[0]  # xs[i - 1] <= fp < xs[i]
    return float(ys[i - 1] + (ys[i] - ys[i - 1]) * (fp - xs[i - 1]) / (xs[i] - xs[i - 1]))


@dataclass(frozen=True)
class FddbResult:
    """FDDB discrete and continuous ROC, TPR at 1000 and 2000 false positives, and what
    they were computed on."""

    discrete: RocCurve
    continuous: RocCurve
    discrete_tpr_at_1000: float
    discrete_tpr_at_2000: float
    continuous_tpr_at_1000: float
    continuous_tpr_at_2000: float
    n_images: int
    n_faces: int
    n_detections: int
    vertical_scale: float  # rectangle stretch used (see box_to_fddb_rect)
    shift: float
    clipped_to_image: bool  # regions cut at the image border (image sizes were given)

    def summary(self) -> str:
        return (f"FDDB discrete TPR {self.discrete_tpr_at_1000:.4f} @1000 FP, "
                f"{self.discrete_tpr_at_2000:.4f} @2000 FP; continuous "
                f"{self.continuous_tpr_at_1000:.4f} @1000, {self.continuous_tpr_at_2000:.4f} "
                f"@2000 ({self.n_faces} faces, {self.n_images} images, {self.n_detections} "
                f"detections, vertical_scale={self.vertical_scale:g}, shift={self.shift:g})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (curves left out)."""
        return {"discrete_tpr_at_1000": self.discrete_tpr_at_1000,
                "discrete_tpr_at_2000": self.discrete_tpr_at_2000,
                "continuous_tpr_at_1000": self.continuous_tpr_at_1000,
                "continuous_tpr_at_2000": self.continuous_tpr_at_2000,
                "n_images": self.n_images, "n_faces": self.n_faces,
                "n_detections": self.n_detections, "vertical_scale": self.vertical_scale,
                "shift": self.shift, "clipped_to_image": self.clipped_to_image}


def evaluate_fddb(detections: Mapping[str, np.ndarray], ground_truth: Sequence[FddbImage],
                  image_sizes: Mapping[str, ImageSize] | None, *, vertical_scale: float = 1.0,
                  shift: float = 0.0) -> FddbResult:
    """Score detections (image -> ``(N, 5)`` ``x1 y1 x2 y2 score`` or ``(N, 6)`` ellipses)
    on the images of ``ground_truth`` with the official protocol (module docstring).

    ``image_sizes`` maps each image to ``(width, height)`` (regions are cut at the border
    as the official program does); ``None`` evaluates without cutting. An image without an
    entry in ``detections`` has no detections; a detection key that is not a ground-truth
    image raises ``ValueError`` (a naming mismatch would otherwise score silently as 0).
    """
    names = {entry.image for entry in ground_truth}
    unknown = [key for key in detections if key not in names]
    if unknown:
        raise ValueError(f"{len(unknown)} detection image(s) not in the ground truth, "
                         f"e.g. {unknown[0]!r} (names have no extension, like "
                         f"'2002/08/11/big/img_591')")
    if image_sizes is not None:
        missing = [entry.image for entry in ground_truth if entry.image not in image_sizes]
        if missing:
            raise ValueError(f"image_sizes has no entry for {len(missing)} image(s), "
                             f"e.g. {missing[0]!r}")
    counts, n_faces, n_dets = [], 0, 0
    for entry in ground_truth:
        d = _as_detections(detections.get(entry.image))
        size = None if image_sizes is None else image_sizes[entry.image]
        o = overlap_matrix(entry.faces, d, size, vertical_scale=vertical_scale, shift=shift)
        counts.append(image_counts(o, d[:, -1]))
        n_faces += len(entry.faces)
        n_dets += len(d)
    disc, cont = roc_curves(counts, n_faces)
    return FddbResult(disc, cont, tpr_at(disc, 1000), tpr_at(disc, 2000), tpr_at(cont, 1000),
                      tpr_at(cont, 2000), len(ground_truth), n_faces, n_dets,
                      float(vertical_scale), float(shift), image_sizes is not None)


# --------------------------------------------------------------------------- files


def _fmt(value: float) -> str:
    return f"{value:.10g}"


def write_roc(prefix: StrPath, discrete: RocCurve, continuous: RocCurve) -> tuple[Path, Path]:
    """Write ``<prefix>DiscROC.txt`` (``tpr fp threshold``) and ``<prefix>ContROC.txt``
    (``tpr fp``) in the official order (increasing threshold). ``prefix`` is prepended as a
    string, like the official ``-r`` option (``"out/"`` writes ``out/DiscROC.txt``)."""
    prefix = os.fspath(prefix)
    disc_path, cont_path = Path(prefix + "DiscROC.txt"), Path(prefix + "ContROC.txt")
    disc_path.parent.mkdir(parents=True, exist_ok=True)
    d, c = discrete, continuous
    disc_lines = [f"{_fmt(t)} {int(f)} {_fmt(h)}"
                  for t, f, h in zip(d.tpr[::-1], d.fp[::-1], d.thresholds[::-1], strict=True)]
    cont_lines = [f"{_fmt(t)} {int(f)}" for t, f in zip(c.tpr[::-1], c.fp[::-1], strict=True)]
    disc_path.write_text("".join(line + "\n" for line in disc_lines))
    cont_path.write_text("".join(line + "\n" for line in cont_lines))
    return disc_path, cont_path


def read_roc(path: StrPath) -> RocCurve:
    """Read a ``DiscROC.txt`` (3 columns) or ``ContROC.txt`` (2 columns; thresholds NaN),
    ours or the official program's, as a :class:`RocCurve` (decreasing threshold)."""
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) not in (2, 3):
            raise ValueError(f"{os.fspath(path)}:{number}: expected 'tpr fp [threshold]', "
                             f"got {line!r}")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"{os.fspath(path)}:{number}: not numbers: {line!r}") from None
        rows.append(values + [math.nan] * (3 - len(values)))
    a = np.asarray(rows, dtype=np.float64).reshape(-1, 3)[::-1]
    return RocCurve(a[:, 1].copy(), a[:, 0].copy(), a[:, 2].copy())


def write_detections(path: StrPath, detections: Mapping[str, np.ndarray],
                     images: Iterable[str] | None = None, *, vertical_scale: float = 1.0,
                     shift: float = 0.0) -> Path:
    """Write the official detection file. Rectangles (``x1 y1 x2 y2 score``) become
    ``x y w h score`` after :func:`box_to_fddb_rect` with ``vertical_scale``/``shift``;
    ellipses are written as given. ``images`` sets the order and the images written (an
    image without detections gets a count of 0); default: the order of ``detections``."""
    lines = []
    for image in (list(images) if images is not None else list(detections)):
        d = _as_detections(detections.get(image))
        if d.shape[1] == RECT_COLUMNS:
            d = box_to_fddb_rect(d, vertical_scale, shift)
        lines += [image, str(len(d))]
        lines += [" ".join(_fmt(v) for v in row) for row in d.tolist()]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(line + "\n" for line in lines))
    return out


def read_detections(path: StrPath) -> dict[str, np.ndarray]:
    """Read an official detection file: image -> ``(N, 5)`` ``x1 y1 x2 y2 score`` for
    ``x y w h score`` lines, ``(N, 6)`` for ellipse lines. Blank lines are skipped."""
    where = os.fspath(path)
    lines = [(n, t.strip()) for n, t in enumerate(Path(path).read_text().splitlines(), 1)
             if t.strip()]
    out: dict[str, np.ndarray] = {}
    i = 0
    while i < len(lines):
        name_at, image = lines[i]
        if i + 1 >= len(lines):
            raise ValueError(f"{where}:{name_at}: the file ends after {image!r}, expected a count")
        count_at, count_text = lines[i + 1]
        try:
            count = int(count_text)
        except ValueError:
            raise ValueError(f"{where}:{count_at}: expected the region count of {image!r}, "
                             f"got {count_text!r}") from None
        rows = lines[i + 2:i + 2 + count]
        if count < 0 or len(rows) < count:
            raise ValueError(f"{where}:{count_at}: count {count} for {image!r} but "
                             f"{len(rows)} region line(s) follow")
        out[image] = _parse_regions(where, rows)
        i += 2 + count
    return out


def _parse_regions(where: str, rows: list[tuple[int, str]]) -> np.ndarray:
    values = []
    for number, text in rows:
        try:
            values.append([float(v) for v in text.split()])
        except ValueError:
            raise ValueError(f"{where}:{number}: not numbers: {text!r}") from None
        if len(values[-1]) not in (RECT_COLUMNS, ELLIPSE_COLUMNS):
            raise ValueError(f"{where}:{number}: expected 'x y w h score' or 'major minor "
                             f"angle cx cy score', got {text!r}")
        if len(values[-1]) != len(values[0]):
            raise ValueError(f"{where}:{number}: rectangles and ellipses mixed in one image")
    if not values:
        return np.zeros((0, RECT_COLUMNS))
    a = np.asarray(values, dtype=np.float64)
    if a.shape[1] == RECT_COLUMNS:
        a[:, 2:4] += a[:, 0:2]  # x y w h -> x1 y1 x2 y2
    return a


# --------------------------------------------------------------------------- detector, plot


def detect_fddb(detector: Any, images_dir: StrPath, ground_truth: Sequence[FddbImage],
                batch_size: int = 16, progress: Progress | None = None
                ) -> dict[str, np.ndarray]:
    """Run ``detector`` (anything with ``detect_tensors(list of paths)``, such as
    :class:`mtcnnkit.Detector`) on ``<images_dir>/<image>.jpg`` for each ground-truth image.
    Returns image -> ``(N, 5)`` float64 ``x1 y1 x2 y2 score`` (unstretched);
    ``progress(done, total)`` is called after each batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    names = [entry.image for entry in ground_truth]
    paths = [Path(images_dir) / f"{name}.jpg" for name in names]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} FDDB image(s) missing under {images_dir}, "
                                f"e.g. {missing[0]}")
    out: dict[str, np.ndarray] = {}
    for start in range(0, len(paths), batch_size):
        chunk = [os.fspath(p) for p in paths[start:start + batch_size]]
        found = detector.detect_tensors(chunk)
        for name, det in zip(names[start:start + batch_size], found, strict=True):
            boxes = np.asarray(det.boxes, dtype=np.float64).reshape(-1, 4)
            scores = np.asarray(det.scores, dtype=np.float64).reshape(-1, 1)
            out[name] = np.concatenate([boxes, scores], axis=1)
        if progress is not None:
            progress(min(start + batch_size, len(paths)), len(paths))
    return out


def read_image_sizes(images_dir: StrPath, ground_truth: Sequence[FddbImage]
                     ) -> dict[str, ImageSize]:
    """``(width, height)`` of ``<images_dir>/<image>.jpg`` as stored (the pixel grid the
    annotations and the official program's masks use), from the file headers."""
    from PIL import Image

    sizes = {}
    for entry in ground_truth:
        with Image.open(Path(images_dir) / f"{entry.image}.jpg") as image:
            sizes[entry.image] = (int(image.width), int(image.height))
    return sizes


def plot_roc(curves: Mapping[str, RocCurve], path: StrPath, max_fp: float | None = 2000,
             title: str = "FDDB") -> Path:
    """Plot TPR against false positives for each named curve into ``path`` (Agg canvas, no
    pyplot state). The x axis runs from 0 to ``max_fp`` (``None``: the largest FP)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    largest = 1.0
    for name, curve in curves.items():
        fp = np.concatenate([[0.0], curve.fp])
        tpr = np.concatenate([[0.0], curve.tpr])
        largest = max(largest, float(fp.max()))
        ax.plot(fp, tpr, label=f"{name} ({tpr_at(curve, 1000):.4f} @1000 FP)")
    ax.set_xlim(0, max_fp if max_fp is not None else largest)
    ax.set_ylim(0, 1)
    ax.set_xlabel("False positives")
    ax.set_ylabel("True positive rate")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(loc="lower right")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
