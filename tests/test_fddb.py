"""FDDB protocol: hand-worked cases on synthetic shapes (no FDDB images here), the official
file formats, and agreement with a literal transcription of the official ``Results::merge``
written here independently of the module."""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pytest
import torch

from mtcnnkit.data.annotations import Ellipse, FddbImage
from mtcnnkit.detect.cascade import Detections
from mtcnnkit.evaluate import fddb
from mtcnnkit.evaluate.fddb import RocCurve

SIZE = (400, 400)  # (width, height) of every synthetic image


def circle(r: float, cx: float, cy: float) -> Ellipse:
    return Ellipse(r, r, 0.0, cx, cy)


# --------------------------------------------------------------------------- overlap


def test_square_around_circle_overlaps_pi_over_4() -> None:
    # the square exactly covering a circle of radius r: pi r^2 / (2r)^2 = 0.785
    o = fddb.region_overlap(circle(100, 200, 200), [100, 100, 300, 300, 0.9], SIZE)
    assert o == pytest.approx(math.pi / 4, rel=0.015)


def test_disjoint_detection_has_zero_overlap_and_is_a_false_positive() -> None:
    gt = [FddbImage("a", (circle(30, 50, 50),))]
    result = fddb.evaluate_fddb({"a": np.array([[200, 200, 260, 260, 0.9]])}, gt, {"a": SIZE})
    assert fddb.region_overlap(gt[0].faces[0], [200, 200, 260, 260, 0.9], SIZE) == 0.0
    np.testing.assert_array_equal(result.discrete.fp, [1])
    np.testing.assert_array_equal(result.discrete.tpr, [0.0])
    np.testing.assert_array_equal(result.continuous.tpr, [0.0])


def test_rasterised_like_the_official_image_sized_masks() -> None:
    # the module draws on the union of the bounding boxes cut to the image; the official
    # program draws on masks of the whole image: the pixel counts must be identical
    rng = np.random.default_rng(1)
    width, height = 160, 120
    for _ in range(60):
        face = Ellipse(rng.uniform(5, 60), rng.uniform(5, 40), rng.uniform(-3, 3),
                       rng.uniform(-30, 190), rng.uniform(-30, 150))
        x, y = rng.uniform(-40, 160), rng.uniform(-40, 120)
        det = [x, y, x + rng.uniform(1, 90), y + rng.uniform(1, 90), 1.0]
        whole_a = np.zeros((height, width), np.uint8)
        whole_b = np.zeros((height, width), np.uint8)
        cv2.ellipse(whole_a, (round(face.cx), round(face.cy)), (int(face.major), int(face.minor)),
                    math.degrees(face.angle), 0, 360, 1, -1)
        x1, y1 = round(float(np.float32(det[0]))), round(float(np.float32(det[1])))
        x2, y2 = round(float(np.float32(det[2]))), round(float(np.float32(det[3])))
        cv2.rectangle(whole_b, (x1, y1), (x2, y2), 1, -1)
        union = np.count_nonzero(whole_a | whole_b)
        expected = np.count_nonzero(whole_a & whole_b) / union if union else 0.0
        assert fddb.region_overlap(face, det, (width, height)) == pytest.approx(expected)


def test_regions_are_cut_at_the_image_border() -> None:
    # a circle centred on the left border; the box covers its visible right half exactly.
    # In the image: half disc / r x 2r box = (pi/2) / 2 = 0.785. Without cutting, the hidden
    # half of the disc is in the union: (pi/2) / (2 + pi/2) = 0.440
    face, box = circle(50, 0, 100), [0, 50, 50, 150, 1.0]
    assert fddb.region_overlap(face, box, (200, 200)) == pytest.approx(math.pi / 4, rel=0.02)
    assert fddb.region_overlap(face, box, None) == pytest.approx(
        (math.pi / 2) / (2 + math.pi / 2), rel=0.02)


# --------------------------------------------------------------------------- stretch


def test_box_to_fddb_rect_by_hand() -> None:
    box = [10, 20, 30, 70, 0.9]  # w 20, h 50
    np.testing.assert_allclose(fddb.box_to_fddb_rect(box), [10, 20, 20, 50, 0.9])
    # 20 % taller upwards: bottom stays at 70, top at 70 - 60 = 10
    np.testing.assert_allclose(fddb.box_to_fddb_rect(box, 1.2), [10, 10, 20, 60, 0.9])
    # then 0.1 h = 5 down: bottom 75, top 15
    np.testing.assert_allclose(fddb.box_to_fddb_rect(box, 1.2, 0.1), [10, 15, 20, 60, 0.9])
    many = fddb.box_to_fddb_rect(np.array([box, box]), 1.2)
    assert many.shape == (2, 5)
    with pytest.raises(ValueError, match="vertical_scale"):
        fddb.box_to_fddb_rect(box, 0.0)


def test_vertical_stretch_changes_the_overlap_as_computed_by_hand() -> None:
    r = 150
    face, box = circle(r, 200, 200), [50, 200, 350, 350, 0.9]  # lower half of the square
    # box = lower half of the circle's square: (pi r^2 / 2) / (2 r^2 + pi r^2 / 2) = 0.440
    half = fddb.region_overlap(face, box, SIZE)
    assert half == pytest.approx((math.pi / 2) / (2 + math.pi / 2), rel=0.015)
    # twice as tall upwards: the full square, pi / 4
    assert fddb.region_overlap(face, box, SIZE, vertical_scale=2.0) == pytest.approx(
        math.pi / 4, rel=0.015)
    # same height, moved up by h / 2 = 75: the band |y - cy| <= 75 of the circle,
    # area 2 (h sqrt(r^2 - h^2) + r^2 asin(h / r)) with h = 75
    band = 2 * (75 * math.sqrt(r * r - 75 * 75) + r * r * math.asin(75 / r))
    expected = band / (math.pi * r * r + 300 * 150 - band)  # = 0.593
    assert fddb.region_overlap(face, box, SIZE, shift=-0.5) == pytest.approx(expected, rel=0.015)
    # through the whole protocol: a discrete miss (0.44) becomes a hit (0.785)
    gt = [FddbImage("a", (face,))]
    plain = fddb.evaluate_fddb({"a": np.array([box])}, gt, {"a": SIZE})
    tall = fddb.evaluate_fddb({"a": np.array([box])}, gt, {"a": SIZE}, vertical_scale=2.0)
    assert plain.discrete.tpr[-1] == 0.0 and plain.discrete.fp[-1] == 1
    assert tall.discrete.tpr[-1] == 1.0 and tall.discrete.fp[-1] == 0
    assert (plain.vertical_scale, tall.vertical_scale) == (1.0, 2.0)


# --------------------------------------------------------------------------- matching


def test_two_detections_on_one_face_give_one_tp_and_one_fp() -> None:
    face = circle(50, 100, 100)
    good, off = [50, 50, 150, 150, 0.8], [95, 50, 195, 150, 0.9]  # off: 45 px to the right
    o_good, o_off = (fddb.region_overlap(face, d, SIZE) for d in (good, off))
    assert o_good > 0.5 > o_off > 0
    result = fddb.evaluate_fddb({"a": np.array([good, off])}, [FddbImage("a", (face,))],
                                {"a": SIZE})
    # t = 0.9: only `off`, matched (overlap < 0.5): disc 0 TP, 1 FP; cont TP = o_off
    # t = 0.8: Hungarian gives the face to `good`: 1 TP, `off` unmatched: 1 FP; cont = o_good
    np.testing.assert_allclose(result.discrete.thresholds, [0.9, 0.8])
    np.testing.assert_array_equal(result.discrete.fp, [1, 1])
    np.testing.assert_array_equal(result.discrete.tpr, [0.0, 1.0])
    np.testing.assert_allclose(result.continuous.tpr, [o_off, o_good])
    np.testing.assert_array_equal(result.continuous.fp, result.discrete.fp)


def test_hungarian_maximises_total_overlap_not_greedy() -> None:
    # greedy on the best pair would take (0, 1) = 0.7, leaving face 1 with nothing (total
    # 0.7); the assignment (0, 0) + (1, 1) totals 0.6 + 0.65 = 1.25
    faces, dets = fddb.match(np.array([[0.6, 0.7], [0.0, 0.65]]))
    assert sorted(zip(faces.tolist(), dets.tolist(), strict=True)) == [(0, 0), (1, 1)]
    # zero-overlap pairs are never matches
    faces, dets = fddb.match(np.array([[0.0, 0.3], [0.0, 0.0]]))
    assert (faces.tolist(), dets.tolist()) == ([0], [1])
    assert len(fddb.match(np.zeros((2, 0)))[0]) == 0


def test_crossing_detections_are_assigned_for_the_largest_total() -> None:
    faces = (circle(40, 100, 100), circle(40, 190, 100))  # A, B side by side
    # d1 sits between them, nearer B; d2 is B's square
    dets = np.array([[110, 60, 210, 140, 0.9], [150, 60, 230, 140, 0.8]])
    o = fddb.overlap_matrix(faces, dets, SIZE)
    assert o[1, 0] > o[0, 0] > 0 and o[1, 1] > o[1, 0] and o[0, 1] == 0
    # d1 -> B alone would total o[1, 0]; d1 -> A and d2 -> B total more
    f, d = fddb.match(o)
    assert sorted(zip(f.tolist(), d.tolist(), strict=True)) == [(0, 0), (1, 1)]


def test_discrete_and_continuous_scores_by_hand() -> None:
    # two faces; detection 0 (score 0.9) overlaps face 0 by 0.8, detection 1 (0.6) face 1 by
    # 0.4. t = 0.9: disc 1 TP, cont 0.8, FP 0. t = 0.6: disc 1 TP (0.4 <= 0.5), cont
    # 0.8 + 0.4 = 1.2, FP 2 - 1 = 1 (the 0.4 match is a false positive in both curves)
    counts = fddb.image_counts(np.array([[0.8, 0.0], [0.0, 0.4]]), np.array([0.9, 0.6]))
    np.testing.assert_allclose(counts.thresholds, [0.6, 0.9])
    np.testing.assert_array_equal(counts.tp_discrete, [1, 1])
    np.testing.assert_allclose(counts.tp_continuous, [1.2, 0.8])
    np.testing.assert_array_equal(counts.false_positives, [1, 0])
    disc, cont = fddb.roc_curves([counts], n_faces=2)
    np.testing.assert_allclose(disc.tpr, [0.5, 0.5])
    np.testing.assert_allclose(cont.tpr, [0.4, 0.6])
    np.testing.assert_array_equal(disc.fp, [0, 1])
    # exactly 0.5 is not a discrete true positive (official: overlap > 0.5)
    at_half = fddb.image_counts(np.array([[0.5]]), np.array([1.0]))
    assert at_half.tp_discrete[0] == 0 and at_half.false_positives[0] == 1


# --------------------------------------------------------------------------- ROC


def toy_counts() -> list[fddb.ImageCounts]:
    """Three images, four faces.

    image 1: faces A, B; d1 (0.9) overlaps A 0.6, B 0.55; d2 (0.5) overlaps A 0.9
    image 2: face C; d3 (0.8) overlaps C 0.3; d4 (0.5) overlaps nothing
    image 3: face D; d5 (0.7) overlaps nothing
    """
    return [fddb.image_counts(np.array([[0.6, 0.9], [0.55, 0.0]]), np.array([0.9, 0.5])),
            fddb.image_counts(np.array([[0.3, 0.0]]), np.array([0.8, 0.5])),
            fddb.image_counts(np.array([[0.0]]), np.array([0.7]))]


# By hand, decreasing threshold (TP disc / TP cont / FP, summed over the images):
#   t=0.9: image 1 keeps d1 -> d1-A 0.6: 1 / 0.6 / 0                    => 1 / 0.60 / 0
#   t=0.8: + image 2 keeps d3 -> d3-C 0.3: 0 / 0.3 / 1                  => 1 / 0.90 / 1
#   t=0.7: + image 3 keeps d5 -> unmatched: 0 / 0 / 1                   => 1 / 0.90 / 2
#   t=0.5: image 1 re-matched: d1-B 0.55 + d2-A 0.9 = 1.45 > 0.6: 2 / 1.45 / 0;
#          image 2: d3-C 0.3, d4 unmatched: 0 / 0.3 / 2; image 3: 0 / 0 / 1 => 2 / 1.75 / 3
TOY_FP = [0, 1, 2, 3]
TOY_DISC = [0.25, 0.25, 0.25, 0.5]
TOY_CONT = [0.15, 0.225, 0.225, 0.4375]


def test_roc_points_of_a_toy_set_by_hand() -> None:
    disc, cont = fddb.roc_curves(toy_counts(), n_faces=4)
    np.testing.assert_allclose(disc.thresholds, [0.9, 0.8, 0.7, 0.5])
    np.testing.assert_array_equal(disc.fp, TOY_FP)
    np.testing.assert_array_equal(cont.fp, TOY_FP)
    np.testing.assert_allclose(disc.tpr, TOY_DISC)
    np.testing.assert_allclose(cont.tpr, TOY_CONT)


def test_tpr_at_interpolates_along_the_curve() -> None:
    curve = RocCurve(np.array([0.0, 10.0, 20.0]), np.array([0.5, 0.6, 0.8]),
                     np.array([0.9, 0.8, 0.7]))
    assert fddb.tpr_at(curve, 15) == pytest.approx(0.7)
    assert fddb.tpr_at(curve, 5) == pytest.approx(0.55)
    assert fddb.tpr_at(curve, 0) == pytest.approx(0.5)
    assert fddb.tpr_at(curve, 25) == pytest.approx(0.8)  # past the end: the last TPR
    disc, cont = fddb.roc_curves(toy_counts(), n_faces=4)
    assert fddb.tpr_at(disc, 2.5) == pytest.approx(0.375)  # (2, .25) -- (3, .5)
    assert fddb.tpr_at(cont, 0.5) == pytest.approx(0.1875)  # (0, .15) -- (1, .225)
    assert fddb.tpr_at(disc, 1000) == pytest.approx(0.5)
    # a curve starting above 0 FP is interpolated from (0, 0)
    assert fddb.tpr_at(RocCurve(np.array([4.0]), np.array([0.8]), np.array([1.0])),
                       1) == pytest.approx(0.2)
    assert fddb.tpr_at(RocCurve(np.zeros(0), np.zeros(0), np.zeros(0)), 1000) == 0.0


class _Row(NamedTuple):
    threshold: float
    n: int
    tp_disc: float
    tp_cont: float
    fp: float


def _official_merge(rv1: list[_Row], rv2: list[_Row]) -> list[_Row]:
    """``Results::merge`` from the official Results.cpp, line by line."""
    def both(r1: _Row, r2: _Row) -> _Row:
        return _Row(min(r1.threshold, r2.threshold), r1.n + r2.n, r1.tp_disc + r2.tp_disc,
                    r1.tp_cont + r2.tp_cont, r1.fp + r2.fp)

    out: list[_Row] = []
    n1, n2 = len(rv1), len(rv2)
    if n1:
        n_annot1, n_annot2 = rv1[0].n, (rv2[0].n if n2 else 0)
        i1 = i2 = 0
        while i1 < n1:
            r1 = rv1[i1]
            if i2 < n2:
                r2 = rv2[i2]
                out.append(both(r1, r2))
                if r1.threshold < r2.threshold:
                    i1 += 1
                elif r1.threshold == r2.threshold:
                    i1, i2 = i1 + 1, i2 + 1
                else:
                    i2 += 1
            else:
                while i1 < n1:
                    out.append(rv1[i1]._replace(n=rv1[i1].n + n_annot2))
                    i1 += 1
        while i2 < n2:
            out.append(rv2[i2]._replace(n=rv2[i2].n + n_annot1))
            i2 += 1
    else:
        out = list(rv2)
    return out


def test_roc_equals_the_official_merge_on_random_images() -> None:
    rng = np.random.default_rng(7)
    cumulative: list[_Row] = []
    counts, n_faces = [], 0
    for _ in range(40):
        n_face, n_det = int(rng.integers(0, 4)), int(rng.integers(0, 6))
        o = rng.uniform(0, 1, (n_face, n_det)) * (rng.uniform(0, 1, (n_face, n_det)) < 0.4)
        scores = rng.choice([0.1, 0.3, 0.5, 0.7, 0.9, 0.95], n_det)  # ties across images
        c = fddb.image_counts(o, scores)
        counts.append(c)
        n_faces += n_face
        if n_det == 0:  # the official program's row for an image without detections
            rows = [_Row(np.finfo(np.float64).max, n_face, 0, 0, 0)]
        else:
            rows = [_Row(*r) for r in zip(c.thresholds, [n_face] * len(c.thresholds),
                                          c.tp_discrete, c.tp_continuous, c.false_positives,
                                          strict=True)]
        cumulative = _official_merge(cumulative, rows)
    # the official "0 0 1.79769e+308" row is not reproduced (see the module docstring)
    official = [r for r in cumulative if r.threshold < np.finfo(np.float64).max][::-1]
    assert all(r.n == n_faces for r in official)
    disc, cont = fddb.roc_curves(counts, n_faces)
    np.testing.assert_allclose(disc.thresholds, [r.threshold for r in official])
    np.testing.assert_allclose(disc.fp, [r.fp for r in official])
    np.testing.assert_allclose(disc.tpr, [r.tp_disc / n_faces for r in official])
    np.testing.assert_allclose(cont.tpr, [r.tp_cont / n_faces for r in official])


def test_faces_of_images_without_detections_count_as_misses() -> None:
    gt = [FddbImage("a", (circle(50, 100, 100),)), FddbImage("b", (circle(50, 100, 100),))]
    result = fddb.evaluate_fddb({"a": np.array([[50, 50, 150, 150, 0.9]])}, gt,
                                {"a": SIZE, "b": SIZE})
    assert (result.n_faces, result.n_images, result.n_detections) == (2, 2, 1)
    np.testing.assert_allclose(result.discrete.tpr, [0.5])
    assert result.discrete_tpr_at_1000 == pytest.approx(0.5)
    assert result.clipped_to_image and "0.5000 @1000 FP" in result.summary()
    assert result.to_dict()["n_faces"] == 2


def test_evaluate_rejects_bad_input() -> None:
    gt = [FddbImage("a", (circle(50, 100, 100),))]
    with pytest.raises(ValueError, match="not in the ground truth"):
        fddb.evaluate_fddb({"a.jpg": np.zeros((0, 5))}, gt, {"a": SIZE})
    with pytest.raises(ValueError, match="image_sizes has no entry"):
        fddb.evaluate_fddb({}, gt, {})
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        fddb.evaluate_fddb({"a": np.zeros((2, 4))}, gt, {"a": SIZE})
    with pytest.raises(ValueError, match="NaN"):
        fddb.evaluate_fddb({"a": np.array([[0, 0, 1, 1, np.nan]])}, gt, {"a": SIZE})


def test_ellipse_detections_are_matched_as_ellipses() -> None:
    face = Ellipse(60, 40, 0.3, 200, 200)
    same = np.array([[60, 40, 0.3, 200, 200, 0.7]])
    result = fddb.evaluate_fddb({"a": same}, [FddbImage("a", (face,))], {"a": SIZE},
                                vertical_scale=1.5)  # ignored for ellipses
    np.testing.assert_allclose(result.continuous.tpr, [1.0])


# --------------------------------------------------------------------------- files


def test_roc_files_in_the_official_format(tmp_path: Path) -> None:
    disc, cont = fddb.roc_curves(toy_counts(), n_faces=4)
    disc_path, cont_path = fddb.write_roc(tmp_path / "out" / "mtcnn", disc, cont)
    assert disc_path.name == "mtcnnDiscROC.txt" and cont_path.name == "mtcnnContROC.txt"
    # increasing threshold: the first line holds all detections
    assert disc_path.read_text().splitlines() == ["0.5 3 0.5", "0.25 2 0.7", "0.25 1 0.8",
                                                  "0.25 0 0.9"]
    assert cont_path.read_text().splitlines() == ["0.4375 3", "0.225 2", "0.225 1", "0.15 0"]
    back = fddb.read_roc(disc_path)
    np.testing.assert_allclose(back.tpr, disc.tpr)
    np.testing.assert_array_equal(back.fp, disc.fp)
    np.testing.assert_allclose(back.thresholds, disc.thresholds)
    back = fddb.read_roc(cont_path)
    np.testing.assert_allclose(back.tpr, cont.tpr)
    assert np.isnan(back.thresholds).all()
    # a file as the official program writes it (6 digits, the no-detection row)
    official = tmp_path / "DiscROC.txt"
    official.write_text("0.953434 2103 0.601\n0 0 1.79769e+308\n")
    assert fddb.read_roc(official).fp.tolist() == [0, 2103]
    official.write_text("0.9 12 0.5 7\n")
    with pytest.raises(ValueError, match="DiscROC.txt:1"):
        fddb.read_roc(official)


def test_detection_files_round_trip(tmp_path: Path) -> None:
    dets = {"2002/08/11/big/img_591": np.array([[10, 20, 30, 70, 0.9], [1.5, 2, 4, 8, 0.25]]),
            "2002/08/26/big/img_265": np.array([[60, 40, 1.2, 100.5, 90, 0.5]]),
            "2002/07/19/big/img_423": np.zeros((0, 5))}
    path = fddb.write_detections(tmp_path / "dets.txt", dets)
    assert path.read_text().splitlines()[:4] == ["2002/08/11/big/img_591", "2", "10 20 20 50 0.9",
                                                 "1.5 2 2.5 6 0.25"]
    back = fddb.read_detections(path)
    assert list(back) == list(dets)
    for key, value in dets.items():
        np.testing.assert_allclose(back[key], value)
        assert back[key].shape[1] == value.shape[1]
    # a stretched file holds the stretched rectangles; `images` sets order and coverage
    order = ["2002/07/19/big/img_423", "2002/08/11/big/img_591", "missing/img"]
    fddb.write_detections(path, dets, order, vertical_scale=1.2)
    text = path.read_text().splitlines()
    assert text[:5] == ["2002/07/19/big/img_423", "0", "2002/08/11/big/img_591", "2",
                        "10 10 20 60 0.9"]
    assert text[-2:] == ["missing/img", "0"]
    np.testing.assert_allclose(fddb.read_detections(path)["2002/08/11/big/img_591"][0],
                               [10, 10, 30, 70, 0.9])


def test_detection_file_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("img_1\n2\n1 2 3 4 0.5\n")
    with pytest.raises(ValueError, match="bad.txt:2"):
        fddb.read_detections(path)
    path.write_text("img_1\n1\n1 2 3 0.5\n")
    with pytest.raises(ValueError, match="bad.txt:3"):
        fddb.read_detections(path)
    path.write_text("img_1\none\n")
    with pytest.raises(ValueError, match="bad.txt:2"):
        fddb.read_detections(path)


def test_plot_roc_writes_a_png(tmp_path: Path) -> None:
    disc, cont = fddb.roc_curves(toy_counts(), n_faces=4)
    out = fddb.plot_roc({"discrete": disc, "continuous": cont}, tmp_path / "plots" / "roc.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fddb.plot_roc({}, tmp_path / "empty.png", max_fp=None)


# --------------------------------------------------------------------------- detector


class FakeDetector:
    """Returns fixed boxes per image file name and records the batches it was given."""

    def __init__(self, boxes: dict[str, list[list[float]]]) -> None:
        self.boxes = boxes
        self.batches: list[list[str]] = []

    def detect_tensors(self, images: list[str]) -> list[Detections]:
        self.batches.append(list(images))
        out = []
        for image in images:
            rows = torch.tensor(self.boxes[Path(image).stem], dtype=torch.float32).reshape(-1, 5)
            out.append(Detections(rows[:, :4], rows[:, 4], torch.zeros(len(rows), 5, 2)))
        return out


def test_detect_fddb_on_synthetic_images(tmp_path: Path) -> None:
    # three images with axis-aligned elliptical "heads" drawn with cv2; the fake detector
    # returns each ellipse's bounding box (overlap = ellipse / box = pi / 4) plus one
    # background box in img_2
    gt = [FddbImage("2002/08/11/big/img_1", (Ellipse(60, 40, math.pi / 2, 100, 120),)),
          FddbImage("2002/08/11/big/img_2", (Ellipse(50, 50, 0.0, 200, 200),
                                             Ellipse(30, 20, math.pi / 2, 320, 80))),
          FddbImage("2002/08/12/big/img_3", ())]
    sizes = {"2002/08/11/big/img_1": (300, 240), "2002/08/11/big/img_2": (400, 300),
             "2002/08/12/big/img_3": (64, 48)}
    for entry in gt:
        width, height = sizes[entry.image]
        image = np.zeros((height, width, 3), np.uint8)
        for f in entry.faces:
            cv2.ellipse(image, (round(f.cx), round(f.cy)), (int(f.major), int(f.minor)),
                        math.degrees(f.angle), 0, 360, (200, 180, 160), -1)
        path = tmp_path / f"{entry.image}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), image)
    boxes = {"img_1": [[60, 60, 140, 180, 0.99]],  # minor 40 across, major 60 down
             "img_2": [[150, 150, 250, 250, 0.97], [300, 50, 340, 110, 0.95],
                       [0, 250, 30, 290, 0.6]],
             "img_3": []}
    detector, calls = FakeDetector(boxes), []
    dets = fddb.detect_fddb(detector, tmp_path, gt, batch_size=2,
                            progress=lambda done, total: calls.append((done, total)))
    assert [len(b) for b in detector.batches] == [2, 1]
    assert detector.batches[0][0] == str(tmp_path / "2002/08/11/big/img_1.jpg")
    assert calls == [(2, 3), (3, 3)]
    assert list(dets) == [entry.image for entry in gt]
    np.testing.assert_allclose(dets["2002/08/11/big/img_2"][1], [300, 50, 340, 110, 0.95],
                               rtol=1e-6)
    assert dets["2002/08/12/big/img_3"].shape == (0, 5)

    assert fddb.read_image_sizes(tmp_path, gt) == sizes
    result = fddb.evaluate_fddb(dets, gt, fddb.read_image_sizes(tmp_path, gt))
    # every face found at ~0.785; the background box is the only false positive
    np.testing.assert_array_equal(result.discrete.tpr[-1], 1.0)
    np.testing.assert_array_equal(result.discrete.fp, [0, 0, 0, 1])
    assert result.continuous.tpr[-1] == pytest.approx(math.pi / 4, rel=0.03)
    assert (result.n_faces, result.n_detections) == (3, 4)

    with pytest.raises(FileNotFoundError, match="missing"):
        fddb.detect_fddb(detector, tmp_path, [FddbImage("nope/img_9", ())])
