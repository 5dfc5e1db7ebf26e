"""Augmentation of packed samples (uint8 NHWC crops + targets): mirror, colour jitter,
downscaling, random erasing.

Used twice: by :mod:`mtcnnkit.data.samples` when it writes landmark samples, and by the
trainer on every training batch (:class:`BatchAugment`), so one flip convention serves both:

* box targets are offsets of the face corners as fractions of the crop size,
  ``(dx1, dy1, dx2, dy2)``; mirroring the crop maps them to ``(-dx2, dy1, -dx1, dy2)``;
* landmarks are ``(x1..x5, y1..y5)`` as fractions of the crop; mirroring maps ``x -> 1 - x``
  and swaps the left/right eyes and mouth corners, so point 0 stays the eye on the image's
  left (the order of the CNN_FacePoint lists and of the detector's output).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from .shards import LANDMARK, Samples

FLIP_ORDER = np.array([1, 0, 2, 4, 3])  # left/right eye and mouth corner swap


def mirror_box_targets(targets: np.ndarray) -> np.ndarray:
    """Box targets ``(N, 4)`` of horizontally mirrored crops."""
    t = np.asarray(targets)
    return np.stack([-t[:, 2], t[:, 1], -t[:, 0], t[:, 3]], axis=1).astype(t.dtype)


def mirror_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """Landmark targets ``(N, 10)`` (five x, then five y) of horizontally mirrored crops."""
    lm = np.asarray(landmarks)
    xs, ys = 1 - lm[:, :5][:, FLIP_ORDER], lm[:, 5:][:, FLIP_ORDER]
    return np.concatenate([xs, ys], axis=1).astype(lm.dtype)


def adjust_colour(crops: np.ndarray, brightness: np.ndarray, contrast: np.ndarray) -> np.ndarray:
    """Brightness ``x * b`` then contrast ``(x - mean) * c + mean`` (mean of the crop),
    rounded and clipped; crops whose factors are both 1 are returned unchanged."""
    out = crops.copy()
    todo = (brightness != 1) | (contrast != 1)
    if todo.any():
        x = crops[todo].astype(np.float32) * brightness[todo, None, None, None].astype(np.float32)
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        x = (x - mean) * contrast[todo, None, None, None].astype(np.float32) + mean
        out[todo] = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return out


def downscale(crops: np.ndarray, sides: np.ndarray) -> np.ndarray:
    """Each ``(N, S, S, 3)`` crop shrunk to ``sides[i]`` pixels (area averaging) and
    enlarged back to ``S`` (bilinear): the detail a face of that size would show once the
    cascade enlarges its crop. Crops whose side is ``S`` or more are returned unchanged."""
    out = crops.copy()
    size = crops.shape[1]
    for i in np.flatnonzero(np.asarray(sides) < size):
        small = cv2.resize(crops[i], (int(sides[i]), int(sides[i])), interpolation=cv2.INTER_AREA)
        out[i] = cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)
    return out


def erase(crops: np.ndarray, rects: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Each ``(N, S, S, 3)`` crop with its rectangle ``rects[i] = (x, y, w, h)`` (pixels;
    ``w`` or ``h`` 0: none) replaced by the same pixels of ``noise[i]``: an occluder the net
    cannot read a face through (random erasing, Zhong et al. 2017)."""
    out = crops.copy()
    for i, (x, y, w, h) in enumerate(np.asarray(rects, dtype=int)):
        if w > 0 and h > 0:
            out[i, y:y + h, x:x + w] = noise[i, y:y + h, x:x + w]
    return out


def erase_rects(rng: np.random.Generator, n: int, size: int, area: tuple[float, float]
                ) -> np.ndarray:
    """``n`` rectangles ``(x, y, w, h)`` inside a ``size``-pixel square crop, each covering a
    share of its area drawn from ``area`` with an aspect ratio (w / h) from 1/3 to 3
    (log-uniform); always at least one pixel, at most the whole crop."""
    share = rng.uniform(area[0], area[1], n)
    aspect = np.exp(rng.uniform(np.log(1 / 3), np.log(3), n))
    w = np.clip(np.rint(size * np.sqrt(share * aspect)), 1, size).astype(int)
    h = np.clip(np.rint(size * np.sqrt(share / aspect)), 1, size).astype(int)
    x = np.floor(rng.random(n) * (size - w + 1)).astype(int)
    y = np.floor(rng.random(n) * (size - h + 1)).astype(int)
    return np.stack([x, y, w, h], axis=1)


def mirror(samples: Samples, flips: np.ndarray) -> Samples:
    """``samples`` with the crops selected by the boolean mask ``flips`` mirrored, their box
    targets and (landmark samples only) landmarks with them. Negatives carry zero box
    targets, which mirror to zeros."""
    flips = np.asarray(flips, dtype=bool)
    if not flips.any():
        return samples
    images, boxes, landmarks = samples.images.copy(), samples.boxes.copy(), samples.landmarks.copy()
    images[flips] = images[flips][:, :, ::-1]
    boxes[flips] = mirror_box_targets(boxes[flips])
    lm = flips & (samples.labels == LANDMARK)
    landmarks[lm] = mirror_landmarks(landmarks[lm])
    return dataclasses.replace(samples, images=images, boxes=boxes, landmarks=landmarks)


@dataclass(frozen=True)
class BatchAugment:
    """Random augmentation of training batches: horizontal flip with probability ``flip_p``;
    colour jitter with probability ``jitter_p`` (brightness and contrast factors drawn from
    ``1 +- brightness`` / ``1 +- contrast``; ``jitter_landmarks=False`` leaves the landmark
    samples' colours alone, their draws still made); with probability ``downscale_p`` the crop is
    shrunk to a side drawn from ``downscale_min`` to 1 times its own and enlarged back
    (`downscale`: small and blurred faces); ``downscale_landmarks=False`` keeps the landmark
    samples sharp (their draws are still made, so the other crops shrink as with it on);
    with probability ``erase_p`` a rectangle of ``erase_min`` to ``erase_max`` of the crop's
    area is filled with uniform noise (`erase`: occluded faces; negatives too, so an erased
    patch says nothing about the label), ``erase_landmarks=False`` sparing the landmark
    samples likewise.
    Draws depend only on ``key`` (e.g. seed, epoch, batch number), so a resumed run sees the
    same batches; the draws of the options off by default come last, so they leave the other
    draws unchanged."""

    flip_p: float = 0.5
    jitter_p: float = 0.0
    brightness: float = 0.2
    contrast: float = 0.2
    jitter_landmarks: bool = True
    downscale_p: float = 0.0
    downscale_min: float = 0.3
    downscale_landmarks: bool = True
    erase_p: float = 0.0
    erase_min: float = 0.05
    erase_max: float = 0.35
    erase_landmarks: bool = True

    def __post_init__(self) -> None:
        for name in ("flip_p", "jitter_p", "downscale_p", "erase_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("brightness", "contrast"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 < self.downscale_min <= 1.0:
            raise ValueError(f"downscale_min must be in (0, 1], got {self.downscale_min}")
        if not 0.0 < self.erase_min <= self.erase_max <= 1.0:
            raise ValueError("erase_min and erase_max must satisfy 0 < erase_min <= erase_max"
                             f" <= 1, got {self.erase_min} and {self.erase_max}")

    @property
    def active(self) -> bool:
        return self.flip_p > 0 or self.jitter_p > 0 or self.downscale_p > 0 or self.erase_p > 0

    def __call__(self, samples: Samples, key: tuple[int, ...]) -> Samples:
        n = len(samples.labels)
        rng = np.random.default_rng(list(key))
        flips = rng.random(n) < self.flip_p
        jitter = rng.random(n) < self.jitter_p
        if not self.jitter_landmarks:
            jitter &= samples.labels != LANDMARK
        bright = np.where(jitter, 1 + rng.uniform(-self.brightness, self.brightness, n), 1.0)
        contrast = np.where(jitter, 1 + rng.uniform(-self.contrast, self.contrast, n), 1.0)
        if jitter.any():
            samples = dataclasses.replace(
                samples, images=adjust_colour(samples.images, bright, contrast))
        if self.downscale_p > 0:
            size = samples.images.shape[1]
            shrink = rng.random(n) < self.downscale_p
            if not self.downscale_landmarks:
                shrink &= samples.labels != LANDMARK
            sides = np.rint(size * rng.uniform(self.downscale_min, 1.0, n)).astype(int)
            sides = np.where(shrink, np.maximum(sides, 1), size)
            if shrink.any():
                samples = dataclasses.replace(samples, images=downscale(samples.images, sides))
        if self.erase_p > 0:
            size = samples.images.shape[1]
            hit = rng.random(n) < self.erase_p
            if not self.erase_landmarks:
                hit &= samples.labels != LANDMARK
            rects = erase_rects(rng, n, size, (self.erase_min, self.erase_max)) * hit[:, None]
            noise = rng.integers(0, 256, samples.images.shape, dtype=np.uint8)
            if hit.any():
                samples = dataclasses.replace(samples, images=erase(samples.images, rects, noise))
        return mirror(samples, flips)
