"""Draw detections onto an image: boxes, scores and the five landmarks.

:func:`annotate` is pure: it returns an annotated copy and never touches its input. Line
thickness, marker size and font scale grow with the image, so the drawing reads the same on
a 300 px thumbnail and a 4000 px photo. Colours are RGB (the image is RGB).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .face import Face

__all__ = ["BOX_COLOUR", "LANDMARK_COLOURS", "annotate"]

#: Box and score-label colour (RGB).
BOX_COLOUR: tuple[int, int, int] = (0, 255, 0)
#: One colour per landmark, in `Face.landmarks` order: left eye, right eye, nose,
#: left mouth corner, right mouth corner (RGB).
LANDMARK_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),  # left eye: red
    (0, 128, 255),  # right eye: blue
    (255, 255, 0),  # nose: yellow
    (255, 0, 255),  # left mouth corner: magenta
    (0, 255, 255),  # right mouth corner: cyan
)
_TEXT_COLOUR = (0, 0, 0)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_REFERENCE_SIDE = 500.0  # image side at which lines are 2 px and the font scale is 0.5


def annotate(image_rgb: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """A copy of ``image_rgb`` (``HxWx3`` ``uint8``) with every face drawn on it.

    Each face gets its box, its score (two decimals, on a filled label above the box, or
    inside it when the box touches the top edge) and its five landmarks as filled dots of
    distinct colours (see :data:`LANDMARK_COLOURS`).
    """
    image = np.asarray(image_rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected an HxWx3 uint8 RGB image, got shape {image.shape} and dtype {image.dtype}"
        )
    out = np.array(image, copy=True, order="C")
    scale = max(image.shape[:2]) / _REFERENCE_SIDE
    thickness = max(1, round(2 * scale))
    radius = max(2, round(2.5 * scale))
    font_scale = max(0.35, 0.5 * scale)
    text_thickness = max(1, round(scale))
    for face in faces:
        _draw_box(out, face, thickness, radius)
    for face in faces:  # labels last, so no other box crosses them
        _draw_label(out, face, thickness, font_scale, text_thickness)
    return out


def _draw_box(out: np.ndarray, face: Face, thickness: int, radius: int) -> None:
    x1, y1, x2, y2 = (round(float(v)) for v in face.box)
    cv2.rectangle(out, (x1, y1), (x2, y2), BOX_COLOUR, thickness, cv2.LINE_AA)
    radius = max(1, min(radius, round(min(x2 - x1, y2 - y1) / 14)))  # dots stay apart
    for (x, y), colour in zip(face.landmarks, LANDMARK_COLOURS, strict=False):
        centre = (round(float(x)), round(float(y)))
        cv2.circle(out, centre, radius + max(1, radius // 3), (0, 0, 0), cv2.FILLED,
                   cv2.LINE_AA)  # dark rim: visible on light and dark skin
        cv2.circle(out, centre, radius, colour, cv2.FILLED, cv2.LINE_AA)


def _draw_label(out: np.ndarray, face: Face, thickness: int, font_scale: float,
                text_thickness: int) -> None:
    x1, y1 = round(float(face.box[0])), round(float(face.box[1]))
    label = f"{float(face.score):.2f}"
    (tw, th), baseline = cv2.getTextSize(label, _FONT, font_scale, text_thickness)
    pad = max(1, thickness)
    label_h = th + baseline + 2 * pad
    top = y1 - label_h if y1 - label_h >= 0 else max(y1, 0)  # above the box, else inside it
    left = min(max(x1, 0), max(out.shape[1] - tw - 2 * pad, 0))
    cv2.rectangle(out, (left, top), (left + tw + 2 * pad, top + label_h), BOX_COLOUR, cv2.FILLED)
    cv2.putText(out, label, (left + pad, top + pad + th), _FONT, font_scale, _TEXT_COLOUR,
                text_thickness, cv2.LINE_AA)
