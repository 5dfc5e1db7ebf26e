"""The MTCNN cascade on tensors: pyramid -> PNet -> NMS -> RNet -> ONet -> NMS.

Everything here is batched: all images of a call share one integral-image buffer, every
crop of every image is cut by one gather, and NMS runs once per step over all images
(group ids keep images and scales apart). Same-size images share PNet calls; huge pyramid
levels and long candidate lists are processed in bounded chunks.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..nets import face_probability
from . import boxes as B
from .pyramid import level_size, pyramid_scales
from .sampling import IntegralImages, sample_levels, sample_regions

PNET_STRIDE, PNET_CELL = 2, 12


@dataclass(frozen=True)
class CascadeConfig:
    """Every knob of the cascade. Defaults are the original MTCNN settings."""

    min_face_size: float = 20.0
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    scale_factor: float = 0.709
    nms_per_scale: float = 0.5
    nms_across_scales: float = 0.7
    nms_rnet: float = 0.7
    nms_onet: float = 0.7  # "min" overlap
    crop_batch: int = 2048  # RNet/ONet crops resampled at a time (bounds memory)
    rnet_batch: int = 128  # crops per RNet call (bounds activation memory: ~7 MB on CPU)
    onet_batch: int = 32  # crops per ONet call (~9 MB)
    pnet_tile_pixels: int = 4_000_000  # pyramid level pixels per PNet call (bounds memory)

    def __post_init__(self) -> None:
        if len(self.thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in self.thresholds):
            raise ValueError(f"thresholds must be three probabilities, got {self.thresholds}")
        if self.min_face_size <= 0:
            raise ValueError(f"min_face_size must be positive, got {self.min_face_size}")
        if not 0.0 < self.scale_factor < 1.0:
            raise ValueError(f"scale_factor must be in (0, 1), got {self.scale_factor}")
        if min(self.crop_batch, self.rnet_batch, self.onet_batch, self.pnet_tile_pixels) < 1:
            raise ValueError("crop_batch, rnet_batch, onet_batch and pnet_tile_pixels must be "
                             "positive")


@dataclass
class Detections:
    """Faces of one image as arrays: boxes (N, 4), scores (N,), landmarks (N, 5, 2)."""

    boxes: Tensor
    scores: Tensor
    landmarks: Tensor


@dataclass
class StageTimes:
    """Wall-clock seconds spent per stage, and candidate counts. With ``synchronize`` (the
    default when a caller asks for times) CUDA work is awaited at each stage boundary so the
    times are true; the cascade's own bookkeeping instance never synchronises."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    synchronize: bool = True

    def add(self, stage: str, since: float, device: torch.device) -> float:
        if self.synchronize and device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        self.seconds[stage] += now - since
        return now


@dataclass
class _Candidates:
    boxes: Tensor  # (N, 4)
    scores: Tensor  # (N,)
    image: Tensor  # (N,) index of the image each candidate belongs to

    def select(self, index: Tensor) -> _Candidates:
        return _Candidates(self.boxes[index], self.scores[index], self.image[index])


Net = Callable[[Tensor], tuple[Tensor, ...]]


def run_cascade(
    pnet: Net, rnet: Net, onet: Net, images: list[Tensor], config: CascadeConfig,
    times: StageTimes | None = None, last_stage: str = "onet",
) -> list[Detections]:
    """Detect faces in HxWx3 uint8 RGB tensors (all on one device, sizes may differ).

    ``last_stage="pnet"`` or ``"rnet"`` stops after that stage (its NMS, calibration and
    squaring), as hard-example mining for the next stage needs; landmarks are then zeros.
    """
    if last_stage not in ("pnet", "rnet", "onet"):
        raise ValueError(f"last_stage must be 'pnet', 'rnet' or 'onet', got {last_stage!r}")
    device = images[0].device
    times = times if times is not None else StageTimes(synchronize=False)
    t = time.perf_counter()
    integral = IntegralImages.build(images)
    t = times.add("integral", t, device)
    cands = _propose(pnet, integral, images, config, times)
    times.counts["pnet_candidates"] += len(cands.scores)
    if len(cands.scores) and last_stage != "pnet":
        cands = _refine(rnet, integral, cands, config, times)
        times.counts["rnet_survivors"] += len(cands.scores)
    if len(cands.scores) and last_stage == "onet":
        cands, landmarks = _output(onet, integral, cands, config, times)
    else:
        landmarks = cands.boxes.new_zeros(len(cands.scores), 5, 2)
    times.counts["faces"] += len(cands.scores)
    return [
        Detections(cands.boxes[m], cands.scores[m], landmarks[m])
        for m in (cands.image == i for i in range(len(images)))
    ]


def _propose(pnet: Net, integral: IntegralImages, images: list[Tensor], config: CascadeConfig,
             times: StageTimes) -> _Candidates:
    """PNet over every pyramid level; NMS per scale, then across scales; calibrate; square."""
    device = integral.device
    by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, im in enumerate(images):
        by_size[(im.shape[0], im.shape[1])].append(i)

    found: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]] = []
    group = 0  # one NMS group per (image, scale)
    for (h, w), members in by_size.items():
        image_index = torch.tensor(members, device=device)
        for scale in pyramid_scales(h, w, config.min_face_size, config.scale_factor):
            lh, lw = level_size(h, w, scale)
            for rows, row0 in _tiles(lh, lw * len(members), config.pnet_tile_pixels):
                t = time.perf_counter()
                level = sample_levels(integral, members, lh, lw, rows)
                t = times.add("pyramid", t, device)
                logits, offsets = pnet(level)
                t = times.add("pnet", t, device)
                boxes, scores, offs, local = _pnet_boxes(
                    face_probability(logits), offsets, scale, config.thresholds[0], row0)
                found.append((boxes, scores, offs, image_index[local], local + group))
                times.add("pnet_post", t, device)
            group += len(members)

    t = time.perf_counter()
    if not found:  # every image is smaller than the smallest face searched for
        empty = torch.zeros(0, 4, device=device)
        return _Candidates(empty, empty[:, 0], torch.zeros(0, dtype=torch.long, device=device))
    boxes, scores, offsets, image, groups = (torch.cat(parts) for parts in zip(*found, strict=True))
    keep = B.nms(boxes, scores, groups, config.nms_per_scale)
    keep = keep[B.nms(boxes[keep], scores[keep], image[keep], config.nms_across_scales)]
    boxes = B.square(B.calibrate(boxes[keep], offsets[keep]))
    times.add("pnet_post", t, device)
    return _Candidates(boxes, scores[keep], image[keep])


def _tiles(level_h: int, row_pixels: int, max_pixels: int) -> Iterator[tuple[slice | None, int]]:
    """Bands of pyramid-level rows for PNet, each yielding whole output rows.

    Output row ``r`` of PNet sees input rows ``[2r, 2r + 12)``; a band of output rows
    ``[r0, r1)`` therefore needs input rows ``[2 r0, 2 r1 + 10)``. Yields ``(rows, r0)``.
    """
    out_rows = (level_h - 2 + 1) // 2 - 4  # conv3 -> ceil-mode pool 2 -> conv3 -> conv3
    band = max(1, (max_pixels // max(row_pixels, 1) - 10) // 2)
    if out_rows <= band:
        yield None, 0
        return
    for r0 in range(0, out_rows, band):
        r1 = min(out_rows, r0 + band)
        yield slice(2 * r0, min(level_h, 2 * r1 + 10)), r0


def _pnet_boxes(prob: Tensor, offsets: Tensor, scale: float, threshold: float, row0: int
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Windows whose face probability reaches ``threshold``, mapped back to image pixels."""
    b, y, x = torch.nonzero(prob >= threshold, as_tuple=True)
    scores = prob[b, y, x]
    offs = offsets.permute(0, 2, 3, 1)[b, y, x]
    xy = torch.stack([x, y + row0], dim=1).to(prob.dtype)
    top_left = ((PNET_STRIDE * xy + 1) / scale).floor()
    bottom_right = ((PNET_STRIDE * xy + PNET_CELL) / scale).floor()
    return torch.cat([top_left, bottom_right], dim=1), scores, offs, b


def _crops(net: Net, integral: IntegralImages, cands: _Candidates, size: int,
           config: CascadeConfig, times: StageTimes, stage: str
           ) -> tuple[_Candidates, tuple[Tensor, ...]]:
    """Cut every candidate's region, resize to ``size``, and run ``net`` in chunks."""
    t = time.perf_counter()
    regions, valid = B.crop_regions(
        cands.boxes, integral.widths[cands.image], integral.heights[cands.image])
    if not bool(valid.all()):
        cands, regions = cands.select(valid), regions[valid]
    outputs = []
    for start in range(0, len(regions), config.crop_batch):
        part = slice(start, start + config.crop_batch)
        crops = sample_regions(integral, cands.image[part], regions[part], size, size)
        t = times.add(f"{stage}_crops", t, integral.device)
        step = config.rnet_batch if stage == "rnet" else config.onet_batch
        outputs += [net(crops[i:i + step]) for i in range(0, len(crops), step)]
        t = times.add(stage, t, integral.device)
    return cands, tuple(torch.cat(o) for o in zip(*outputs, strict=True))


def _refine(rnet: Net, integral: IntegralImages, cands: _Candidates, config: CascadeConfig,
            times: StageTimes) -> _Candidates:
    cands, (logits, offsets) = _crops(rnet, integral, cands, 24, config, times, "rnet")
    t = time.perf_counter()
    prob = face_probability(logits)
    passed = prob > config.thresholds[1]
    cands = _Candidates(cands.boxes[passed], prob[passed], cands.image[passed])
    keep = B.nms(cands.boxes, cands.scores, cands.image, config.nms_rnet)
    cands = cands.select(keep)
    boxes = B.square(B.calibrate(cands.boxes, offsets[passed][keep], plus_one=True))
    times.add("rnet_post", t, integral.device)
    return _Candidates(boxes, cands.scores, cands.image)


def _output(onet: Net, integral: IntegralImages, cands: _Candidates, config: CascadeConfig,
            times: StageTimes) -> tuple[_Candidates, Tensor]:
    cands, (logits, offsets, points) = _crops(onet, integral, cands, 48, config, times, "onet")
    t = time.perf_counter()
    prob = face_probability(logits)
    passed = prob > config.thresholds[2]
    boxes, points, offsets = cands.boxes[passed], points[passed], offsets[passed]
    w, h = B.widths_heights(boxes, plus_one=True)
    xs = w[:, None] * points[:, :5] + boxes[:, :1] - 1
    ys = h[:, None] * points[:, 5:] + boxes[:, 1:2] - 1
    landmarks = torch.stack([xs, ys], dim=2)
    cands = _Candidates(B.calibrate(boxes, offsets, plus_one=True), prob[passed],
                        cands.image[passed])
    keep = B.nms(cands.boxes, cands.scores, cands.image, config.nms_onet, mode="min",
                 plus_one=True)
    times.add("onet_post", t, integral.device)
    return cands.select(keep), landmarks[keep]
