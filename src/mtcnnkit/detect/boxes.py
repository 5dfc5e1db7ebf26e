"""Pure box math shared by inference, sample generation, mining and evaluation.

Boxes are ``(N, 4)`` float tensors ``x1, y1, x2, y2``. Two width conventions exist in MTCNN
and both are kept explicit: the continuous one (``w = x2 - x1``) and the pixel-inclusive one
(``w = x2 - x1 + 1``, "plus one"), which the original code uses in some places.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torchvision.ops import batched_nms

NmsMode = Literal["union", "min"]


def widths_heights(boxes: Tensor, plus_one: bool = False) -> tuple[Tensor, Tensor]:
    extra = 1.0 if plus_one else 0.0
    return boxes[:, 2] - boxes[:, 0] + extra, boxes[:, 3] - boxes[:, 1] + extra


def overlap_matrix(
    a: Tensor, b: Tensor, mode: NmsMode = "union", plus_one: bool = False
) -> Tensor:
    """Pairwise overlap ``(len(a), len(b))``: IoU (``"union"``) or intersection over the
    smaller area (``"min"``)."""
    extra = 1.0 if plus_one else 0.0
    wa, ha = widths_heights(a, plus_one)
    wb, hb = widths_heights(b, plus_one)
    area_a, area_b = (wa * ha)[:, None], (wb * hb)[None, :]
    iw = (torch.minimum(a[:, None, 2], b[None, :, 2])
          - torch.maximum(a[:, None, 0], b[None, :, 0]) + extra).clamp(min=0)
    ih = (torch.minimum(a[:, None, 3], b[None, :, 3])
          - torch.maximum(a[:, None, 1], b[None, :, 1]) + extra).clamp(min=0)
    inter = iw * ih
    if mode == "union":
        denom = area_a + area_b - inter
    elif mode == "min":
        denom = torch.minimum(area_a, area_b)
    else:
        raise ValueError(f"unknown overlap mode {mode!r}; use 'union' or 'min'")
    return inter / denom.clamp(min=torch.finfo(inter.dtype).tiny)


def iou(a: Tensor, b: Tensor, plus_one: bool = False) -> Tensor:
    """Pairwise intersection over union."""
    return overlap_matrix(a, b, "union", plus_one)


def nms(
    boxes: Tensor,
    scores: Tensor,
    groups: Tensor,
    threshold: float,
    mode: NmsMode = "union",
    plus_one: bool = False,
) -> Tensor:
    """Greedy non-maximum suppression, independently within each group id.

    A box is dropped when its overlap with a kept, higher-scoring box of the same group is
    greater than ``threshold`` (overlaps are float32, so an overlap meant to equal the
    threshold may fall either side of it, as in the reference implementation). Returns kept
    indices ordered by decreasing score.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    if mode == "union" and not plus_one:
        return batched_nms(boxes, scores, groups, threshold)
    return _nms_by_fixed_point(boxes, scores, groups, threshold, mode, plus_one)


def _nms_by_fixed_point(
    boxes: Tensor, scores: Tensor, groups: Tensor, threshold: float, mode: NmsMode,
    plus_one: bool, chunk: int = 4096,
) -> Tensor:
    """Greedy NMS without a per-box loop.

    With boxes sorted by score, greedy NMS is the unique solution of
    ``keep[i] = not any(keep[j] and suppresses[j, i] for j < i)``. Iterating that equation
    from ``keep = all`` fixes one more leading entry per round, so it converges in at most
    (longest suppression chain) rounds, each a matrix operation.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    if len(order) > chunk:  # bound the N x N matrix: fall back to per-group processing
        kept = [
            idx[_nms_by_fixed_point(boxes[idx], scores[idx], groups[idx], threshold, mode,
                                    plus_one, chunk=len(idx) + 1)]
            for idx in (torch.nonzero(groups == g).flatten() for g in groups.unique())
        ]
        kept_all = torch.cat(kept)
        return kept_all[torch.argsort(scores[kept_all], descending=True, stable=True)]
    b, g = boxes[order], groups[order]
    n = len(order)
    earlier = torch.ones(n, n, dtype=torch.bool, device=boxes.device).triu(diagonal=1)
    suppresses = (overlap_matrix(b, b, mode, plus_one) > threshold) & earlier
    suppresses &= g[:, None] == g[None, :]
    keep = torch.ones(n, dtype=torch.bool, device=boxes.device)
    for _ in range(n):
        new_keep = ~(suppresses & keep[:, None]).any(dim=0)
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return order[keep]


def calibrate(boxes: Tensor, offsets: Tensor, plus_one: bool = False) -> Tensor:
    """Apply regression offsets (fractions of the box size) to the box corners."""
    w, h = widths_heights(boxes, plus_one)
    scale = torch.stack([w, h, w, h], dim=1)
    return boxes + offsets * scale


def square(boxes: Tensor) -> Tensor:
    """Grow each box to a square of side ``max(w, h)`` around the same centre."""
    w, h = widths_heights(boxes)
    side = torch.maximum(w, h)
    x1 = boxes[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + h * 0.5 - side * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], dim=1)


def clip(boxes: Tensor, width: float, height: float) -> Tensor:
    """Clamp box corners into ``[0, width] x [0, height]``."""
    limits = boxes.new_tensor([width, height, width, height])
    return torch.minimum(boxes.clamp(min=0), limits)


def crop_regions(boxes: Tensor, width: Tensor | int, height: Tensor | int) -> tuple[Tensor, Tensor]:
    """Integer pixel regions for cropping the next stage's input, MTCNN style.

    Box corners are truncated to integers (1-based), clipped to the image, and turned into
    0-based half-open regions ``[x0, x1) x [y0, y1)``: only the part of the box inside the
    image is cropped (and later stretched to the net's input size), as the reference
    implementation does. ``width``/``height`` may be per-box tensors. Returns
    ``(regions int64 (N, 4), valid bool (N,))``; invalid regions are empty.
    """
    t = boxes.trunc().long()
    x0 = t[:, 0].clamp(min=1) - 1
    y0 = t[:, 1].clamp(min=1) - 1
    x1 = torch.minimum(t[:, 2], torch.as_tensor(width, device=boxes.device))
    y1 = torch.minimum(t[:, 3], torch.as_tensor(height, device=boxes.device))
    regions = torch.stack([x0, y0, x1, y1], dim=1)
    valid = (x1 > x0) & (y1 > y0)
    return regions, valid
