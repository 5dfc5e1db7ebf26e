"""Tests for mtcnnkit.evaluate.landmarks: normalised errors, NME, failures, misses, matching.

Hand-worked cases use an annotation whose eyes are exactly 100 px apart, so a shift of
``d`` px is an error of ``d / 100``; all coordinates and shifts are small integers or
Pythagorean triples, exact in float32 and float64. The failure rule is "mean error > 0.10
fails, = 0.10 does not". Matching is tested with a fake detector (known `Detections` per
image) on tiny synthetic images. The integration test runs the original MTCNN weights on
the CNN_FacePoint test list in ../shared/data (skipped when either is unavailable).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED_DATA
from mtcnnkit import Detector
from mtcnnkit.data.annotations import LandmarkSample, read_landmark_list
from mtcnnkit.detect.cascade import Detections
from mtcnnkit.evaluate.landmarks import (
    FAILURE_THRESHOLD,
    MATCH_IOU,
    POINT_NAMES,
    LandmarkResult,
    detect_landmarks,
    evaluate_landmarks,
    landmark_table,
    match_detection,
    normalised_errors,
)

FACEPOINT = SHARED_DATA / "CNN_FacePoint" / "train"

# Eyes 100 px apart (inter-ocular distance 100), nose, mouth corners.
TRUTH = np.array([[30, 50], [130, 50], [80, 90], [45, 130], [115, 130]], dtype=np.float32)
BOX = (10.0, 20.0, 150.0, 160.0)


def sample(points: np.ndarray = TRUTH, box: tuple[float, float, float, float] = BOX,
           image: str = "img.png") -> LandmarkSample:
    return LandmarkSample(image=image, box=box, points=np.asarray(points, dtype=np.float32))


def shifted(dx: float = 0.0, dy: float = 0.0, points: np.ndarray = TRUTH) -> np.ndarray:
    return points + np.array([dx, dy], dtype=np.float32)


# --- normalised errors and scores -------------------------------------------------------


def test_perfect_predictions_score_zero():
    result = evaluate_landmarks([TRUTH.copy(), TRUTH.copy()], [sample(), sample()])
    assert (result.n_samples, result.n_detected, result.missed) == (2, 2, 0)
    assert result.nme == 0.0
    assert np.array_equal(result.per_point_nme, np.zeros(5))
    assert result.failure_rate == 0.0


def test_shift_of_ten_percent_is_error_point_one_and_not_a_failure():
    # 10 px in x with eyes 100 px apart: every point is off by exactly 0.10 of the
    # inter-ocular distance. The failure rule is strict (> 0.10), so this is no failure.
    errors = normalised_errors(shifted(dx=10)[None], TRUTH[None])
    assert errors.shape == (1, 5)
    assert np.allclose(errors, 0.10, rtol=0, atol=1e-12)
    result = evaluate_landmarks([shifted(dx=10)], [sample()])
    assert result.nme == pytest.approx(0.10, abs=1e-12)
    assert np.allclose(result.per_point_nme, 0.10, rtol=0, atol=1e-12)
    assert result.failure_rate == 0.0
    assert FAILURE_THRESHOLD == 0.10


def test_just_above_ten_percent_is_a_failure():
    result = evaluate_landmarks([shifted(dx=10.5)], [sample()])  # 0.105 > 0.10
    assert result.nme == pytest.approx(0.105)
    assert result.failure_rate == 1.0


def test_one_sample_shifted_twenty_percent_fails():
    result = evaluate_landmarks([TRUTH.copy(), shifted(dy=-20)], [sample(), sample()])
    assert result.nme == pytest.approx(0.10)  # mean of 0 and 0.20
    assert np.allclose(result.per_point_nme, 0.10)
    assert result.failure_rate == 0.5  # the 0.20 sample fails, the perfect one does not


def test_per_point_errors_differ_by_point():
    offsets = np.array([[3, 4], [0, 0], [0, 10], [-6, 8], [-12, -16]], dtype=np.float32)
    # distances 5, 0, 10, 10, 20 px -> 0.05, 0, 0.10, 0.10, 0.20; sample mean 0.09
    expected = np.array([0.05, 0.0, 0.10, 0.10, 0.20])
    assert np.allclose(normalised_errors((TRUTH + offsets)[None], TRUTH[None])[0], expected)
    # A second, perfect sample halves every per-point figure.
    result = evaluate_landmarks([TRUTH + offsets, TRUTH.copy()], [sample(), sample()])
    assert np.allclose(result.per_point_nme, expected / 2)
    assert result.nme == pytest.approx(0.045)
    assert result.failure_rate == 0.0


def test_normalisation_uses_the_annotated_eyes():
    small = TRUTH / 2  # eyes 50 px apart: the same 10 px shift is now 0.20
    errors = normalised_errors(shifted(dx=10, points=small)[None], small[None])
    assert np.allclose(errors, 0.20)
    # The prediction's own eye distance plays no part.
    wide = TRUTH.copy()
    wide[1, 0] += 30  # right eye 30 px off: only point 1 has an error, of 0.30
    assert np.allclose(normalised_errors(wide[None], TRUTH[None])[0], [0, 0.3, 0, 0, 0])


def test_misses_are_counted_and_kept_out_of_the_errors():
    preds = [TRUTH.copy(), None, shifted(dx=20), None]
    result = evaluate_landmarks(preds, [sample()] * 4)
    assert (result.n_samples, result.n_detected, result.missed) == (4, 2, 2)
    assert result.detection_rate == 0.5
    assert result.nme == pytest.approx(0.10)  # mean of 0 and 0.20: misses add nothing
    assert result.failure_rate == 0.5  # 1 of the 2 matched samples, not 1 of 4


def test_all_missed_gives_nan_errors():
    result = evaluate_landmarks([None, None], [sample(), sample()])
    assert (result.n_detected, result.missed) == (0, 2)
    assert math.isnan(result.nme) and math.isnan(result.failure_rate)
    assert np.isnan(result.per_point_nme).all()


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="predictions for"):
        evaluate_landmarks([TRUTH], [sample(), sample()])
    with pytest.raises(ValueError, match="shape"):
        evaluate_landmarks([TRUTH[:4]], [sample()])
    same_eyes = TRUTH.copy()
    same_eyes[1] = same_eyes[0]
    with pytest.raises(ValueError, match="inter-ocular"):
        evaluate_landmarks([TRUTH], [sample(same_eyes)])


def test_result_as_dict_and_table():
    good = evaluate_landmarks([shifted(dx=10), None], [sample(), sample()])
    empty = evaluate_landmarks([None], [sample()])
    d = good.as_dict()
    assert d["n_detected"] == 1 and d["missed"] == 1
    assert list(d["per_point_nme"]) == list(POINT_NAMES)
    table = landmark_table({"ref": good, "none": empty})
    lines = table.strip().splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("| name | samples | detected | NME % | left eye %")
    assert lines[2] == "| ref | 2 | 1 | 10.00 | 10.00 | 10.00 | 10.00 | 10.00 | 10.00 | 0.00 |"
    assert lines[3].startswith("| none | 1 | 0 | n/a |")


# --- matching detections to annotated faces ----------------------------------------------


def dets(boxes: list[list[float]], scores: list[float], marks: list[float]) -> Detections:
    """Detections whose landmarks are all equal to one value per face (easy to identify)."""
    n = len(boxes)
    return Detections(
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(n, 4),
        scores=torch.tensor(scores, dtype=torch.float32),
        landmarks=torch.tensor(marks, dtype=torch.float32).reshape(n, 1, 1).expand(n, 5, 2)
        .contiguous(),
    )


class FakeDetector:
    """Returns the given Detections per image name; records each call's images."""

    def __init__(self, by_name: dict[str, Detections]) -> None:
        self.by_name = by_name
        self.calls: list[list[Path]] = []

    def detect_tensors(self, images):
        paths = [Path(p) for p in images]
        assert all(p.is_file() for p in paths)
        self.calls.append(paths)
        return [self.by_name[p.name] for p in paths]


def write_images(root: Path, names: list[str]) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (40, 80, 120)).save(root / name)


def test_match_picks_highest_iou_not_highest_score():
    truth = (0.0, 0.0, 100.0, 100.0)
    found = dets(
        [[50, 0, 150, 100],    # IoU 1/3, best score
         [0, 10, 100, 110],    # IoU 90/110 = 0.82: the match
         [300, 300, 400, 400]],  # IoU 0
        [0.99, 0.80, 0.95], [1.0, 2.0, 3.0])
    assert match_detection(found, truth) == 1


def test_match_threshold_is_inclusive_at_point_four():
    truth = (0.0, 0.0, 100.0, 100.0)
    assert MATCH_IOU == 0.4
    assert match_detection(dets([[0, 0, 100, 40]], [0.9], [1.0]), truth) == 0  # IoU 0.40
    assert match_detection(dets([[0, 0, 100, 39]], [0.9], [1.0]), truth) is None  # 0.39
    assert match_detection(dets([], [], []), truth) is None


def test_detect_landmarks_matches_batches_and_reports_progress(tmp_path: Path):
    names = [f"set/img{i}.png" for i in range(5)]
    write_images(tmp_path, names)
    truth_box = (0.0, 0.0, 100.0, 100.0)
    detector = FakeDetector({
        "img0.png": dets([[50, 0, 150, 100], [0, 10, 100, 110]], [0.99, 0.8], [1.0, 2.0]),
        "img1.png": dets([[0, 0, 100, 39]], [0.99], [3.0]),         # IoU 0.39: a miss
        "img2.png": dets([], [], []),                                 # nothing found: a miss
        "img3.png": dets([[0, 0, 100, 40]], [0.9], [4.0]),          # IoU 0.40: a match
        "img4.png": dets([[0, 0, 100, 100], [0, 0, 90, 100]], [0.7, 0.99], [5.0, 6.0]),
    })
    samples = [sample(box=truth_box, image=name) for name in names]
    seen: list[tuple[int, int]] = []
    preds = detect_landmarks(detector, samples, tmp_path, batch_size=2,
                             progress=lambda done, total: seen.append((done, total)))
    assert [len(c) for c in detector.calls] == [2, 2, 1]
    assert [p.relative_to(tmp_path).as_posix() for c in detector.calls for p in c] == names
    assert seen == [(2, 5), (4, 5), (5, 5)]
    assert preds[1] is None and preds[2] is None
    for i, value in ((0, 2.0), (3, 4.0), (4, 5.0)):
        assert preds[i].shape == (5, 2) and preds[i].dtype == np.float32
        assert np.all(preds[i] == value)
    assert evaluate_landmarks(preds, samples).n_detected == 3


# --- integration: original MTCNN weights on CNN_FacePoint ---------------------------------


@pytest.fixture(scope="session")
def facepoint_test_list() -> Path:
    test_list = FACEPOINT / "testImageList.txt"
    if not test_list.is_file():
        pytest.skip(f"CNN_FacePoint test list {test_list} is missing (no ../shared/data?)")
    return test_list


@pytest.mark.slow
def test_reference_weights_on_cnn_facepoint(facepoint_test_list: Path,
                                            reference_weights_dir: Path):
    samples = read_landmark_list(facepoint_test_list)[:50]
    assert len(samples) == 50
    detector = Detector(weights=reference_weights_dir)
    start = time.perf_counter()
    preds = detect_landmarks(detector, samples, FACEPOINT)
    result = evaluate_landmarks(preds, samples)
    elapsed = time.perf_counter() - start
    assert isinstance(result, LandmarkResult)
    print(f"\n{landmark_table({'reference, first 50': result})}({elapsed:.1f} s)")
    assert result.n_detected >= 45
    assert result.nme < 0.08
