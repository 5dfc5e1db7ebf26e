"""Cut detected faces out of an image: landmark alignment and margin crops.

Two ways to turn a detection into a fixed-size face chip from an RGB ``uint8`` ``HxWx3``
image:

* :func:`align_face` -- estimate the least-squares 2-D similarity transform (rotation,
  uniform scale, translation; no reflection, no shear) that maps the five detected landmarks
  onto the standard ArcFace/InsightFace 112x112 template (:data:`FACE_TEMPLATE_112`, scaled
  by ``size / 112`` for other sizes) and warp the image with it.  The transform is estimated
  by :func:`similarity_transform`, a closed-form Umeyama solver.
* :func:`margin_crop` -- facenet-pytorch's ``extract_face``: grow the box by a margin given
  in *output* pixels, clip it to the image, and resize the crop to ``size x size``.

:func:`crop_faces` applies either one to a list of :class:`~mtcnnkit.detect.face.Face`.
All functions are pure; channel order is not touched (RGB in, RGB out).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from mtcnnkit.detect.face import Face

__all__ = [
    "CROP_MODES",
    "FACE_TEMPLATE_112",
    "align_face",
    "crop_faces",
    "face_template",
    "margin_crop",
    "similarity_transform",
]

#: ArcFace/InsightFace 5-point template for a 112x112 chip: left eye, right eye, nose,
#: left mouth corner, right mouth corner (as seen in the image), ``(x, y)`` pixels.
FACE_TEMPLATE_112: np.ndarray = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
FACE_TEMPLATE_112.setflags(write=False)

#: Valid ``mode`` values of :func:`crop_faces`.
CROP_MODES: tuple[str, ...] = ("align", "margin")

_DEFAULT_SIZE = {"align": 112, "margin": 160}


def _check_size(size: int) -> int:
    if isinstance(size, bool) or int(size) != size:
        raise ValueError(f"size must be an integer, got {size!r}")
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    return size


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be an HxWx3 array, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty, shape {image.shape}")
    return image


def face_template(size: int = 112) -> np.ndarray:
    """The 5x2 landmark template for a ``size x size`` chip (``FACE_TEMPLATE_112 * size/112``)."""
    size = _check_size(size)
    return FACE_TEMPLATE_112 * (size / 112.0)


def similarity_transform(src_points: np.ndarray, dst_points: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform mapping ``src_points`` onto ``dst_points``.

    Closed-form solution of Umeyama (1991), restricted to proper rotations: finds the scale
    ``s >= 0``, rotation ``R`` (``det R = +1``) and translation ``t`` minimising
    ``sum_i || s R src_i + t - dst_i ||^2``.  A reflection is never produced, even when the
    best affine fit would be mirrored.

    Args:
        src_points: ``(N, 2)`` points, ``N >= 2``, not all coincident.
        dst_points: ``(N, 2)`` target points.

    Returns:
        ``(2, 3)`` float64 matrix ``[[s cos, -s sin, tx], [s sin, s cos, ty]]`` usable with
        :func:`cv2.warpAffine`.

    Raises:
        ValueError: on mismatched or malformed shapes, fewer than two points, non-finite
            values, or coincident source points.
    """
    src = np.asarray(src_points, dtype=np.float64)
    dst = np.asarray(dst_points, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2:
        raise ValueError(f"src_points must have shape (N, 2), got {src.shape}")
    if dst.shape != src.shape:
        raise ValueError(
            f"dst_points shape {dst.shape} does not match src_points shape {src.shape}"
        )
    n = src.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 point pairs, got {n}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("points must be finite")

    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_c = src - src_mean
    dst_c = dst - dst_mean
    src_var = float((src_c**2).sum()) / n
    if src_var <= np.finfo(np.float64).eps * max(1.0, float(np.abs(src).max())) ** 2:
        raise ValueError("src_points are (nearly) coincident; transform is undefined")

    cov = dst_c.T @ src_c / n
    u, sing, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0  # force a proper rotation
    rot = u @ np.diag(d) @ vt
    scale = float(sing @ d) / src_var
    trans = dst_mean - scale * rot @ src_mean

    matrix = np.empty((2, 3), dtype=np.float64)
    matrix[:, :2] = scale * rot
    matrix[:, 2] = trans
    return matrix


def align_face(image: np.ndarray, landmarks: Sequence | np.ndarray, size: int = 112) -> np.ndarray:
    """Warp ``image`` so the 5 ``landmarks`` land on the ArcFace template of a ``size`` chip.

    Args:
        image: RGB ``uint8`` ``HxWx3`` image.
        landmarks: five ``(x, y)`` points in image pixels, ordered left eye, right eye, nose,
            left mouth corner, right mouth corner.
        size: side of the square output; the 112-px template is scaled by ``size / 112``.

    Returns:
        ``size x size x 3`` array of the image's dtype (bilinear, black outside the image).
    """
    image = _check_image(image)
    size = _check_size(size)
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (5, 2):
        raise ValueError(f"landmarks must be 5 (x, y) points, got shape {pts.shape}")
    matrix = similarity_transform(pts, face_template(size))
    return cv2.warpAffine(
        np.ascontiguousarray(image),
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


def margin_crop(
    image: np.ndarray,
    box: Sequence[float] | np.ndarray,
    size: int = 160,
    margin: float = 0,
) -> np.ndarray:
    """Crop ``box`` with a margin and resize to ``size x size`` (facenet-pytorch style).

    ``margin`` is in pixels of the *output* image: the box is grown by
    ``margin * box_w / (size - margin)`` horizontally and ``margin * box_h / (size - margin)``
    vertically (half on each side), clipped to the image, truncated to ``int`` and resized
    with :data:`cv2.INTER_AREA`.

    Args:
        image: RGB ``uint8`` ``HxWx3`` image.
        box: ``(x1, y1, x2, y2)`` in image pixels.
        size: side of the square output.
        margin: margin in output pixels, ``0 <= margin < size``.

    Returns:
        ``size x size x 3`` array of the image's dtype.

    Raises:
        ValueError: if ``size < 1``, ``margin < 0``, ``margin >= size``, or the box is empty
            after clipping to the image.
    """
    image = _check_image(image)
    size = _check_size(size)
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if margin >= size:
        raise ValueError(f"margin ({margin}) must be smaller than size ({size})")
    x1, y1, x2, y2 = (float(v) for v in box)
    height, width = image.shape[:2]
    grow_x = margin * (x2 - x1) / (size - margin)
    grow_y = margin * (y2 - y1) / (size - margin)
    cx1 = int(max(x1 - grow_x / 2, 0))
    cy1 = int(max(y1 - grow_y / 2, 0))
    cx2 = int(min(x2 + grow_x / 2, width))
    cy2 = int(min(y2 + grow_y / 2, height))
    if cx2 <= cx1 or cy2 <= cy1:
        raise ValueError(
            f"box {tuple(box)} is empty after clipping to the {width}x{height} image "
            f"(crop {cx1},{cy1},{cx2},{cy2})"
        )
    crop = np.ascontiguousarray(image[cy1:cy2, cx1:cx2])
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def crop_faces(
    image: np.ndarray,
    faces: Sequence[Face],
    mode: str = "align",
    size: int | None = None,
    margin: float = 0,
) -> list[np.ndarray]:
    """Cut every face in ``faces`` out of ``image``.

    Args:
        image: RGB ``uint8`` ``HxWx3`` image.
        faces: detections in ``image``'s pixel coordinates.
        mode: ``"align"`` (:func:`align_face` on the landmarks) or ``"margin"``
            (:func:`margin_crop` on the box).
        size: output side; defaults to 112 for ``"align"`` and 160 for ``"margin"``.
        margin: output-pixel margin, used only by ``"margin"``.

    Returns:
        One ``size x size x 3`` chip per face, in input order.
    """
    if mode not in CROP_MODES:
        raise ValueError(f"unknown mode {mode!r}; valid modes are: {', '.join(CROP_MODES)}")
    out_size = _DEFAULT_SIZE[mode] if size is None else size
    if mode == "align":
        return [align_face(image, face.landmarks, size=out_size) for face in faces]
    return [margin_crop(image, face.box, size=out_size, margin=margin) for face in faces]
