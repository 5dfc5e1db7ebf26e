"""Every runtime backend runs the same cascade: same faces as the torch backend."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from mtcnnkit import Detector
from mtcnnkit.detect.boxes import iou

RUNTIME_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "ncnn": "ncnn"}


@pytest.fixture(scope="module")
def photos(dlib_faces: list[Path]) -> list[Path]:
    return dlib_faces[:4]


@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(RUNTIME_PACKAGES))
def test_backend_finds_the_same_faces_as_torch(backend: str, photos, reference_weights_dir,
                                               reference_detector, tmp_path, monkeypatch
                                               ) -> None:
    for package in (RUNTIME_PACKAGES[backend], "onnx"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} is not installed (pip install 'mtcnnkit[deploy]')")
    monkeypatch.setenv("MTCNNKIT_CACHE", str(tmp_path))  # export into a fresh cache
    detector = Detector(weights=reference_weights_dir, backend=backend)
    for path in photos:
        expected = reference_detector.detect(path)
        got = detector.detect(path)
        assert len(got) == len(expected), f"{backend} on {path.name}"
        if not expected:
            continue
        overlap = iou(torch.tensor([f.box for f in got]), torch.tensor([f.box for f in expected]))
        best = overlap.max(dim=0)
        assert best.values.min().item() >= 0.98
        for j, i in enumerate(best.indices.tolist()):
            assert abs(got[i].score - expected[j].score) < 1e-3


def test_non_cpu_device_rejected_for_runtimes() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device to reach the device check")
    with pytest.raises(ValueError, match="runs on the CPU"):
        Detector(weights="reference", backend="onnxruntime", device="cuda")


def test_export_directory_of_the_wrong_format(tmp_path: Path) -> None:
    from mtcnnkit.deploy.runtimes import load_runners

    (tmp_path / "manifest.json").write_text('{"format": "openvino", "nets": {}}')
    with pytest.raises(ValueError, match="needs 'onnx'"):
        load_runners("onnxruntime", tmp_path)
    with pytest.raises(FileNotFoundError, match="mtcnnkit export"):
        load_runners("onnxruntime", tmp_path / "nothing")
