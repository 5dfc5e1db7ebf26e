"""`Detector`: the public face of the cascade (inputs in, typed `Face` results out)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import cv2
import numpy as np
import torch
from PIL import Image

from ..imageio import load_image
from ..weights import CascadeNets, load_weights
from .cascade import CascadeConfig, Detections, StageTimes, run_cascade
from .face import Face

ImageInput = str | os.PathLike | np.ndarray | Image.Image
BACKENDS = ("torch",)


class Detector:
    """MTCNN face detector.

    >>> detector = Detector(weights="reference")          # doctest: +SKIP
    >>> faces = detector.detect("group.jpg")              # doctest: +SKIP
    >>> faces[0].box, faces[0].score, faces[0].landmarks  # doctest: +SKIP

    ``detect`` takes one image (path, RGB uint8 array, PIL image) and returns a list of
    faces, or a list/tuple of images (sizes may differ) and returns one list per image.
    Coordinates are original-image pixels.

    ``max_side`` downsizes larger images before detection (results are mapped back);
    ``num_threads`` sets torch's CPU threads during calls (restored afterwards);
    ``batch_size`` is how many images go through the cascade together.
    """

    def __init__(
        self,
        weights: str | os.PathLike | CascadeNets = "default",
        device: str | torch.device = "cpu",
        min_face_size: float = 20.0,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        scale_factor: float = 0.709,
        backend: str = "torch",
        max_side: int | None = None,
        num_threads: int | None = None,
        batch_size: int = 16,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
        if max_side is not None and max_side < 12:
            raise ValueError(f"max_side must be at least 12 pixels, got {max_side}")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be positive, got {num_threads}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' requested but CUDA is not available")
        self.config = CascadeConfig(min_face_size=float(min_face_size),
                                    thresholds=tuple(float(t) for t in thresholds),
                                    scale_factor=float(scale_factor))
        nets = weights if isinstance(weights, CascadeNets) else load_weights(weights)
        self.nets = nets.to(self.device)
        self._channels_last()
        self.backend = backend
        self.max_side = max_side
        self.num_threads = num_threads
        self.batch_size = batch_size

    def _channels_last(self) -> None:
        for net in (self.nets.pnet, self.nets.rnet, self.nets.onet):
            net.to(memory_format=torch.channels_last)

    def detect(self, images: ImageInput | Sequence[ImageInput]) -> list[Face] | list[list[Face]]:
        """Faces in one image (a list of `Face`) or in each of several (a list of lists)."""
        single = not isinstance(images, (list, tuple))
        batch = [images] if single else list(images)
        results = [
            [_to_face(box, score, points) for box, score, points in zip(
                d.boxes.tolist(), d.scores.tolist(), d.landmarks.tolist(), strict=True)]
            for d in self.detect_tensors(batch)
        ]
        return results[0] if single else results

    def detect_tensors(self, images: Sequence[ImageInput], times: StageTimes | None = None
                       ) -> list[Detections]:
        """Like `detect`, but per image a `Detections` of CPU tensors (boxes, scores,
        landmarks) — cheaper for evaluation and export code."""
        out: list[Detections] = []
        with self._threads(), torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                arrays = [load_image(im) for im in images[start:start + self.batch_size]]
                out += self._detect_arrays(arrays, times)
        return out

    def _detect_arrays(self, arrays: list[np.ndarray], times: StageTimes | None
                       ) -> list[Detections]:
        tensors, factors = [], []
        for arr in arrays:
            arr, factor = self._shrink(arr)
            tensors.append(torch.from_numpy(arr).to(self.device))
            factors.append(factor)
        found = run_cascade(self.nets.pnet, self.nets.rnet, self.nets.onet, tensors,
                            self.config, times)
        return [_scaled(det, factor) for det, factor in zip(found, factors, strict=True)]

    def _shrink(self, arr: np.ndarray) -> tuple[np.ndarray, float]:
        side = max(arr.shape[:2])
        if self.max_side is None or side <= self.max_side:
            return arr, 1.0
        factor = self.max_side / side
        size = (max(1, round(arr.shape[1] * factor)), max(1, round(arr.shape[0] * factor)))
        return cv2.resize(arr, size, interpolation=cv2.INTER_AREA), factor

    @contextmanager
    def _threads(self) -> Iterator[None]:
        if self.num_threads is None or self.device.type != "cpu":
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def _scaled(det: Detections, factor: float) -> Detections:
    det = Detections(det.boxes.float().cpu(), det.scores.float().cpu(), det.landmarks.float().cpu())
    if factor != 1.0:
        det.boxes /= factor
        det.landmarks /= factor
    return det


def _to_face(box: list[float], score: float, points: list[list[float]]) -> Face:
    return Face(box=tuple(box), score=score, landmarks=tuple(tuple(p) for p in points))
