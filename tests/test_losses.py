"""MultiTaskLoss: OHEM, per-task masks, weights, empty subsets, Wing loss, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtcnnkit import nets
from mtcnnkit.train.losses import (
    MultiTaskLoss,
    classification_mask,
    flatten_output,
    ohem_count,
    regression_loss,
    stage_loss,
    wing_loss,
)


def targets(labels: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = len(labels)
    return torch.tensor(labels), torch.zeros(n, 4), torch.zeros(n, 10)


@pytest.mark.parametrize(("n", "kept"), [(0, 0), (1, 1), (3, 3), (10, 7), (20, 14), (100, 70)])
def test_ohem_count(n: int, kept: int) -> None:
    assert ohem_count(n, 0.7) == kept


def test_ohem_keeps_exactly_the_top_70_percent() -> None:
    torch.manual_seed(0)
    logits = torch.randn(10, 2, requires_grad=True)
    labels = torch.tensor([1, 0, 1, 0, 0, 1, 0, 0, 1, 0])
    loss = MultiTaskLoss(1.0, 0.0, 0.0, ohem_ratio=0.7)
    parts = loss((logits, torch.zeros(10, 4)), labels, torch.zeros(10, 4), torch.zeros(10, 10))
    rows = logits.detach().tolist()
    per_sample = [-math.log(math.exp(r[y]) / (math.exp(r[0]) + math.exp(r[1])))
                  for r, y in zip(rows, labels.tolist(), strict=True)]
    expected = sum(sorted(per_sample, reverse=True)[:7]) / 7
    assert parts.cls.item() == pytest.approx(expected, rel=1e-6)
    assert parts.n_cls == 10
    parts.total.backward()
    with_grad = (logits.grad.abs().sum(1) > 0).nonzero().flatten().tolist()
    top7 = sorted(range(10), key=lambda i: -per_sample[i])[:7]
    assert sorted(with_grad) == sorted(top7)


def test_ohem_ratio_one_is_plain_cross_entropy() -> None:
    torch.manual_seed(1)
    logits = torch.randn(6, 2)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    parts = MultiTaskLoss(ohem_ratio=1.0)((logits, torch.zeros(6, 4)), labels,
                                          torch.zeros(6, 4), torch.zeros(6, 10))
    assert parts.cls.item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)


def test_face_weight_scales_face_losses_before_ohem_ranks_them() -> None:
    # per-sample losses: face 0.3, background 0.5, face 0.2, background 0.1 (as logits)
    p = torch.tensor([0.3, 0.5, 0.2, 0.1])
    labels = torch.tensor([1, 0, -2, 0])
    correct = torch.exp(-p)  # probability of each sample's true class
    face_p = torch.where(labels != 0, correct, 1 - correct)
    logits = torch.stack([torch.zeros(4), torch.log(face_p / (1 - face_p))], 1)
    logits.requires_grad_(True)
    zero = torch.zeros(4, 4), torch.zeros(4, 10)
    plain = MultiTaskLoss(1.0, 0.0, 0.0, ohem_ratio=0.5, landmark_positives=True)
    weighted = MultiTaskLoss(1.0, 0.0, 0.0, ohem_ratio=0.5, landmark_positives=True,
                             face_weight=3.0)
    # plain OHEM keeps the two largest: 0.5 (background) and 0.3 (face)
    assert plain((logits, zero[0]), labels, *zero).cls.item() == pytest.approx(0.4, rel=1e-5)
    # weighted: faces 0.9 and 0.6 outrank the background's 0.5
    parts = weighted((logits, zero[0]), labels, *zero)
    assert parts.cls.item() == pytest.approx(0.75, rel=1e-5)
    parts.total.backward()
    assert (logits.grad.abs().sum(1) > 0).tolist() == [True, False, True, False]
    assert MultiTaskLoss(face_weight=1.0).face_weight == 1.0
    assert stage_loss("onet", face_weight=2.0).face_weight == 2.0
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="face_weight"):
            MultiTaskLoss(face_weight=bad)


def test_masks_per_task() -> None:
    # labels: pos, neg, part, landmark
    labels = torch.tensor([1, 0, -1, -2])
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0], [50.0, -50.0], [-50.0, 50.0]])
    box_pred = torch.tensor([[1.0, 0, 0, 0], [9.0, 9, 9, 9], [0, 2.0, 0, 0], [9.0, 9, 9, 9]])
    lm_pred = torch.zeros(4, 10)
    lm_pred[3, 0] = 1.0
    lm_pred[:3] = 7.0  # ignored: not landmark samples
    loss = MultiTaskLoss(1.0, 0.5, 0.5, ohem_ratio=1.0, regression="l2")
    parts = loss((logits, box_pred, lm_pred), labels, torch.zeros(4, 4), torch.zeros(4, 10))
    # classification only on samples 0 and 1 (the extreme logits of 2 and 3 are ignored)
    ce = [math.log1p(math.exp(-2.0)), math.log1p(math.exp(-2.0))]
    assert parts.cls.item() == pytest.approx(sum(ce) / 2, rel=1e-6)
    # box on samples 0 and 2: squared errors 1 and 4 over 8 coordinates
    assert parts.box.item() == pytest.approx(5 / 8)
    # landmarks on sample 3 only: 1 over 10 coordinates
    assert parts.landmark.item() == pytest.approx(0.1)
    assert (parts.n_cls, parts.n_box, parts.n_landmark) == (2, 2, 1)
    assert parts.total.item() == pytest.approx(sum(ce) / 2 + 0.5 * 5 / 8 + 0.5 * 0.1, rel=1e-6)


def test_landmark_positives_classify_landmark_samples_as_faces() -> None:
    # labels: pos, neg, part, landmark; the landmark sample's logits say "not a face"
    labels = torch.tensor([1, 0, -1, -2])
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0], [50.0, -50.0], [1.0, -2.0]])
    outputs = (logits, torch.zeros(4, 4))
    plain = MultiTaskLoss(ohem_ratio=1.0)(outputs, labels, torch.zeros(4, 4), torch.zeros(4, 10))
    faces = stage_loss("pnet", 1.0, landmark_positives=True)(
        outputs, labels, torch.zeros(4, 4), torch.zeros(4, 10))
    ce = [math.log1p(math.exp(-2.0)), math.log1p(math.exp(-2.0)), math.log1p(math.exp(3.0))]
    assert plain.n_cls == 2 and plain.cls.item() == pytest.approx(sum(ce[:2]) / 2, rel=1e-6)
    assert faces.n_cls == 3 and faces.cls.item() == pytest.approx(sum(ce) / 3, rel=1e-6)
    assert faces.n_box == plain.n_box == 2  # box regression is unchanged


def test_classification_mask_on_tensors_and_arrays() -> None:
    labels = [1, 0, -1, -2, 0]
    assert classification_mask(torch.tensor(labels)).tolist() == [True, True, False, False, True]
    assert classification_mask(np.array(labels, np.int8), landmark_positives=True).tolist() == [
        True, True, False, True, True]


def test_weights_and_stage_factory() -> None:
    assert (stage_loss("pnet").cls_weight, stage_loss("pnet").box_weight,
            stage_loss("pnet").landmark_weight) == (1.0, 0.5, 0.5)
    assert stage_loss("rnet").landmark_weight == 0.5
    onet = stage_loss("onet")
    assert (onet.cls_weight, onet.box_weight, onet.landmark_weight) == (1.0, 0.5, 1.0)
    assert onet.ohem_ratio == 0.7
    with pytest.raises(ValueError):
        stage_loss("xnet")
    custom = stage_loss("rnet", weights=(1.0, 2.0, 0.0))
    assert (custom.cls_weight, custom.box_weight, custom.landmark_weight) == (1.0, 2.0, 0.0)
    with pytest.raises(ValueError):
        stage_loss("rnet", weights=(1.0, 2.0))
    labels = torch.tensor([1, -2])
    outputs = (torch.zeros(2, 2), torch.ones(2, 4), torch.ones(2, 10))
    zero = torch.zeros(2, 4), torch.zeros(2, 10)
    a = MultiTaskLoss(2.0, 3.0, 5.0, regression="l2")(outputs, labels, *zero)
    assert a.total.item() == pytest.approx(2 * math.log(2) + 3 * 1.0 + 5 * 1.0, rel=1e-6)


@pytest.mark.parametrize("labels", [[-1, -1, -2], [0, 0, 0], [1, 1], [-2], []])
@pytest.mark.parametrize("regression", ["smooth_l1", "wing", "l2"])
def test_no_nan_when_a_task_has_no_samples(labels: list[int], regression: str) -> None:
    n = len(labels)
    outputs = (torch.randn(n, 2, requires_grad=True), torch.randn(n, 4, requires_grad=True),
               torch.randn(n, 10, requires_grad=True))
    parts = MultiTaskLoss(regression=regression)(outputs, *targets(labels))
    for value in (parts.total, parts.cls, parts.box, parts.landmark):
        assert torch.isfinite(value)
    if 0 not in labels and 1 not in labels:
        assert parts.cls.item() == 0.0 and parts.n_cls == 0
    if not set(labels) & {1, -1}:
        assert parts.box.item() == 0.0 and parts.n_box == 0
    if -2 not in labels:
        assert parts.landmark.item() == 0.0 and parts.n_landmark == 0
    if parts.total.requires_grad:
        parts.total.backward()
        for o in outputs:
            assert o.grad is None or torch.isfinite(o.grad).all()


def test_wing_formula() -> None:
    w, eps = 10.0, 2.0
    c = w - w * math.log(1 + w / eps)
    x = torch.tensor([0.0, 1.0, -3.0, 9.999, 10.0, -12.0, 0.5])
    expected = [0.0, 10 * math.log(1.5), 10 * math.log(2.5), 10 * math.log(1 + 9.999 / 2),
                10.0 - c, 12.0 - c, 10 * math.log(1.25)]
    assert wing_loss(x).tolist() == pytest.approx(expected, rel=1e-5)
    # continuous at |x| = w
    assert (10.0 - c) == pytest.approx(w * math.log(1 + w / eps))
    # as a regression option: mean of the element-wise values
    pred = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    assert regression_loss(pred, torch.zeros(1, 4), "wing").item() == pytest.approx(
        10 * math.log(1.5) / 4)


def test_smooth_l1_values() -> None:
    pred = torch.tensor([[0.5, 2.0, 0.0, 0.0]])
    assert regression_loss(pred, torch.zeros(1, 4), "smooth_l1").item() == pytest.approx(
        (0.125 + 1.5) / 4)
    with pytest.raises(ValueError):
        MultiTaskLoss(regression="l1")


def head_grads(net: torch.nn.Module) -> dict[str, float]:
    return {name: sum(0.0 if p.grad is None else p.grad.abs().sum().item()
                      for p in getattr(net, name).parameters())
            for name in ("cls", "box", "landmarks") if hasattr(net, name)}


@pytest.mark.parametrize(("labels", "active"), [
    ([0, 0, 0, 0], {"cls"}),
    ([-2, -2], {"landmarks"}),
    ([-1, -1, -1], {"box"}),
    ([1, 1, 0], {"cls", "box"}),
    ([1, 0, -1, -2], {"cls", "box", "landmarks"}),
])
def test_gradient_reaches_only_the_right_heads(labels: list[int], active: set[str]) -> None:
    torch.manual_seed(0)
    net = nets.create("onet")
    x = torch.randn(len(labels), 3, 48, 48)
    lab, boxes, lms = targets(labels)
    boxes += 0.3
    lms += 0.4
    stage_loss("onet")(net(x), lab, boxes, lms).total.backward()
    grads = head_grads(net)
    assert {name for name, g in grads.items() if g > 0} == active


def test_pnet_maps_are_flattened() -> None:
    net = nets.create("pnet")
    outputs = net(torch.randn(3, 3, 12, 12))
    assert outputs[0].shape == (3, 2, 1, 1)
    parts = stage_loss("pnet")(outputs, *targets([1, 0, -1]))
    assert torch.isfinite(parts.total) and parts.n_box == 2
    with pytest.raises(ValueError, match="1x1"):
        flatten_output(net(torch.randn(1, 3, 14, 14))[0], 2)
