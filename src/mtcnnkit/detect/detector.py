"""`Detector`: the public face of the cascade (inputs in, typed `Face` results out)."""

from __future__ import annotations

import dataclasses
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
from .cpu_runtime import for_cpu
from .face import Face

ImageInput = str | os.PathLike | np.ndarray | Image.Image
BACKENDS = ("torch", "onnxruntime", "openvino", "ncnn")
MAX_BATCH_PIXELS = 40_000_000  # pixels of all images in one cascade call
GPU_CROP_BATCH = 2048  # RNet/ONet crops per call on a GPU


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
    on CUDA, calls run with TF32 off (restored afterwards), so that a face's result does not
    depend on the other images of its batch;
    ``batch_size`` is how many images go through the cascade together (fewer when their
    pixels exceed ``MAX_BATCH_PIXELS``, which bounds memory on big photos).
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
        try:
            self.device = torch.device(device)
        except RuntimeError as e:
            raise ValueError(f"invalid device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'"
                             ) from e
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' requested but CUDA is not available")
        self.nets = self._load_nets(weights, backend, num_threads)
        batches = {} if self.device.type == "cpu" else {"rnet_batch": GPU_CROP_BATCH,
                                                         "onet_batch": GPU_CROP_BATCH}
        self.config = CascadeConfig(min_face_size=float(min_face_size),
                                    thresholds=tuple(float(t) for t in thresholds),
                                    scale_factor=float(scale_factor), **batches)
        self.backend = backend
        self.max_side = max_side
        self.num_threads = num_threads
        self.batch_size = batch_size

    def _load_nets(self, weights, backend: str, num_threads: int | None):
        """The three nets as callables: torch modules laid out for the device, or an
        exported runtime (exporting ``weights`` once into the cache when needed)."""
        if backend == "torch":
            nets = weights if isinstance(weights, CascadeNets) else load_weights(weights)
            return _for_device(nets, self.device)
        if self.device.type != "cpu":
            raise ValueError(f"backend {backend!r} runs on the CPU; use backend='torch' on "
                             f"{self.device.type}")
        from ..deploy.runtimes import runners_for

        return runners_for(backend, weights, num_threads)

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

    def detect_tensors(self, images: Sequence[ImageInput], times: StageTimes | None = None,
                       last_stage: str = "onet") -> list[Detections]:
        """Like `detect`, but per image a `Detections` of CPU tensors (boxes, scores,
        landmarks) — cheaper for evaluation and export code. ``last_stage="pnet"|"rnet"``
        returns that stage's candidates instead (hard-example mining)."""
        out: list[Detections] = []
        batch: list[tuple[np.ndarray, float]] = []
        with self._threads(), _without_tf32(self.device), torch.inference_mode():
            for image in images:
                arr, factor = self._shrink(load_image(image))
                pixels = sum(a.shape[0] * a.shape[1] for a, _ in batch)
                if batch and (len(batch) == self.batch_size
                              or pixels + arr.shape[0] * arr.shape[1] > MAX_BATCH_PIXELS):
                    out += self._detect_arrays(batch, times, last_stage)
                    batch = []
                batch.append((arr, factor))
            if batch:
                out += self._detect_arrays(batch, times, last_stage)
        return out

    def _detect_arrays(self, batch: list[tuple[np.ndarray, float]], times: StageTimes | None,
                       last_stage: str = "onet") -> list[Detections]:
        # torch wants writable memory; the cascade only reads, so copy read-only arrays only
        tensors = [torch.from_numpy(arr if arr.flags.writeable else arr.copy()).to(self.device)
                   for arr, _ in batch]
        factors = [factor for _, factor in batch]
        found = run_cascade(self.nets.pnet, self.nets.rnet, self.nets.onet, tensors,
                            self.config, times, last_stage)
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


@contextmanager
def _without_tf32(device: torch.device) -> Iterator[None]:
    """float32 convolutions and matrix products in full precision on CUDA during a call.

    With TF32 (torch's default for cuDNN convolutions) PNet's scores move by ~1e-3 with the
    algorithm cuDNN picks for a batch's shape, so a face's box changed with the other images
    of its batch (by 1.6 px on the dlib photos, H100); without it, by 3e-5 px, at no
    measurable cost for these small nets. The previous settings are restored afterwards.
    """
    if device.type != "cuda":
        yield
        return
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul


def _for_device(nets: CascadeNets, device: torch.device) -> CascadeNets:
    """The nets laid out for fast inference on ``device`` (same weights and outputs)."""
    if device.type == "cpu":
        return dataclasses.replace(nets, pnet=for_cpu(nets.pnet), rnet=for_cpu(nets.rnet),
                                   onet=for_cpu(nets.onet))
    for net in (nets.pnet, nets.rnet, nets.onet):
        net.to(device=device, memory_format=torch.channels_last)
    return nets


def _scaled(det: Detections, factor: float) -> Detections:
    det = Detections(det.boxes.float().cpu(), det.scores.float().cpu(), det.landmarks.float().cpu())
    if factor != 1.0:
        det.boxes /= factor
        det.landmarks /= factor
    return det


def _to_face(box: list[float], score: float, points: list[list[float]]) -> Face:
    return Face(box=tuple(box), score=score, landmarks=tuple(tuple(p) for p in points))
