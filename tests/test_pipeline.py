"""The training pipeline: config loading (fast) and a tiny end-to-end training run (slow,
on ../shared/data)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import REPO_ROOT, SHARED_DATA
from mtcnnkit import Detector
from mtcnnkit.train import pipeline
from mtcnnkit.train.commands import train_app
from mtcnnkit.train.pipeline import STEPS, load_config, run_pipeline

TINY = {
    "data.max_train_images": 5, "data.max_val_train_images": 5,
    "data.max_landmark_samples": 3,
    "pnet.samples.workers": 1, "pnet.landmarks.workers": 1, "rnet.landmarks.workers": 1,
    "onet.landmarks.workers": 1,
    # the landmark_positives path (as the defaults: 12 px landmark samples in PNet's data)
    "pnet.landmark_positives": True, "rnet.landmark_positives": True,
    "rnet.samples.workers": 1, "onet.samples.workers": 1,
    "pnet.epochs": 4, "pnet.batch_size": 128, "pnet.batches_per_epoch": 25,
    "rnet.epochs": 4, "rnet.batch_size": 64, "rnet.batches_per_epoch": 12,
    "onet.epochs": 4, "onet.batch_size": 64, "onet.batches_per_epoch": 12,
    # a barely trained PNet: low thresholds, large min face, so mining finds faces quickly
    "rnet.mining.pnet_threshold": 0.3, "rnet.mining.min_face_size": 48,
    "onet.mining.pnet_threshold": 0.3, "onet.mining.rnet_threshold": 0.3,
    "onet.mining.min_face_size": 48,
    "eval.max_images": 3, "eval.max_side": 640,
}


def test_default_yaml_matches_builtin_defaults() -> None:
    assert load_config(REPO_ROOT / "configs" / "default.yaml") == load_config(None)
    # and it spells out every knob, with the built-in value
    raw = yaml.safe_load((REPO_ROOT / "configs" / "default.yaml").read_text(encoding="utf-8"))
    assert raw == load_config(None).to_dict()


def test_overrides() -> None:
    cfg = load_config(None, ["pnet.epochs=2", "rnet.mining.pnet_threshold=0.4",
                             "device=cpu", "eval.thresholds=[0.5, 0.6, 0.7]"])
    assert cfg.pnet.train.epochs == 2 and cfg.pnet.train.stage == "pnet"
    assert cfg.rnet.mining.pnet_threshold == 0.4 and cfg.rnet.mining.stage == "rnet"
    assert cfg.onet.landmarks.size == 48 and cfg.rnet.landmarks.size == 24
    assert cfg.eval.thresholds == (0.5, 0.6, 0.7)
    assert load_config(None, {"pnet.epochs": 3}).pnet.train.epochs == 3


@pytest.mark.parametrize("overrides, message", [
    (["pnet.epoch=2"], "epoch"),
    (["pnet.samples.negatives=3"], "negatives"),
    (["bogus=1"], "bogus"),
    (["data.wider=x"], "wider"),
    (["pnet.epochs"], "key.path=value"),
    (["pnet.epochs=0"], "epochs"),
    (["pnet.optimizer=rmsprop"], "optimizer"),
    (["pnet.device=cuda"], "device"),
    (["pnet.samples.size=24"], "size"),
    (["pnet.epochs.x=1"], "not a section"),
    (["eval.thresholds=0.5"], "thresholds"),
])
def test_config_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)


def test_unknown_key_in_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("pnet:\n  epochs: 2\n  learning_rate: 0.1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="learning_rate"):
        load_config(path)


def test_cli_usage_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--data", str(tmp_path), "--out", str(tmp_path / "run")]
    for extra in (["--set", "pnet.nope=1"], ["--only", "fly"], ["--device", "tpu"],
                  ["--only", "train_pnet"]):
        result = runner.invoke(train_app, base + extra)
        assert result.exit_code == 2, (extra, result.output)


def test_unneeded_steps_follow_the_step_graph() -> None:
    assert pipeline.unneeded_steps([]) == set()
    assert pipeline.unneeded_steps(["pnet"]) == {"prepare_pnet"}
    # RNet given as well: its mined samples go; the landmarks and crops still feed ONet
    assert pipeline.unneeded_steps(["pnet", "rnet"]) == {"prepare_pnet", "mine_rnet"}
    assert pipeline.unneeded_steps(["onet"]) == {"mine_onet"}
    assert pipeline.unneeded_steps(["pnet", "rnet", "onet"]) == {
        "prepare_pnet", "prepare_landmarks", "mine_rnet", "prepare_crops", "mine_onet"}


def _net_file(path: Path, stage: str, seed: int) -> Path:
    import torch

    from mtcnnkit import nets

    torch.manual_seed(seed)
    torch.save({"arch": stage, "state_dict": nets.create(stage).state_dict()}, path)
    return path


def test_adopt_nets_writes_the_given_nets_as_finished_training_steps(tmp_path: Path) -> None:
    from mtcnnkit.weights import load_net, net_digest

    run = pipeline.Run(tmp_path, tmp_path / "run", load_config(None), echo=None)
    pnet_file = _net_file(tmp_path / "p.pt", "pnet", seed=1)
    pipeline.adopt_nets(run, {"pnet": pnet_file, "rnet": "default"})
    for stage, spec in (("pnet", pnet_file), ("rnet", "default")):
        done = json.loads((run.out_dir / f"train_{stage}" / ".done").read_text())
        expected = net_digest(load_net(spec, stage)[1])
        assert done["given"] == str(spec) and done["net_sha256"] == expected
        arch, adopted = load_net(run.out_dir / f"train_{stage}" / "best.pt", stage)
        assert arch == stage and net_digest(adopted) == expected
    assert not (run.out_dir / "train_onet").exists()
    pipeline.adopt_nets(run, {"pnet": pnet_file})  # the same net again: nothing to do
    other = _net_file(tmp_path / "q.pt", "pnet", seed=2)
    with pytest.raises(pipeline.PipelineUsageError, match="already holds another pnet"):
        pipeline.adopt_nets(run, {"pnet": other})
    with pytest.raises(ValueError, match="is a rnet, not a pnet"):
        pipeline.adopt_nets(run, {"pnet": _net_file(tmp_path / "r.pt", "rnet", seed=0)})


def test_assemble_keeps_each_nets_architecture(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from mtcnnkit import nets

    monkeypatch.setitem(nets._REGISTRY, "pnet_variant", ("pnet", nets.PNet))
    variant = tmp_path / "variant.pt"
    torch.save({"arch": "pnet_variant", "state_dict": nets.PNet().state_dict()}, variant)
    run = pipeline.Run(tmp_path, tmp_path / "run", load_config(None), echo=None)
    pipeline.adopt_nets(run, {"pnet": variant, "rnet": "default", "onet": "default"})
    pipeline.assemble(run)
    saved = torch.load(run.out_dir / pipeline.WEIGHTS_FILE, weights_only=True)
    assert {s: saved["nets"][s]["arch"] for s in nets.STAGES} == {
        "pnet": "pnet_variant", "rnet": "rnet", "onet": "onet_wide"}


def test_cli_rejects_bad_given_nets(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--data", str(tmp_path), "--out", str(tmp_path / "run")]
    for nets_option, message in (("pnet", "expected STAGE=WEIGHTS"),
                                 ("fnet=default", "expected STAGE=WEIGHTS"),
                                 (f"pnet={tmp_path / 'missing.pt'}", "no such file"),
                                 (f"rnet={_net_file(tmp_path / 'p.pt', 'pnet', 0)}",
                                  "not a rnet")):
        result = runner.invoke(train_app, base + ["--nets", nets_option])
        assert result.exit_code == 2, (nets_option, result.output)
        assert message in result.output, (nets_option, result.output)
    twice = runner.invoke(train_app, base + ["--nets", "pnet=default", "--nets", "pnet=default"])
    assert twice.exit_code == 2 and "given twice" in twice.output
    only = runner.invoke(train_app, base + ["--nets", "pnet=default", "--only", "train_pnet"])
    assert only.exit_code == 2 and "also given" in only.output
    stage = runner.invoke(train_app, ["--stage", "pnet", "--samples", str(tmp_path), "--out",
                                      str(tmp_path / "x"), "--nets", "pnet=default"])
    assert stage.exit_code == 2 and "--nets" in stage.output


def _cls_losses(csv_path: Path) -> list[float]:
    with open(csv_path, newline="", encoding="utf-8") as f:
        return [float(row["train_cls_loss"]) for row in csv.DictReader(f)]


@pytest.mark.slow
def test_tiny_training_run(tmp_path: Path) -> None:
    if not (SHARED_DATA / "WIDER_FACE").is_dir():
        pytest.skip(f"shared data {SHARED_DATA} is missing")
    out = tmp_path / "run"
    cfg = load_config(REPO_ROOT / "configs" / "default.yaml", TINY)
    reports = run_pipeline(SHARED_DATA, out, cfg, echo=None)
    assert [r.step for r in reports] == list(STEPS)
    assert all(r.status == "ran" for r in reports)
    assert all((out / step / ".done").is_file() for step in STEPS)

    for stage in ("pnet", "rnet", "onet"):
        losses = _cls_losses(out / f"train_{stage}" / "metrics.csv")
        assert len(losses) == 4
        assert losses[-1] < losses[0], (stage, losses)

    detector = Detector(weights=out / "weights.pt")
    assert detector.nets.meta["config"]["pnet"]["epochs"] == 4
    assert (out / "train_pnet" / "data").is_dir()
    assert len(list((out / "train_pnet" / "data").iterdir())) == 2  # 12 px crops + landmarks
    assert set(detector.nets.meta["metrics"]) == {"pnet", "rnet", "onet"}
    results = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    for level in ("easy", "medium", "hard"):
        assert 0.0 <= results[level] <= 1.0
    assert results["images"] == 3

    # a rerun skips every step and changes nothing
    stamp = (out / "weights.pt").stat().st_mtime_ns
    again = run_pipeline(SHARED_DATA, out, cfg, echo=None)
    assert [r.status for r in again] == ["skipped"] * len(STEPS)
    assert (out / "weights.pt").stat().st_mtime_ns == stamp

    # --only reruns one step; --from reruns from a step
    only = run_pipeline(SHARED_DATA, out, cfg, only="evaluate", echo=None)
    assert [(r.step, r.status) for r in only] == [("evaluate", "ran")]
    assert json.loads((out / "eval.json").read_text(encoding="utf-8")) == results
    rerun = run_pipeline(SHARED_DATA, out, cfg, from_step="assemble", echo=None)
    assert [r.status for r in rerun] == ["skipped"] * (len(STEPS) - 2) + ["ran"] * 2

    # the CLI on the finished run: all skipped, stage table printed
    result = CliRunner().invoke(train_app, [
        "--data", str(SHARED_DATA), "--out", str(out), "--quiet",
        "--config", str(REPO_ROOT / "configs" / "default.yaml"),
        *[arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]])
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "train_onet" in result.output
    assert pipeline.WEIGHTS_FILE == "weights.pt"

    # per-net validation report: the run's held-out samples scored again by its own nets
    # give the trainer's metrics of the best epoch; the CLI prints one row per weights
    from mtcnnkit.cli import app
    from mtcnnkit.evaluate.report import validate_run
    from mtcnnkit.weights import load_weights

    for r in validate_run(out, {"run": load_weights(out / "weights.pt")}):
        best = json.loads((out / f"train_{r.stage}" / ".done").read_text())["best_metrics"]
        for key in ("cls_loss", "box_loss", "cls_acc", "pos_recall"):
            assert r.metrics["run"][key] == pytest.approx(best[f"val_{key}"], rel=1e-4,
                                                          nan_ok=True), (r.stage, key)
    table = CliRunner().invoke(app, ["eval", "nets", "--run", str(out), "--compare",
                                     f"again={out / 'weights.pt'}", "--stages", "pnet,onet"])
    assert table.exit_code == 0, table.output
    rows = [line for line in table.output.splitlines() if line.startswith("| onet |")]
    assert len(rows) == 2 and rows[0].split("|")[3:] == rows[1].split("|")[3:]

    # a run given this run's PNet (its best.pt) and RNet (from its cascade file) skips their
    # sample steps and mines, from the same nets, exactly this run's ONet samples
    from mtcnnkit.weights import net_digest

    given_run = tmp_path / "given"
    given = {"pnet": out / "train_pnet" / "best.pt", "rnet": out / "weights.pt"}
    reports = run_pipeline(SHARED_DATA, given_run, cfg, given=given, echo=None)
    assert {r.step: r.status for r in reports} == {
        **{step: "ran" for step in STEPS}, "prepare_pnet": "not needed",
        "mine_rnet": "not needed", "train_pnet": "skipped", "train_rnet": "skipped"}
    assert not (given_run / "prepare_pnet").exists() and not (given_run / "mine_rnet").exists()
    mined = sorted((out / "mine_onet" / "samples").rglob("*.npy"))
    assert mined
    for path in mined:
        assert path.read_bytes() == (given_run / path.relative_to(out)).read_bytes(), path
    first, second = load_weights(out / "weights.pt"), load_weights(given_run / "weights.pt")
    for stage in ("pnet", "rnet"):
        assert net_digest(first.stage(stage)) == net_digest(second.stage(stage))
        assert second.meta["metrics"][stage]["given"] == str(given[stage])
    rerun = run_pipeline(SHARED_DATA, given_run, cfg, given=given, echo=None)
    assert {r.status for r in rerun} == {"skipped", "not needed"}


def test_train_step_line_names_how_the_net_was_kept() -> None:
    result = {"first_train_cls_loss": 0.5, "last_train_cls_loss": 0.2, "best_epoch": 7,
              "best_value": 0.1234, "best_metric": "cls_loss"}
    line = pipeline.describe(pipeline.StepReport("train_onet", "ran", 1.0, result))
    assert line == "train cls loss 0.5000 -> 0.2000, best epoch 7 (cls_loss=0.1234)"
    last = pipeline.describe(pipeline.StepReport(
        "train_onet", "ran", 1.0, {**result, "best_metric": "last"}))
    assert last.endswith("last epoch 7 (cls_loss=0.1234)")
