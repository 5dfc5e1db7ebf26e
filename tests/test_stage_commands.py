"""The stage commands (``mtcnnkit prepare``, ``mtcnnkit mine``, ``mtcnnkit train --stage``) on
tiny synthetic data made here: noise images, made-up WIDER / JSON / CNN_FacePoint annotations.
They need nothing outside the repository, so they always run."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mtcnnkit import nets
from mtcnnkit.cli import app
from mtcnnkit.data.shards import ShardDataset, shard_dirs
from mtcnnkit.weights import load_weights, save_weights

runner = CliRunner()
WIDE_ENV = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}
N_IMAGES = 4
FACES = [[20, 30, 50, 60], [110, 40, 40, 48]]  # x y w h, in every image
POINTS = [45, 60, 75, 60, 60, 75, 48, 88, 72, 88]  # 5 x y, inside the box below
LANDMARK_BOX = (30, 90, 40, 100)  # left right top bottom (CNN_FacePoint order)
FAST_SAMPLES = ["--set", "samples.workers=1", "--set", "samples.negatives_random=10",
                "--set", "samples.positive_attempts=10"]
FAST_TRAIN = ["--set", "epochs=2", "--set", "batch_size=32", "--set", "batches_per_epoch=3",
              "--quiet"]
MINE_LOW = ["--set", "mining.pnet_threshold=0.0", "--set", "mining.rnet_threshold=0.0",
            "--set", "mining.min_face_size=40", "--set", "mining.max_negatives=10", "--quiet"]


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args], env=WIDE_ENV)


def flat(text: str) -> str:
    """Output with line breaks and table borders collapsed to single spaces."""
    return " ".join(text.replace("│", " ").split())


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """images/ev/<i>.png (noise, 160 x 200), wider.txt, faces.json and landmarks.txt."""
    root = tmp_path_factory.mktemp("stage-data")
    rng = np.random.default_rng(0)
    (root / "images" / "ev").mkdir(parents=True)
    wider, images = [], []
    for i in range(N_IMAGES):
        name = f"ev/{i}.png"
        Image.fromarray(rng.integers(0, 256, (160, 200, 3), dtype=np.uint8)).save(
            root / "images" / name)
        wider += [name, str(len(FACES)), *(" ".join(map(str, [*f, 0, 0, 0, 0, 0, 0]))
                                            for f in FACES)]
        points = np.reshape(POINTS, (5, 2)).tolist()
        images.append({"path": name, "faces": [
            {"box": [x, y, x + w, y + h], **({"landmarks": points} if k == 0 else {})}
            for k, (x, y, w, h) in enumerate(FACES)]})
    (root / "wider.txt").write_text("\n".join(wider) + "\n", encoding="utf-8")
    (root / "faces.json").write_text(json.dumps({"images": images}), encoding="utf-8")
    lines = [f"ev\\{i}.png " + " ".join(map(str, [*LANDMARK_BOX, *POINTS]))
             for i in range(N_IMAGES)]
    (root / "landmarks.txt").write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    return root


def prepare(data: Path, out: Path, stage: str, annotations: str = "wider.txt", *extra: str):
    return invoke("prepare", "--stage", stage, "--annotations", data / annotations,
                  "--images", data / "images", "--out", out, *FAST_SAMPLES, "--quiet", *extra)


@pytest.fixture(scope="module")
def pnet_run(data: Path) -> Path:
    """12 px samples (prepare --stage pnet) and a 2-epoch PNet trained on them."""
    result = prepare(data, data / "s12", "pnet")
    assert result.exit_code == 0, result.output
    result = invoke("train", "--stage", "pnet", "--samples", data / "s12", "--out",
                    data / "pnet", *FAST_TRAIN)
    assert result.exit_code == 0, result.output
    return data / "pnet"


def counts_of(folder: Path) -> dict[str, int]:
    return json.loads((folder / "summary.json").read_text(encoding="utf-8"))


# ---------------------------------------------------------------- prepare


def test_prepare_pnet_writes_12px_shards_and_a_summary(data: Path, pnet_run: Path) -> None:
    out = data / "s12"
    ds = ShardDataset(out)
    assert ds.size == 12 and len(ds) > 0
    counts = counts_of(out)
    assert counts["positive"] > 0 and counts["negative"] > 0 and counts["landmark"] == 0
    assert counts["total"] == len(ds)
    assert set(np.unique(ds.items)) == set(range(N_IMAGES))  # every image gave samples

    again = prepare(data, out, "pnet")  # finished: the rerun resumes to the same result
    assert again.exit_code == 0, again.output
    assert counts_of(out) == counts
    text = flat(again.output)
    for name in ("positive", "part", "negative", "landmark"):
        assert f"{name} {counts[name]} " in text
    assert f"total {counts['total']}" in text and "12 px detection samples" in text


def test_prepare_onet_from_json_and_landmarks_from_list(data: Path, tmp_path: Path) -> None:
    result = prepare(data, tmp_path / "s48", "onet", "faces.json")
    assert result.exit_code == 0, result.output
    assert ShardDataset(tmp_path / "s48").size == 48
    assert counts_of(tmp_path / "s48")["positive"] > 0

    for listing, size in (("landmarks.txt", 24), ("faces.json", 48)):
        out = tmp_path / f"lm{size}-{listing}"
        result = prepare(data, out, "landmarks", listing, "--size", str(size),
                         "--set", "landmarks.workers=1")
        assert result.exit_code == 0, result.output
        ds = ShardDataset(out)
        assert ds.size == size and len(ds) > 0
        assert set(np.unique(ds.labels)) == {-2}  # landmark samples only
        assert counts_of(out)["landmark"] == len(ds)
        assert f"landmark {len(ds)} " in flat(result.output)


def test_prepare_settings_come_from_config_and_set(data: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("rnet:\n  samples:\n    negatives_random: 0\n    negatives_near: 0\n"
                      "    workers: 1\n", encoding="utf-8")
    result = invoke("prepare", "--stage", "rnet", "--annotations", data / "wider.txt",
                    "--images", data / "images", "--out", tmp_path / "s24", "--config", config,
                    "--set", "rnet.samples.positive_attempts=5", "-q")  # full path works too
    assert result.exit_code == 0, result.output
    counts = counts_of(tmp_path / "s24")
    assert ShardDataset(tmp_path / "s24").size == 24
    assert counts["negative"] == 0 and counts["positive"] > 0  # no negatives asked for
    # other settings into the same folder: refused, not mixed
    other = prepare(data, tmp_path / "s24", "rnet")
    assert other.exit_code == 2 and "other settings" in flat(other.output)


# ---------------------------------------------------------------- train --stage


def test_train_stage_writes_a_loadable_best_net(data: Path, pnet_run: Path) -> None:
    for name in ("best.pt", "last.pt", "metrics.csv", "metrics.png"):
        assert (pnet_run / name).is_file(), name
    best = torch.load(pnet_run / "best.pt", weights_only=True)
    assert best["arch"] == "pnet"
    nets.create("pnet").load_state_dict(best["state_dict"])
    rows = (pnet_run / "metrics.csv").read_text(encoding="utf-8").strip().splitlines()
    assert len(rows) == 1 + 2  # header + 2 epochs

    again = invoke("train", "--stage", "pnet", "--samples", data / "s12", "--out", pnet_run,
                   *FAST_TRAIN)
    assert again.exit_code == 0, again.output  # resumed: nothing left to do
    assert "done already" in flat(again.output) and "--no-resume" in flat(again.output)


def test_train_stage_links_several_sample_folders(data: Path, tmp_path: Path) -> None:
    for stage, extra in (("rnet", ()), ("landmarks", ("--size", "24"))):
        result = prepare(data, tmp_path / stage, stage, "faces.json", *extra,
                         "--set", "landmarks.workers=1")
        assert result.exit_code == 0, result.output
    out = tmp_path / "rnet-run"
    result = invoke("train", "--stage", "rnet", "--samples", tmp_path / "rnet",
                    "--samples", tmp_path / "landmarks", "--val", tmp_path / "rnet",
                    "--out", out, "--no-resume", *FAST_TRAIN)
    assert result.exit_code == 0, result.output
    with open(out / "metrics.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(np.isfinite(float(r["val_cls_loss"])) for r in rows)
    linked = shard_dirs(out / "data")
    assert len(linked) == len(shard_dirs(tmp_path / "rnet")) + len(
        shard_dirs(tmp_path / "landmarks"))
    assert all(d.is_symlink() for d in linked)
    assert len(ShardDataset(out / "data")) == (counts_of(tmp_path / "rnet")["total"]
                                               + counts_of(tmp_path / "landmarks")["total"])
    assert torch.load(out / "best.pt", weights_only=True)["arch"] == "rnet"
    assert "train_rnet" in flat(result.output) and "best epoch" in flat(result.output)


# ---------------------------------------------------------------- mine


def test_mine_rnet_with_the_trained_pnet_file(data: Path, pnet_run: Path, tmp_path: Path
                                              ) -> None:
    out = tmp_path / "m24"
    args = ("mine", "--stage", "rnet", "--weights", pnet_run / "best.pt",
            "--annotations", data / "wider.txt", "--images", data / "images", "--out", out,
            *MINE_LOW)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    counts = counts_of(out)
    assert counts["images"] == N_IMAGES and counts["candidates"] > 0 and counts["total"] > 0
    assert ShardDataset(out).size == 24
    text = flat(result.output)
    assert f"total {counts['total']}" in text
    assert f"{counts['candidates_per_image']:g} per image" in text
    # the PNet used was copied beside the samples, the unused nets are placeholders
    assert (out / "weights" / "pnet.pt").read_bytes() == (pnet_run / "best.pt").read_bytes()
    assert load_weights(out / "weights").source == str(out / "weights")

    again = invoke(*args)  # finished: the rerun changes nothing
    assert again.exit_code == 0, again.output
    assert counts_of(out) == counts

    other = tmp_path / "other.pt"  # other PNet weights into the same folder: refused
    torch.save({"arch": "pnet", "state_dict": nets.create("pnet").state_dict()}, other)
    refused = invoke(*args[:4], other, *args[5:])
    assert refused.exit_code == 2 and "other settings" in flat(refused.output)


def test_mine_onet_with_a_cascade_file_and_a_partial_folder(data: Path, tmp_path: Path
                                                            ) -> None:
    torch.manual_seed(1)
    cascade = {s: nets.create(s) for s in nets.STAGES}
    save_weights(cascade, tmp_path / "cascade.pt")
    partial = tmp_path / "partial"
    partial.mkdir()
    for stage in ("pnet", "rnet"):
        torch.save({"arch": stage, "state_dict": cascade[stage].state_dict()},
                   partial / f"{stage}.pt")
    results = {}
    for name, weights in (("file", tmp_path / "cascade.pt"), ("folder", partial)):
        out = tmp_path / name
        result = invoke("mine", "--stage", "onet", "--weights", weights, "--annotations",
                        data / "faces.json", "--images", data / "images", "--out", out,
                        *MINE_LOW, "--set", "mining.min_face_size=60", "--set", "device=cpu")
        assert result.exit_code == 0, result.output
        assert ShardDataset(out).size == 48
        results[name] = counts_of(out)
    assert not (tmp_path / "file" / "weights").exists()  # a whole cascade is used as it is
    assert (tmp_path / "folder" / "weights" / "onet.pt").is_file()
    assert results["file"]["candidates"] > 0
    assert results["file"] == results["folder"]  # same PNet and RNet: same samples


# ---------------------------------------------------------------- usage errors


def test_usage_errors_exit_2(data: Path, pnet_run: Path, tmp_path: Path) -> None:
    ann, img = ("--annotations", data / "wider.txt"), ("--images", data / "images")
    out = ("--out", tmp_path / "o")
    (tmp_path / "missing.txt").write_text("ev/0.png\n1\n1 1 20 20 0 0 0 0 0 0\n"
                                          "ev/nope.png\n1\n1 1 20 20 0 0 0 0 0 0\n")
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copyfile(pnet_run / "best.pt", lone / "rnet.pt")
    cases = [
        (("prepare", "--stage", "landmarks", ann, img, out), "--size 12, 24, 48"),
        (("prepare", "--stage", "pnet", "--size", "24", ann, img, out), "12 px"),
        (("prepare", "--stage", "face", ann, img, out), "face"),
        (("prepare", "--stage", "pnet", "--annotations", tmp_path / "no.txt", img, out),
         "no such file"),
        (("prepare", "--stage", "pnet", ann, "--images", tmp_path / "none", out),
         "no such folder"),
        (("prepare", "--stage", "pnet", "--annotations", tmp_path / "missing.txt", img, out),
         "1 annotated image(s) missing"),
        (("prepare", "--stage", "pnet", "--annotations", data / "landmarks.txt", img, out),
         "landmark list"),
        (("prepare", "--stage", "landmarks", "--size", "24", ann, img, out),
         "have no landmarks"),
        (("prepare", "--stage", "pnet", ann, img, out, "--set", "samples.bogus=1"), "bogus"),
        (("prepare", "--stage", "pnet", ann, img, out, "--config", tmp_path / "no.yaml"),
         "--config"),
        (("mine", "--stage", "onet", "--weights", pnet_run / "best.pt", ann, img, out),
         "one net file"),
        (("mine", "--stage", "rnet", "--weights", lone, ann, img, out), "missing pnet.pt"),
        (("mine", "--stage", "rnet", "--weights", tmp_path / "none.pt", ann, img, out),
         "no such file"),
        (("mine", "--stage", "pnet", "--weights", lone, ann, img, out), "pnet"),
        (("train", "--stage", "pnet", "--out", tmp_path / "t"), "--samples"),
        (("train", "--stage", "pnet", "--samples", data / "s12", "--data", data,
          "--out", tmp_path / "t"), "--data applies to the whole pipeline"),
        (("train", "--stage", "pnet", "--samples", data / "s12", "--only", "train_pnet",
          "--out", tmp_path / "t"), "--only"),
        (("train", "--stage", "rnet", "--samples", data / "s12", "--out", tmp_path / "t"),
         "12 px samples, rnet needs 24 px"),
        (("train", "--stage", "pnet", "--samples", data / "s12", "--val", data / "m",
          "--out", tmp_path / "t"), "--val"),
        (("train", "--stage", "pnet", "--samples", tmp_path, "--out", tmp_path / "t"),
         "no sample shards"),
        (("train", "--stage", "pnet", "--samples", data / "s12", "--set", "epoch=2",
          "--out", tmp_path / "t"), "epoch"),
        (("train", "--out", tmp_path / "t"), "Missing option '--data'"),
        (("train", "--data", data, "--samples", data / "s12", "--out", tmp_path / "t"),
         "--samples needs --stage"),
        (("train", "--data", data, "--no-resume", "--out", tmp_path / "t"), "needs --stage"),
    ]
    for args, message in cases:
        flat_args = [str(a) for arg in args for a in (arg if isinstance(arg, tuple) else (arg,))]
        result = invoke(*flat_args)
        assert result.exit_code == 2, (flat_args, result.output)
        assert message in flat(result.output), (flat_args, result.output)
        assert "Traceback" not in result.output
    assert not (tmp_path / "t").exists()  # nothing was trained


def test_help_says_what_goes_in_and_out() -> None:
    for command, words in (("prepare", ("--annotations", "--images", "shard-NNNNN",
                                        "summary.json", "landmarks")),
                           ("mine", ("--weights", "best.pt", "candidates", "shard-NNNNN")),
                           ("train", ("--stage", "--samples", "best.pt", "--data", "--only",
                                      "--resume"))):
        result = invoke(command, "--help")
        assert result.exit_code == 0
        text = flat(result.output)
        for word in words:
            assert word in text, (command, word)
