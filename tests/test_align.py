"""Tests for mtcnnkit.detect.align (similarity estimation, alignment, margin crops).

Expected values are derived independently: known transforms built by hand, discs drawn at
hand-computed positions, crop regions computed from the facenet-pytorch margin formula.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtcnnkit.detect.align import (
    FACE_TEMPLATE_112,
    align_face,
    crop_faces,
    margin_crop,
    similarity_transform,
)
from mtcnnkit.detect.face import Face

TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)

COLOURS = np.array(
    [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255]], dtype=np.uint8
)


def _similarity(s: float, theta: float, tx: float, ty: float) -> np.ndarray:
    c, sn = math.cos(theta), math.sin(theta)
    return np.array([[s * c, -s * sn, tx], [s * sn, s * c, ty]])


def _apply(matrix: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ matrix[:, :2].T + matrix[:, 2]


def _sq_error(matrix: np.ndarray, src: np.ndarray, dst: np.ndarray) -> float:
    return float(((_apply(matrix, src) - dst) ** 2).sum())


def _draw_discs(shape: tuple[int, int], centres: np.ndarray, radius: float) -> np.ndarray:
    """Blank RGB image with one disc of COLOURS[i] centred on centres[i] (vectorised)."""
    img = np.zeros((*shape, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    for (cx, cy), colour in zip(centres, COLOURS, strict=True):
        img[(xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2] = colour
    return img


def _colour_centroids(img: np.ndarray, tol: int = 60) -> np.ndarray:
    """Centroid (x, y) of the pixels close to each of COLOURS."""
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    out = []
    for colour in COLOURS:
        diff = np.abs(img.astype(int) - colour.astype(int)).max(axis=2)
        mask = diff <= tol
        assert mask.sum() > 0, f"colour {colour} not found"
        out.append([xx[mask].mean(), yy[mask].mean()])
    return np.array(out)


# --------------------------------------------------------------------------------------------
# similarity_transform
# --------------------------------------------------------------------------------------------


def test_template_constant():
    assert FACE_TEMPLATE_112.shape == (5, 2)
    np.testing.assert_allclose(FACE_TEMPLATE_112, TEMPLATE, atol=0)


def test_identity_on_template():
    m = similarity_transform(TEMPLATE, TEMPLATE)
    assert m.shape == (2, 3)
    np.testing.assert_allclose(m, [[1, 0, 0], [0, 1, 0]], atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(
    s=st.floats(0.3, 3.0),
    theta=st.floats(-math.pi, math.pi),
    tx=st.floats(-200.0, 200.0),
    ty=st.floats(-200.0, 200.0),
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 12),
)
def test_recovers_known_transform(s, theta, tx, ty, seed, n):
    rng = np.random.default_rng(seed)
    src = rng.uniform(-100, 100, size=(n, 2))
    # keep the point set well spread so the problem is well conditioned
    if np.linalg.norm(src - src.mean(axis=0), axis=1).max() < 1.0:
        src[0] += 10.0
    expected = _similarity(s, theta, tx, ty)
    dst = _apply(expected, src)
    got = similarity_transform(src, dst)
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


@settings(max_examples=200, deadline=None)
@given(
    s=st.floats(0.3, 3.0),
    theta=st.floats(-math.pi, math.pi),
    tx=st.floats(-50.0, 50.0),
    ty=st.floats(-50.0, 50.0),
)
def test_recovers_transform_of_template(s, theta, tx, ty):
    expected = _similarity(s, theta, tx, ty)
    got = similarity_transform(TEMPLATE, _apply(expected, TEMPLATE))
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", range(20))
def test_noisy_points_least_squares_optimum(seed):
    rng = np.random.default_rng(seed)
    src = rng.uniform(0, 200, size=(8, 2))
    true = _similarity(
        rng.uniform(0.3, 3), rng.uniform(-math.pi, math.pi), *rng.uniform(-50, 50, 2)
    )
    dst = _apply(true, src) + rng.normal(0, 3.0, size=src.shape)
    got = similarity_transform(src, dst)
    # the 2x2 part must have similarity structure [[a, -b], [b, a]]
    a, b = got[0, 0], got[1, 0]
    assert got[0, 1] == pytest.approx(-b, abs=1e-12)
    assert got[1, 1] == pytest.approx(a, abs=1e-12)
    base = _sq_error(got, src, dst)
    # perturbing any similarity parameter (a, b, tx, ty) never lowers the squared error
    for eps in (1e-3, -1e-3, 1e-5, -1e-5):
        for da, db, dtx, dty in np.eye(4) * eps:
            pert = _similarity_from_params(a + da, b + db, got[0, 2] + dtx, got[1, 2] + dty)
            assert _sq_error(pert, src, dst) >= base - 1e-9
    for _ in range(50):
        da, db, dtx, dty = rng.normal(0, 1e-3, 4)
        pert = _similarity_from_params(a + da, b + db, got[0, 2] + dtx, got[1, 2] + dty)
        assert _sq_error(pert, src, dst) >= base - 1e-9
    # and it coincides with an independent linear least-squares solve over (a, b, tx, ty)
    rows = np.zeros((2 * len(src), 4))
    rows[0::2] = np.column_stack([src[:, 0], -src[:, 1], np.ones(len(src)), np.zeros(len(src))])
    rows[1::2] = np.column_stack([src[:, 1], src[:, 0], np.zeros(len(src)), np.ones(len(src))])
    params, *_ = np.linalg.lstsq(rows, dst.reshape(-1), rcond=None)
    np.testing.assert_allclose(got, _similarity_from_params(*params), atol=1e-8)


def _similarity_from_params(a: float, b: float, tx: float, ty: float) -> np.ndarray:
    return np.array([[a, -b, tx], [b, a, ty]])


def test_no_reflection_for_mirrored_template():
    mirrored = TEMPLATE.copy()
    mirrored[:, 0] = 112.0 - mirrored[:, 0]  # horizontal flip: left/right swapped in space
    m = similarity_transform(mirrored, TEMPLATE)
    assert np.linalg.det(m[:, :2]) > 0
    assert m[0, 0] == pytest.approx(m[1, 1])
    assert m[0, 1] == pytest.approx(-m[1, 0])


@pytest.mark.parametrize("seed", range(20))
def test_no_reflection_for_reflected_random_points(seed):
    rng = np.random.default_rng(seed)
    src = rng.uniform(-50, 50, size=(6, 2))
    reflect = _similarity(rng.uniform(0.5, 2), rng.uniform(-math.pi, math.pi), 3.0, -7.0)
    reflect[:, :2] = reflect[:, :2] @ np.diag([-1.0, 1.0])
    dst = _apply(reflect, src)
    m = similarity_transform(src, dst)
    assert np.linalg.det(m[:, :2]) > 0
    # still the best non-reflecting fit: no small similarity perturbation improves it
    base = _sq_error(m, src, dst)
    a, b, tx, ty = m[0, 0], m[1, 0], m[0, 2], m[1, 2]
    for d in np.vstack([np.eye(4), -np.eye(4)]) * 1e-4:
        pert = _similarity_from_params(a + d[0], b + d[1], tx + d[2], ty + d[3])
        assert _sq_error(pert, src, dst) >= base - 1e-9


def test_similarity_transform_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        similarity_transform(np.zeros((5, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="does not match"):
        similarity_transform(TEMPLATE, TEMPLATE[:4])
    with pytest.raises(ValueError, match="at least 2"):
        similarity_transform(TEMPLATE[:1], TEMPLATE[:1])
    with pytest.raises(ValueError, match="coincident"):
        similarity_transform(np.ones((5, 2)), TEMPLATE)
    with pytest.raises(ValueError, match="finite"):
        bad = TEMPLATE.copy()
        bad[0, 0] = np.nan
        similarity_transform(bad, TEMPLATE)


# --------------------------------------------------------------------------------------------
# align_face
# --------------------------------------------------------------------------------------------


def _synthetic_face(s=2.0, theta_deg=30.0, tx=150.0, ty=60.0, radius=7.0):
    """Discs at the template points mapped by a known similarity; returns (image, landmarks)."""
    m = _similarity(s, math.radians(theta_deg), tx, ty)
    landmarks = _apply(m, TEMPLATE)
    img = _draw_discs((400, 400), landmarks, radius)
    return img, landmarks


def test_align_face_discs_land_on_template():
    img, landmarks = _synthetic_face()
    out = align_face(img, landmarks)
    assert out.shape == (112, 112, 3)
    assert out.dtype == np.uint8
    np.testing.assert_allclose(_colour_centroids(out), TEMPLATE, atol=1.5)
    # the pixel nearest each template point carries that disc's colour
    for (x, y), colour in zip(TEMPLATE, COLOURS, strict=True):
        np.testing.assert_array_equal(out[round(y), round(x)], colour)


@pytest.mark.parametrize(
    ("s", "theta", "tx", "ty"), [(0.8, -75.0, 60.0, 120.0), (3.0, 170.0, 330.0, 250.0)]
)
def test_align_face_other_poses(s, theta, tx, ty):
    img, landmarks = _synthetic_face(s, theta, tx, ty, radius=3.0 * s)
    out = align_face(img, landmarks)
    np.testing.assert_allclose(_colour_centroids(out), TEMPLATE, atol=1.5)


def test_align_face_size_224_scales_template():
    img, landmarks = _synthetic_face()
    out = align_face(img, landmarks, size=224)
    assert out.shape == (224, 224, 3)
    np.testing.assert_allclose(_colour_centroids(out), TEMPLATE * 2.0, atol=2.0)


def test_align_face_identity_when_landmarks_match_template():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(112, 112, 3), dtype=np.uint8)
    out = align_face(img, TEMPLATE)
    np.testing.assert_array_equal(out, img)


def test_align_face_outside_is_black():
    # a tiny face near the bottom-right corner: chip pixel (x, y) samples the image at
    # (x / 10 + 40, y / 10 + 40), so the chip's far corner (51.1, 51.1) lies outside
    img = np.full((50, 50, 3), 200, dtype=np.uint8)
    landmarks = TEMPLATE * 0.1 + 40.0
    out = align_face(img, landmarks)
    assert (out[-1, -1] == 0).all()
    assert (out[0, 0] == 200).all()


def test_align_face_bad_inputs():
    img = np.zeros((50, 50, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="landmarks"):
        align_face(img, TEMPLATE[:4])
    with pytest.raises(ValueError, match="size"):
        align_face(img, TEMPLATE, size=0)
    with pytest.raises(ValueError, match="HxWx3"):
        align_face(np.zeros((50, 50), dtype=np.uint8), TEMPLATE)


# --------------------------------------------------------------------------------------------
# margin_crop
# --------------------------------------------------------------------------------------------


def _gradient_image(h=300, w=300) -> np.ndarray:
    """R = column index, G = row index (both < 256), B = 7."""
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[..., 0] = np.arange(w, dtype=np.uint8)[None, :]
    img[..., 1] = np.arange(h, dtype=np.uint8)[:, None]
    img[..., 2] = 7
    return img


def test_margin_crop_zero_margin_exact_rectangle():
    img = np.zeros((200, 220, 3), dtype=np.uint8)
    img[50:150, 40:140] = (10, 200, 30)
    out = margin_crop(img, (40, 50, 140, 150), size=160, margin=0)
    assert out.shape == (160, 160, 3)
    assert out.dtype == np.uint8
    assert (out == np.array([10, 200, 30], dtype=np.uint8)).all()


def test_margin_crop_grown_box_equals_output_size_is_identity():
    # box 128 wide, size 160, margin 32 -> grown by 32 * 128 / 128 = 32 px (16 per side)
    img = _gradient_image()
    out = margin_crop(img, (50, 60, 178, 188), size=160, margin=32)
    np.testing.assert_array_equal(out, img[44:204, 34:194])


def test_margin_crop_formula_width_100():
    # box 100x100, size 160, margin 32 -> grown by 32 * 100 / 128 = 25 px (12.5 per side):
    # (50, 50, 150, 150) -> (37.5, 37.5, 162.5, 162.5) -> int -> (37, 37, 162, 162)
    img = _gradient_image()
    out = margin_crop(img, (50, 50, 150, 150), size=160, margin=32)
    expected = cv2.resize(img[37:162, 37:162], (160, 160), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(out, expected)
    # the sampled region is columns/rows 37..161: check it through the gradient itself
    assert out[:, 0, 0].min() >= 37 and out[:, 0, 0].max() <= 38
    assert out[:, -1, 0].min() >= 161 and out[:, -1, 0].max() <= 162
    assert out[0, :, 1].min() >= 37 and out[0, :, 1].max() <= 38
    assert out[-1, :, 1].min() >= 161 and out[-1, :, 1].max() <= 162
    assert out[..., 0].mean() == pytest.approx((37 + 161) / 2, abs=0.5)


def test_margin_crop_non_square_box_grows_each_axis_separately():
    # box 64 wide x 128 high, size 160, margin 32: grow x by 16 (8/side), y by 32 (16/side)
    img = _gradient_image()
    out = margin_crop(img, (100, 80, 164, 208), size=160, margin=32)
    expected = cv2.resize(img[64:224, 92:172], (160, 160), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(out, expected)


def test_margin_crop_clips_at_border():
    img = _gradient_image()
    # top-left: (0, 0, 100, 100) grown by 12.5 -> (-12.5, -12.5, 112.5, 112.5) -> (0, 0, 112, 112)
    out = margin_crop(img, (0, 0, 100, 100), size=160, margin=32)
    expected = cv2.resize(img[0:112, 0:112], (160, 160), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(out, expected)
    # bottom-right past the edge: (250, 260, 350, 360) -> (237, 247, 300, 300)
    out = margin_crop(img, (250, 260, 350, 360), size=160, margin=32)
    expected = cv2.resize(img[247:300, 237:300], (160, 160), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(out, expected)


def test_margin_crop_truncates_float_box():
    img = _gradient_image()
    out = margin_crop(img, (10.9, 20.7, 90.2, 99.99), size=79, margin=0)
    expected = cv2.resize(img[20:99, 10:90], (79, 79), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(out, expected)


def test_margin_crop_errors():
    img = _gradient_image()
    with pytest.raises(ValueError, match="margin"):
        margin_crop(img, (10, 10, 50, 50), size=160, margin=160)
    with pytest.raises(ValueError, match="margin"):
        margin_crop(img, (10, 10, 50, 50), size=160, margin=200)
    with pytest.raises(ValueError, match="size"):
        margin_crop(img, (10, 10, 50, 50), size=0)
    with pytest.raises(ValueError, match="empty"):
        margin_crop(img, (400, 400, 450, 450))  # entirely outside the image
    with pytest.raises(ValueError, match="empty"):
        margin_crop(img, (30, 30, 30, 80))  # zero width
    with pytest.raises(ValueError, match="empty"):
        margin_crop(img, (-50, -50, -10, -10))  # entirely above-left


# --------------------------------------------------------------------------------------------
# crop_faces
# --------------------------------------------------------------------------------------------


def _two_faces() -> tuple[np.ndarray, list[Face]]:
    img, lm1 = _synthetic_face(s=1.0, theta_deg=0.0, tx=20.0, ty=20.0, radius=3.0)
    m2 = _similarity(1.5, math.radians(-20), 200.0, 180.0)
    lm2 = _apply(m2, TEMPLATE)
    img = np.maximum(img, _draw_discs(img.shape[:2], lm2, 4.5))
    faces = [
        Face(box=(20.0, 20.0, 132.0, 132.0), score=0.99, landmarks=tuple(map(tuple, lm1))),
        Face(box=(190.0, 170.0, 380.0, 390.0), score=0.9, landmarks=tuple(map(tuple, lm2))),
    ]
    return img, faces


def test_crop_faces_align_default_size():
    img, faces = _two_faces()
    chips = crop_faces(img, faces)
    assert len(chips) == 2
    for chip in chips:
        assert chip.shape == (112, 112, 3)
        assert chip.dtype == np.uint8
        np.testing.assert_allclose(_colour_centroids(chip), TEMPLATE, atol=1.5)


def test_crop_faces_margin_default_and_custom_size():
    img, faces = _two_faces()
    chips = crop_faces(img, faces, mode="margin", margin=20)
    assert [c.shape for c in chips] == [(160, 160, 3), (160, 160, 3)]
    np.testing.assert_array_equal(chips[0], margin_crop(img, faces[0].box, 160, 20))
    chips = crop_faces(img, faces, mode="margin", size=96)
    assert [c.shape for c in chips] == [(96, 96, 3), (96, 96, 3)]
    chips = crop_faces(img, faces, mode="align", size=224)
    assert [c.shape for c in chips] == [(224, 224, 3), (224, 224, 3)]


def test_crop_faces_empty_list():
    assert crop_faces(np.zeros((10, 10, 3), dtype=np.uint8), []) == []


def test_crop_faces_bad_mode():
    img, faces = _two_faces()
    with pytest.raises(ValueError, match="align") as exc:
        crop_faces(img, faces, mode="warp")
    assert "margin" in str(exc.value)
