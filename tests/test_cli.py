"""Tests for the ``mtcnnkit`` command line (``mtcnnkit.cli``) and ``detect.draw.annotate``.

Detection runs for real: the dlib example photos from ../shared/data and the original MTCNN
weights (``--weights reference``). Each test that needs them skips, with the reason, when
they are missing. Only a few small photos go through the detector, to keep the run short.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.main import get_command
from typer.testing import CliRunner

from mtcnnkit import Detector, Face, __version__
from mtcnnkit.cli import app, output_stems
from mtcnnkit.detect.draw import LANDMARK_COLOURS, annotate
from mtcnnkit.weights import BUNDLED_FILE

REPO_ROOT = Path(__file__).resolve().parents[1]
PHOTOS = REPO_ROOT.parent / "shared" / "data" / "dlib_faces" / "examples" / "faces"
GROUP = "2008_002470.jpg"  # 500x332, six faces
PAIR = "2009_004587.jpg"  # 400x500, two faces
FAST = ("--weights", "reference", "--min-face", "40")  # fewer pyramid levels: quicker runs
WIDE_ENV = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}  # help text unwrapped enough to search

runner = CliRunner()


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args], env=WIDE_ENV)


def flat(text: str) -> str:
    """Output with Rich panel borders removed and whitespace collapsed."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def photos() -> Path:
    if not PHOTOS.is_dir() or len(list(PHOTOS.glob("*.jpg"))) < 2:
        pytest.skip(f"shared test photos missing: {PHOTOS} (needs ../shared/data)")
    return PHOTOS


@pytest.fixture(scope="module")
def reference() -> None:
    """Make sure `--weights reference` resolves (cached, installed or fetched)."""
    from mtcnnkit.reference import fetch_reference_weights, find_reference_dir

    if find_reference_dir() is not None:
        return
    try:
        fetch_reference_weights()
    except (RuntimeError, OSError) as e:
        pytest.skip(f"reference MTCNN weights unavailable (offline, nothing cached): {e}")
    if find_reference_dir() is None:
        pytest.skip("reference weights fetched but not found (MTCNNKIT_REFERENCE_DIR set?)")


@pytest.fixture(scope="module")
def detector(reference) -> Detector:
    return Detector(weights="reference")


@pytest.fixture
def tree(photos: Path, tmp_path: Path) -> Path:
    """in/group.jpg, in/sub/deeper/group.jpg (same stem), in/sub/pair.jpg, plus non-images."""
    root = tmp_path / "in"
    (root / "sub" / "deeper").mkdir(parents=True)
    shutil.copy(photos / GROUP, root / "group.jpg")
    shutil.copy(photos / GROUP, root / "sub" / "deeper" / "group.jpg")
    shutil.copy(photos / PAIR, root / "sub" / "pair.jpg")
    (root / "notes.txt").write_text("not an image")
    (root / "sub" / "labels.xml").write_text("<xml/>")
    return root


# ---------------------------------------------------------------- detect: results


def test_json_matches_detector(photos: Path, detector: Detector, tmp_path: Path) -> None:
    out = tmp_path / "res" / "faces.json"
    paths = [photos / GROUP, photos / PAIR]
    result = invoke("detect", *paths, "--weights", "reference", "--json", out)
    assert result.exit_code == 0, result.output
    assert os.listdir(out.parent) == ["faces.json"]  # temp file renamed away
    records = json.loads(out.read_text())
    assert [r["image"] for r in records] == [str(p) for p in paths]
    for rec, path in zip(records, paths, strict=True):
        assert set(rec) == {"image", "width", "height", "faces"}
        with Image.open(path) as im:
            assert (rec["width"], rec["height"]) == im.size
        expected = [f.to_dict() for f in detector.detect(str(path))]
        assert rec["faces"] == expected
        for face in rec["faces"]:
            assert set(face) == {"box", "score", "landmarks"}
            assert len(face["box"]) == 4 and 0 < face["score"] <= 1
            assert np.array(face["landmarks"]).shape == (5, 2)
            x1, y1, x2, y2 = face["box"]
            assert 0 <= x1 < x2 <= rec["width"] and 0 <= y1 < y2 <= rec["height"]
    assert len(records[0]["faces"]) >= 2  # the group photo
    assert "2 images" in result.stderr and str(out) in flat(result.stderr)


def test_json_to_stdout_and_table(photos: Path, reference, tmp_path: Path) -> None:
    result = invoke("detect", photos / PAIR, *FAST, "--json", "-")
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)  # stdout holds nothing but the JSON
    assert len(record["faces"]) >= 1

    table = invoke("detect", photos / PAIR, *FAST, "--quiet")
    assert table.exit_code == 0, table.output
    assert PAIR in table.stdout and f"{len(record['faces'])} faces" in table.stdout
    assert table.stderr == ""  # --quiet: no progress bar, no summary on stderr


def test_folder_recursion_and_save_dir(tree: Path, reference, tmp_path: Path) -> None:
    save = tmp_path / "annotated"
    out = tmp_path / "r.json"
    result = invoke("detect", tree, *FAST, "--json", out, "--save-dir", save, "--quiet")
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())
    assert [r["image"] for r in records] == [
        str(tree / "group.jpg"), str(tree / "sub" / "deeper" / "group.jpg"),
        str(tree / "sub" / "pair.jpg")]
    written = sorted(p.relative_to(save).as_posix() for p in save.rglob("*") if p.is_file())
    assert written == ["group.jpg", "sub/deeper/group.jpg", "sub/pair.jpg"]  # mirrored
    for rec in records:
        source = Path(rec["image"])
        with Image.open(save / source.relative_to(tree)) as im:
            assert im.format == "JPEG" and im.size == (rec["width"], rec["height"])
            drawn = np.asarray(im.convert("RGB"), dtype=np.int16)
        with Image.open(source) as im:
            original = np.asarray(im.convert("RGB"), dtype=np.int16)
        assert np.abs(drawn - original).max() > 100  # something was drawn


def test_glob_patterns(tree: Path, reference) -> None:
    result = invoke("detect", str(tree / "**" / "*.jpg"), *FAST, "--json", "-", "--quiet")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 3

    only_deep = invoke("detect", str(tree / "sub" / "*"), *FAST, "--json", "-",
                       "--quiet")  # folders matched are searched too
    names = [Path(r["image"]).relative_to(tree).as_posix() for r in json.loads(only_deep.stdout)]
    assert names == ["sub/deeper/group.jpg", "sub/pair.jpg"]

    nothing = invoke("detect", str(tree / "*.png"), "--weights", "reference")
    assert nothing.exit_code == 2
    assert "no image found" in flat(nothing.output)


def test_crops_align_and_margin(photos: Path, reference, tmp_path: Path) -> None:
    result = invoke("detect", photos / PAIR, *FAST, "--json", "-", "--crops", tmp_path / "align",
                    "--quiet")
    assert result.exit_code == 0, result.output
    n_faces = len(json.loads(result.stdout)[0]["faces"])
    stem = Path(PAIR).stem
    crops = sorted((tmp_path / "align").iterdir())
    assert [p.name for p in crops] == [f"{stem}_{k}.png" for k in range(n_faces)]
    for path in crops:
        with Image.open(path) as im:
            assert im.size == (112, 112)

    result = invoke("detect", photos / PAIR, *FAST, "--crops", tmp_path / "margin",
                    "--crop-mode", "margin", "--margin", "20", "--quiet")
    assert result.exit_code == 0, result.output
    crops = sorted((tmp_path / "margin").iterdir())
    assert len(crops) == n_faces
    for path in crops:
        with Image.open(path) as im:
            assert im.size == (160, 160)


# ---------------------------------------------------------------- detect: failures


def test_corrupt_file_reported_run_goes_on(photos: Path, reference, tmp_path: Path) -> None:
    """One real run of the installed console script: exit status 1, JSON on stdout."""
    script = Path(sys.executable).with_name("mtcnnkit")
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a JPEG")
    empty = tmp_path / "empty.png"
    empty.touch()
    good = photos / PAIR
    proc = subprocess.run(
        [str(script), "detect", str(bad), str(good), str(empty), *FAST, "--json", "-"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    records = json.loads(proc.stdout)
    assert [r["image"] for r in records] == [str(bad), str(good), str(empty)]
    for rec in (records[0], records[2]):
        assert set(rec) == {"image", "error"} and rec["error"].startswith(rec["image"])
    assert "empty" in records[2]["error"]
    assert len(records[1]["faces"]) >= 1
    assert "broken.jpg" in proc.stderr and "2 failed" in proc.stderr


def test_failing_image_in_batch_is_isolated(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    """A detector error on one image of a batch marks only that image (no weights needed)."""
    face = Face(box=(2.0, 2.0, 20.0, 20.0), score=0.9,
                landmarks=((6.0, 8.0), (14.0, 8.0), (10.0, 12.0), (7.0, 16.0), (13.0, 16.0)))

    class FlakyDetector:
        def __init__(self, **kwargs) -> None:
            pass

        def detect(self, images):
            if not isinstance(images, list):
                images = [images]
                if images[0].shape[0] == 31:
                    raise RuntimeError("boom")
                return [face]
            if any(im.shape[0] == 31 for im in images):
                raise RuntimeError("boom")
            return [[face] for _ in images]

    monkeypatch.setattr("mtcnnkit.cli_support.Detector", FlakyDetector)
    for name, height in (("a.png", 30), ("b.png", 31), ("c.png", 32)):
        Image.fromarray(np.zeros((height, 40, 3), np.uint8)).save(tmp_path / name)
    result = invoke("detect", tmp_path)
    assert result.exit_code == 1
    text = flat(result.output)
    assert f"{tmp_path / 'b.png'}: detection failed (RuntimeError: boom)" in text
    assert "3 images, 2 faces, 1 failed" in text

    result = invoke("detect", tmp_path, "--json", "-", "--batch-size", "2", "--quiet")
    records = json.loads(result.stdout)
    assert [("error" in r, len(r.get("faces", []))) for r in records] == [
        (False, 1), (True, 0), (False, 1)]


@pytest.mark.parametrize(("args", "message"), [
    (["--thresholds", "0.6,0.7"], "three comma-separated"),
    (["--thresholds", "0.6,0.7,x"], "three comma-separated"),
    (["--thresholds", "0.6,0.7,1.5"], "in [0, 1]"),
    (["--min-face", "0"], "greater than 0"),
    (["--scale-factor", "1"], "between 0 and 1"),
    (["--device", "gpu"], "'cpu', 'cuda'"),
    (["--batch-size", "0"], "--batch-size"),
    (["--max-side", "8"], "--max-side"),
    (["--crop-mode", "square"], "--crop-mode"),
    (["--crop-mode", "margin", "--crop-size", "40", "--margin", "40"], "smaller than"),
    (["--backend", "onnx"], "unknown backend"),
    (["--weights", "/no/such/weights.pt"], "no such file or directory"),
    *([] if BUNDLED_FILE.is_file() else [(["--weights", "default"], "not bundled")]),
])
def test_usage_errors_exit_2(photos: Path, args: list[str], message: str) -> None:
    result = invoke("detect", photos / PAIR, *args)
    assert result.exit_code == 2, result.output
    assert message in flat(result.output)
    assert "Traceback" not in result.output


def test_missing_path_is_usage_error(tmp_path: Path) -> None:
    result = invoke("detect", tmp_path / "nope.jpg")
    assert result.exit_code == 2
    assert "no such file or folder" in flat(result.output)


def test_unusable_output_paths_are_usage_errors(photos: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for args, message in (
        (["--save-dir", a_file], "cannot create"),
        (["--crops", a_file / "sub"], "cannot create"),
        (["--json", a_file / "out.json"], "cannot create"),
        (["--json", tmp_path], "is a folder"),
    ):
        result = invoke("detect", photos / PAIR, *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in flat(result.output)


# ---------------------------------------------------------------- help, version, fetch


def test_help_mentions_every_option() -> None:
    top = invoke("--help")
    assert top.exit_code == 0
    assert "detect" in top.output and "fetch-reference" in top.output and "--version" in top.output
    bare = invoke()  # no arguments: the help, not a traceback
    assert "Usage" in bare.output and "detect" in bare.output
    group = get_command(app)
    for name in ("detect", "fetch-reference"):
        command = group.commands[name]
        assert command.help, name
        text = invoke(name, "--help").output
        for param in command.params:
            assert param.help, (name, param.name)  # options and the PATH argument alike
            for opt in param.opts:
                if opt.startswith("-"):
                    assert opt in text, (name, opt)
    detect_opts = {o for p in group.commands["detect"].params for o in p.opts}
    assert {"--weights", "--min-face", "--thresholds", "--scale-factor", "--device", "--backend",
            "--threads", "--max-side", "--batch-size", "--json", "--save-dir", "--crops",
            "--crop-mode", "--crop-size", "--margin", "--quiet"} <= detect_opts


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"mtcnnkit {__version__}"


def test_fetch_reference(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = []

    def fake_fetch(dest=None):
        calls.append(dest)
        return tmp_path

    monkeypatch.setattr("mtcnnkit.cli.fetch_reference_weights", fake_fetch)
    result = invoke("fetch-reference", "--dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert calls == [tmp_path]
    text = flat(result.output)
    assert str(tmp_path) in text and "comparison only" in text and "MIT" in text

    def offline(dest=None):
        raise RuntimeError("could not download facenet-pytorch==2.6.0: network unreachable")

    monkeypatch.setattr("mtcnnkit.cli.fetch_reference_weights", offline)
    result = invoke("fetch-reference")
    assert result.exit_code == 1
    assert "network unreachable" in result.output and "Traceback" not in result.output


# ---------------------------------------------------------------- helpers


def test_output_stems_avoid_collisions(tmp_path: Path) -> None:
    images = [tmp_path / "a" / "x.jpg", tmp_path / "a" / "x.png", tmp_path / "b" / "x.jpg"]
    assert [s.as_posix() for s in output_stems(images)] == ["a/x_jpg", "a/x_png", "b/x"]
    assert [s.as_posix() for s in output_stems(images[:1])] == ["x"]


def test_annotate_is_pure_and_scales() -> None:
    face = Face(box=(20.0, 30.0, 80.0, 100.0), score=0.987,
                landmarks=((35.0, 55.0), (65.0, 55.0), (50.0, 70.0), (38.0, 85.0), (62.0, 85.0)))
    small = np.full((150, 120, 3), 128, np.uint8)
    before = small.copy()
    drawn = annotate(small, [face])
    assert np.array_equal(small, before) and drawn is not small and drawn.shape == small.shape
    assert tuple(drawn[55, 35]) == LANDMARK_COLOURS[0]  # dot centres carry their colour
    assert tuple(drawn[55, 65]) == LANDMARK_COLOURS[1]
    assert len(set(LANDMARK_COLOURS)) == 5
    assert np.array_equal(annotate(small, []), small)

    big = np.full((4000, 3200, 3), 128, np.uint8)
    k = 3200 / 120
    scaled = Face(box=tuple(v * k for v in face.box), score=face.score,
                  landmarks=tuple((x * k, y * k) for x, y in face.landmarks))
    line = (annotate(big, [scaled])[2000, :, 1] == 255).sum()  # green box edges on a row
    assert line >= 2 * 10  # both vertical edges, each well over 1 px thick
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        annotate(np.zeros((10, 10), np.uint8), [face])


def test_the_cli_flushes_subnormal_floats_to_zero() -> None:
    import torch

    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU has no flush-to-zero mode")
    tiny = torch.finfo(torch.float32).tiny
    assert (torch.tensor([tiny]) / 4).item() == pytest.approx(tiny / 4)  # kept by default
    result = CliRunner().invoke(app, ["detect", "--help"])
    assert result.exit_code == 0
    assert (torch.tensor([tiny]) / 4).item() == 0.0
