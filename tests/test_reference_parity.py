"""The reference check: with the original weights, mtcnnkit detects what facenet-pytorch
2.6.0 detects (same faces, boxes, landmarks, scores), and the converted nets give the same
raw outputs as facenet-pytorch's own PNet/RNet/ONet modules.

facenet-pytorch is loaded from its wheel (downloaded once, cached) by
`mtcnnkit.reference.load_reference_implementation`; the tests skip when it cannot be had.
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED_DATA, dlib_photos
from mtcnnkit import Detector, Face, load_weights
from mtcnnkit.detect.boxes import iou
from mtcnnkit.nets import face_probability

if not SHARED_DATA.is_dir():
    pytest.skip(f"shared data folder {SHARED_DATA} is missing", allow_module_level=True)

pytestmark = pytest.mark.slow

WIDER_IMAGES = SHARED_DATA / "WIDER_FACE" / "WIDER_val" / "images"
DEV_LIST = SHARED_DATA / "splits" / "wider_val_dev.txt"


def wider_dev_sample() -> list[Path]:
    """Every 17th line of the dev list (lines 17, 34, ..., 340): 20 images."""
    if not DEV_LIST.is_file():
        return []
    lines = [line.strip() for line in DEV_LIST.read_text().splitlines() if line.strip()]
    return [WIDER_IMAGES / name for name in lines[16::17]]


PHOTOS = dlib_photos() + wider_dev_sample()


@pytest.fixture(scope="module")
def facenet() -> types.ModuleType:
    from mtcnnkit.reference import load_reference_implementation

    try:
        return load_reference_implementation()
    except RuntimeError as e:
        pytest.skip(f"facenet-pytorch 2.6.0 wheel unavailable (offline?): {e}")


@pytest.fixture(scope="module")
def facenet_mtcnn(facenet: types.ModuleType):
    return facenet.MTCNN(keep_all=True, device="cpu")


def test_sample_is_the_29_images() -> None:
    assert len(dlib_photos()) == 9
    assert len(wider_dev_sample()) == 20
    missing = [p for p in PHOTOS if not p.is_file()]
    assert not missing


def reference_faces(mtcnn, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """facenet's boxes (N, 4), scores (N,), landmarks (N, 5, 2) as float64 (N may be 0)."""
    boxes, scores, points = mtcnn.detect(Image.open(path).convert("RGB"), landmarks=True)
    if boxes is None:
        return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
    as_float = [np.asarray(np.asarray(a).tolist(), dtype=np.float64)
                for a in (boxes, scores, points)]
    return as_float[0].reshape(-1, 4), as_float[1].reshape(-1), as_float[2].reshape(-1, 5, 2)


@pytest.mark.parametrize("path", PHOTOS, ids=[p.name for p in PHOTOS])
def test_detections_match_facenet(path: Path, facenet_mtcnn,
                                  reference_detector: Detector) -> None:
    ref_boxes, ref_scores, ref_points = reference_faces(facenet_mtcnn, path)
    ours: list[Face] = reference_detector.detect(path)
    assert len(ours) == len(ref_boxes), f"{path.name}: {len(ours)} faces, facenet {len(ref_boxes)}"
    if not ours:
        return
    our_boxes = torch.tensor([f.box for f in ours], dtype=torch.float64)
    overlap = iou(torch.from_numpy(ref_boxes), our_boxes)  # (reference, ours)
    match = overlap.argmax(dim=1)
    assert len(set(match.tolist())) == len(ours), "two reference faces matched one of ours"
    assert overlap.max(dim=1).values.min().item() >= 0.95
    for k, j in enumerate(match.tolist()):
        np.testing.assert_allclose(ours[j].landmarks, ref_points[k], atol=1.0, rtol=0)
        assert abs(ours[j].score - ref_scores[k]) < 1e-3


def test_converted_nets_match_facenet_modules(facenet: types.ModuleType,
                                              reference_weights_dir: Path) -> None:
    ours = load_weights(reference_weights_dir)
    torch.manual_seed(0)
    with torch.no_grad():
        # PNet: facenet returns (offsets, face/non-face softmax)
        x = torch.randn(3, 3, 37, 53)
        ref_offsets, ref_prob = facenet.PNet().eval()(x)
        logits, offsets = ours.pnet(x)
        assert (offsets - ref_offsets).abs().max() < 1e-5
        assert (torch.softmax(logits, 1) - ref_prob).abs().max() < 1e-5
        assert (face_probability(logits) - ref_prob[:, 1]).abs().max() < 1e-5

        x = torch.randn(16, 3, 24, 24)
        ref_offsets, ref_prob = facenet.RNet().eval()(x)
        logits, offsets = ours.rnet(x)
        assert (offsets - ref_offsets).abs().max() < 1e-5
        assert (torch.softmax(logits, 1) - ref_prob).abs().max() < 1e-5

        # ONet: facenet returns (offsets, landmarks, softmax)
        x = torch.randn(16, 3, 48, 48)
        ref_offsets, ref_points, ref_prob = facenet.ONet().eval()(x)
        logits, offsets, points = ours.onet(x)
        assert (offsets - ref_offsets).abs().max() < 1e-5
        assert (points - ref_points).abs().max() < 1e-5
        assert (torch.softmax(logits, 1) - ref_prob).abs().max() < 1e-5
