"""WIDER FACE protocol: hand-worked cases, and agreement with a literal, loop-by-loop
transcription of the official algorithm written here independently of the module."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATA as SHARED
from mtcnnkit.data.annotations import read_wider_txt
from mtcnnkit.evaluate import wider
from mtcnnkit.evaluate.wider import WiderGroundTruth

GT_DIR = SHARED / "WIDER_FACE" / "eval_tools" / "ground_truth"


def make_gt(images: dict[str, tuple[list, list]]) -> WiderGroundTruth:
    """key -> (faces as x y w h, listed indices) with the same list at every level."""
    boxes = {k: np.asarray(b, dtype=float).reshape(-1, 4) for k, (b, _) in images.items()}
    keep = {lv: {k: np.asarray(i, dtype=np.int64) for k, (_, i) in images.items()}
            for lv in wider.LEVELS}
    return WiderGroundTruth(boxes, keep)


# --------------------------------------------------------------------------- hand-worked


def test_duplicates_count_as_proposals_not_recall() -> None:
    # two listed faces; a hit on face A (0.9), a duplicate on A (0.8), a miss (0.7)
    gt = make_gt({"e/img": ([[0, 0, 10, 10], [100, 100, 10, 10]], [0, 1])})
    pred = {"e/img": np.array([[0, 0, 10, 10, 0.9], [1, 1, 10, 10, 0.8],
                               [300, 300, 10, 10, 0.7]])}
    result = wider.evaluate_wider(pred, gt)
    curve = result.curves["easy"]
    # normalised scores: 1.0, 0.5, 0.0. Thresholds 0.999 ... 0.501: only the hit is above
    t_high = np.flatnonzero(curve.thresholds > 0.5)
    assert np.all(curve.precision[t_high] == 1.0) and np.all(curve.recall[t_high] == 0.5)
    # 0.5 >= t > 0: hit + duplicate -> 1 recalled of 2 proposals
    t_mid = np.flatnonzero((curve.thresholds <= 0.5) & (curve.thresholds > 0.0))
    assert np.all(curve.precision[t_mid] == 0.5)
    # t = 0: all three proposals
    assert curve.precision[-1] == pytest.approx(1 / 3) and curve.recall[-1] == 0.5
    # the envelope is 1.0 up to recall 0.5, then nothing: AP = 0.5
    assert result.ap["easy"] == pytest.approx(0.5)


def test_match_to_unlisted_face_is_ignored() -> None:
    # face 1 does not count at this level; a prediction on it is neither TP nor FP
    gt = make_gt({"e/img": ([[0, 0, 10, 10], [100, 100, 10, 10]], [0])})
    pred = {"e/img": np.array([[100, 100, 10, 10, 0.9], [0, 0, 10, 10, 0.5]])}
    curve = wider.evaluate_wider(pred, gt).curves["easy"]
    # above every threshold only the ignored prediction exists (normalised score 1.0):
    # 0 proposals -> precision undefined (NaN), recall 0
    assert np.isnan(curve.precision[0]) and curve.recall[0] == 0.0
    # at t = 0 both are in: 1 proposal (the ignored one does not count), 1 recalled
    assert curve.precision[-1] == 1.0 and curve.recall[-1] == 1.0
    assert curve.ap == pytest.approx(1.0)


def test_image_without_predictions_counts_its_faces_as_misses() -> None:
    gt = make_gt({"e/a": ([[0, 0, 10, 10]], [0]), "e/b": ([[0, 0, 10, 10]], [0])})
    pred = {"e/a": np.array([[0, 0, 10, 10, 0.9]])}
    result = wider.evaluate_wider(pred, gt, images=["e/a", "e/b"])
    assert result.n_faces["easy"] == 2
    assert result.curves["easy"].recall[-1] == 0.5
    assert result.ap["easy"] == pytest.approx(0.5)


def test_plus_one_pixel_convention_decides_a_borderline_match() -> None:
    # gt x y w h = 0 0 10 10 -> corners 0..10; prediction 5 0 10 10 -> 5..15.
    # with +1: inter 6*11=66, areas 121 each, IoU 66/176 = 0.375 -> no match.
    # prediction 3 0 10 10 -> 3..13: inter 8*11=88, IoU 88/154 = 0.571 (without +1: 7/13=0.54)
    gt = make_gt({"e/img": ([[0, 0, 10, 10]], [0])})
    miss = wider.evaluate_wider({"e/img": np.array([[5, 0, 10, 10, 1.0]])}, gt)
    hit = wider.evaluate_wider({"e/img": np.array([[3, 0, 10, 10, 1.0]])}, gt)
    assert miss.ap["easy"] == 0.0 and hit.ap["easy"] == pytest.approx(1.0)
    # 0 0 9 9 -> 0..9 vs 0..10: +1 areas 100 and 121: IoU 100/121 = 0.826 either way
    edge = wider.evaluate_wider({"e/img": np.array([[0, 0, 9, 9, 1.0]])}, gt)
    assert edge.ap["easy"] == pytest.approx(1.0)


def test_scores_are_normalised_over_the_whole_set() -> None:
    # image a's only prediction has the lowest score of the set -> normalised to 0,
    # so it only counts at the last threshold (0.0)
    gt = make_gt({"e/a": ([[0, 0, 10, 10]], [0]), "e/b": ([[0, 0, 10, 10]], [0])})
    pred = {"e/a": np.array([[0, 0, 10, 10, 0.2]]), "e/b": np.array([[0, 0, 10, 10, 0.9]])}
    curve = wider.evaluate_wider(pred, gt).curves["easy"]
    assert curve.recall[-2] == 0.5 and curve.recall[-1] == 1.0


def test_voc_ap_by_hand() -> None:
    # recall 0.2 at precision 1.0, recall 0.6 at precision 0.5: 0.2*1 + 0.4*0.5 = 0.4
    assert wider.voc_ap(np.array([0.2, 0.6]), np.array([1.0, 0.5])) == pytest.approx(0.4)
    # a later higher precision lifts the envelope: 0.2*0.8 + 0.4*0.8
    assert wider.voc_ap(np.array([0.2, 0.6]), np.array([0.5, 0.8])) == pytest.approx(0.48)


# --------------------------------------------------------------------------- stage recall


def stage_gt() -> WiderGroundTruth:
    """Image a: face 0 (corners 0..9, +1 area 100), 1 and 3 (10x10), 2 (never boxed); face 3
    is not listed at easy. Image b: one face, no boxes at all. Image c: one face listed at
    hard only, an empty box array."""
    boxes = {"e/a": np.array([[0, 0, 9, 9], [20, 20, 10, 10], [50, 50, 10, 10],
                              [80, 80, 10, 10]], dtype=float),
             "e/b": np.array([[0, 0, 10, 10]], dtype=float),
             "e/c": np.array([[0, 0, 10, 10]], dtype=float)}
    listed = {"easy": {"e/a": [0, 1, 2], "e/b": [], "e/c": []},
              "medium": {"e/a": [0, 1, 2, 3], "e/b": [0], "e/c": []},
              "hard": {"e/a": [0, 1, 2, 3], "e/b": [0], "e/c": [0]}}
    keep = {lv: {k: np.asarray(i, dtype=np.int64) for k, i in by_key.items()}
            for lv, by_key in listed.items()}
    return WiderGroundTruth(boxes, keep)


STAGE_BOXES = {  # x1 y1 x2 y2
    "e/a": np.array([[0, 0, 3, 9],       # face 0: +1 inter 4*10 = 40 / union 100 -> IoU 0.4
                     [20, 20, 30, 30],   # face 1 exactly (IoU 1)
                     [80, 80, 90, 90],   # face 3 exactly
                     [200, 200, 220, 220]], dtype=float),  # no face
    "e/c": np.zeros((0, 4)),
}


def test_stage_recall_by_hand() -> None:
    gt = stage_gt()
    # IoU >= 0.5: face 1 (all levels) and face 3 (medium, hard). Listed: easy 3, medium
    # 4 + 1, hard 4 + 1 + 1
    recall = wider.stage_recall(STAGE_BOXES, gt, ["e/a", "e/b", "e/c"])
    assert recall == pytest.approx({"easy": 1 / 3, "medium": 2 / 5, "hard": 2 / 6})
    # at 0.4 face 0 counts too (IoU exactly 0.4 with the +1 convention; 27/81 without)
    recall = wider.stage_recall(STAGE_BOXES, gt, ["e/a", "e/b", "e/c"], iou_threshold=0.4)
    assert recall == pytest.approx({"easy": 2 / 3, "medium": 3 / 5, "hard": 3 / 6})


def test_stage_recall_counts_only_the_images_given() -> None:
    gt = stage_gt()
    recall = wider.stage_recall(STAGE_BOXES, gt, ["e/b", "e/c"])
    # no easy face listed on b or c: undefined; the listed ones have no boxes
    assert np.isnan(recall["easy"]) and recall["medium"] == 0.0 and recall["hard"] == 0.0
    assert wider.stage_recall({}, gt, ["e/a"]) == {"easy": 0.0, "medium": 0.0, "hard": 0.0}
    with pytest.raises(KeyError):
        wider.stage_recall(STAGE_BOXES, gt, ["e/nope"])


@pytest.mark.parametrize("seed", range(3))
def test_stage_recall_bounds_the_recall_of_the_protocol(seed: int) -> None:
    # a face the protocol recalls has a prediction overlapping it >= 0.5, so stage recall
    # (of the same boxes, any score) is at least the PR curve's last recall
    rng = np.random.default_rng(seed)
    images, predictions = {}, {}
    for i in range(8):
        n_gt = int(rng.integers(1, 6))
        g = np.column_stack([rng.uniform(0, 100, (n_gt, 2)), rng.uniform(4, 40, (n_gt, 2))])
        images[f"ev/img{i}"] = (g, np.flatnonzero(rng.random(n_gt) < 0.7))
        boxes = g[rng.integers(0, n_gt, 6)] + rng.normal(0, 4, (6, 4))
        predictions[f"ev/img{i}"] = np.column_stack([boxes, rng.random(6)])
    gt = make_gt(images)
    result = wider.evaluate_wider(predictions, gt)
    corners = {k: wider.to_corners(p) for k, p in predictions.items()}
    recall = wider.stage_recall(corners, gt, list(images))
    for level in wider.LEVELS:
        assert recall[level] >= result.curves[level].recall[-1]


def with_attributes(gt: WiderGroundTruth, labels: dict[str, list]) -> WiderGroundTruth:
    return WiderGroundTruth(gt.boxes, gt.keep,
                            {k: np.asarray(v, dtype=np.int64).reshape(-1, 6)
                             for k, v in labels.items()})


def test_attribute_recall_by_hand() -> None:
    # blur expression illumination invalid occlusion pose, per face of stage_gt()
    gt = with_attributes(stage_gt(), {
        "e/a": [[0, 0, 0, 0, 0, 1],    # face 0: missed (IoU 0.4), atypical pose
                [2, 0, 0, 0, 1, 0],    # face 1: found, heavy blur, partly occluded
                [0, 0, 1, 0, 0, 1],    # face 2: missed, extreme light, atypical pose
                [2, 0, 0, 0, 0, 0]],   # face 3: found, heavy blur, not listed at easy
        "e/b": [[1, 0, 0, 0, 0, 0]],   # missed (no boxes)
        "e/c": [[0, 0, 0, 0, 2, 0]]})  # missed, heavily occluded; listed at hard only
    rows = {(r.attribute, r.name): r for r in
            wider.attribute_recall(STAGE_BOXES, gt, ["e/a", "e/b", "e/c"])}
    pose = rows["pose", "atypical"]
    assert pose.value == 1 and pose.faces == {"easy": 2, "medium": 2, "hard": 2}
    assert pose.recall == {"easy": 0.0, "medium": 0.0, "hard": 0.0}
    heavy_blur = rows["blur", "heavy blur"]
    assert heavy_blur.faces == {"easy": 1, "medium": 2, "hard": 2}
    assert heavy_blur.recall == {"easy": 1.0, "medium": 1.0, "hard": 1.0}
    normal_blur = rows["blur", "normal blur"]  # image b's face: medium and hard only
    assert normal_blur.faces == {"easy": 0, "medium": 1, "hard": 1}
    assert np.isnan(normal_blur.recall["easy"]) and normal_blur.recall["hard"] == 0.0
    assert rows["occlusion", "heavy"].faces == {"easy": 0, "medium": 0, "hard": 1}
    assert ("expression", "exaggerated") not in rows  # no face carries it: no row
    assert ("invalid", "invalid") not in rows
    # the values of one attribute split the faces: their recalls combine to stage recall
    overall = wider.stage_recall(STAGE_BOXES, gt, ["e/a", "e/b", "e/c"])
    for attribute in ("blur", "occlusion", "pose"):
        parts = [r for r in rows.values() if r.attribute == attribute]
        for level in wider.LEVELS:
            n = sum(r.faces[level] for r in parts)
            hits = sum(r.faces[level] * r.recall[level] for r in parts if r.faces[level])
            assert n == gt.faces(level) and hits / n == pytest.approx(overall[level])


def test_attribute_recall_needs_attributes_in_range() -> None:
    with pytest.raises(ValueError, match="no face attributes"):
        wider.attribute_recall(STAGE_BOXES, stage_gt(), ["e/a"])
    gt = with_attributes(stage_gt(), {"e/a": [[0, 0, 0, 0, 0, 0]] * 3 + [[0, 0, 0, 0, 0, 2]],
                                      "e/b": [[0] * 6], "e/c": [[0] * 6]})
    with pytest.raises(ValueError, match="pose labels"):
        wider.attribute_recall(STAGE_BOXES, gt, ["e/a"])


def test_to_corners_inverts_to_wider_boxes() -> None:
    corners = np.array([[10.5, 20.0, 40.25, 60.0]], dtype=np.float32)
    rows = wider.to_wider_boxes(corners, np.array([0.9]))
    np.testing.assert_array_equal(wider.to_corners(rows), corners)
    assert wider.to_corners(np.zeros((0, 5))).shape == (0, 4)


# --------------------------------------------------------------------------- literal transcription


def official_loop(predictions, gt: WiderGroundTruth, level: str) -> float:
    """The official algorithm, one prediction and one threshold at a time."""
    keys = sorted(gt.boxes)
    scores = np.concatenate([predictions[k][:, 4] for k in keys if len(predictions[k])])
    lo, hi = scores.min(), scores.max()
    n = wider.N_THRESHOLDS
    pr = np.zeros((n, 2))
    count_face = 0
    for k in keys:
        pred = predictions[k].copy()
        pred[:, 4] = (pred[:, 4] - lo) / (hi - lo)
        pred = pred[np.argsort(-pred[:, 4], kind="stable")]
        g = gt.boxes[k]
        listed = gt.keep[level][k]
        count_face += len(listed)
        if len(pred) == 0 or len(g) == 0:
            continue
        ignore = np.zeros(len(g))
        ignore[listed] = 1
        recall_list = np.zeros(len(g))
        proposal = np.ones(len(pred))
        pred_recall = np.zeros(len(pred))
        for h in range(len(pred)):
            px1, py1 = pred[h, 0], pred[h, 1]
            px2, py2 = px1 + pred[h, 2], py1 + pred[h, 3]
            ov = []
            for j in range(len(g)):
                gx1, gy1, gx2, gy2 = g[j, 0], g[j, 1], g[j, 0] + g[j, 2], g[j, 1] + g[j, 3]
                iw = min(px2, gx2) - max(px1, gx1) + 1
                ih = min(py2, gy2) - max(py1, gy1) + 1
                if iw > 0 and ih > 0:
                    union = ((px2 - px1 + 1) * (py2 - py1 + 1) + (gx2 - gx1 + 1) * (gy2 - gy1 + 1)
                             - iw * ih)
                    ov.append(iw * ih / union)
                else:
                    ov.append(0.0)
            j = int(np.argmax(ov))
            if ov[j] >= 0.5:
                if ignore[j] == 0:
                    recall_list[j] = -1
                    proposal[h] = -1
                elif recall_list[j] == 0:
                    recall_list[j] = 1
            pred_recall[h] = np.sum(recall_list == 1)
        for t in range(n):
            thresh = 1 - (t + 1) / n
            above = np.flatnonzero(pred[:, 4] >= thresh)
            if len(above):
                last = above[-1]
                pr[t, 0] += np.sum(proposal[:last + 1] == 1)
                pr[t, 1] += pred_recall[last]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = pr[:, 1] / pr[:, 0]
    return wider.voc_ap(pr[:, 1] / count_face, precision)


@pytest.mark.parametrize("seed", range(6))
def test_matches_the_literal_official_algorithm(seed: int) -> None:
    rng = np.random.default_rng(seed)
    images = {}
    predictions = {}
    for i in range(8):
        n_gt = int(rng.integers(0, 6))
        g = np.column_stack([rng.uniform(0, 200, (n_gt, 2)), rng.uniform(4, 60, (n_gt, 2))])
        listed = np.flatnonzero(rng.random(n_gt) < 0.6)
        images[f"ev{i % 3}/img{i}"] = (g, listed)
        picks = rng.integers(0, max(n_gt, 1), int(rng.integers(0, 8)))
        near = g[picks] if n_gt else np.zeros((0, 4))
        jitter = near + rng.normal(0, 3, near.shape)
        noise = np.column_stack([rng.uniform(0, 200, (3, 2)), rng.uniform(4, 60, (3, 2))])
        boxes = np.vstack([jitter, noise])
        predictions[f"ev{i % 3}/img{i}"] = np.column_stack([boxes, rng.random(len(boxes))])
    gt = make_gt(images)
    result = wider.evaluate_wider(predictions, gt)
    assert result.ap["easy"] == pytest.approx(official_loop(predictions, gt, "easy"), abs=1e-12)


# --------------------------------------------------------------------------- files


def test_prediction_files_round_trip(tmp_path: Path) -> None:
    pred = {"0--Parade/a": np.array([[1.5, 2.0, 30.0, 40.25, 0.987654]]),
            "1--Handshaking/b": np.zeros((0, 5))}
    wider.write_predictions(tmp_path, pred)
    text = (tmp_path / "0--Parade" / "a.txt").read_text().splitlines()
    assert text[:2] == ["a", "1"]
    back = wider.read_predictions(tmp_path)
    assert set(back) == set(pred)
    np.testing.assert_allclose(back["0--Parade/a"], pred["0--Parade/a"], atol=1e-3)
    assert back["1--Handshaking/b"].shape == (0, 5)


@pytest.mark.parametrize(("content", "message"), [
    ("a\n", "box count"),
    ("a\nthree\n", ":2:"),
    ("a\n2\n1 2 3 4 0.5\n", "count says 2"),
    ("a\n1\n1 2 3\n", ":3:"),
])
def test_malformed_prediction_files(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "a.txt").write_text(content)
    with pytest.raises(ValueError, match=message):
        wider.read_predictions(tmp_path)


def test_to_wider_boxes() -> None:
    rows = wider.to_wider_boxes(np.array([[10.0, 20.0, 40.0, 60.0]]), np.array([0.9]))
    np.testing.assert_allclose(rows, [[10, 20, 30, 40, 0.9]])


# --------------------------------------------------------------------------- official files


@pytest.fixture(scope="module")
def official_gt() -> WiderGroundTruth:
    if not GT_DIR.is_dir():
        pytest.skip(f"WIDER eval ground truth {GT_DIR} is missing")
    return wider.load_ground_truth(GT_DIR)


def test_official_ground_truth_counts(official_gt: WiderGroundTruth) -> None:
    assert len(official_gt.boxes) == 3226
    present = [wider.image_key(p) for p in
               (SHARED / "WIDER_FACE" / "WIDER_val" / "images").glob("*/*.jpg")]
    assert len(present) == 1162
    sub = official_gt.restrict(present)
    # PROVENANCE.md: the subset keeps easy 2,698, medium 4,851, hard 11,566 listed faces
    assert (sub.faces("easy"), sub.faces("medium"), sub.faces("hard")) == (2698, 4851, 11566)


def test_official_attributes_match_the_annotation_text(official_gt: WiderGroundTruth) -> None:
    # the .mat's <attribute>_label_list cells and wider_face_val_bbx_gt.txt's columns are two
    # independent copies of the same labels
    text = SHARED / "WIDER_FACE" / "wider_face_split" / "wider_face_val_bbx_gt.txt"
    faces, _ = read_wider_txt(text)
    assert official_gt.attributes is not None
    compared = 0
    for f in faces[::10]:
        key = wider.image_key(f.image)
        if len(f.boxes) != len(official_gt.boxes[key]):
            continue  # the reader dropped a zero-size box that the .mat keeps
        np.testing.assert_array_equal(official_gt.attributes[key], f.attributes)
        compared += len(f.attributes)
    assert compared > 1000


def test_unknown_image_is_an_error(official_gt: WiderGroundTruth) -> None:
    with pytest.raises(KeyError, match="not in the WIDER val ground truth"):
        official_gt.restrict(["0--Parade/no_such_image"])
