"""`mtcnnkit eval …` end to end, on the real annotations with outcomes known exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import SHARED_DATA as SHARED
from mtcnnkit.cli import app
from mtcnnkit.evaluate import fddb, wider

WIDER = SHARED / "WIDER_FACE"
FOLDS = SHARED / "FDDB" / "FDDB-folds"
DEV_SAMPLE = ["0--Parade/0_Parade_Parade_0_239.jpg",
              "12--Group/12_Group_Group_12_Group_Group_12_153.jpg"]

runner = CliRunner()


@pytest.fixture(scope="module")
def wider_gt() -> wider.WiderGroundTruth:
    if not (WIDER / "eval_tools" / "ground_truth").is_dir():
        pytest.skip(f"WIDER data {WIDER} is missing")
    return wider.load_ground_truth(WIDER / "eval_tools" / "ground_truth")


def dev_list(tmp_path: Path) -> Path:
    present = [n for n in DEV_SAMPLE if (WIDER / "WIDER_val" / "images" / n).is_file()]
    if len(present) != len(DEV_SAMPLE):
        pytest.skip("sample WIDER val images missing")
    path = tmp_path / "list.txt"
    path.write_text("\n".join(present) + "\n")
    return path


def test_perfect_predictions_score_ap_one(tmp_path: Path, wider_gt) -> None:
    images = dev_list(tmp_path)
    keys = [wider.image_key(n) for n in DEV_SAMPLE]
    pred = {k: np.column_stack([wider_gt.boxes[k], np.ones(len(wider_gt.boxes[k]))])
            for k in keys}
    wider.write_predictions(tmp_path / "pred", pred)
    result = runner.invoke(app, ["eval", "wider", "--data", str(WIDER), "--images", str(images),
                                 "--pred-dir", str(tmp_path / "pred"), "--out",
                                 str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "easy=1.0000 medium=1.0000 hard=1.0000" in result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["images"] == 2 and summary["settings"] is None
    for level in wider.LEVELS:
        assert (tmp_path / "out" / f"pr_{level}.png").stat().st_size > 1000
    assert "| 0--Parade | 1 |" in (tmp_path / "out" / "events.md").read_text()


def test_missing_predictions_are_misses(tmp_path: Path, wider_gt) -> None:
    images = dev_list(tmp_path)
    k = wider.image_key(DEV_SAMPLE[0])  # predictions for the first image only
    wider.write_predictions(tmp_path / "pred", {k: np.column_stack(
        [wider_gt.boxes[k], np.ones(len(wider_gt.boxes[k]))])})
    result = runner.invoke(app, ["eval", "wider", "--data", str(WIDER), "--images", str(images),
                                 "--pred-dir", str(tmp_path / "pred"), "--out",
                                 str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    listed = {lv: len(wider_gt.keep[lv][k]) for lv in wider.LEVELS}
    total = {lv: sum(len(wider_gt.keep[lv][wider.image_key(n)]) for n in DEV_SAMPLE)
             for lv in wider.LEVELS}
    for level in wider.LEVELS:
        assert summary["ap"][level] == pytest.approx(listed[level] / total[level])


def test_detector_run_writes_predictions(tmp_path: Path, wider_gt, reference_weights_dir) -> None:
    images = dev_list(tmp_path)
    result = runner.invoke(app, ["eval", "wider", "--data", str(WIDER), "--images", str(images),
                                 "--weights", str(reference_weights_dir), "--out",
                                 str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("easy=") and " medium=" in line and " hard=" in line
    written = wider.read_predictions(tmp_path / "out" / "predictions")
    assert set(written) == {wider.image_key(n) for n in DEV_SAMPLE}
    assert sum(len(p) for p in written.values()) > 0


def test_wider_usage_errors(tmp_path: Path, wider_gt) -> None:
    bad_list = tmp_path / "bad.txt"
    bad_list.write_text("0--Parade/nope.jpg\n")
    result = runner.invoke(app, ["eval", "wider", "--data", str(WIDER), "--images",
                                 str(bad_list), "--pred-dir", str(tmp_path)])
    assert result.exit_code == 2 and "missing" in result.output
    result = runner.invoke(app, ["eval", "wider", "--data", str(tmp_path), "--pred-dir",
                                 str(tmp_path)])
    assert result.exit_code == 2 and "wider_face_val.mat" in result.output


def test_fddb_ground_truth_as_detections_scores_tpr_one(tmp_path: Path) -> None:
    if not FOLDS.is_dir():
        pytest.skip(f"FDDB folds {FOLDS} are missing")
    from mtcnnkit.data.annotations import read_fddb_folds

    truth = read_fddb_folds(FOLDS)
    dets = {t.image: np.array([[e.major, e.minor, e.angle, e.cx, e.cy, 1.0] for e in t.faces])
            for t in truth}
    fddb.write_detections(tmp_path / "dets.txt", dets)
    result = runner.invoke(app, ["eval", "fddb", "--folds", str(FOLDS), "--detections",
                                 str(tmp_path / "dets.txt"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_faces"] == 5171 and summary["discrete_tpr_at_1000"] == pytest.approx(1.0)
    assert (tmp_path / "out" / "DiscROC.txt").is_file()
    assert (tmp_path / "out" / "roc.png").stat().st_size > 1000


def test_compare_two_settings(tmp_path: Path, wider_gt, reference_weights_dir) -> None:
    images = dev_list(tmp_path)
    ref = str(reference_weights_dir)
    result = runner.invoke(app, ["eval", "compare", "--data", str(WIDER), "--images", str(images),
                                 "--run", f"small={ref}", "--run", f"big={ref};min_face=60",
                                 "--out", str(tmp_path / "cmp"), "--quiet"])
    assert result.exit_code == 0, result.output
    table = (tmp_path / "cmp" / "compare.md").read_text()
    small = next(line for line in table.splitlines() if line.startswith("| small |"))
    big = next(line for line in table.splitlines() if line.startswith("| big |"))
    assert "| 20 |" in small and "| 60 |" in big
    assert "| stage |" not in table  # the stage table only comes with --stages
    # searching only for faces >= 60 px finds fewer faces than >= 20 px, from far fewer
    # PNet candidates (predictions, PNet candidates / image, RNet survivors / image)
    small_cells, big_cells = small.split("|"), big.split("|")
    assert int(big_cells[-5]) < int(small_cells[-5])
    assert float(big_cells[-4]) < float(small_cells[-4]) / 2
    assert 0 < float(small_cells[-3]) < float(small_cells[-4])
    assert (tmp_path / "cmp" / "pr_hard.png").stat().st_size > 1000
    assert (tmp_path / "cmp" / "big" / "predictions").is_dir()


def test_compare_stage_recall(tmp_path: Path, wider_gt, reference_weights_dir) -> None:
    images = dev_list(tmp_path)
    ref = str(reference_weights_dir)
    result = runner.invoke(app, ["eval", "compare", "--data", str(WIDER), "--images", str(images),
                                 "--run", f"small={ref}", "--run", f"big={ref};min_face=60",
                                 "--stages", "--out", str(tmp_path / "cmp"), "--quiet"])
    assert result.exit_code == 0, result.output
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| run | stage | boxes / image | easy | medium | hard |" in table
    assert "| run | stage |" in result.output
    lines = table.splitlines()
    for run in ("small", "big"):
        main = next(line for line in lines if line.startswith(f"| {run} | {ref} |")).split("|")
        assert len(main) == 14  # the main table keeps its 12 columns
        rows = [line.split("|")[1:-1] for line in lines if line.startswith(f"| {run} | ")
                and not line.startswith(f"| {run} | {ref} |")]
        assert [r[1].strip() for r in rows] == ["pnet", "rnet", "onet"]
        per_image = [float(r[2]) for r in rows]
        # each stage only filters (and moves) the boxes of the one before
        assert per_image[0] > per_image[1] >= per_image[2]
        # the extra passes see what the full run counted: PNet candidates, RNet survivors
        # and predictions per image
        assert rows[0][2].strip() == main[-4].strip() and rows[1][2].strip() == main[-3].strip()
        assert float(rows[2][2]) == pytest.approx(int(main[-5]) / 2, abs=0.05)
        for row in rows:
            assert all(0.0 <= float(cell) <= 1.0 for cell in row[3:6])
    # recall per face attribute: the values of one attribute split the listed faces, so
    # their recalls, weighted by face counts, give the final stage recall of each run
    header = next(line for line in lines if line.startswith("| attribute | faces |"))
    assert header.split("|")[3:5] == [" small ", " big "]
    blur = [[cell.strip() for cell in line.split("|")[2:-1]] for line in lines
            if line.startswith("| blur: ")]
    assert len(blur) >= 2
    for column, run in ((1, "small"), (2, "big")):
        onet = next(line for line in lines if line.startswith(f"| {run} | onet |")).split("|")
        for level in range(3):
            faces = [int(row[0].split(" / ")[level].replace(",", "")) for row in blur]
            recall = [float(cell) if (cell := row[column].split(" / ")[level]) != "–" else 0.0
                      for row in blur]
            combined = sum(f * r for f, r in zip(faces, recall, strict=True)) / sum(faces)
            assert combined == pytest.approx(float(onet[4 + level]), abs=2e-3)


@pytest.mark.parametrize("spec", ["noequals", "a=reference;min_face=x", "a=reference;bogus=1"])
def test_compare_bad_run_specs(tmp_path: Path, spec: str) -> None:
    result = runner.invoke(app, ["eval", "compare", "--data", str(tmp_path), "--run", spec])
    assert result.exit_code == 2
