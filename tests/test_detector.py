"""Tests for mtcnnkit.Detector: inputs, batching, max_side, arguments, threads, tensors.

All run the original MTCNN weights (skipped when they cannot be had) on the dlib example
photos in ../shared/data (skipped when missing).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from mtcnnkit import Detector, Face
from mtcnnkit.detect.boxes import iou

BIG_FACES = "2008_002506.jpg"  # three faces 80-95 px wide
TWO_FACES = "2009_004587.jpg"


def photo(dlib_faces: list[Path], name: str) -> Path:
    return next(p for p in dlib_faces if p.name == name)


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def boxes_of(faces: list[Face]) -> torch.Tensor:
    return torch.tensor([f.box for f in faces], dtype=torch.float64).reshape(-1, 4)


def assert_same_faces(a: list[Face], b: list[Face], atol: float = 1e-4) -> None:
    assert len(a) == len(b)
    order_a = sorted(range(len(a)), key=lambda i: a[i].box)
    order_b = sorted(range(len(b)), key=lambda i: b[i].box)
    for i, j in zip(order_a, order_b, strict=True):
        np.testing.assert_allclose(a[i].box, b[j].box, atol=atol, rtol=0)
        np.testing.assert_allclose(a[i].landmarks, b[j].landmarks, atol=atol, rtol=0)
        assert a[i].score == pytest.approx(b[j].score, abs=1e-5)


@pytest.fixture(scope="module")
def big_faces(dlib_faces: list[Path], reference_detector: Detector) -> tuple[Path, list[Face]]:
    path = photo(dlib_faces, BIG_FACES)
    return path, reference_detector.detect(path)


# --------------------------------------------------------------------------- results


def test_faces_are_well_formed(big_faces) -> None:
    path, faces = big_faces
    width, height = Image.open(path).size
    assert len(faces) == 3
    for face in faces:
        assert isinstance(face, Face)
        x1, y1, x2, y2 = face.box
        assert 0.7 < face.score <= 1.0  # passed ONet's threshold
        assert 60 < x2 - x1 < 120 and 60 < y2 - y1 < 140
        assert -5 < x1 < x2 < width + 5 and -5 < y1 < y2 < height + 5
        assert len(face.landmarks) == 5
        for x, y in face.landmarks:  # the five points lie on the face
            assert x1 <= x <= x2 and y1 <= y <= y2
        (lex, ley), (rex, rey) = face.landmarks[:2]
        assert lex < rex  # left eye (as seen) left of the right eye
        assert face.landmarks[2][1] > min(ley, rey)  # nose below the eyes
        assert min(face.landmarks[3][1], face.landmarks[4][1]) > face.landmarks[2][1] - 5


def test_path_array_and_pil_inputs_agree(big_faces, reference_detector: Detector) -> None:
    path, faces = big_faces
    assert_same_faces(reference_detector.detect(str(path)), faces)
    assert_same_faces(reference_detector.detect(rgb(path)), faces)
    assert_same_faces(reference_detector.detect(Image.open(path)), faces)


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "empty", "text"])
def test_unreadable_files_raise_value_error_naming_the_file(
        kind: str, tmp_path: Path, dlib_faces: list[Path], reference_detector: Detector) -> None:
    jpeg = photo(dlib_faces, BIG_FACES).read_bytes()
    content = {
        "corrupt": jpeg[:20] + bytes(range(256)) * 40,  # JPEG header, garbage body
        "truncated": jpeg[: len(jpeg) // 2],
        "empty": b"",
        "text": b"name,score\nalice,1\n",
    }[kind]
    path = tmp_path / f"{kind}-input.jpg"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        reference_detector.detect(path)
    with pytest.raises(ValueError, match=re.escape(str(path))):  # inside a list too
        reference_detector.detect([photo(dlib_faces, TWO_FACES), path])


def test_missing_file_raises_value_error(tmp_path: Path, reference_detector: Detector) -> None:
    with pytest.raises(ValueError, match="does-not-exist.jpg"):
        reference_detector.detect(tmp_path / "does-not-exist.jpg")


def test_tiny_images_have_no_faces(reference_detector: Detector) -> None:
    assert reference_detector.detect(np.zeros((1, 1, 3), dtype=np.uint8)) == []
    assert reference_detector.detect(np.full((11, 40, 3), 128, dtype=np.uint8)) == []
    assert reference_detector.detect(np.zeros((30, 30, 3), dtype=np.uint8)) == []


def test_blank_image_has_no_faces(reference_detector: Detector) -> None:
    assert reference_detector.detect(np.full((240, 320, 3), 127, dtype=np.uint8)) == []


def test_grayscale_input_works(big_faces, reference_detector: Detector) -> None:
    path, faces = big_faces
    gray = Image.open(path).convert("L")
    from_pil = reference_detector.detect(gray)
    assert len(from_pil) == len(faces)  # same faces, slightly different pixels
    for face in from_pil:
        assert iou(boxes_of([face]), boxes_of(faces)).max() > 0.7
    # an HxW array is the same image as the grey PIL one
    assert_same_faces(reference_detector.detect(np.asarray(gray)), from_pil)


def test_rgba_input_drops_alpha(big_faces, reference_detector: Detector) -> None:
    path, faces = big_faces
    rgba = Image.open(path).convert("RGBA")
    rgba.putalpha(17)
    assert_same_faces(reference_detector.detect(rgba), faces)
    assert_same_faces(reference_detector.detect(np.asarray(rgba)), faces)


# --------------------------------------------------------------------------- batches


def test_mixed_list_equals_images_alone(dlib_faces: list[Path],
                                        reference_detector: Detector) -> None:
    first, second, third = dlib_faces[2], photo(dlib_faces, TWO_FACES), dlib_faces[4]
    resized = cv2.resize(rgb(first), None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
    images = [first, second, third, np.zeros((1, 1, 3), dtype=np.uint8), resized]
    together = reference_detector.detect(images)
    assert isinstance(together, list) and len(together) == len(images)
    assert together[3] == []
    for image, faces in zip(images, together, strict=True):
        assert_same_faces(faces, reference_detector.detect(image))
    assert sum(len(f) for f in together) >= 6
    assert reference_detector.detect(tuple(images[:2])) == together[:2]  # tuples too
    assert reference_detector.detect([]) == []


def test_batch_size_does_not_change_results(dlib_faces: list[Path],
                                            reference_weights_dir: Path,
                                            reference_detector: Detector) -> None:
    images = [dlib_faces[3], photo(dlib_faces, TWO_FACES), dlib_faces[3]]
    one_by_one = Detector(weights=reference_weights_dir, batch_size=1).detect(images)
    together = reference_detector.detect(images)
    for a, b in zip(one_by_one, together, strict=True):
        assert_same_faces(a, b)
    assert_same_faces(together[0], together[2])  # the same image twice in one batch


def test_memory_bounding_settings_do_not_change_results(
        dlib_faces: list[Path], reference_weights_dir: Path,
        reference_detector: Detector) -> None:
    # PNet over pyramid levels cut into row bands, RNet/ONet crops in small chunks
    images = [dlib_faces[4], photo(dlib_faces, TWO_FACES)]
    detector = Detector(weights=reference_weights_dir)
    detector.config = dataclasses.replace(detector.config, pnet_tile_pixels=20_000,
                                          crop_batch=5, rnet_batch=3, onet_batch=2)
    for a, b in zip(detector.detect(images), reference_detector.detect(images), strict=True):
        assert_same_faces(a, b)


# --------------------------------------------------------------------------- max_side


def test_max_side_maps_boxes_back_to_original_coordinates(
        big_faces, reference_weights_dir: Path) -> None:
    path, full = big_faces
    small = Detector(weights=reference_weights_dir, max_side=300).detect(path)
    big = [f for f in full if f.width > 60]
    assert len(big) == 3
    found = boxes_of(small)
    assert len(found) >= len(big)
    for face in big:
        assert iou(boxes_of([face]), found).max() > 0.8
        # landmarks scale back too: the matching face's points are within a few pixels
        match = small[int(iou(boxes_of([face]), found).argmax())]
        np.testing.assert_allclose(match.landmarks, face.landmarks, atol=0.1 * face.width)


def test_max_side_larger_than_image_changes_nothing(big_faces,
                                                    reference_weights_dir: Path) -> None:
    path, full = big_faces
    assert_same_faces(Detector(weights=reference_weights_dir, max_side=500).detect(path), full)


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("kwargs", [
    {"backend": "nope"},
    {"thresholds": (0.6, 0.7)},
    {"thresholds": (0.6, 1.5, 0.7)},
    {"thresholds": (-0.1, 0.7, 0.7)},
    {"num_threads": 0},
    {"min_face_size": 0},
    {"scale_factor": 1.0},
    {"max_side": 5},
    {"batch_size": 0},
])
def test_bad_arguments_raise_value_error(kwargs: dict, reference_weights_dir: Path) -> None:
    with pytest.raises(ValueError):
        Detector(weights=reference_weights_dir, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_raises_value_error(reference_weights_dir: Path) -> None:
    with pytest.raises(ValueError, match="CUDA"):
        Detector(weights=reference_weights_dir, device="cuda")


def cuda_and_cpu_detectors(weights: str, reference_weights_dir: Path
                           ) -> tuple[Detector, Detector]:
    chosen = reference_weights_dir if weights == "reference" else "default"
    return Detector(weights=chosen, device="cuda"), Detector(weights=chosen, device="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("weights", ["reference", "default"])
def test_cuda_mixed_batch_equals_images_alone(weights: str, dlib_faces: list[Path],
                                              reference_weights_dir: Path) -> None:
    gpu, _ = cuda_and_cpu_detectors(weights, reference_weights_dir)
    images = [rgb(p) for p in dlib_faces]
    assert len({im.shape for im in images}) > 1  # really a mixed-size batch
    batch = gpu.detect(images)
    assert sum(len(faces) for faces in batch) > 0
    for image, faces in zip(images, batch, strict=True):
        assert_same_faces(gpu.detect(image), faces, atol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("weights", ["reference", "default"])
def test_cuda_finds_the_faces_cpu_finds(weights: str, dlib_faces: list[Path],
                                        reference_weights_dir: Path) -> None:
    """Not identical: PNet's windows overlap by exactly the NMS threshold all over the grid,
    and float rounding, which differs between devices, decides those ties (facenet-pytorch's
    CPU and CUDA results differ the same way). So: the same faces, boxes within a few pixels,
    at most one face more or less over the nine photos."""
    gpu, cpu = cuda_and_cpu_detectors(weights, reference_weights_dir)
    images = [rgb(p) for p in dlib_faces]
    unmatched = 0
    for image, gpu_faces in zip(images, gpu.detect(images), strict=True):
        cpu_faces = cpu.detect(image)
        if not cpu_faces or not gpu_faces:
            unmatched += len(cpu_faces) + len(gpu_faces)
            continue
        overlap = iou(boxes_of(cpu_faces), boxes_of(gpu_faces))
        unmatched += int((overlap.max(dim=1).values < 0.8).sum())
        unmatched += int((overlap.max(dim=0).values < 0.8).sum())
    assert unmatched <= 1


def test_cuda_calls_run_without_tf32_and_restore_the_settings() -> None:
    from mtcnnkit.detect.detector import _without_tf32

    flags = torch.backends.cudnn, torch.backends.cuda.matmul
    before = [f.allow_tf32 for f in flags]
    try:
        for f in flags:
            f.allow_tf32 = True
        with _without_tf32(torch.device("cpu")):
            assert [f.allow_tf32 for f in flags] == [True, True]
        with _without_tf32(torch.device("cuda")):
            assert [f.allow_tf32 for f in flags] == [False, False]
        assert [f.allow_tf32 for f in flags] == [True, True]
    finally:
        for f, value in zip(flags, before, strict=True):
            f.allow_tf32 = value


def test_unknown_backend_message_lists_backends(reference_weights_dir: Path) -> None:
    with pytest.raises(ValueError, match="torch"):
        Detector(weights=reference_weights_dir, backend="nope")


def test_num_threads_applies_during_call_and_is_restored(
        tmp_path: Path, dlib_faces: list[Path], reference_weights_dir: Path) -> None:
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    detector = Detector(weights=reference_weights_dir, num_threads=wanted)
    seen: list[int] = []
    detector.nets.pnet.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    detector.detect(photo(dlib_faces, TWO_FACES))
    assert seen and set(seen) == {wanted}
    assert torch.get_num_threads() == before
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"no image")
    with pytest.raises(ValueError):
        detector.detect(bad)
    assert torch.get_num_threads() == before  # restored after a failure too


# --------------------------------------------------------------------------- tensors


def test_detect_tensors_types_and_agreement(dlib_faces: list[Path],
                                            reference_detector: Detector) -> None:
    images = [photo(dlib_faces, TWO_FACES), np.zeros((1, 1, 3), dtype=np.uint8)]
    found = reference_detector.detect_tensors(images)
    assert len(found) == 2
    for det in found:
        n = len(det.scores)
        assert det.boxes.shape == (n, 4) and det.scores.shape == (n,)
        assert det.landmarks.shape == (n, 5, 2)
        for t in (det.boxes, det.scores, det.landmarks):
            assert isinstance(t, torch.Tensor)
            assert t.dtype == torch.float32 and t.device.type == "cpu"
    assert len(found[0].scores) == 2 and len(found[1].scores) == 0
    faces = reference_detector.detect(images[0])
    np.testing.assert_allclose(boxes_of(faces).numpy(), found[0].boxes.numpy(), atol=1e-4)
    np.testing.assert_allclose([f.score for f in faces], found[0].scores.numpy(), atol=1e-6)
    np.testing.assert_allclose([f.landmarks for f in faces], found[0].landmarks.numpy(),
                               atol=1e-4)


def test_last_stage_returns_each_stages_candidates(dlib_faces: list[Path],
                                                   reference_detector: Detector) -> None:
    from mtcnnkit.detect.cascade import StageTimes

    times = StageTimes()
    pnet, rnet, onet = (reference_detector.detect_tensors([dlib_faces[4]], times, stage)[0]
                        for stage in ("pnet", "rnet", "onet"))
    assert len(pnet.boxes) >= len(rnet.boxes) >= len(onet.boxes) > 0
    # the stopped runs return what the full run fed into the next stage
    assert times.counts["pnet_candidates"] == 3 * len(pnet.boxes)
    assert times.counts["rnet_survivors"] == 2 * len(rnet.boxes)
    assert torch.count_nonzero(pnet.landmarks) == 0
    with pytest.raises(ValueError, match="last_stage"):
        reference_detector.detect_tensors([dlib_faces[4]], last_stage="bnet")
