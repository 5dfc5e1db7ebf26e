"""The MTCNN multi-task loss.

Sample labels (see :mod:`mtcnnkit.data.shards`): 1 positive, 0 negative, -1 part face,
-2 landmark sample. Each task only sees the samples it is defined on:

* classification: positives and negatives (labels 1, 0), and with ``landmark_positives``
  the landmark samples too, as faces (they are cut like positives: IoU >= 0.65 with their
  face); per-sample cross-entropy with online hard example mining (OHEM): only the
  ``ceil(ohem_ratio * n)`` largest losses are kept and averaged, the rest get no gradient;
  ``face_weight`` scales the losses of the face targets before OHEM ranks them (1: plain
  cross-entropy; above 1 a net that favours recall over precision);
* box regression: positives and part faces (labels 1, -1);
* landmark regression: landmark samples (label -2), only for nets with a landmark head.

Regression losses are averaged over coordinates and samples. A task without samples in the
batch contributes an exact 0 (never NaN) and sends no gradient to its head.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.shards import LANDMARK, NEGATIVE, PART, POSITIVE

LabelArray = TypeVar("LabelArray", Tensor, np.ndarray)
Regression = Literal["smooth_l1", "wing", "l2"]
REGRESSIONS: tuple[str, ...] = ("smooth_l1", "wing", "l2")

# (cls, box, landmark) loss weights per stage, from the MTCNN paper
STAGE_WEIGHTS: dict[str, tuple[float, float, float]] = {
    "pnet": (1.0, 0.5, 0.5),
    "rnet": (1.0, 0.5, 0.5),
    "onet": (1.0, 0.5, 1.0),
}


@dataclass
class LossParts:
    """The weighted total and the unweighted per-task losses of one batch, with the number
    of samples each task used (``n_cls`` counts all pos + neg samples, before OHEM)."""

    total: Tensor
    cls: Tensor
    box: Tensor
    landmark: Tensor
    n_cls: int
    n_box: int
    n_landmark: int


def classification_mask(labels: LabelArray, landmark_positives: bool = False) -> LabelArray:
    """Which samples the classification task sees (tensor or array of labels in, boolean
    mask of the same kind out)."""
    mask = (labels == POSITIVE) | (labels == NEGATIVE)
    return mask | (labels == LANDMARK) if landmark_positives else mask


def wing_loss(x: Tensor, w: float = 10.0, epsilon: float = 2.0) -> Tensor:
    """Element-wise Wing loss (Feng et al. 2018) of the residual ``x``:
    ``w ln(1 + |x|/ε)`` for ``|x| < w``, else ``|x| - C`` with ``C = w - w ln(1 + w/ε)``."""
    a = x.abs()
    c = w - w * math.log1p(w / epsilon)
    return torch.where(a < w, w * torch.log1p(a / epsilon), a - c)


def regression_loss(pred: Tensor, target: Tensor, kind: str) -> Tensor:
    """Mean element-wise regression loss; 0 for an empty batch."""
    if pred.numel() == 0:
        return pred.new_zeros(())
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target, reduction="mean")
    if kind == "l2":
        return F.mse_loss(pred, target, reduction="mean")
    if kind == "wing":
        return wing_loss(pred - target).mean()
    raise ValueError(f"unknown regression loss {kind!r}; expected one of {REGRESSIONS}")


def ohem_count(n: int, ratio: float) -> int:
    """How many of ``n`` per-sample losses OHEM keeps: ``ceil(ratio * n)`` (at least 1 when
    ``n > 0``), robust to float error (``0.7 * 10`` keeps 7, not 8)."""
    if n <= 0:
        return 0
    return min(n, max(1, math.ceil(round(ratio * n, 9))))


def flatten_output(x: Tensor, channels: int) -> Tensor:
    """``(N, C)`` from ``(N, C)`` or a ``(N, C, 1, 1)`` map (PNet on a 12x12 input)."""
    if x.dim() == 4:
        if x.shape[2:] != (1, 1):
            raise ValueError(
                f"expected 1x1 output maps (12x12 training inputs), got {tuple(x.shape)}")
        x = x.flatten(1)
    if x.dim() != 2 or x.shape[1] != channels:
        raise ValueError(f"expected output (N, {channels}), got {tuple(x.shape)}")
    return x


class MultiTaskLoss(nn.Module):
    """``total = cls_weight * cls + box_weight * box + landmark_weight * landmark``.

    ``forward(outputs, labels, boxes, landmarks)`` takes a net's raw outputs
    ``(cls_logits, box[, landmarks])`` and the batch targets; returns :class:`LossParts`.
    """

    def __init__(self, cls_weight: float = 1.0, box_weight: float = 0.5,
                 landmark_weight: float = 0.5, ohem_ratio: float = 0.7,
                 regression: str = "smooth_l1", landmark_positives: bool = False,
                 face_weight: float = 1.0) -> None:
        super().__init__()
        if not 0.0 < ohem_ratio <= 1.0:
            raise ValueError(f"ohem_ratio must be in (0, 1], got {ohem_ratio}")
        if not face_weight > 0:
            raise ValueError(f"face_weight must be > 0, got {face_weight}")
        if regression not in REGRESSIONS:
            raise ValueError(f"unknown regression loss {regression!r}; expected one of "
                             f"{REGRESSIONS}")
        self.cls_weight = float(cls_weight)
        self.box_weight = float(box_weight)
        self.landmark_weight = float(landmark_weight)
        self.ohem_ratio = float(ohem_ratio)
        self.regression = regression
        self.landmark_positives = bool(landmark_positives)
        self.face_weight = float(face_weight)

    def classification(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, int]:
        mask = classification_mask(labels, self.landmark_positives)
        n = int(mask.sum())
        if n == 0:
            return logits.new_zeros(()), 0
        targets = (labels[mask] != NEGATIVE).long()  # 1 for positives (and landmark faces)
        per_sample = F.cross_entropy(logits[mask].float(), targets, reduction="none")
        if self.face_weight != 1.0:
            per_sample = per_sample * torch.where(targets == 1, self.face_weight, 1.0)
        k = ohem_count(n, self.ohem_ratio)
        kept = per_sample if k == n else torch.topk(per_sample, k, sorted=False).values
        return kept.mean(), n

    def forward(self, outputs: Sequence[Tensor], labels: Tensor, boxes: Tensor,
                landmarks: Tensor) -> LossParts:
        cls_logits = flatten_output(outputs[0], 2)
        box_pred = flatten_output(outputs[1], 4).float()
        labels = labels.to(cls_logits.device).long()

        cls, n_cls = self.classification(cls_logits, labels)

        box_mask = (labels == POSITIVE) | (labels == PART)
        n_box = int(box_mask.sum())
        box = regression_loss(box_pred[box_mask], boxes[box_mask].float(), self.regression)

        if len(outputs) > 2:
            lm_pred = flatten_output(outputs[2], 10).float()
            lm_mask = labels == LANDMARK
            n_landmark = int(lm_mask.sum())
            landmark = regression_loss(lm_pred[lm_mask], landmarks[lm_mask].float(),
                                       self.regression)
        else:  # a net without a landmark head (PNet, RNet here)
            n_landmark = 0
            landmark = box_pred.new_zeros(())

        total = (self.cls_weight * cls + self.box_weight * box
                 + self.landmark_weight * landmark)
        return LossParts(total, cls, box, landmark, n_cls, n_box, n_landmark)

    def extra_repr(self) -> str:
        return (f"weights=({self.cls_weight}, {self.box_weight}, {self.landmark_weight}), "
                f"ohem_ratio={self.ohem_ratio}, regression={self.regression!r}, "
                f"landmark_positives={self.landmark_positives}, face_weight={self.face_weight}")


def stage_loss(stage: str, ohem_ratio: float = 0.7, regression: str = "smooth_l1",
               landmark_positives: bool = False,
               weights: Sequence[float] | None = None,
               face_weight: float = 1.0) -> MultiTaskLoss:
    """The loss for ``stage`` ("pnet", "rnet" or "onet") with the given ``(cls, box,
    landmark)`` weights, or the paper's for the stage when ``weights`` is None."""
    if stage not in STAGE_WEIGHTS:
        raise ValueError(f"unknown stage {stage!r}; expected one of {tuple(STAGE_WEIGHTS)}")
    if weights is None:
        weights = STAGE_WEIGHTS[stage]
    elif len(weights) != 3:
        raise ValueError(f"weights: expected (cls, box, landmark), got {tuple(weights)}")
    return MultiTaskLoss(*weights, ohem_ratio=ohem_ratio, regression=regression,
                         landmark_positives=landmark_positives, face_weight=face_weight)
