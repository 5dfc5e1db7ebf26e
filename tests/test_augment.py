"""Mirror and colour augmentation of packed samples (mtcnnkit.data.augment)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mtcnnkit.data.augment import (
    BatchAugment,
    adjust_colour,
    downscale,
    erase,
    erase_rects,
    mirror,
    mirror_box_targets,
    mirror_landmarks,
)
from mtcnnkit.data.shards import LANDMARK, NEGATIVE, POSITIVE, Samples


def test_mirrored_targets_describe_the_mirrored_face() -> None:
    rng = np.random.default_rng(0)
    side = 40.0
    face = np.stack([rng.uniform(-5, 15, 50), rng.uniform(-5, 15, 50),
                     rng.uniform(25, 45, 50), rng.uniform(25, 45, 50)], 1)
    crop = np.array([0.0, 0.0, side, side])
    targets = (face - crop) / side  # corner offsets as fractions of the crop size
    mirrored_face = np.stack([side - face[:, 2], face[:, 1], side - face[:, 0], face[:, 3]], 1)
    np.testing.assert_allclose(crop + mirror_box_targets(targets) * side, mirrored_face,
                               atol=1e-12)
    np.testing.assert_array_equal(mirror_box_targets(mirror_box_targets(targets)), targets)


def test_mirrored_landmarks_swap_sides() -> None:
    # left eye, right eye, nose, left mouth corner, right mouth corner (image left = "left")
    xs = np.array([0.3, 0.7, 0.52, 0.35, 0.65])
    ys = np.array([0.35, 0.33, 0.55, 0.75, 0.76])
    out = mirror_landmarks(np.concatenate([xs, ys])[None])[0]
    # the mirrored right eye (x = 0.7 -> 0.3) is now the eye on the left, at its own height
    np.testing.assert_allclose(out[:5], [0.3, 0.7, 0.48, 0.35, 0.65])
    np.testing.assert_allclose(out[5:], [0.33, 0.35, 0.55, 0.76, 0.75])
    assert out[0] < out[1] and out[3] < out[4]
    np.testing.assert_allclose(mirror_landmarks(out[None])[0], np.concatenate([xs, ys]))


def _samples(n: int, size: int = 12, seed: int = 0) -> Samples:
    rng = np.random.default_rng(seed)
    labels = np.array([POSITIVE, NEGATIVE, LANDMARK] * n, np.int8)[:n]
    boxes = np.where(labels[:, None] == NEGATIVE, 0,
                     rng.uniform(-0.2, 0.2, (n, 4))).astype(np.float32)
    landmarks = np.where(labels[:, None] == LANDMARK,
                         rng.uniform(0.1, 0.9, (n, 10)), 0).astype(np.float32)
    return Samples(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), labels, boxes,
                   landmarks, np.zeros((n, 4), np.float32))


def test_mirror_selected_samples_only() -> None:
    s = _samples(9)
    flips = np.array([1, 1, 1, 0, 0, 0, 1, 0, 1], bool)
    out = mirror(s, flips)
    np.testing.assert_array_equal(out.images[flips], s.images[flips][:, :, ::-1])
    np.testing.assert_array_equal(out.images[~flips], s.images[~flips])
    np.testing.assert_array_equal(out.boxes[flips], mirror_box_targets(s.boxes[flips]))
    np.testing.assert_array_equal(out.boxes[~flips], s.boxes[~flips])
    lm = flips & (s.labels == LANDMARK)
    np.testing.assert_array_equal(out.landmarks[lm], mirror_landmarks(s.landmarks[lm]))
    np.testing.assert_array_equal(out.landmarks[~lm], s.landmarks[~lm])  # zeros stay zeros
    np.testing.assert_array_equal(out.labels, s.labels)
    assert not (out.boxes[s.labels == NEGATIVE]).any()


def test_colour_adjustment() -> None:
    crops = np.full((3, 4, 4, 3), 100, np.uint8)
    crops[:, 0] = 50
    out = adjust_colour(crops, np.array([1.0, 1.2, 3.0]), np.array([1.0, 1.0, 1.0]))
    np.testing.assert_array_equal(out[0], crops[0])
    np.testing.assert_array_equal(out[1], np.rint(crops[1] * 1.2).astype(np.uint8))
    assert out[2].max() == 255  # clipped
    flat = adjust_colour(crops[:1], np.array([1.0]), np.array([0.0]))
    assert np.ptp(flat) == 0  # contrast 0: every pixel at the crop mean


def test_batch_augment_depends_on_key_only() -> None:
    s = _samples(400)
    aug = BatchAugment(flip_p=0.5, jitter_p=0.5)
    a, b, c = aug(s, (0, 1, 2)), aug(s, (0, 1, 2)), aug(s, (0, 1, 3))
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    flipped = (a.boxes != s.boxes).any(1)
    assert 0.35 < flipped[s.labels != NEGATIVE].mean() < 0.65
    assert not BatchAugment(flip_p=0.0).active
    same = BatchAugment(flip_p=0.0)(s, (1,))
    np.testing.assert_array_equal(same.images, s.images)


def test_downscale_keeps_shape_and_coarse_content_and_drops_detail() -> None:
    size = 48
    yy, xx = np.mgrid[:size, :size]
    checker = np.where((yy + xx) % 2 == 0, 200, 40).astype(np.uint8)  # 1-pixel detail
    ramp = np.repeat((xx * 5).astype(np.uint8)[..., None], 3, 2)  # coarse: a left-right ramp
    crops = np.stack([np.repeat(checker[..., None], 3, 2), ramp, ramp])
    out = downscale(crops, np.array([12, 12, size]))
    assert out.shape == crops.shape and out.dtype == np.uint8
    # the 1-pixel checkerboard averages out to its mean grey at 12 px
    assert abs(float(out[0].mean()) - 120) < 3 and np.ptp(out[0]) < 20
    # a ramp survives: still rising left to right, close to the original
    assert np.abs(out[1].astype(int) - ramp).mean() < 4
    assert (np.diff(out[1][:, :, 0].mean(0)) > 0).mean() > 0.8
    np.testing.assert_array_equal(out[2], crops[2])  # side = size: untouched
    np.testing.assert_array_equal(crops[1], ramp)  # the input is not modified


def test_batch_downscale_changes_pixels_only_and_keeps_the_other_draws() -> None:
    s = _samples(300, size=24)
    plain = BatchAugment(flip_p=0.5, jitter_p=0.5)(s, (4, 2))
    shrunk = BatchAugment(flip_p=0.5, jitter_p=0.5, downscale_p=0.5, downscale_min=0.25)(s, (4, 2))
    # flips and targets are drawn as before; only some crops' pixels change
    np.testing.assert_array_equal(shrunk.boxes, plain.boxes)
    np.testing.assert_array_equal(shrunk.landmarks, plain.landmarks)
    np.testing.assert_array_equal(shrunk.labels, plain.labels)
    changed = (shrunk.images != plain.images).reshape(len(s.labels), -1).any(1)
    assert 0.3 < changed.mean() < 0.6  # about half (a few draw a side of 24 and stay)
    # random noise loses contrast when shrunk
    assert shrunk.images[changed].std() < plain.images[changed].std() * 0.8
    assert BatchAugment(flip_p=0.0, downscale_p=0.2).active


def test_downscale_can_spare_the_landmark_samples() -> None:
    s = _samples(300, size=24)
    every = BatchAugment(flip_p=0.0, downscale_p=0.5, downscale_min=0.25)(s, (3,))
    spared = BatchAugment(flip_p=0.0, downscale_p=0.5, downscale_min=0.25,
                          downscale_landmarks=False)(s, (3,))
    is_lm = s.labels == LANDMARK
    changed = (spared.images != s.images).reshape(len(s.labels), -1).any(1)
    assert not changed[is_lm].any()  # the landmark crops stay sharp
    assert (every.images[is_lm] != s.images[is_lm]).reshape(is_lm.sum(), -1).any(1).mean() > 0.3
    # the other samples are shrunk exactly as before
    np.testing.assert_array_equal(spared.images[~is_lm], every.images[~is_lm])
    assert changed[~is_lm].mean() > 0.3


def test_erase_replaces_exactly_the_rectangle() -> None:
    crops = np.zeros((3, 10, 10, 3), np.uint8)
    noise = np.full_like(crops, 255)
    rects = np.array([[2, 3, 4, 5], [0, 0, 10, 10], [7, 1, 0, 3]])  # last: w = 0, none
    out = erase(crops, rects, noise)
    expected = np.zeros_like(crops)
    expected[0, 3:8, 2:6] = 255  # rows y .. y + h, columns x .. x + w
    expected[1] = 255
    np.testing.assert_array_equal(out, expected)
    assert not crops.any()  # the input is not modified


def test_erase_rects_lie_inside_the_crop_and_cover_the_asked_share() -> None:
    size, n = 48, 4000
    rects = erase_rects(np.random.default_rng(0), n, size, (0.05, 0.35))
    x, y, w, h = rects.T
    assert (x >= 0).all() and (y >= 0).all() and (w >= 1).all() and (h >= 1).all()
    assert (x + w <= size).all() and (y + h <= size).all()
    share = w * h / size**2
    # rounding to pixels, and clipping of the long thin ones at the border, bend the bounds
    assert np.quantile(share, 0.02) > 0.04 and np.quantile(share, 0.98) < 0.38
    assert abs(share.mean() - 0.2) < 0.02
    aspect = w / h
    assert aspect.min() > 0.3 and aspect.max() < 3.5 and 0.9 < np.median(aspect) < 1.1
    # positions spread over the crop: rectangles touch the left and the right border
    assert (x == 0).mean() > 0.02 and (x + w == size).mean() > 0.02


def test_batch_erase_changes_pixels_only_and_keeps_the_other_draws() -> None:
    s = _samples(300, size=24)
    s = dataclasses.replace(s, images=np.full_like(s.images, 128))
    plain = BatchAugment(flip_p=0.5, jitter_p=0.5, downscale_p=0.5)(s, (4, 2))
    erased = BatchAugment(flip_p=0.5, jitter_p=0.5, downscale_p=0.5, erase_p=0.4)(s, (4, 2))
    np.testing.assert_array_equal(erased.boxes, plain.boxes)
    np.testing.assert_array_equal(erased.landmarks, plain.landmarks)
    np.testing.assert_array_equal(erased.labels, plain.labels)
    noisy = (erased.images != plain.images).any(-1)  # (N, S, S): the erased pixels (flat crops)
    hit = noisy.reshape(len(s.labels), -1).any(1)
    assert 0.3 < hit.mean() < 0.5
    # every class is erased alike, negatives too (an erased patch must not mean "face")
    for label in (POSITIVE, NEGATIVE, LANDMARK):
        assert 0.25 < hit[s.labels == label].mean() < 0.55
    share = noisy[hit].reshape(hit.sum(), -1).mean(1)
    assert share.min() > 0.03 and share.max() < 0.4
    assert BatchAugment(flip_p=0.0, erase_p=0.2).active


@pytest.mark.parametrize("option, spare", [("erase_p", "erase_landmarks"),
                                           ("jitter_p", "jitter_landmarks")])
def test_option_can_spare_the_landmark_samples(option: str, spare: str) -> None:
    s = _samples(300, size=24)
    every = BatchAugment(flip_p=0.0, **{option: 0.5})(s, (3,))
    spared = BatchAugment(flip_p=0.0, **{option: 0.5, spare: False})(s, (3,))
    is_lm = s.labels == LANDMARK
    np.testing.assert_array_equal(spared.images[is_lm], s.images[is_lm])
    assert (every.images[is_lm] != s.images[is_lm]).reshape(is_lm.sum(), -1).any(1).mean() > 0.3
    # the other crops get the very same draws as with the landmark samples included
    np.testing.assert_array_equal(spared.images[~is_lm], every.images[~is_lm])


@pytest.mark.parametrize("kwargs", [{"flip_p": 1.5}, {"jitter_p": -0.1}, {"brightness": 1.0},
                                    {"downscale_p": 1.2}, {"downscale_min": 0.0},
                                    {"downscale_min": 1.5}, {"erase_p": 1.5},
                                    {"erase_min": 0.0}, {"erase_min": 0.5, "erase_max": 0.4},
                                    {"erase_max": 1.5}])
def test_bad_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        BatchAugment(**kwargs)
