"""Readers for the face annotation formats mtcnnkit trains and evaluates on.

Every reader is a pure function of its input file(s). Malformed input raises ``ValueError``
whose message starts with ``<file>:<line>:`` for text formats (1-based line numbers) and says
what is wrong. Boxes are ``x1, y1, x2, y2`` in continuous pixel coordinates (``x2 = x + w``).

WIDER FACE ``wider_face_{train,val}_bbx_gt.txt`` (:func:`read_wider_txt`)::

    0--Parade/0_Parade_marchingband_1_465.jpg      image path under WIDER_<split>/images
    126                                            number of faces
    345 211 4 4 2 0 0 0 2 0                        x y w h blur expression illumination
    ...                                            invalid occlusion pose (one line per face)

  A count of ``0`` is followed by one dummy line (``0 0 0 0 0 0 0 0 0 0``), which is skipped.
  Some copies (ours included) write a faceless image as count ``1`` with that all-zero line;
  the w/h rule below drops it. Boxes with ``w <= 0`` or ``h <= 0`` are dropped; with
  ``image_sizes`` boxes entirely outside the image are dropped and the rest clipped to it
  (``[0, width] x [0, height]``, as :func:`mtcnnkit.detect.boxes.clip`).

WIDER FACE ``wider_face_split/wider_face_{train,val}.mat`` (:func:`read_wider_mat`): MATLAB
cells ``event_list`` (event names), ``file_list`` (file names without ``.jpg``),
``face_bbx_list`` (``x y w h`` int rows) and ``{blur,expression,illumination,invalid,
occlusion,pose}_label_list``. Faceless images hold one ``0 0 0 0`` row. Same dropping rule.

CUHK CNN_FacePoint ``trainImageList.txt`` / ``testImageList.txt`` (:func:`read_landmark_list`),
15 whitespace-separated fields per line; note the box order *left right top bottom*::

    net_7876\\0_0_0.jpg 104 308 95 299 151.0 147.0 246.0 148.0 209.0 194.0 161.0 237.0 235.0 235.0
    path                x1  x2  y1 y2  left eye   right eye   nose        left mouth  right mouth

  Backslash or slash separators, CRLF or LF line endings and extra blanks are all accepted.

FDDB ``FDDB-fold-XX-ellipseList.txt`` (:func:`read_fddb_ellipses`, :func:`read_fddb_folds`)::

    2002/08/11/big/img_591                          image path without extension
    1                                               number of faces (0 allowed, no dummy line)
    123.583300 85.549500 1.265839 269.693400 161.781200  1
    major_axis_radius minor_axis_radius angle(rad) center_x center_y [1]

  ``FDDB-fold-XX.txt`` lists the same images in the same order, one per line.

Custom JSON (:func:`read_custom_json`), for users' own data::

    {"images": [
      {"path": "party/001.jpg",
       "faces": [{"box": [12, 30, 96, 130],
                  "landmarks": [[40, 70], [72, 69], [57, 90], [44, 108], [70, 107]]},
                 {"box": [150.5, 40, 210, 118]}]},
      {"path": "/data/empty_room.jpg", "faces": []}
    ]}

  ``path`` is relative (to a root chosen by the caller) or absolute; ``box`` is
  ``[x1, y1, x2, y2]`` with ``x2 > x1`` and ``y2 > y1``; ``landmarks`` is optional: five
  ``[x, y]`` points in the order left eye, right eye, nose, left mouth corner, right mouth
  corner. ``faces`` may be left out for an image without faces. Every image gives a
  :class:`FaceBoxes`; every face with landmarks also gives a :class:`LandmarkSample`.
"""

from __future__ import annotations

import collections
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

StrPath = str | os.PathLike[str]

WIDER_ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
EMPTY_BOX = "w<=0 or h<=0"
OUTSIDE_IMAGE = "outside the image"


@dataclass(frozen=True)
class FaceBoxes:
    """The face boxes of one image. (Holds arrays: compare the fields, not instances.)"""

    image: str  # relative to the dataset's image root, '/' separators
    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2
    attributes: np.ndarray | None = None  # (N, 6) int16 in WIDER_ATTRIBUTES order, or None


@dataclass
class ReadStats:
    """What a WIDER reader kept and dropped. ``reasons`` counts dropped boxes by reason;
    ``clipped`` counts kept boxes that were clipped to their image."""

    images: int = 0
    boxes: int = 0
    dropped: int = 0
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    clipped: int = 0

    def drop(self, reason: str, count: int) -> None:
        if count:
            self.dropped += count
            self.reasons[reason] += count


@dataclass(frozen=True)
class LandmarkSample:
    """One face of a 5-point landmark list."""

    image: str  # '/' separators
    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    points: np.ndarray  # (5, 2) float32 (x, y): left eye, right eye, nose, mouth left, right


@dataclass(frozen=True)
class Ellipse:
    """One FDDB face: semi-axis lengths, angle in radians, centre."""

    major: float
    minor: float
    angle: float
    cx: float
    cy: float


@dataclass(frozen=True)
class FddbImage:
    image: str  # as listed, no extension, e.g. "2002/08/11/big/img_591"
    faces: tuple[Ellipse, ...]


# ---------------------------------------------------------------------------------------------
# Text helpers


Line = tuple[int, str]  # (1-based line number, stripped text)


def _error(path: StrPath, line: int | None, problem: str) -> ValueError:
    where = f"{os.fspath(path)}:{line}" if line is not None else os.fspath(path)
    return ValueError(f"{where}: {problem}")


def _read_lines(path: StrPath) -> list[Line]:
    """Non-blank lines, stripped, with their line numbers (any line ending, optional BOM)."""
    with open(path, encoding="utf-8-sig") as f:
        return [(number, text.strip()) for number, text in enumerate(f, 1) if text.strip()]


def _numbers(path: StrPath, line: Line, expected: Sequence[int], what: str) -> list[float]:
    """The numbers of one line, which must have one of the ``expected`` lengths."""
    number, text = line
    tokens = text.split()
    if len(tokens) not in expected:
        wanted = " or ".join(str(n) for n in expected)
        raise _error(path, number, f"expected {wanted} numbers per {what}, got {len(tokens)}")
    return _floats(path, number, tokens, what)


def _floats(path: StrPath, number: int, tokens: Sequence[str], what: str) -> list[float]:
    for token in tokens:
        if not _is_number(token):
            raise _error(path, number, f"{what}: {token!r} is not a number")
    return [float(token) for token in tokens]


def _is_number(token: str) -> bool:
    """A finite decimal number ("nan" and "inf" are not accepted)."""
    try:
        return math.isfinite(float(token))
    except ValueError:
        return False


def _counted_blocks(
    path: StrPath, lines: list[Line], dummy_after_zero: bool = False
) -> Iterator[tuple[str, list[Line]]]:
    """Split ``name / count / count lines`` blocks (WIDER txt, FDDB) into (name, lines).

    With ``dummy_after_zero`` the one line following a count of 0 is skipped when it is a
    line of numbers (WIDER's ``0 0 0 0 0 0 0 0 0 0``)."""
    i = 0
    while i < len(lines):
        name_line, name = lines[i]
        if i + 1 == len(lines):
            raise _error(path, name_line, f"the file ends after {name!r}, expected a face count")
        count_line, count_text = lines[i + 1]
        try:
            count = int(count_text)
        except ValueError:
            raise _error(
                path, count_line, f"expected the face count of {name!r}, got {count_text!r}"
            ) from None
        if count < 0:
            raise _error(path, count_line, f"negative face count {count}")
        rows = lines[i + 2 : i + 2 + count]
        if len(rows) < count:
            raise _error(
                path,
                rows[-1][0] if rows else count_line,
                f"count says {count} faces for {name!r} but the file ends after {len(rows)}",
            )
        i += 2 + count
        dummy = count == 0 and dummy_after_zero and i < len(lines)
        if dummy and all(_is_number(t) for t in lines[i][1].split()):
            i += 1
        yield name.replace("\\", "/"), rows


# ---------------------------------------------------------------------------------------------
# WIDER FACE


def _wider_entry(
    image: str,
    xywh: np.ndarray,
    attributes: np.ndarray,
    size: tuple[int, int] | None,
    stats: ReadStats,
) -> FaceBoxes:
    """Convert x y w h to corners, apply the dropping/clipping rules, update ``stats``."""
    keep = (xywh[:, 2] > 0) & (xywh[:, 3] > 0)
    stats.drop(EMPTY_BOX, int((~keep).sum()))
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)[keep]
    attributes = attributes[keep]
    if size is not None:
        width, height = size
        inside = (boxes[:, 0] < width) & (boxes[:, 1] < height)
        inside &= (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        stats.drop(OUTSIDE_IMAGE, int((~inside).sum()))
        boxes, attributes = boxes[inside], attributes[inside]
        clipped = np.clip(boxes, 0, [width, height, width, height])
        stats.clipped += int((clipped != boxes).any(axis=1).sum())
        boxes = clipped
    stats.images += 1
    stats.boxes += len(boxes)
    return FaceBoxes(image, boxes.astype(np.float32), attributes.astype(np.int16))


def _wider_row(path: StrPath, line: Line) -> list[float]:
    values = _numbers(path, line, (10,), "box line (x y w h + 6 attributes)")
    if any(v != int(v) for v in values[4:]):
        raise _error(path, line[0], "the 6 attributes must be whole numbers")
    return values


def read_wider_txt(
    path: StrPath, image_sizes: Mapping[str, tuple[int, int]] | None = None
) -> tuple[list[FaceBoxes], ReadStats]:
    """Read a WIDER FACE ``*_bbx_gt.txt``. ``image_sizes`` maps an image (as listed) to its
    ``(width, height)``; when given, every image must be in it."""
    stats = ReadStats()
    entries = []
    for image, rows in _counted_blocks(path, _read_lines(path), dummy_after_zero=True):
        size = None
        if image_sizes is not None:
            if image not in image_sizes:
                raise ValueError(f"{os.fspath(path)}: image_sizes has no entry for {image!r}")
            size = image_sizes[image]
        values = np.array([_wider_row(path, row) for row in rows]).reshape(-1, 10)
        entries.append(_wider_entry(image, values[:, :4], values[:, 4:], size, stats))
    return entries, stats


def _cells(value: Any) -> np.ndarray:
    """A MATLAB cell array (any orientation) as a flat object array."""
    return np.asarray(value, dtype=object).ravel()


def _mat_string(value: Any) -> str:
    flat = np.asarray(value).ravel()
    if flat.size != 1:
        raise ValueError(f"expected one string, got {flat.size} values")
    return str(flat[0])


def read_wider_mat(path: StrPath) -> tuple[list[FaceBoxes], ReadStats]:
    """Read ``wider_face_split/wider_face_{train,val}.mat``; images are ``event/file.jpg``."""
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("reading WIDER .mat files needs scipy: pip install scipy") from exc
    try:
        mat = loadmat(os.fspath(path))
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise _error(path, None, f"not a readable MATLAB v5 file ({exc})") from exc
    label_keys = [f"{name}_label_list" for name in WIDER_ATTRIBUTES]
    keys = ["event_list", "file_list", "face_bbx_list", *label_keys]
    missing = [key for key in keys if key not in mat]
    if missing:
        raise _error(path, None, f"not a WIDER FACE split file, missing {', '.join(missing)}")
    per_event = {key: _cells(mat[key]) for key in keys}
    n_events = len(per_event["event_list"])
    for key in keys:
        if len(per_event[key]) != n_events:
            raise _error(path, None, f"{key} has {len(per_event[key])} events, not {n_events}")

    stats = ReadStats()
    entries = []
    for e in range(n_events):
        try:
            event = _mat_string(per_event["event_list"][e])
            files = [_mat_string(cell) for cell in _cells(per_event["file_list"][e])]
        except ValueError as exc:
            raise _error(path, None, f"event {e + 1}: bad name ({exc})") from None
        per_file = {key: _cells(per_event[key][e]) for key in keys[2:]}
        for key, cells in per_file.items():
            if len(cells) != len(files):
                raise _error(path, None, f"{event}: {len(files)} files but {len(cells)} {key}")
        for f, name in enumerate(files):
            image = f"{event}/{name}.jpg"
            xywh = np.asarray(per_file["face_bbx_list"][f], dtype=np.float64)
            if xywh.size % 4:
                raise _error(path, None, f"{image}: face_bbx_list is not N x 4 ({xywh.shape})")
            xywh = xywh.reshape(-1, 4)
            labels = [np.asarray(per_file[key][f]).ravel() for key in label_keys]
            for key, label in zip(label_keys, labels, strict=True):
                if len(label) != len(xywh):
                    raise _error(path, None, f"{image}: {len(xywh)} boxes but {len(label)} {key}")
            attributes = np.stack(labels, axis=1)
            entries.append(_wider_entry(image, xywh, attributes, None, stats))
    return entries, stats


# ---------------------------------------------------------------------------------------------
# Landmarks, FDDB, custom JSON


def read_landmark_list(path: StrPath) -> list[LandmarkSample]:
    """Read a CNN_FacePoint list: ``path left right top bottom`` then 5 ``x y`` points."""
    samples = []
    for number, text in _read_lines(path):
        tokens = text.split()
        if len(tokens) != 15:
            raise _error(
                path,
                number,
                f"expected 15 fields (path, left right top bottom, 5 x y points), "
                f"got {len(tokens)}",
            )
        values = _floats(path, number, tokens[1:], "landmark line")
        left, right, top, bottom = values[:4]
        points = np.array(values[4:], dtype=np.float32).reshape(5, 2)
        samples.append(
            LandmarkSample(tokens[0].replace("\\", "/"), (left, top, right, bottom), points)
        )
    return samples


def read_fddb_ellipses(path: StrPath) -> list[FddbImage]:
    """Read one ``FDDB-fold-XX-ellipseList.txt``."""
    images = []
    for image, rows in _counted_blocks(path, _read_lines(path)):
        faces = []
        for row in rows:
            values = _numbers(path, row, (5, 6), "ellipse line (major minor angle cx cy [1])")
            faces.append(Ellipse(*values[:5]))
        images.append(FddbImage(image, tuple(faces)))
    return images


def read_fddb_folds(folds_dir: StrPath, folds: Iterable[int] = range(1, 11)) -> list[FddbImage]:
    """Read FDDB folds in order, checking each ``FDDB-fold-XX.txt`` lists the images of
    ``FDDB-fold-XX-ellipseList.txt`` in the same order."""
    folds_dir = Path(folds_dir)
    images: list[FddbImage] = []
    for fold in folds:
        ellipse_path = folds_dir / f"FDDB-fold-{fold:02d}-ellipseList.txt"
        list_path = folds_dir / f"FDDB-fold-{fold:02d}.txt"
        annotated = read_fddb_ellipses(ellipse_path)
        listed = _read_lines(list_path)
        for (number, name), entry in zip(listed, annotated, strict=False):
            if name.replace("\\", "/") != entry.image:
                raise _error(
                    list_path,
                    number,
                    f"lists {name!r} but {ellipse_path.name} has {entry.image!r} at this position",
                )
        if len(listed) != len(annotated):
            raise _error(
                list_path,
                None,
                f"lists {len(listed)} images but {ellipse_path.name} has {len(annotated)}",
            )
        images.extend(annotated)
    return images


def _json_numbers(path: StrPath, where: str, value: Any, count: int) -> list[float]:
    if (
        not isinstance(value, list)
        or len(value) != count
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise _error(path, None, f"{where}: expected a list of {count} numbers, got {value!r}")
    return [float(v) for v in value]


def _json_list(path: StrPath, where: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise _error(path, None, f"{where}: expected a list, got {type(value).__name__}")
    return value


def read_custom_json(path: StrPath) -> tuple[list[FaceBoxes], list[LandmarkSample]]:
    """Read the custom JSON format described in the module docstring."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            document = json.load(f)
    except json.JSONDecodeError as exc:
        raise _error(path, exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(document, dict) or "images" not in document:
        raise _error(path, None, 'expected an object with an "images" list')
    faces_out: list[FaceBoxes] = []
    landmarks_out: list[LandmarkSample] = []
    for i, item in enumerate(_json_list(path, "images", document["images"])):
        where = f"images[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("path"), str) or not item["path"]:
            raise _error(path, None, f'{where}: expected an object with a "path" string')
        image = item["path"].replace("\\", "/")
        boxes = []
        for j, face in enumerate(_json_list(path, f"{where}.faces", item.get("faces", []))):
            face_where = f"{where}.faces[{j}]"
            if not isinstance(face, dict) or "box" not in face:
                raise _error(path, None, f'{face_where}: expected an object with a "box"')
            x1, y1, x2, y2 = _json_numbers(path, f"{face_where}.box", face["box"], 4)
            if not (x2 > x1 and y2 > y1):
                raise _error(path, None, f"{face_where}.box: needs x2 > x1 and y2 > y1")
            boxes.append((x1, y1, x2, y2))
            if face.get("landmarks") is not None:
                points = _json_list(path, f"{face_where}.landmarks", face["landmarks"])
                if len(points) != 5:
                    raise _error(
                        path, None, f"{face_where}.landmarks: expected 5 points, got {len(points)}"
                    )
                xy = [
                    _json_numbers(path, f"{face_where}.landmarks[{k}]", p, 2)
                    for k, p in enumerate(points)
                ]
                landmarks_out.append(
                    LandmarkSample(image, (x1, y1, x2, y2), np.array(xy, dtype=np.float32))
                )
        faces_out.append(FaceBoxes(image, np.array(boxes, dtype=np.float32).reshape(-1, 4)))
    return faces_out, landmarks_out
