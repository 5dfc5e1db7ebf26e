"""Tests for mtcnnkit.detect.boxes (IoU, NMS, calibrate, square, clip, crop regions).

Expected values are worked out by hand in the comments, or come from a naive greedy NMS
written here (plain Python / numpy, float64). Box coordinates are small integers and NMS
thresholds are dyadic (exact in float32), so float32 rounding cannot flip a comparison.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtcnnkit.detect.boxes import (
    calibrate,
    clip,
    crop_regions,
    iou,
    nms,
    overlap_matrix,
    square,
)

MODES = [("union", False), ("union", True), ("min", False), ("min", True)]


def T(rows) -> torch.Tensor:  # noqa: N802 - short constructor for box literals
    return torch.tensor(rows, dtype=torch.float32)


# --------------------------------------------------------------------------- reference


def ref_overlap(a, b, mode: str, plus_one: bool) -> float:
    """Overlap of two boxes, plain Python float64."""
    e = 1.0 if plus_one else 0.0
    area_a = (a[2] - a[0] + e) * (a[3] - a[1] + e)
    area_b = (b[2] - b[0] + e) * (b[3] - b[1] + e)
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + e)
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + e)
    inter = iw * ih
    denom = area_a + area_b - inter if mode == "union" else min(area_a, area_b)
    return inter / denom


def ref_nms(boxes, scores, groups, threshold, mode, plus_one) -> list[int]:
    """Naive greedy NMS: visit boxes by decreasing score, keep a box unless a kept box of
    the same group overlaps it by more than ``threshold``."""
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])
    kept: list[int] = []
    for i in order:
        if all(groups[k] != groups[i]
               or ref_overlap(boxes[k], boxes[i], mode, plus_one) <= threshold
               for k in kept):
            kept.append(i)
    return kept


def ref_nms_numpy(boxes, scores, groups, threshold, mode, plus_one) -> list[int]:
    """The same greedy NMS with one vectorised row per kept box (for thousands of boxes)."""
    b = np.asarray(boxes, dtype=np.float64)
    s, g = np.asarray(scores), np.asarray(groups)
    e = 1.0 if plus_one else 0.0
    area = (b[:, 2] - b[:, 0] + e) * (b[:, 3] - b[:, 1] + e)
    alive = np.ones(len(b), dtype=bool)
    kept = []
    for i in np.argsort(-s, kind="stable"):
        if not alive[i]:
            continue
        kept.append(int(i))
        iw = np.clip(np.minimum(b[i, 2], b[:, 2]) - np.maximum(b[i, 0], b[:, 0]) + e, 0, None)
        ih = np.clip(np.minimum(b[i, 3], b[:, 3]) - np.maximum(b[i, 1], b[:, 1]) + e, 0, None)
        inter = iw * ih
        denom = area[i] + area - inter if mode == "union" else np.minimum(area[i], area)
        alive &= ~((inter / denom > threshold) & (g == g[i]))
    return kept


def test_reference_nms_implementations_agree() -> None:
    rng = np.random.default_rng(3)
    xy = rng.integers(0, 50, (60, 2))
    boxes = np.concatenate([xy, xy + rng.integers(1, 30, (60, 2))], axis=1).tolist()
    scores = rng.permutation(60).tolist()
    groups = rng.integers(0, 3, 60).tolist()
    for mode, plus_one in MODES:
        assert (ref_nms(boxes, scores, groups, 0.5, mode, plus_one)
                == ref_nms_numpy(boxes, scores, groups, 0.5, mode, plus_one))


# --------------------------------------------------------------------------- overlap


def test_iou_partial_overlap_by_hand() -> None:
    a, b = T([[0, 0, 10, 10]]), T([[5, 5, 15, 15]])
    # continuous: inter 5*5 = 25, union 100 + 100 - 25 = 175
    assert iou(a, b).item() == pytest.approx(25 / 175)
    # plus one: areas 11*11 = 121, inter (10-5+1)^2 = 36, union 242 - 36 = 206
    assert iou(a, b, plus_one=True).item() == pytest.approx(36 / 206)


def test_iou_touching_edges_differs_between_conventions() -> None:
    a, b = T([[0, 0, 10, 10]]), T([[10, 0, 20, 10]])
    assert iou(a, b).item() == 0.0  # shared edge has zero width
    # plus one: the shared column x=10 counts: inter 1*11, union 121 + 121 - 11
    assert iou(a, b, plus_one=True).item() == pytest.approx(11 / 231)


@pytest.mark.parametrize("plus_one", [False, True])
def test_iou_disjoint_is_zero(plus_one: bool) -> None:
    a, b = T([[0, 0, 10, 10]]), T([[20, 20, 30, 30], [0, 12, 10, 20], [-9, -9, -2, -2]])
    assert iou(a, b, plus_one=plus_one).tolist() == [[0.0, 0.0, 0.0]]


def test_iou_contained_box() -> None:
    outer, inner = T([[0, 0, 10, 10]]), T([[2, 2, 6, 6]])
    assert iou(outer, inner).item() == pytest.approx(16 / 100)
    assert iou(outer, inner, plus_one=True).item() == pytest.approx(25 / 121)
    assert iou(inner, outer).item() == pytest.approx(16 / 100)  # symmetric


@pytest.mark.parametrize("plus_one", [False, True])
def test_iou_identical_is_one(plus_one: bool) -> None:
    a = T([[3.5, 4.25, 17.0, 40.5], [0, 0, 1, 1]])
    assert torch.diagonal(iou(a, a, plus_one=plus_one)).tolist() == pytest.approx([1.0, 1.0])


def test_iou_is_pairwise_matrix() -> None:
    a = T([[0, 0, 10, 10], [0, 0, 20, 20]])
    b = T([[0, 0, 10, 10], [5, 5, 15, 15], [100, 100, 110, 110]])
    expected = [[1.0, 25 / 175, 0.0],
                [100 / 400, 100 / 400, 0.0]]  # [0,0,20,20] contains both: inter = 100
    out = iou(a, b)
    assert out.shape == (2, 3)
    assert out.tolist() == [pytest.approx(r) for r in expected]


def test_min_overlap_by_hand() -> None:
    a = T([[0, 0, 10, 10]])
    b = T([[5, 5, 15, 15], [5, 0, 25, 10], [2, 2, 6, 6], [20, 20, 30, 30]])
    # inter / smaller area: 25/100, 50/min(100, 200), 16/16 (contained), 0
    assert overlap_matrix(a, b, "min").tolist() == [pytest.approx([0.25, 0.5, 1.0, 0.0])]
    # plus one: 36/121, 66/min(121, 231), 25/25, 0
    assert overlap_matrix(a, b, "min", plus_one=True).tolist() == [
        pytest.approx([36 / 121, 66 / 121, 1.0, 0.0])]
    # union for comparison: the wide box gives 50 / 250
    assert overlap_matrix(a, b[1:2], "union").item() == pytest.approx(0.2)


def test_unknown_overlap_mode_raises() -> None:
    with pytest.raises(ValueError, match="mode"):
        overlap_matrix(T([[0, 0, 1, 1]]), T([[0, 0, 1, 1]]), "max")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- NMS

box_strategy = st.tuples(
    st.integers(0, 60), st.integers(0, 60), st.integers(1, 40), st.integers(1, 40)
).map(lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])


@st.composite
def nms_problems(draw):
    boxes = draw(st.lists(box_strategy, min_size=1, max_size=40))
    n = len(boxes)
    ranks = draw(st.permutations(range(n)))  # distinct scores: no ties
    scores = [(r + 1) / (n + 1) for r in ranks]
    groups = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    threshold = draw(st.sampled_from([0.125, 0.25, 0.375, 0.5, 0.625, 0.75]))
    return boxes, scores, groups, threshold


@pytest.mark.parametrize(("mode", "plus_one"), MODES)
@settings(max_examples=40, deadline=None)
@given(problem=nms_problems())
def test_nms_matches_naive_greedy(problem, mode: str, plus_one: bool) -> None:
    boxes, scores, groups, threshold = problem
    kept = nms(T(boxes), T(scores), torch.tensor(groups), threshold, mode, plus_one)
    assert kept.dtype == torch.long
    assert kept.tolist() == ref_nms(boxes, scores, groups, threshold, mode, plus_one)


@pytest.mark.parametrize(("mode", "plus_one"), MODES)
def test_nms_many_boxes_matches_naive_greedy(mode: str, plus_one: bool) -> None:
    # enough boxes that an implementation must bound its pairwise work (chunking paths)
    rng = np.random.default_rng(7)
    n = 4200
    xy = rng.integers(0, 1000, (n, 2))
    boxes = np.concatenate([xy, xy + rng.integers(4, 60, (n, 2))], axis=1)
    scores = (rng.permutation(n) + 1) / (n + 1)
    groups = rng.integers(0, 3, n)
    kept = nms(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores, dtype=torch.float32),
               torch.tensor(groups), 0.5, mode, plus_one)
    assert kept.tolist() == ref_nms_numpy(boxes, scores, groups, 0.5, mode, plus_one)


@pytest.mark.parametrize(("mode", "plus_one"), MODES)
def test_nms_groups_are_independent(mode: str, plus_one: bool) -> None:
    boxes = T([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]])
    scores = T([0.9, 0.8, 0.7, 0.6])
    same = nms(boxes, scores, torch.tensor([0, 0, 0, 0]), 0.5, mode, plus_one)
    assert same.tolist() == [0, 3]
    # box 1 in its own group survives even though it is identical to box 0
    apart = nms(boxes, scores, torch.tensor([0, 1, 0, 0]), 0.5, mode, plus_one)
    assert apart.tolist() == [0, 1, 3]
    # every box in its own group: nothing is suppressed, order is by score
    alone = nms(boxes, scores, torch.tensor([3, 2, 1, 0]), 0.5, mode, plus_one)
    assert alone.tolist() == [0, 1, 2, 3]


def test_nms_returns_indices_by_decreasing_score() -> None:
    boxes = T([[0, 0, 5, 5], [10, 10, 15, 15], [20, 20, 25, 25]])
    scores = T([0.2, 0.9, 0.5])
    for mode, plus_one in MODES:
        assert nms(boxes, scores, torch.zeros(3, dtype=torch.long), 0.5, mode,
                   plus_one).tolist() == [1, 2, 0]


@pytest.mark.parametrize(("mode", "plus_one"), MODES)
def test_nms_empty_input(mode: str, plus_one: bool) -> None:
    kept = nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5,
               mode, plus_one)
    assert kept.dtype == torch.long
    assert kept.shape == (0,)


# Pairs whose overlap equals the threshold exactly (0.5 and 0.25 are exact in float32).
EDGE_CASES = [
    # union, continuous: inter 50, union 100 + 50 - 50 = 100 -> 0.5
    ("union", False, [[0, 0, 10, 10], [0, 0, 10, 5]], 0.5),
    # union, plus one: areas 10*10 and 10*5 (inclusive), inter 50 -> 0.5
    ("union", True, [[0, 0, 9, 9], [0, 0, 9, 4]], 0.5),
    # union, continuous: inter 25, union 100 -> 0.25
    ("union", False, [[0, 0, 10, 10], [0, 0, 10, 2.5]], 0.25),
    # min, continuous: inter 5*10 = 50 over min(100, 100) -> 0.5
    ("min", False, [[0, 0, 10, 10], [0, 5, 10, 15]], 0.5),
    # min, plus one: inclusive boxes 10x10, inter 10*5 -> 0.5
    ("min", True, [[0, 0, 9, 9], [0, 5, 9, 14]], 0.5),
    # min, continuous: inter 2.5*10 = 25 over 100 -> 0.25
    ("min", False, [[0, 0, 10, 10], [0, 7.5, 10, 17.5]], 0.25),
]


@pytest.mark.parametrize(("mode", "plus_one", "boxes", "threshold"), EDGE_CASES)
def test_nms_overlap_equal_to_threshold_is_kept(mode, plus_one, boxes, threshold) -> None:
    b = T(boxes)
    assert overlap_matrix(b[:1], b[1:], mode, plus_one).item() == threshold
    scores, groups = T([0.9, 0.8]), torch.zeros(2, dtype=torch.long)
    assert nms(b, scores, groups, threshold, mode, plus_one).tolist() == [0, 1]
    # just below the overlap: suppressed
    assert nms(b, scores, groups, threshold - 1e-3, mode, plus_one).tolist() == [0]


# --------------------------------------------------------------------------- calibrate etc.


def test_calibrate_continuous_by_hand() -> None:
    boxes = T([[10, 20, 30, 60]])  # w = 20, h = 40
    offsets = T([[0.1, -0.1, 0.2, 0.05]])
    # x1 + 0.1*20, y1 - 0.1*40, x2 + 0.2*20, y2 + 0.05*40
    assert calibrate(boxes, offsets).tolist() == [pytest.approx([12.0, 16.0, 34.0, 62.0])]


def test_calibrate_plus_one_by_hand() -> None:
    boxes = T([[10, 20, 30, 60]])  # w = 21, h = 41
    offsets = T([[0.1, -0.1, 0.2, 0.05]])
    assert calibrate(boxes, offsets, plus_one=True).tolist() == [
        pytest.approx([12.1, 15.9, 34.2, 62.05])]


def test_calibrate_zero_offsets_is_identity_and_rows_are_independent() -> None:
    boxes = T([[0, 0, 10, 10], [5, 5, 7, 9]])
    offsets = T([[0, 0, 0, 0], [1, 1, -1, -1]])
    # row 2: w = 2, h = 4 -> [5 + 2, 5 + 4, 7 - 2, 9 - 4]
    assert calibrate(boxes, offsets).tolist() == [[0, 0, 10, 10], [7, 9, 5, 5]]


def test_square_by_hand() -> None:
    boxes = T([[10, 20, 30, 60],    # w 20, h 40: centre (20, 40), side 40
               [0, 0, 50, 10],      # w 50, h 10: centre (25, 5), side 50
               [1.5, 2.5, 4.5, 5.5]])  # already square (3 x 3)
    assert square(boxes).tolist() == [
        pytest.approx([0, 20, 40, 60]),
        pytest.approx([0, -20, 50, 30]),
        pytest.approx([1.5, 2.5, 4.5, 5.5]),
    ]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(-100, 100), st.floats(-100, 100),
                          st.floats(0, 80), st.floats(0, 80)), min_size=1, max_size=10))
def test_square_keeps_centre_and_takes_longer_side(rows) -> None:
    boxes = T([[x, y, x + w, y + h] for x, y, w, h in rows])
    out = square(boxes)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    torch.testing.assert_close(out[:, 2] - out[:, 0], side, atol=1e-4, rtol=0)
    torch.testing.assert_close(out[:, 3] - out[:, 1], side, atol=1e-4, rtol=0)
    torch.testing.assert_close(out[:, :2] + out[:, 2:], boxes[:, :2] + boxes[:, 2:],
                               atol=1e-4, rtol=0)


def test_clip_by_hand() -> None:
    boxes = T([[-5, -3, 50, 40], [10, 20, 150, 90], [-20, -20, -10, -10], [5, 5, 6, 6]])
    assert clip(boxes, 100, 80).tolist() == [
        [0, 0, 50, 40], [10, 20, 100, 80], [0, 0, 0, 0], [5, 5, 6, 6]]


def test_crop_regions_truncates_toward_zero_and_converts_to_zero_based() -> None:
    boxes = T([
        [5.9, 7.2, 20.99, 30.5],     # trunc -> 5, 7, 20, 30 -> [4, 6, 20, 30)
        [-3.7, -0.5, 10.2, 12.8],    # trunc -> -3, 0 -> clipped to 1 -> [0, 0, 10, 12)
        [90.5, 60.1, 130.4, 95.3],   # x2 130 > w 100, y2 95 > h 80 -> [89, 59, 100, 80)
        [1.0, 1.0, 2.0, 2.0],        # [0, 0, 2, 2)
    ])
    regions, valid = crop_regions(boxes, 100, 80)
    assert regions.dtype == torch.long
    assert regions.tolist() == [[4, 6, 20, 30], [0, 0, 10, 12], [89, 59, 100, 80], [0, 0, 2, 2]]
    assert valid.tolist() == [True, True, True, True]


def test_crop_regions_outside_the_image_is_invalid() -> None:
    boxes = T([
        [120, 10, 150, 40],   # right of a 100-wide image: x0 119 >= x1 100
        [10, 85, 40, 99],     # below an 80-high image
        [-50, -50, -10, -10],  # above-left: x1 -10 < x0 0
        [-50, 10, 0.9, 20],   # x2 truncates to 0: empty
        [99.5, 79.5, 120, 90],  # last pixel only: [98, 78, 100, 80)
    ])
    regions, valid = crop_regions(boxes, 100, 80)
    assert valid.tolist() == [False, False, False, False, True]
    assert regions[4].tolist() == [98, 78, 100, 80]


def test_crop_regions_per_box_image_sizes() -> None:
    boxes = T([[10, 10, 60, 60], [10, 10, 60, 60]])
    regions, valid = crop_regions(boxes, torch.tensor([100, 40]), torch.tensor([50, 100]))
    assert regions.tolist() == [[9, 9, 60, 50], [9, 9, 40, 60]]
    assert valid.tolist() == [True, True]
