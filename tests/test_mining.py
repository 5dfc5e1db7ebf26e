"""Hard-example mining: labels against IoU recomputed here, regression targets reconstructing
the faces, the hardest negatives kept, invalid faces ignored, crops equal to the cascade's
own crops (border case included), resuming; integration with the reference weights on a few
WIDER train images (skipped when the shared data or weights are absent)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED_DATA
from mtcnnkit.data.annotations import FaceBoxes, read_wider_txt
from mtcnnkit.data.mining import MiningConfig, label_candidates, mine, mining_detector
from mtcnnkit.data.samples import to_uint8
from mtcnnkit.data.shards import ShardDataset
from mtcnnkit.detect.boxes import calibrate, crop_regions
from mtcnnkit.detect.cascade import Detections
from mtcnnkit.detect.sampling import IntegralImages, sample_regions

WIDER = SHARED_DATA / "WIDER_FACE"


class FakeDetector:
    """Returns fixed boxes per image, recognised by its size (every image differs)."""

    def __init__(self, by_size: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]):
        self.by_size = by_size
        self.calls: list[tuple[int, str]] = []

    def detect_tensors(self, images, last_stage="onet"):
        self.calls.append((len(images), last_stage))
        out = []
        for im in images:
            boxes, scores = self.by_size[im.shape[:2]]
            out.append(Detections(torch.tensor(boxes, dtype=torch.float32),
                                  torch.tensor(scores, dtype=torch.float32),
                                  torch.zeros(len(boxes), 5, 2)))
        return out


def np_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64)[:, None], b.astype(np.float64)[None]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def jitter_boxes(face: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    w, h = face[2] - face[0], face[3] - face[1]
    side = max(w, h) * rng.uniform(0.6, 1.5, n)
    cx = (face[0] + face[2]) / 2 + rng.uniform(-0.6, 0.6, n) * w
    cy = (face[1] + face[3]) / 2 + rng.uniform(-0.6, 0.6, n) * h
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], 1)


def make_dataset(root: Path, n: int = 5, seed: int = 0):
    """``n`` noise images of distinct sizes, two faces each, and candidate boxes around the
    faces, random elsewhere and across the border."""
    rng = np.random.default_rng(seed)
    faces, by_size = [], {}
    for i in range(n):
        h, w = 160 + 7 * i, 200 + 11 * i
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"{i}.png")
        gt = np.array([[20.5, 30.2, 70.5, 92.0], [110.0, 40.0, 150.3, 88.6]], np.float32)
        faces.append(FaceBoxes(f"{i}.png", gt))
        near = np.concatenate([jitter_boxes(g, rng, 30) for g in gt])
        x0, y0 = rng.uniform(-20, w - 10, 20), rng.uniform(-20, h - 10, 20)
        side = rng.uniform(12, 60, 20)
        far = np.stack([x0, y0, x0 + side, y0 + side], 1)
        border = np.array([[-15.3, -9.7, 40.2, 45.8], [w - 30.5, h - 25.2, w + 22.1, h + 27.4]])
        boxes = np.concatenate([near, far, border]).astype(np.float32)
        by_size[(h, w)] = (boxes, rng.random(len(boxes)).astype(np.float32))
    return faces, FakeDetector(by_size)


def test_labels_targets_and_crops(tmp_path: Path) -> None:
    faces, fake = make_dataset(tmp_path)
    config = MiningConfig(stage="rnet", max_negatives=None, batch_size=2)
    counts = mine(fake, faces, tmp_path, tmp_path / "out", config)
    assert fake.calls == [(2, "pnet"), (2, "pnet"), (1, "pnet")]
    ds = ShardDataset(tmp_path / "out")
    assert ds.size == 24 and counts["total"] == len(ds) and counts["finished"]
    assert counts["positive"] > 0 and counts["part"] > 0 and counts["negative"] > 0
    assert counts["images"] == 5
    everything = ds.arrays(np.arange(len(ds)))
    checked_border = 0
    for i, f in enumerate(faces):
        rows = ds.items == i
        labels, crops = everything.labels[rows], everything.crops[rows].astype(np.int64)
        targets, images = everything.boxes[rows], everything.images[rows]
        image = np.asarray(Image.open(tmp_path / f.image))
        h, w = image.shape[:2]
        boxes, _ = fake.by_size[(h, w)]
        regions, valid = crop_regions(torch.from_numpy(boxes), w, h)
        regions, cand = regions[valid].numpy(), boxes[valid.numpy()]
        # labels from the IoU of the candidate boxes (not their clipped regions), recomputed
        # here over all candidates (dropped ones are in [0.3, 0.4))
        overlap = np_iou(cand, f.boxes)
        best = overlap.max(1)
        expect = np.select([best >= 0.65, best >= 0.4, best < 0.3], [1, -1, 0], 2)
        assert counts["candidates"] >= len(regions)
        assert np.array_equal(crops, regions[expect != 2])
        assert np.array_equal(labels, expect[expect != 2])
        # the cascade's own calibration of the candidate box with the targets gives the face
        # of largest IoU; zeros for negatives
        matched = f.boxes[overlap.argmax(1)][expect != 2]
        rebuilt = calibrate(torch.from_numpy(cand[expect != 2]).double(),
                            torch.from_numpy(targets).double(), plus_one=True).numpy()
        face_rows = labels != 0
        np.testing.assert_allclose(rebuilt[face_rows], matched[face_rows], atol=1e-3)
        assert not targets[labels == 0].any()
        # pixels: the cascade's own sampler on crop_regions of the boxes
        integral = IntegralImages.build([torch.from_numpy(image.copy())])
        expected = to_uint8(sample_regions(integral, torch.zeros(len(crops), dtype=torch.long),
                                           torch.from_numpy(crops), 24, 24))
        assert np.array_equal(images, expected)
        border = (crops[:, 0] == 0) | (crops[:, 2] == w)
        checked_border += int(border.sum())
        assert ((crops[:, 2] - crops[:, 0]) != (crops[:, 3] - crops[:, 1]))[border].any()
    assert checked_border >= 10
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["negative"] == counts["negative"]
    assert summary["candidates_per_image"] == pytest.approx(counts["candidates"] / 5, abs=1e-3)


def test_hardest_negatives_kept() -> None:
    face = FaceBoxes("x.png", np.array([[100, 100, 150, 150]], np.float32))
    boxes = np.array([[10 + 20 * k, 10, 25 + 20 * k, 25] for k in range(8)]
                     + [[100, 100, 150, 150]], np.float32)
    scores = np.array([0.1, 0.9, 0.3, 0.8, 0.2, 0.95, 0.5, 0.4, 0.05], np.float32)
    plan = label_candidates(boxes, scores, face, 300, 300, MiningConfig(max_negatives=3))
    assert sorted(plan.scores[plan.labels == 0].tolist()) == pytest.approx([0.8, 0.9, 0.95])
    assert (plan.labels == 1).sum() == 1  # positives are never capped
    plan = label_candidates(boxes, scores, face, 300, 300, MiningConfig(max_negatives=0))
    assert plan.labels.tolist() == [1]


def test_invalid_faces_ignored() -> None:
    gt = np.array([[10, 10, 60, 60], [100, 100, 150, 150]], np.float32)
    attributes = np.zeros((2, 6), np.int16)
    attributes[1, 3] = 1  # WIDER invalid
    face = FaceBoxes("x.png", gt, attributes)
    boxes = np.array([[10, 10, 60, 60], [100, 100, 150, 150], [102, 100, 152, 150],
                      [200, 200, 250, 250]], np.float32)
    plan = label_candidates(boxes, np.ones(4, np.float32), face, 300, 300, MiningConfig())
    # the valid face is a positive, the box far away a negative; nothing on the invalid face
    # (not a positive, and not taught as background either)
    assert plan.labels.tolist() == [1, 0]
    assert plan.regions[1].tolist() == [199, 199, 250, 250]
    plan = label_candidates(boxes, np.ones(4, np.float32), face, 300, 300,
                            MiningConfig(skip_invalid=False))
    assert plan.labels.tolist() == [1, 1, 1, 0]


def test_positive_iou_moves_the_positive_part_border() -> None:
    face = FaceBoxes("x.png", np.array([[100, 100, 200, 200]], np.float32))
    # IoU with the face: 1.0, ~0.70, ~0.55, ~0.45 (shifted along x)
    boxes = np.array([[100 + dx, 100, 200 + dx, 200] for dx in (0, 18, 29, 38)], np.float32)
    overlaps = np_iou(boxes, face.boxes)[:, 0]
    assert overlaps[1] > 0.65 > overlaps[2] > 0.5 > overlaps[3] > 0.4
    scores = np.ones(4, np.float32)
    default = label_candidates(boxes, scores, face, 300, 300, MiningConfig())
    assert default.labels.tolist() == [1, 1, -1, -1]
    loose = label_candidates(boxes, scores, face, 300, 300, MiningConfig(positive_iou=0.5))
    assert loose.labels.tolist() == [1, 1, 1, -1]
    assert "positive_iou" not in MiningConfig().fingerprint_fields()  # earlier shards valid
    assert MiningConfig(positive_iou=0.5).fingerprint_fields()["positive_iou"] == 0.5
    # only the labels move: regions and box targets are those of the default rule
    assert np.array_equal(loose.regions, default.regions)
    assert np.array_equal(loose.boxes, default.boxes)


def test_resume_gives_the_same_shards(tmp_path: Path) -> None:
    faces, fake = make_dataset(tmp_path, n=5, seed=1)
    config = MiningConfig(stage="onet", max_negatives=10, batch_size=2, samples_per_shard=1)
    full = mine(fake, faces, tmp_path, tmp_path / "full", config)
    part = mine(fake, faces, tmp_path, tmp_path / "part", config, max_chunks=1)
    assert part["images"] == 2 and not part["finished"]
    assert not (tmp_path / "part" / "summary.json").exists()
    (tmp_path / "part" / ".tmp-shard-00009").mkdir()  # leftover of a kill
    resumed = mine(fake, faces, tmp_path, tmp_path / "part", config)
    assert resumed == full
    a, b = ShardDataset(tmp_path / "full"), ShardDataset(tmp_path / "part")
    assert a.shard_names == b.shard_names and a.size == 48
    x, y = a.arrays(np.arange(len(a))), b.arrays(np.arange(len(b)))
    for name in ("images", "labels", "boxes", "crops"):
        assert np.array_equal(getattr(x, name), getattr(y, name))
    assert np.array_equal(a.items, b.items)
    assert mine(fake, faces, tmp_path, tmp_path / "part", config) == full  # finished: no-op
    with pytest.raises(ValueError, match="other settings"):
        mine(fake, faces, tmp_path, tmp_path / "part", MiningConfig(stage="onet"))


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        MiningConfig(stage="pnet")
    with pytest.raises(ValueError):
        MiningConfig(pnet_threshold=1.5)
    with pytest.raises(ValueError):
        MiningConfig(batch_size=0)
    for bad in (0.4, 0.3, 1.01):
        with pytest.raises(ValueError, match="positive_iou"):
            MiningConfig(positive_iou=bad)
    assert MiningConfig(stage="onet").size == 48 and MiningConfig().last_stage == "pnet"


def wider_train(n: int) -> tuple[list[FaceBoxes], Path]:
    root = WIDER / "WIDER_train" / "images"
    gt = WIDER / "wider_face_split" / "wider_face_train_bbx_gt.txt"
    if not root.is_dir() or not gt.is_file():
        pytest.skip("WIDER FACE train images/annotations missing from the shared data")
    faces, _ = read_wider_txt(gt)
    faces = [f for f in faces if (root / f.image).is_file()][:n]
    if len(faces) < n:
        pytest.skip("fewer WIDER train images than needed")
    return faces, root


def test_reference_detector_on_wider(reference_weights_dir: Path, tmp_path: Path) -> None:
    faces, root = wider_train(3)
    for stage in ("rnet", "onet"):
        config = MiningConfig(stage=stage, batch_size=2)
        detector = mining_detector(reference_weights_dir, config)
        before = detector.config
        t = time.perf_counter()
        counts = mine(detector, faces, root, tmp_path / stage, config)
        seconds = time.perf_counter() - t
        assert detector.config is before
        print(f"\nmining {stage} on 3 WIDER train images: {counts} ({seconds:.1f} s)")
        assert counts["positive"] > 0 and counts["negative"] > 0
        assert counts["negative"] <= 3 * config.max_negatives
        assert ShardDataset(tmp_path / stage).size == config.size
