"""Training-sample generation and shards: labels checked against IoU recomputed here from the
stored crop boxes, regression and landmark targets reconstructing the annotations, the flip
swap checked on coloured markers, pixels compared with the detector's own crop sampler,
determinism (seeds, worker counts), resuming after a kill, atomic shards; integration on
../shared/data (skipped when it is absent)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED_DATA
from mtcnnkit.data.annotations import FaceBoxes, LandmarkSample, read_landmark_list, read_wider_txt
from mtcnnkit.data.samples import (
    SampleConfig,
    generate_detection_samples,
    generate_landmark_samples,
    integral_images,
    plan_detection_crops,
    positive_attempts,
)
from mtcnnkit.data.shards import Samples, ShardDataset, ShardWriter, summary
from mtcnnkit.detect.sampling import IntegralImages, sample_regions

# Marker colours of the five points: left eye, right eye, nose, mouth left, mouth right.
PALETTE = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255]])
MARKED_BOX = (60.0, 60.0, 180.0, 190.0)
MARKED_POINTS = np.array([[90, 100], [150, 100], [120, 130], [95, 160], [145, 160]], np.float32)


# ---------------------------------------------------------------------------------------------
# Synthetic data


def save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)  # PNG: lossless, so crops can be recomputed here


def face_images(root: Path) -> list[FaceBoxes]:
    """Noise images with bright rectangles as faces: two faces, three faces (one too small
    to be used, one touching the border) and none."""
    rng = np.random.default_rng(7)
    specs = [
        ("a/two.png", (160, 120), [(20, 20, 60, 70), (90, 30, 140, 90)]),
        ("a/three.png", (200, 200), [(10, 120, 70, 190), (120, 20, 128, 28), (150, 60, 200, 110)]),
        ("b/none.png", (100, 80), []),
    ]
    faces = []
    for name, (w, h), boxes in specs:
        pixels = rng.integers(0, 120, (h, w, 3), dtype=np.uint8)
        for x1, y1, x2, y2 in boxes:
            pixels[y1:y2, x1:x2] = rng.integers(150, 256, (y2 - y1, x2 - x1, 3), dtype=np.uint8)
        save(root / name, pixels)
        faces.append(FaceBoxes(name, np.array(boxes, np.float32).reshape(-1, 4)))
    return faces


def marked_face(root: Path, name: str = "marked.png") -> LandmarkSample:
    """A grey image with a face rectangle and a coloured disc on each of the five points."""
    pixels = np.full((240, 240, 3), 128, np.uint8)
    x1, y1, x2, y2 = (int(v) for v in MARKED_BOX)
    pixels[y1:y2, x1:x2] = (200, 170, 150)
    yy, xx = np.mgrid[:240, :240] + 0.5
    for (px, py), colour in zip(MARKED_POINTS, PALETTE, strict=True):
        pixels[(xx - px) ** 2 + (yy - py) ** 2 <= 7.5**2] = colour
    save(root / name, pixels)
    return LandmarkSample(name, MARKED_BOX, MARKED_POINTS.copy())


def iou_numpy(crop: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """IoU of one box with many, written out independently of mtcnnkit.detect.boxes."""
    iw = np.clip(np.minimum(crop[2], faces[:, 2]) - np.maximum(crop[0], faces[:, 0]), 0, None)
    ih = np.clip(np.minimum(crop[3], faces[:, 3]) - np.maximum(crop[1], faces[:, 1]), 0, None)
    inter = iw * ih
    area = (crop[2] - crop[0]) * (crop[3] - crop[1])
    areas = (faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1])
    return inter / (area + areas - inter)


def detector_crops(image: np.ndarray, crops: np.ndarray, size: int) -> torch.Tensor:
    """The crops as the detector cuts them at inference (normalised float32 NCHW)."""
    integral = IntegralImages.build([torch.from_numpy(image)])
    regions = torch.from_numpy(crops.astype(np.int64))
    return sample_regions(integral, torch.zeros(len(crops), dtype=torch.long), regions, size,
                          size)


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def nearest_colour(pixel: np.ndarray) -> int:
    return int(np.argmin(((PALETTE - pixel.astype(np.int64)) ** 2).sum(axis=1)))


class Killed(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Detection samples


@pytest.mark.parametrize("size", [12, 24])
def test_detection_labels_targets_and_pixels(tmp_path: Path, size: int) -> None:
    faces = face_images(tmp_path / "images")
    config = SampleConfig(size=size, seed=3, samples_per_shard=150)
    counts = generate_detection_samples(faces, tmp_path / "images", tmp_path / "out", config)
    ds = ShardDataset(tmp_path / "out")
    assert ds.size == size and len(ds) == counts["total"] and counts["shards"] >= 2
    assert counts["positive"] > 0 and counts["part"] > 0 and counts["negative"] > 0
    assert counts["landmark"] == 0 and ds.counts() == {k: counts[k] for k in ds.counts()}

    crops = np.stack([ds[i].crop for i in range(len(ds))]).astype(np.float64)
    everything = ds.arrays(np.arange(len(ds)))
    for index, entry in enumerate(faces):
        image = np.array(Image.open(tmp_path / "images" / entry.image).convert("RGB"))
        h, w = image.shape[:2]
        mine = np.nonzero(ds.items == index)[0]
        c = crops[mine]
        assert (c[:, 2] - c[:, 0] == c[:, 3] - c[:, 1]).all()  # squares
        assert (c[:, :2] >= 0).all() and (c[:, 2] <= w).all() and (c[:, 3] <= h).all()
        boxes = entry.boxes.astype(np.float64)
        for i, crop in zip(mine, c, strict=True):
            overlaps = iou_numpy(crop, boxes) if len(boxes) else np.zeros(1)
            best = overlaps.max()
            label, target = int(ds.labels[i]), everything.boxes[i].astype(np.float64)
            if label == 0:
                assert best < 0.3 and (target == 0).all()
                continue
            assert (label == 1 and best >= 0.65) or (label == -1 and 0.4 <= best < 0.65)
            side = crop[2] - crop[0]
            rebuilt = crop + target * side  # x1 + t * w reconstructs the face of largest IoU
            np.testing.assert_allclose(rebuilt, boxes[overlaps.argmax()], atol=1e-3)
        # Tiny face (8 px) is never a source: no positive centred on it.
        if entry.image == "a/three.png":
            assert not any(iou_numpy(crop, boxes[1:2])[0] >= 0.4 for crop in c)
        # Pixels: stored crops, batched and normalised, match the detector's own sampler.
        expected = detector_crops(image, c, size)
        got = ds.batch(mine).images
        assert got.dtype == torch.float32 and got.shape == (len(mine), 3, size, size)
        assert got.stride()[1] == 1  # NCHW view of channels-last memory, like the detector's
        assert (got - expected).abs().max() <= 0.5 / 128 + 1e-6
        exact = c[:, 2] - c[:, 0] == size  # one source pixel per output pixel: exact
        if exact.any():
            assert torch.equal(got[torch.from_numpy(exact)], expected[torch.from_numpy(exact)])


def test_plan_without_faces_and_crowded() -> None:
    config = SampleConfig(size=12)
    rng = np.random.default_rng(0)
    plan = plan_detection_crops(np.zeros((0, 4)), np.zeros(0, bool), 200, 100, config, rng)
    assert len(plan.crops) == 50 and (plan.labels == 0).all()
    side = plan.crops[:, 2] - plan.crops[:, 0]
    assert side.min() >= 12 and side.max() <= 50
    # Too small an image for negatives: nothing, no error.
    plan = plan_detection_crops(np.zeros((0, 4)), np.zeros(0, bool), 20, 20, config, rng)
    assert len(plan.crops) == 0
    # An image tiled with faces: random negatives cannot be found, the call still returns.
    grid = np.array([(x, y, x + 10, y + 10) for x in range(0, 100, 10) for y in range(0, 100, 10)])
    plan = plan_detection_crops(grid, np.zeros(len(grid), bool), 100, 100, config, rng)
    for crop, label in zip(plan.crops, plan.labels, strict=True):
        assert label == 0 and iou_numpy(crop.astype(np.float64), grid).max() < 0.3


def test_crop_scale_sets_the_side_of_positive_and_part_crops() -> None:
    face = np.array([[100.0, 100.0, 180.0, 200.0]])  # 80 x 100: longest side 100
    sides = {}
    for scale in ((0.8, 1.25), (0.6, 1.25)):
        config = SampleConfig(size=12, negatives_random=0, negatives_near=0,
                              positive_attempts=400, crop_scale=scale)
        plan = plan_detection_crops(face, np.ones(1, bool), 400, 400, config,
                                    np.random.default_rng(0))
        side = plan.crops[:, 2] - plan.crops[:, 0]
        assert len(side) and (plan.labels != 0).all()
        assert side.min() >= np.floor(scale[0] * 100) and side.max() <= np.ceil(1.25 * 100)
        sides[scale] = side
    # the lower bound reaches sides the default never draws (part faces, IoU 0.4-0.65)
    assert sides[(0.6, 1.25)].min() < 80 <= sides[(0.8, 1.25)].min()
    # the default keeps earlier shards' fingerprints; another range changes them
    assert "crop_scale" not in SampleConfig().fingerprint_fields()
    assert SampleConfig(crop_scale=[0.6, 1.25]).fingerprint_fields()["crop_scale"] == (0.6, 1.25)


def test_positive_iou_moves_the_positive_part_border() -> None:
    face = np.array([[100.0, 100.0, 160.0, 200.0]])  # 60 x 100: a tall face (1.67x)
    plans = {}
    for threshold in (0.65, 0.5):
        config = SampleConfig(size=48, negatives_random=0, negatives_near=0,
                              positive_attempts=400, positive_iou=threshold)
        plan = plan_detection_crops(face, np.ones(1, bool), 400, 400, config,
                                    np.random.default_rng(0))
        overlap = iou_numpy(face[0], plan.crops.astype(np.float64))
        assert (overlap >= 0.4).all()
        np.testing.assert_array_equal(plan.labels == 1, overlap >= threshold)
        plans[threshold] = plan
    # same draws, same crops: only the labels move
    np.testing.assert_array_equal(plans[0.65].crops, plans[0.5].crops)
    # a square around a face 1.67x taller than wide overlaps it at most 0.63: never a positive
    # with the paper's 0.65, often one from 0.5
    assert (plans[0.65].labels == 1).sum() == 0 < (plans[0.5].labels == 1).sum()
    # the default keeps earlier shards' fingerprints; another value changes them
    assert "positive_iou" not in SampleConfig().fingerprint_fields()
    assert SampleConfig(positive_iou=0.5).fingerprint_fields()["positive_iou"] == 0.5
    for bad in (0.4, 0.3, 1.01):
        with pytest.raises(ValueError, match="positive_iou"):
            SampleConfig(positive_iou=bad)


def test_atypical_faces_get_their_own_number_of_attempts() -> None:
    # blur expression illumination invalid occlusion pose
    labels = np.array([[0, 0, 0, 0, 0, 0],    # typical
                       [0, 0, 0, 0, 0, 1],    # atypical pose
                       [0, 0, 0, 0, 2, 0],    # heavy occlusion
                       [0, 0, 1, 0, 0, 0],    # extreme illumination
                       [2, 1, 0, 0, 0, 0]])   # heavy blur, exaggerated: not in the default
    boxes = np.array([[40.0 + 100 * i, 40, 120 + 100 * i, 120] for i in range(5)])
    faces = FaceBoxes("x.jpg", boxes.astype(np.float32), labels.astype(np.int16))
    assert positive_attempts(faces, SampleConfig(positive_attempts=7)).tolist() == [7] * 5
    config = SampleConfig(positive_attempts=7, atypical_attempts=30)
    assert positive_attempts(faces, config).tolist() == [7, 30, 30, 30, 7]
    config = SampleConfig(positive_attempts=7, atypical_attempts=0, atypical_attributes=["blur"])
    assert positive_attempts(faces, config).tolist() == [7, 7, 7, 7, 0]
    no_labels = FaceBoxes("x.jpg", boxes.astype(np.float32), None)
    assert positive_attempts(no_labels, config).tolist() == [7] * 5
    # crops of side = the face's (scale 1) shifted by at most 0.2 of it overlap it >= 0.47:
    # every attempt inside the image gives a positive or a part face of its own face
    config = SampleConfig(size=12, negatives_random=0, negatives_near=0, positive_attempts=7,
                          atypical_attempts=30, crop_scale=(1.0, 1.0))
    attempts = positive_attempts(faces, config)
    plan = plan_detection_crops(boxes, np.ones(5, bool), 600, 200, config,
                                np.random.default_rng(0), attempts)
    centre = (plan.crops[:, 0] + plan.crops[:, 2]) / 2
    per_face = np.bincount(((centre - 30) // 100).astype(int), minlength=5)
    assert per_face.tolist() == [7, 30, 30, 30, 7] and (plan.labels != 0).all()
    # unusable faces give none, whatever their attempts
    plan = plan_detection_crops(boxes, np.array([1, 0, 1, 1, 1], bool), 600, 200, config,
                                np.random.default_rng(0), attempts)
    assert len(plan.crops) == 7 + 30 + 30 + 7
    # without the option the plan is the one of earlier versions, draw for draw
    plain = SampleConfig(size=12, positive_attempts=7)
    a = plan_detection_crops(boxes, np.ones(5, bool), 600, 200, plain, np.random.default_rng(3))
    b = plan_detection_crops(boxes, np.ones(5, bool), 600, 200, plain, np.random.default_rng(3),
                             positive_attempts(faces, plain))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    # and the fingerprint too (earlier shards stay valid); setting it changes it
    assert "atypical_attempts" not in plain.fingerprint_fields()
    fields = SampleConfig(atypical_attempts=30).fingerprint_fields()
    assert fields["atypical_attempts"] == 30
    assert fields["atypical_attributes"] == ("pose", "occlusion", "illumination")


def test_integral_images_match_the_detectors() -> None:
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((7, 5, 3), (40, 61, 3))]
    mine = integral_images(images)
    theirs = IntegralImages.build([torch.from_numpy(im) for im in images])
    for name in ("flat", "bases", "heights", "widths"):
        assert torch.equal(getattr(mine, name), getattr(theirs, name)), name


def test_config_checks() -> None:
    assert SampleConfig(size=12).face_min == 12 and SampleConfig(size=24).face_min == 20
    assert SampleConfig(size=48, min_face=40).face_min == 40
    for bad in ({"flip_p": 1.5}, {"workers": 0}, {"negatives_random": -1}, {"size": 0},
                {"brightness": 1.0}, {"samples_per_shard": 0}, {"min_face": 0},
                {"crop_scale": (0.0, 1.0)}, {"crop_scale": (1.3, 1.2)}, {"crop_scale": (1.0,)},
                {"atypical_attempts": -1}, {"atypical_attributes": ["pose", "glasses"]}):
        with pytest.raises(ValueError):
            SampleConfig(**bad)


# ---------------------------------------------------------------------------------------------
# Landmark samples


def test_landmark_targets_reconstruct(tmp_path: Path) -> None:
    sample = marked_face(tmp_path)
    config = SampleConfig(size=24, seed=1, flip_p=0, rotation_p=0, jitter_p=0,
                          landmark_attempts=30)
    counts = generate_landmark_samples([sample], tmp_path, tmp_path / "out", config)
    ds = ShardDataset(tmp_path / "out")
    assert counts["landmark"] == len(ds) > 5 and (ds.labels == -2).all()
    box = np.array(MARKED_BOX)
    image = np.array(Image.open(tmp_path / "marked.png"))
    data = ds.arrays(np.arange(len(ds)))
    for crop, target, marks in zip(data.crops, data.boxes, data.landmarks, strict=True):
        crop = crop.astype(np.float64)
        side = crop[2] - crop[0]
        assert iou_numpy(crop, box[None])[0] >= 0.65
        np.testing.assert_allclose(crop + target * side, box, atol=1e-3)
        points = np.stack([marks[:5], marks[5:]], axis=1) * side + crop[:2]
        np.testing.assert_allclose(points, MARKED_POINTS, atol=1e-3)
    expected = detector_crops(image, data.crops, 24)
    assert (ds.batch(np.arange(len(ds))).images - expected).abs().max() <= 0.5 / 128 + 1e-6


@pytest.mark.parametrize("rotation_p", [0.0, 1.0])
def test_flip_swaps_left_and_right(tmp_path: Path, rotation_p: float) -> None:
    sample = marked_face(tmp_path)
    config = SampleConfig(size=48, seed=5, flip_p=0.5, rotation_p=rotation_p, jitter_p=0,
                          landmark_attempts=40)
    generate_landmark_samples([sample], tmp_path, tmp_path / "out", config)
    ds = ShardDataset(tmp_path / "out")
    flipped = 0
    for i in range(len(ds)):
        s = ds[i]
        xy = np.stack([s.landmarks[:5], s.landmarks[5:]], axis=1) * 48
        colours = [nearest_colour(s.image[int(y), int(x)]) for x, y in xy]
        assert xy[0, 0] < xy[1, 0] and xy[3, 0] < xy[4, 0]  # point 0 is the eye on the left
        if colours[0] == 1:  # flipped: the right-eye marker now is the left eye, point 0
            flipped += 1
            assert colours == [1, 0, 2, 4, 3]
            if rotation_p == 0:  # mirrored coordinates: x = x1 + (1 - t) * w, swapped order
                side = float(s.crop[2] - s.crop[0])
                x = s.crop[0] + (1 - s.landmarks[:5]) * side
                np.testing.assert_allclose(x, MARKED_POINTS[[1, 0, 2, 4, 3], 0], atol=1e-3)
        else:
            assert colours == [0, 1, 2, 3, 4]
    assert 0 < flipped < len(ds)


def test_rotated_points_follow_the_pixels(tmp_path: Path) -> None:
    """On an image whose red/green values are the pixel's x/y, a plane fitted to each crop
    maps the stored (rotated, maybe mirrored) points back to the annotated points."""
    y, x = np.mgrid[:250, :250]
    save(tmp_path / "coords.png", np.stack([x, y, np.zeros_like(x)], axis=2).astype(np.uint8))
    points = np.array([[105, 110], [145, 110], [125, 130], [108, 150], [142, 150]], np.float32)
    sample = LandmarkSample("coords.png", (80.0, 80.0, 170.0, 170.0), points)
    config = SampleConfig(size=48, seed=8, flip_p=0.5, rotation_p=1.0, jitter_p=0,
                          landmark_attempts=30)
    generate_landmark_samples([sample], tmp_path, tmp_path / "out", config)
    ds = ShardDataset(tmp_path / "out")
    assert len(ds) > 5
    centres = (np.arange(48) + 0.5) / 48
    # (x, y, 1) of every crop pixel centre, row after row
    grid = np.stack([np.tile(centres, 48), np.repeat(centres, 48), np.ones(48 * 48)], axis=1)
    mirrored = 0
    for s in ds:
        values = s.image.reshape(-1, 3)[:, :2].astype(np.float64)  # source x, y (pixel index)
        plane, *_ = np.linalg.lstsq(grid, values, rcond=None)
        marks = np.stack([s.landmarks[:5], s.landmarks[5:], np.ones(5)], axis=1)
        found = marks @ plane + 0.5  # continuous source coordinates of the stored points
        flipped = plane[0, 0] < 0  # x decreasing along the crop: mirrored
        mirrored += flipped
        expected = points[[1, 0, 2, 4, 3]] if flipped else points
        assert np.abs(found - expected).max() < 0.3
    assert 0 < mirrored < len(ds)


def test_colour_jitter_changes_pixels_only(tmp_path: Path) -> None:
    sample = marked_face(tmp_path)
    base = {"size": 24, "seed": 2, "flip_p": 0.5, "rotation_p": 0.5}
    generate_landmark_samples([sample], tmp_path, tmp_path / "a",
                              SampleConfig(**base, jitter_p=0))
    generate_landmark_samples([sample], tmp_path, tmp_path / "b",
                              SampleConfig(**base, jitter_p=1))
    a = ShardDataset(tmp_path / "a").arrays(np.arange(len(ShardDataset(tmp_path / "a"))))
    b = ShardDataset(tmp_path / "b").arrays(np.arange(len(ShardDataset(tmp_path / "b"))))
    assert np.array_equal(a.landmarks, b.landmarks) and np.array_equal(a.crops, b.crops)
    assert not np.array_equal(a.images, b.images)
    difference = np.abs(a.images.astype(int) - b.images.astype(int)).mean(axis=(1, 2, 3))
    assert (difference > 0).all() and difference.max() < 60


# ---------------------------------------------------------------------------------------------
# Determinism, resuming, atomic shards


def test_deterministic_whatever_the_worker_count(tmp_path: Path) -> None:
    faces = face_images(tmp_path / "images")
    landmarks = [marked_face(tmp_path / "images", f"m{i}.png") for i in range(3)]
    runs = {}
    for name, seed, workers in (("one", 4, 1), ("again", 4, 1), ("two", 4, 2), ("other", 9, 1)):
        config = SampleConfig(size=12, seed=seed, workers=workers, samples_per_shard=100)
        generate_detection_samples(faces, tmp_path / "images", tmp_path / name / "det", config)
        generate_landmark_samples(landmarks, tmp_path / "images", tmp_path / name / "lm", config)
        runs[name] = folder_bytes(tmp_path / name)
    assert runs["one"] == runs["again"] == runs["two"]
    assert runs["one"] != runs["other"]


def test_resume_after_a_kill(tmp_path: Path) -> None:
    faces = face_images(tmp_path / "images") * 2  # six images
    config = SampleConfig(size=12, seed=11, samples_per_shard=60)
    reference = generate_detection_samples(faces, tmp_path / "images", tmp_path / "ref", config)

    out = tmp_path / "out"
    (out / ".tmp-shard-00000").mkdir(parents=True)  # leftover of some earlier kill
    (out / ".tmp-shard-00000" / "images.npy").write_bytes(b"junk")

    def kill_after_first_shard(done: int, total: int) -> None:
        if (out / "shard-00000").exists() and done >= 3:
            raise Killed

    with pytest.raises(Killed):  # killed mid-run, with worker processes going
        generate_detection_samples(faces, tmp_path / "images", out,
                                   SampleConfig(size=12, seed=11, samples_per_shard=60,
                                                workers=2), kill_after_first_shard)
    journal = json.loads((out / "done.json").read_text())
    assert not journal["finished"] and 1 <= len(journal["shards"]) < reference["shards"]
    assert not (out / ".tmp-shard-00000").exists()
    # A kill between renaming a shard into place and journaling it leaves an orphan.
    orphan = f"shard-{len(journal['shards']):05d}"
    shutil.copytree(out / "shard-00000", out / orphan)
    (out / ".tmp-shard-00009").mkdir()

    seen: list[tuple[int, int]] = []
    resumed = generate_detection_samples(faces, tmp_path / "images", out, config,
                                         lambda d, t: seen.append((d, t)))
    assert seen[0][0] == journal["shards"][-1]["items"][1] and seen[-1] == (6, 6)
    assert resumed == reference
    assert folder_bytes(out) == folder_bytes(tmp_path / "ref")
    assert len(ShardDataset(out)) == reference["total"]  # no duplicates

    # Finished: a rerun changes nothing; other settings are refused.
    before = folder_bytes(out)
    assert generate_detection_samples(faces, tmp_path / "images", out, config) == reference
    assert folder_bytes(out) == before
    with pytest.raises(ValueError, match="other settings"):
        generate_detection_samples(faces, tmp_path / "images", out,
                                   SampleConfig(size=12, seed=12, samples_per_shard=60))


def make_samples(n: int, label: int, size: int = 12, start: int = 0) -> Samples:
    values = np.arange(start, start + n)
    images = (values[:, None, None, None] + np.zeros((1, size, size, 3), int)).astype(np.uint8)
    return Samples(
        images=images,
        labels=np.full(n, label, np.int8),
        boxes=np.repeat(values[:, None], 4, axis=1).astype(np.float32) / 100,
        landmarks=np.repeat(values[:, None], 10, axis=1).astype(np.float32) / 100,
        crops=np.repeat(values[:, None], 4, axis=1).astype(np.float32),
    )


def test_shard_writer_and_dataset(tmp_path: Path) -> None:
    root = tmp_path / "shards"
    (root / ".tmp-shard-00000").mkdir(parents=True)  # a killed writer's leftover
    (root / "shard-00007-notes").mkdir()  # not a shard name: ignored
    ds = ShardDataset(root)
    assert len(ds) == 0 and ds.counts()["positive"] == 0

    with ShardWriter(root, 12, samples_per_shard=5, source="test", seed=3) as writer:
        assert not (root / ".tmp-shard-00000").exists()
        assert writer.add(make_samples(3, 1, start=0)) is None
        first = writer.add(make_samples(3, 0, start=3))  # 6 >= 5: items 0 and 1 -> a shard
        assert first is not None and first.items == (0, 2) and first.name == "shard-00000"
        assert writer.add(make_samples(0, 0)) is None  # an image without samples
        assert writer.add(make_samples(1, -1, start=6)) is None
        with pytest.raises(ValueError):
            writer.add(make_samples(1, 1, size=24))
        writer.add(make_samples(2, -2, start=7))
    assert [i.items for i in writer.written] == [(0, 2), (2, 5)]
    (root / ".tmp-shard-00002").mkdir()  # a half-written shard: invisible to readers
    (root / ".tmp-shard-00002" / "labels.npy").write_bytes(b"half")

    ds = ShardDataset(root)
    assert ds.shard_names == ["shard-00000", "shard-00001"] and len(ds) == 9
    assert ds.counts() == {"positive": 3, "negative": 3, "part": 1, "landmark": 2}
    assert ds.labels.tolist() == [1, 1, 1, 0, 0, 0, -1, -2, -2]
    assert ds.items.tolist() == [0, 0, 0, 1, 1, 1, 3, 4, 4]
    assert isinstance(ds._arrays[0]["images"], np.memmap)
    last = ds[-1]
    assert last.label == -2 and last.item == 4 and (last.image == 8).all()
    assert last.crop.tolist() == [8.0] * 4 and (ds[6].box == np.float32(0.06)).all()
    with pytest.raises(IndexError):
        ds[9]

    order = [8, 0, 5, 5, 6]
    batch = ds.batch(order)
    assert batch.labels.dtype == torch.int64 and batch.labels.tolist() == [-2, 1, 0, 0, -1]
    assert batch.images.shape == (5, 3, 12, 12) and batch.images.dtype == torch.float32
    np.testing.assert_allclose(batch.images[:, 0, 0, 0].numpy(),
                               (np.array(order, np.float32) - 127.5) / 128)
    np.testing.assert_allclose(batch.landmarks[:, 3].numpy(), np.array(order) / 100, rtol=1e-6)
    meta = json.loads((root / "shard-00001" / "meta.json").read_text())
    assert meta["items"] == [2, 5] and meta["source"] == "test" and meta["seed"] == 3
    assert summary(root) == {"positive": 3, "negative": 3, "part": 1, "landmark": 2,
                             "total": 9, "shards": 2, "bytes": summary(root)["bytes"]}
    assert summary(root)["bytes"] > 9 * 12 * 12 * 3


# ---------------------------------------------------------------------------------------------
# Integration on the shared data


def shared(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data file {path} is missing (integration test needs ../shared/data)")
    return path


def test_real_wider_and_landmark_samples(tmp_path: Path) -> None:
    gt = shared("WIDER_FACE", "wider_face_split", "wider_face_train_bbx_gt.txt")
    images = shared("WIDER_FACE", "WIDER_train", "images")
    faces = read_wider_txt(gt)[0][:5]
    start = time.perf_counter()
    det = generate_detection_samples(faces, images, tmp_path / "det", SampleConfig(size=12))
    det_time = time.perf_counter() - start
    assert det["positive"] > 0 and det["part"] > 0 and det["negative"] >= 5 * 50

    facepoint = shared("CNN_FacePoint", "train")
    samples = read_landmark_list(facepoint / "trainImageList.txt")[:10]
    start = time.perf_counter()
    lm = generate_landmark_samples(samples, facepoint, tmp_path / "lm", SampleConfig(size=24))
    lm_time = time.perf_counter() - start
    ds = ShardDataset(tmp_path / "lm")
    assert lm["landmark"] == len(ds) >= 10 and (ds.labels == -2).all()
    marks = ds.arrays(np.arange(len(ds))).landmarks
    assert ((marks >= 0) & (marks <= 1)).all()
    print(f"\n12 px from 5 WIDER images: {det} in {det_time:.2f} s "
          f"({det['total'] / det_time:.0f} crops/s); 24 px landmarks from 10 faces: "
          f"{lm['landmark']} in {lm_time:.2f} s")
