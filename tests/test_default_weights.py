"""The shipped weights detect real faces: the dlib example photos (PASCAL VOC images with
hand-made face boxes from dlib's training.xml / testing.xml, 43 faces in 9 photos)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from conftest import DLIB_FACES
from mtcnnkit import Detector
from mtcnnkit.detect.boxes import iou
from mtcnnkit.weights import BUNDLED_FILE

pytestmark = pytest.mark.skipif(not BUNDLED_FILE.is_file(),
                                reason="no bundled weights in this version")


def annotated_faces(folder: Path) -> dict[str, torch.Tensor]:
    """image file -> (N, 4) x1 y1 x2 y2 boxes from dlib's imglab XML files."""
    out: dict[str, torch.Tensor] = {}
    for name in ("training.xml", "testing.xml"):
        for image in ET.parse(folder / name).getroot().iter("image"):
            boxes = [[float(b.get(k)) for k in ("left", "top", "width", "height")]
                     for b in image.iter("box")]
            t = torch.tensor(boxes).reshape(-1, 4)
            out[image.get("file")] = torch.cat([t[:, :2], t[:, :2] + t[:, 2:]], dim=1)
    return out


def test_bundled_weights_find_the_annotated_faces(dlib_faces: list[Path]) -> None:
    truth = annotated_faces(DLIB_FACES)
    assert sum(len(b) for b in truth.values()) == 43
    detector = Detector()  # the default: the bundled weights
    found, unmatched = 0, 0
    for name, boxes in truth.items():
        faces = detector.detect(DLIB_FACES / name)
        predicted = torch.tensor([f.box for f in faces]).reshape(-1, 4)
        overlap = iou(boxes, predicted)
        if len(predicted):
            found += int((overlap.max(dim=1).values >= 0.4).sum())
            unmatched += int((overlap.max(dim=0).values < 0.4).sum())
        for face in faces:  # landmarks lie in their box (a loose sanity check)
            x1, y1, x2, y2 = face.box
            w, h = x2 - x1, y2 - y1
            assert all(x1 - 0.1 * w <= x <= x2 + 0.1 * w and y1 - 0.1 * h <= y <= y2 + 0.1 * h
                       for x, y in face.landmarks)
    # dlib's boxes are tighter than WIDER's, hence IoU >= 0.4; the reference weights find 42
    assert found >= 40, f"found {found} of 43 annotated faces"
    assert unmatched <= 5, f"{unmatched} detections match no annotated face"
