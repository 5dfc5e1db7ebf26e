"""Tests for mtcnnkit.deploy.export and the ``export`` command: ONNX, OpenVINO IR and ncnn
exports of freshly initialised nets (no weights download needed), their manifests, outputs
against torch at several shapes, verification failures, missing packages and the output
directory's safety rules. Each format's tests skip, saying what to install, when its packages
are missing. Every format is exported once per module (ONNX and OpenVINO take ~5 s each)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

import mtcnnkit.deploy.export as export_module
from mtcnnkit import nets
from mtcnnkit.deploy.commands import export_command
from mtcnnkit.deploy.export import (
    FORMATS,
    INSTALL_HINT,
    ExportError,
    MissingPackageError,
    VerificationError,
    export,
    read_manifest,
    rename_ncnn_blobs,
)
from mtcnnkit.weights import CascadeNets, save_weights

EXAMPLE_IMAGE = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"
PACKAGES = {"onnx": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino"),
            "ncnn": ("pnnx", "ncnn")}
EXPECTED_FILES = {
    "onnx": {s: [f"{s}.onnx"] for s in nets.STAGES},
    "openvino": {s: [f"{s}.xml", f"{s}.bin"] for s in nets.STAGES},
    "ncnn": {s: [f"{s}.ncnn.param", f"{s}.ncnn.bin"] for s in nets.STAGES},
}
TOLERANCE = 1e-4


def fresh_cascade(seed: int = 0) -> CascadeNets:
    torch.manual_seed(seed)
    made = {s: nets.create(s).eval().requires_grad_(False) for s in nets.STAGES}
    return CascadeNets(**made, source=f"fresh-seed-{seed}")


def needs(fmt: str) -> None:
    for package in PACKAGES[fmt]:
        pytest.importorskip(package, reason=f"{fmt} export needs {package}: {INSTALL_HINT}")


def installed(fmt: str) -> bool:
    return all(export_module._installed(p) for p in PACKAGES[fmt])


@pytest.fixture(scope="module")
def cheapest() -> str:
    """The quickest installed format, for tests about the export machinery itself."""
    for fmt in ("ncnn", "onnx", "openvino"):
        if installed(fmt):
            return fmt
    pytest.skip(f"no export format installed: {INSTALL_HINT}")


@pytest.fixture(scope="module")
def cascade() -> CascadeNets:
    return fresh_cascade()


@pytest.fixture(scope="module")
def exports(cascade, tmp_path_factory):
    """``get(fmt)``: the module's one verified export in that format, made on first use."""
    made: dict[str, tuple[str, Path, export_module.ExportReport]] = {}

    def get(fmt: str) -> tuple[str, Path, export_module.ExportReport]:
        needs(fmt)
        if fmt not in made:
            out = tmp_path_factory.mktemp(f"export-{fmt}") / "model"
            images = [EXAMPLE_IMAGE] if EXAMPLE_IMAGE.is_file() else None
            made[fmt] = fmt, out, export(cascade, fmt, out, images=images)
        return made[fmt]

    return get


@pytest.fixture(params=FORMATS)
def exported(request, exports) -> tuple[str, Path, export_module.ExportReport]:
    return exports(request.param)


def noisy(offset: float):
    """A replacement for the verification runner that adds ``offset`` to every output."""
    real_runner = export_module.net_runner

    def runner(fmt, folder, files, stage, num_threads=None):
        run = real_runner(fmt, folder, files, stage, num_threads)
        return lambda x: tuple(o + offset for o in run(x))

    return runner


# ---------------------------------------------------------------- running exported files


def load_runner(fmt: str, folder: Path, stage: str):
    """A function running one exported net on an NCHW batch, outputs in manifest order."""
    entry = read_manifest(folder)["nets"][stage]
    files, names = [folder / f for f in entry["files"]], entry["outputs"]
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # spinning thread pools crawl on a busy machine
        session = ort.InferenceSession(str(files[0]), options,
                                       providers=["CPUExecutionProvider"])
        return lambda x: session.run(names, {"input": x})
    if fmt == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(
            str(files[0]), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
        return lambda x: [compiled(x)[compiled.output(n)] for n in names]
    import ncnn

    net = ncnn.Net()
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
    net.opt.num_threads = 1
    assert net.load_param(str(files[0])) == 0 and net.load_model(str(files[1])) == 0

    def run(x: np.ndarray) -> list[np.ndarray]:
        outs = []
        for sample in x:  # ncnn has no batch dimension
            ex = net.create_extractor()
            ex.input("input", ncnn.Mat(np.ascontiguousarray(sample)).clone())
            outs.append([np.array(ex.extract(n)[1]) for n in names])
        return [np.stack([o[i] for o in outs]) for i in range(len(names))]

    return run


def torch_outputs(cascade: CascadeNets, stage: str, x: np.ndarray) -> list[np.ndarray]:
    with torch.inference_mode():
        return [t.numpy() for t in cascade.stage(stage)(torch.from_numpy(x))]


# ---------------------------------------------------------------- per format


def test_manifest_and_files(exported) -> None:
    fmt, out, report = exported
    manifest = read_manifest(out)
    assert manifest["format"] == fmt
    assert manifest["source"] == "fresh-seed-0"
    assert manifest["mtcnnkit_version"]
    assert set(manifest["nets"]) == set(nets.STAGES)
    for stage in nets.STAGES:
        entry = manifest["nets"][stage]
        assert entry["files"] == EXPECTED_FILES[fmt][stage]
        assert entry["inputs"] == ["input"]
        assert entry["outputs"] == (["cls", "box", "landmarks"] if stage == "onet"
                                    else ["cls", "box"])
        assert all((out / f).stat().st_size > 0 for f in entry["files"])
    expected = {"manifest.json"} | {f for fs in EXPECTED_FILES[fmt].values() for f in fs}
    assert {p.name for p in out.iterdir()} == expected
    assert [p.name for p in out.parent.iterdir()] == ["model"]  # no staging folder left
    verification = manifest["verification"]
    assert verification["verified"] and verification["ok"]
    assert verification["tolerance"] == TOLERANCE
    assert report.ok and report.verified and report.runtime


def test_report_covers_the_promised_shapes(exported) -> None:
    fmt, _, report = exported
    pnet_random = [c.input_shape for c in report.nets["pnet"].checks if c.inputs == "random"]
    assert [s[2:] for s in pnet_random] == [(12, 12), (37, 53), (289, 385)]
    for stage in ("rnet", "onet"):
        batches = [c.input_shape[0] for c in report.nets[stage].checks if c.inputs == "random"]
        assert batches == [1, 37]
    for n in report.nets.values():
        assert n.ok and n.max_abs_diff_random <= TOLERANCE
        if EXAMPLE_IMAGE.is_file():
            assert n.max_abs_diff_real is not None and n.max_abs_diff_real <= TOLERANCE
    table = report.table()
    assert all(stage in table for stage in nets.STAGES) and "NO" not in table


@pytest.mark.parametrize(("stage", "shapes"), [
    ("pnet", [(1, 3, 12, 12), (3, 3, 30, 41)]),
    ("rnet", [(1, 3, 24, 24), (5, 3, 24, 24)]),
    ("onet", [(1, 3, 48, 48), (5, 3, 48, 48)]),
])
def test_outputs_equal_torch_with_dynamic_shapes(exported, cascade, stage, shapes) -> None:
    fmt, out, _ = exported
    run = load_runner(fmt, out, stage)
    gen = np.random.default_rng(1)
    for shape in shapes:
        x = gen.uniform(-1, 1, shape).astype(np.float32)
        expected, got = torch_outputs(cascade, stage, x), run(x)
        assert len(got) == len(expected)
        for e, g in zip(expected, got, strict=True):
            assert g.shape == e.shape
            np.testing.assert_allclose(g, e, rtol=0, atol=TOLERANCE)


def test_onnx_graph_declares_dynamic_dims(exports) -> None:
    _, out, report = exports("onnx")
    import onnx

    def dims(stage: str) -> list:
        model = onnx.load(str(out / f"{stage}.onnx"))
        (inp,) = model.graph.input
        return [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]

    pnet, rnet = dims("pnet"), dims("rnet")
    assert isinstance(pnet[0], str) and pnet[1] == 3 and all(isinstance(d, str) for d in pnet[2:])
    assert isinstance(rnet[0], str) and rnet[1:] == [3, 24, 24]
    assert "dynamo" in report.exporter


# ---------------------------------------------------------------- export machinery


def test_verification_failure_writes_nothing(cheapest, cascade, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(export_module, "net_runner", noisy(1e-3))
    out = tmp_path / "model"
    with pytest.raises(VerificationError) as caught:
        export(cascade, cheapest, out)
    assert caught.value.report.ok is False
    assert "pnet" in str(caught.value) and "NO" in str(caught.value)
    assert all(not n.ok for n in caught.value.report.nets.values())
    assert list(tmp_path.iterdir()) == []  # no output, no staging folder


def test_zero_tolerance_fails(cheapest, cascade, tmp_path) -> None:
    if cheapest != "ncnn":
        pytest.skip("only ncnn is sure to differ from torch at all")
    with pytest.raises(VerificationError):
        export(cascade, "ncnn", tmp_path / "model", tolerance=0.0)
    assert not (tmp_path / "model").exists()


def test_missing_package_names_the_install_command(cascade, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pnnx", None)  # import pnnx now fails
    with pytest.raises(MissingPackageError) as caught:
        export(cascade, "ncnn", tmp_path / "model")
    assert INSTALL_HINT in str(caught.value) and "pnnx" in str(caught.value)
    assert isinstance(caught.value, ExportError)
    assert not (tmp_path / "model").exists()


def test_runtime_package_only_needed_to_verify(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingPackageError, match="onnxruntime"):
        export_module.require("onnx", verify=True)
    if export_module._installed("onnx"):
        export_module.require("onnx", verify=False)


def test_refuses_a_folder_that_is_not_an_export(cheapest, cascade, tmp_path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an mtcnnkit export"):
        export(cascade, cheapest, out, verify=False)
    assert (out / "notes.txt").read_text() == "keep me"


def test_replaces_an_earlier_export(cheapest, tmp_path) -> None:
    fmt, out = cheapest, tmp_path / "model"
    export(fresh_cascade(1), fmt, out, verify=False)
    stale = out / "stale.txt"
    stale.write_text("x")
    report = export(fresh_cascade(2), fmt, out, verify=False)
    assert not stale.exists()
    assert read_manifest(out)["source"] == "fresh-seed-2"
    assert read_manifest(out)["verification"]["verified"] is False
    assert report.ok is None and all(n.ok is None for n in report.nets.values())
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_onnx_falls_back_to_torchscript(cascade, tmp_path, monkeypatch) -> None:
    needs("onnx")

    def broken(*args, **kwargs):
        raise RuntimeError("dynamo is unavailable")

    monkeypatch.setattr(export_module, "_onnx_dynamo", broken)
    report = export(cascade, "onnx", tmp_path / "model")
    assert report.ok
    assert "TorchScript" in report.exporter
    assert any("dynamo is unavailable" in note for note in report.notes)
    assert read_manifest(tmp_path / "model")["exporter"]["tool"] == report.exporter


def test_rename_ncnn_blobs(tmp_path) -> None:
    param = tmp_path / "net.ncnn.param"
    param.write_text("7767517\n2 2\nInput in0 0 1 in0\nConvolution conv_0 1 1 in0 out0 0=2\n")
    rename_ncnn_blobs(param, {"in0": "input", "out0": "cls"})
    assert param.read_text().splitlines()[2:] == [
        "Input input 0 1 input", "Convolution conv_0 1 1 input cls 0=2"]
    with pytest.raises(ExportError, match="out1"):
        rename_ncnn_blobs(param, {"out1": "box"})


def test_bad_arguments(cascade, tmp_path) -> None:
    with pytest.raises(ValueError, match="format"):
        export(cascade, "tflite", tmp_path / "m")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tolerance"):
        export(cascade, "onnx", tmp_path / "m", tolerance=-1)


# ---------------------------------------------------------------- command


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("export")(export_command)
    app.command("other")(lambda: None)  # two commands: "export" stays a subcommand
    return app


def invoke(app: typer.Typer, *args):
    return CliRunner().invoke(app, ["export", "--format", *map(str, args)],
                              env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})


def test_command_prints_the_table(cli, cheapest, tmp_path) -> None:
    weights = save_weights(fresh_cascade(), tmp_path / "w.pt")
    result = invoke(cli, cheapest, "--weights", weights, "--out", tmp_path / "model")
    assert result.exit_code == 0, result.output
    for stage in nets.STAGES:
        assert stage in result.output
    assert "max|diff| random" in result.output and "ok" in result.output
    assert json.loads((tmp_path / "model" / "manifest.json").read_text())["source"] == str(weights)


def test_command_exit_codes(cli, cheapest, tmp_path, monkeypatch) -> None:
    result = invoke(cli, cheapest, "--weights", tmp_path / "missing.pt", "--out", tmp_path / "m")
    assert result.exit_code == 2 and "no such file" in result.output
    result = invoke(cli, "tflite", "--out", tmp_path / "m")
    assert result.exit_code == 2

    monkeypatch.setitem(sys.modules, PACKAGES[cheapest][0], None)
    result = invoke(cli, cheapest, "--weights", tmp_path / "missing.pt", "--out", tmp_path / "m")
    assert result.exit_code == 2 and INSTALL_HINT in result.output
    monkeypatch.undo()

    weights = save_weights(fresh_cascade(), tmp_path / "w.pt")
    monkeypatch.setattr(export_module, "net_runner", noisy(1.0))
    result = invoke(cli, cheapest, "--weights", weights, "--out", tmp_path / "m")
    assert result.exit_code == 1
    assert "verification failed" in result.output and "NO" in result.output
    assert not (tmp_path / "m").exists()
