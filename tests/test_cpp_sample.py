"""The C++ sample (examples/cpp): build it with CMake against OpenCV, run it on shared photos
and check its faces against the Python pipeline (same count, IoU >= 0.95, landmarks within
1.5 px). Skips, with the reason, where there is no C++ toolchain, no OpenCV development
package (Debian: apt-get install libopencv-dev), no ONNX exporter, no reference weights or no
shared data."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT, SHARED_DATA, dlib_photos
from mtcnnkit import Detector
from mtcnnkit.imageio import load_image

SAMPLE_DIR = REPO_ROOT / "examples" / "cpp"
PHOTOS = ("2007_007763.jpg", "2008_002470.jpg", "2009_004587.jpg")  # 7, 6 and 2 faces
MIN_IOU, MAX_LANDMARK_PX = 0.95, 1.5


def _toolchain_missing() -> str | None:
    if shutil.which("cmake") is None:
        return "cmake is not installed"
    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "no C++ compiler (g++/c++/clang++) found"
    pkg_config = shutil.which("pkg-config")
    if pkg_config and subprocess.run([pkg_config, "--exists", "opencv4"]).returncode != 0:
        return ("OpenCV development files not found (pkg-config opencv4); "
                "apt-get install libopencv-dev")
    return None


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> Path:
    """The sample, configured and built (Release) in a temporary folder."""
    reason = _toolchain_missing()
    if reason:
        pytest.skip(reason)
    build = tmp_path_factory.mktemp("cpp-build")
    configure = subprocess.run(
        ["cmake", "-S", str(SAMPLE_DIR), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"],
        capture_output=True, text=True)
    if configure.returncode != 0:
        log = configure.stdout + configure.stderr
        if "OpenCV" in log:
            pytest.skip("CMake cannot find OpenCV (apt-get install libopencv-dev): "
                        + log.strip().splitlines()[-1])
        pytest.fail(f"cmake configure failed:\n{log}")
    built = subprocess.run(["cmake", "--build", str(build), "--parallel"],
                           capture_output=True, text=True)
    assert built.returncode == 0, f"build failed:\n{built.stdout}{built.stderr}"
    exe = build / "mtcnn_cpp"
    assert exe.is_file()
    return exe


@pytest.fixture(scope="module")
def onnx_models(reference_weights_dir, tmp_path_factory) -> Path:
    """The reference nets exported to ONNX (as `mtcnnkit export --format onnx` does)."""
    pytest.importorskip("onnx", reason="exporting ONNX needs the onnx package")
    from mtcnnkit.deploy.export import MissingPackageError, export
    from mtcnnkit.weights import load_weights

    out = tmp_path_factory.mktemp("cpp-onnx") / "models"
    try:
        export(load_weights(reference_weights_dir), "onnx", out, verify=False)
    except MissingPackageError as e:
        pytest.skip(str(e))
    return out


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is missing")
    found = {p.name: p for p in dlib_photos()}
    missing = [name for name in PHOTOS if name not in found]
    if missing:
        pytest.skip(f"dlib example photos missing: {', '.join(missing)}")
    return [found[name] for name in PHOTOS]


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_cpp_sample_matches_python(binary, onnx_models, photos, reference_weights_dir, tmp_path):
    detector = Detector(weights=reference_weights_dir)
    for photo in photos:
        out_json, out_image = tmp_path / f"{photo.stem}.json", tmp_path / f"{photo.stem}.jpg"
        run = subprocess.run(
            [str(binary), str(photo), "--models", str(onnx_models), "--json", str(out_json),
             "--out", str(out_image), "--repeat", "2"],
            capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, f"{photo.name}: mtcnn_cpp failed:\n{run.stderr}"
        result = json.loads(out_json.read_text())
        assert out_image.is_file() and out_image.stat().st_size > 0
        assert result["image"] == str(photo)
        assert result["latency_ms"]["min"] > 0
        assert result["latency_ms"]["median"] >= result["latency_ms"]["min"]

        expected = detector.detect(photo)
        height, width = load_image(photo).shape[:2]
        assert (result["width"], result["height"]) == (width, height)
        got = result["faces"]
        assert len(got) == len(expected), f"{photo.name}: C++ found {len(got)} faces, " \
                                          f"Python {len(expected)}"
        unmatched = list(range(len(got)))
        for face in expected:
            ious = [_iou(face.box, got[j]["box"]) for j in unmatched]
            best = int(np.argmax(ious))
            match = got[unmatched.pop(best)]
            assert ious[best] >= MIN_IOU, f"{photo.name}: box {face.box} vs {match['box']}"
            diff = np.abs(np.asarray(face.landmarks) - np.asarray(match["landmarks"])).max()
            assert diff <= MAX_LANDMARK_PX, f"{photo.name}: landmarks differ by {diff:.2f} px"
            assert abs(face.score - match["score"]) < 1e-3
