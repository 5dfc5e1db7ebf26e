"""Export the cascade's three nets to ONNX, OpenVINO IR or ncnn, and check the exported files
against the torch nets with each format's own runtime.

An export directory holds ``manifest.json`` plus the nets' files::

    onnx      pnet.onnx  rnet.onnx  onet.onnx
    openvino  pnet.xml + pnet.bin, rnet.xml + rnet.bin, onet.xml + onet.bin
    ncnn      pnet.ncnn.param + pnet.ncnn.bin, rnet.ncnn.param + ..., onet.ncnn.param + ...

Every net takes one input named ``input``: NCHW float32, already normalised
((x - 127.5) / 128). Outputs are exactly the torch nets' (raw logits, not probabilities), named
``cls``, ``box`` and (ONet) ``landmarks``. PNet accepts any batch, height and width (>= 12);
RNet and ONet any batch of 24x24 / 48x48 crops. ncnn has no batch dimension: its nets take
one CHW sample at a time (PNet at any size), so a runtime loops over the batch.

Verification runs each exported file with its own runtime (onnxruntime, OpenVINO, the ncnn
Python package) on random inputs at several shapes (and on crops of real images when given)
and compares with the torch net; an export above the tolerance is not written and raises
`VerificationError`. The runtime settings used for verification (fp32 inference) are
recorded in the manifest under ``verification.runtime_options``.

Exports are staged in a hidden folder beside ``out_dir`` and moved into place only when
complete, so a directory with a manifest is always a whole, verified (unless ``verify=False``)
export.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import importlib.util
import io
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from .. import __version__, nets
from ..weights import CascadeNets
from .runtimes import INPUT_NAME, OUTPUT_NAMES, RUNTIME_OPTIONS, net_runner

Format = Literal["onnx", "openvino", "ncnn"]
FORMATS: tuple[Format, ...] = ("onnx", "openvino", "ncnn")
INSTALL_HINT = 'pip install "mtcnnkit[deploy]"'
MANIFEST = "manifest.json"
OPSET = 18  # ONNX opset: read by onnxruntime >= 1.14 and OpenVINO >= 2023.0
DEFAULT_TOLERANCE = 1e-4

# Verification inputs: (batch, height, width). PNet at several sizes (odd ones included: the
# ceil-mode pooling), RNet/ONet at batch 1 and a larger batch.
PNET_CHECK_SHAPES = ((1, 12, 12), (2, 37, 53), (1, 289, 385))
CROP_CHECK_BATCHES = (1, 37)
REAL_CROPS = 37  # windows taken from the real images for RNet/ONet
# Verification runs single-threaded: the inputs are small, and thread pools that spin-wait
# (OpenMP in ncnn, onnxruntime's) crawl when another process holds a core.
VERIFY_THREADS = 1

# Python packages each format needs: to export, and to verify.
_EXPORT_NEEDS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnx",), "openvino": ("onnx", "openvino"), "ncnn": ("pnnx",)}
_VERIFY_NEEDS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnxruntime",), "openvino": ("openvino",), "ncnn": ("ncnn",)}
_RUNTIME_PACKAGE = {"onnx": "onnxruntime", "openvino": "openvino", "ncnn": "ncnn"}

# Runtime settings that verification uses; a runtime should use the same for these results.

class ExportError(RuntimeError):
    """An export that could not be made, or not be written."""


class MissingPackageError(ExportError):
    """A Python package the format needs is not installed (the message says what to run)."""


class VerificationError(ExportError):
    """An exported net differs from the torch net by more than the tolerance. ``report``
    holds the per-net results; nothing was written."""

    def __init__(self, message: str, report: ExportReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class Check:
    """One verification input: its shape, kind and the largest output difference."""

    input_shape: tuple[int, ...]
    inputs: Literal["random", "real"]
    max_abs_diff: float  # over all outputs; inf when an output's shape is wrong


@dataclass
class NetReport:
    stage: nets.Stage
    files: list[str]
    input_shape: list[int | None]  # NCHW; None = dynamic
    outputs: list[str]
    export_seconds: float
    checks: list[Check] = field(default_factory=list)
    verify_seconds: float | None = None
    ok: bool | None = None  # None: not verified

    @property
    def max_abs_diff_random(self) -> float | None:
        return _max(c.max_abs_diff for c in self.checks if c.inputs == "random")

    @property
    def max_abs_diff_real(self) -> float | None:
        return _max(c.max_abs_diff for c in self.checks if c.inputs == "real")


@dataclass
class ExportReport:
    format: Format
    out_dir: Path
    source: str
    exporter: str  # which tool made the files, e.g. "torch.onnx.export (dynamo)"
    details: dict[str, object]  # versions, opset, onnxslim node counts, pnnx options, ...
    nets: dict[str, NetReport]
    tolerance: float
    verified: bool
    runtime: str | None = None  # e.g. "onnxruntime 1.32.0"
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool | None:
        """True when every net is within the tolerance, None when not verified."""
        if not self.verified:
            return None
        return all(n.ok for n in self.nets.values())

    def table(self) -> str:
        """The per-net verification table as plain text."""
        rows = [("net", "file(s)", "max|diff| random", "max|diff| real", "ok")]
        for n in self.nets.values():
            ok = "-" if n.ok is None else ("yes" if n.ok else "NO")
            rows.append((n.stage, ", ".join(n.files), _fmt_diff(n.max_abs_diff_random),
                         _fmt_diff(n.max_abs_diff_real), ok))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                         for r in rows)

    def manifest(self) -> dict:
        """The ``manifest.json`` content."""
        return {
            "format": self.format,
            "mtcnnkit_version": __version__,
            "source": self.source,
            "nets": {s: {"files": n.files, "inputs": [INPUT_NAME], "outputs": n.outputs,
                         "input_shape": n.input_shape} for s, n in self.nets.items()},
            "exporter": {"tool": self.exporter, **self.details},
            "verification": {
                "verified": self.verified,
                "ok": self.ok,
                "tolerance": self.tolerance,
                "runtime": self.runtime,
                "runtime_options": RUNTIME_OPTIONS[self.format] if self.verified else None,
                "nets": {s: {"ok": n.ok,
                             "max_abs_diff_random": _json_float(n.max_abs_diff_random),
                             "max_abs_diff_real": _json_float(n.max_abs_diff_real),
                             "checks": [{"input_shape": list(c.input_shape), "inputs": c.inputs,
                                         "max_abs_diff": _json_float(c.max_abs_diff)}
                                        for c in n.checks]}
                         for s, n in self.nets.items()},
            },
            "notes": self.notes,
        }


ImageInput = str | os.PathLike | np.ndarray
Progress = Callable[[str], None]


def export(cascade: CascadeNets, fmt: Format, out_dir: str | os.PathLike, source: str | None = None,
           verify: bool = True, tolerance: float = DEFAULT_TOLERANCE,
           images: Sequence[ImageInput] | None = None, progress: Progress | None = None,
           ) -> ExportReport:
    """Export ``cascade``'s nets as ``fmt`` into ``out_dir`` and (by default) verify them.

    ``out_dir`` must not exist, be empty, or hold an earlier export (it is replaced whole).
    ``source`` is recorded in the manifest (default: ``cascade.source``). ``images`` (paths
    or HxWx3 RGB uint8 arrays) add "real" verification inputs: pyramid levels for PNet and
    resized windows for RNet/ONet. ``progress`` is called with short status messages.

    Raises `MissingPackageError` when a needed package is missing, `VerificationError` (with
    the report) when a net differs from torch by more than ``tolerance``, `ExportError` when a
    tool fails, `FileExistsError` when ``out_dir`` is something else, `ValueError` on bad
    arguments.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    require(fmt, verify)
    say = progress or (lambda _message: None)
    out_dir = Path(out_dir).expanduser().absolute()
    _check_out_dir(out_dir)
    real = _load_images(images) if verify and images else []
    source = cascade.source if source is None else source
    started = time.perf_counter()

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".export",
                                    dir=out_dir.parent))
    try:
        work = staging / ".work"
        work.mkdir()
        exporter = _EXPORTERS[fmt]()
        reports: dict[str, NetReport] = {}
        for stage in nets.STAGES:
            say(f"exporting {stage} to {fmt}")
            net = copy.deepcopy(cascade.stage(stage)).cpu().float().eval().requires_grad_(False)
            t0 = time.perf_counter()
            files = exporter.export(net, stage, staging, work)
            reports[stage] = NetReport(stage, files, _input_shape(stage), list(OUTPUT_NAMES[stage]),
                                       export_seconds=time.perf_counter() - t0)
            if verify:
                say(f"verifying {stage} with {_RUNTIME_PACKAGE[fmt]}")
                _verify(reports[stage], net, fmt, staging, tolerance, real)
        shutil.rmtree(work)
        report = ExportReport(
            fmt, out_dir, source, exporter.name, exporter.details, reports, tolerance, verify,
            runtime=(f"{_RUNTIME_PACKAGE[fmt]} {_version(_RUNTIME_PACKAGE[fmt])}"
                     if verify else None),
            notes=exporter.notes)
        report.seconds = time.perf_counter() - started
        if verify and not report.ok:
            bad = ", ".join(s for s, n in reports.items() if not n.ok)
            raise VerificationError(
                f"{fmt} export differs from torch by more than {tolerance:g} ({bad}); nothing "
                f"was written\n{report.table()}", report)
        with open(staging / MANIFEST, "w", encoding="utf-8") as f:
            json.dump(report.manifest(), f, indent=2)
            f.write("\n")
        _publish(staging, out_dir)
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def require(fmt: Format, verify: bool = True) -> None:
    """Raise `MissingPackageError` unless the packages to export (and verify) ``fmt`` are
    installed."""
    needed = list(_EXPORT_NEEDS[fmt]) + (list(_VERIFY_NEEDS[fmt]) if verify else [])
    missing = [p for p in dict.fromkeys(needed) if not _installed(p)]
    if missing:
        raise MissingPackageError(
            f"exporting to {fmt} needs the Python package(s) {', '.join(missing)}, not "
            f"installed; install the deploy extra: {INSTALL_HINT} (or: pip install "
            f"{' '.join(missing)})")


def read_manifest(out_dir: str | os.PathLike) -> dict:
    """The manifest of an export directory."""
    return json.loads((Path(out_dir) / MANIFEST).read_text(encoding="utf-8"))


# ---------------------------------------------------------------- exporters


class _OnnxExporter:
    """torch.onnx.export with the dynamo exporter (TorchScript exporter as fallback), then
    onnxslim when installed."""

    name = "torch.onnx.export (dynamo)"

    def __init__(self) -> None:
        self.details: dict[str, object] = {
            "opset": OPSET, "torch": torch.__version__, "onnx": _version("onnx"),
            "onnxscript": _version("onnxscript"), "onnxslim": None}
        self.notes: list[str] = []
        self._exporters: set[str] = set()
        self._slim: dict[str, list[int]] = {}

    def export(self, net: nn.Module, stage: nets.Stage, out: Path, work: Path) -> list[str]:
        path = out / f"{stage}.onnx"
        self.to_onnx(net, stage, path)
        return [path.name]

    def to_onnx(self, net: nn.Module, stage: nets.Stage, path: Path) -> None:
        try:
            _onnx_dynamo(net, stage, path)
            self._exporters.add("dynamo")
        except Exception as e:  # any failure of the new exporter: try the TorchScript one
            path.unlink(missing_ok=True)
            reason = _one_line(e)
            try:
                _onnx_torchscript(net, stage, path)
            except Exception as e2:
                raise ExportError(f"{stage}: ONNX export failed with the dynamo exporter "
                                  f"({reason}) and the TorchScript exporter ({_one_line(e2)})"
                                  ) from e2
            self._exporters.add("torchscript")
            self.notes.append(f"{stage}: dynamo exporter failed ({reason}); used the "
                              "TorchScript exporter")
        self._slim_file(stage, path)
        self.name = {frozenset({"dynamo"}): "torch.onnx.export (dynamo)",
                     frozenset({"torchscript"}): "torch.onnx.export (TorchScript, dynamo=False)",
                     }.get(frozenset(self._exporters),
                           "torch.onnx.export (dynamo; TorchScript for some nets)")

    def _slim_file(self, stage: str, path: Path) -> None:
        import onnx

        if not _installed("onnxslim"):
            self.details["onnxslim"] = "not installed"
            return
        import onnxslim

        model = onnx.load(str(path))
        before = len(model.graph.node)
        try:
            with _quiet():
                slim = onnxslim.slim(model)
            onnx.checker.check_model(slim)
        except Exception as e:  # keep the unsimplified model
            self.notes.append(f"{stage}: onnxslim failed ({_one_line(e)}); kept the "
                              "unsimplified model")
            return
        after = len(slim.graph.node)
        self._slim[stage] = [before, after]
        if after != before:
            onnx.save(slim, str(path))
        self.details["onnxslim"] = {
            "version": _version("onnxslim"),
            "nodes_before_after": dict(self._slim),
            "changed": any(b != a for b, a in self._slim.values()),
        }


def _onnx_dynamo(net: nn.Module, stage: nets.Stage, path: Path) -> None:
    from torch.export import Dim

    dims: dict[int, Dim] = {0: Dim("batch", min=1)}
    size = nets.INPUT_SIZE[stage]
    if stage == "pnet":
        dims |= {2: Dim("height", min=size), 3: Dim("width", min=size)}
        example = torch.zeros(2, 3, 48, 64)  # not 1: torch.export specialises sizes 0 and 1
    else:
        example = torch.zeros(2, 3, size, size)
    with _quiet():
        torch.onnx.export(net, (example,), str(path), dynamo=True, external_data=False,
                          opset_version=OPSET, input_names=[INPUT_NAME],
                          output_names=list(OUTPUT_NAMES[stage]), dynamic_shapes=(dims,),
                          verbose=False, optimize=True)
    if not path.is_file():
        raise ExportError(f"no file written at {path}")


def _onnx_torchscript(net: nn.Module, stage: nets.Stage, path: Path) -> None:
    size = nets.INPUT_SIZE[stage]
    spatial = {2: "height", 3: "width"} if stage == "pnet" else {}
    out_spatial = {2: "out_height", 3: "out_width"} if stage == "pnet" else {}
    axes = {INPUT_NAME: {0: "batch", **spatial}}
    axes |= {name: {0: "batch", **out_spatial} for name in OUTPUT_NAMES[stage]}
    with _quiet():
        torch.onnx.export(net, (torch.zeros(1, 3, size, size),), str(path), dynamo=False,
                          opset_version=OPSET, input_names=[INPUT_NAME],
                          output_names=list(OUTPUT_NAMES[stage]), dynamic_axes=axes)


class _OpenVinoExporter:
    """ONNX (as above) -> openvino.convert_model -> IR with fp32 weights."""

    def __init__(self) -> None:
        self._onnx = _OnnxExporter()
        self.details = {"openvino": _version("openvino"), "compress_to_fp16": False,
                        "via": self._onnx.details}
        self.notes = self._onnx.notes

    @property
    def name(self) -> str:
        return f"{self._onnx.name} -> openvino.convert_model"

    def export(self, net: nn.Module, stage: nets.Stage, out: Path, work: Path) -> list[str]:
        import openvino as ov

        onnx_path = work / f"{stage}.onnx"
        self._onnx.to_onnx(net, stage, onnx_path)
        xml = out / f"{stage}.xml"
        try:
            with _quiet():
                model = ov.convert_model(str(onnx_path))
                ov.save_model(model, str(xml), compress_to_fp16=False)
        except Exception as e:
            raise ExportError(f"{stage}: OpenVINO conversion failed: {_one_line(e)}") from e
        return [xml.name, xml.with_suffix(".bin").name]


class _NcnnExporter:
    """torch.jit.trace -> the pnnx converter (fp32 weights) -> ncnn param/bin, blobs renamed
    to ``input`` / ``cls`` / ``box`` / ``landmarks``."""

    def __init__(self) -> None:
        import pnnx

        self._exe = pnnx.EXEC_PATH
        self.name = "pnnx"
        self.details = {"pnnx": _version("pnnx"), "torch": torch.__version__, "fp16": False,
                        "batch": "none: ncnn nets take one CHW sample; loop over the batch"}
        self.notes = ["ncnn: no batch dimension (one CHW sample per run); PNet accepts any "
                      "height and width >= 12 (converted with pnnx's two-shape inputshape2)"]

    def export(self, net: nn.Module, stage: nets.Stage, out: Path, work: Path) -> list[str]:
        size = nets.INPUT_SIZE[stage]
        if stage == "pnet":
            shape, shape2 = (1, 3, 48, 64), (1, 3, 97, 131)  # two shapes: dynamic H and W
        else:
            shape, shape2 = (1, 3, size, size), None
        traced = work / f"{stage}.pt"
        with _quiet():
            torch.jit.trace(net, torch.rand(*shape) * 2 - 1).save(str(traced))
        param, binary = out / f"{stage}.ncnn.param", out / f"{stage}.ncnn.bin"
        args = [self._exe, str(traced), f"inputshape={_shape_arg(shape)}", "device=cpu",
                "fp16=0", f"ncnnparam={param}", f"ncnnbin={binary}",
                f"pnnxparam={work / f'{stage}.pnnx.param'}",
                f"pnnxbin={work / f'{stage}.pnnx.bin'}", f"pnnxpy={work / f'{stage}_pnnx.py'}",
                f"pnnxonnx={work / f'{stage}.pnnx.onnx'}", f"ncnnpy={work / f'{stage}_ncnn.py'}"]
        if shape2 is not None:
            args.append(f"inputshape2={_shape_arg(shape2)}")
        try:
            done = subprocess.run(args, cwd=work, capture_output=True, text=True, timeout=600,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ExportError(f"{stage}: cannot run pnnx ({self._exe}): {e}") from e
        if done.returncode != 0 or not param.is_file() or not binary.is_file():
            tail = (done.stderr or done.stdout or "").strip().splitlines()[-8:]
            raise ExportError(f"{stage}: pnnx failed (exit {done.returncode}):\n"
                              + "\n".join(tail))
        names = {"in0": INPUT_NAME} | {f"out{i}": n for i, n in enumerate(OUTPUT_NAMES[stage])}
        rename_ncnn_blobs(param, names)
        return [param.name, binary.name]


_EXPORTERS: dict[str, Callable[[], _OnnxExporter | _OpenVinoExporter | _NcnnExporter]] = {
    "onnx": _OnnxExporter, "openvino": _OpenVinoExporter, "ncnn": _NcnnExporter}


def rename_ncnn_blobs(param: Path, names: dict[str, str]) -> None:
    """Rename blobs (and the Input layers) of an ncnn ``.param`` file; every old name must
    occur."""
    lines = param.read_text(encoding="utf-8").splitlines()
    if len(lines) < 2 or lines[0].strip() != "7767517":
        raise ExportError(f"{param}: not an ncnn param file")
    seen: set[str] = set()
    out = lines[:2]
    for line in lines[2:]:
        tokens = line.split()
        if len(tokens) < 4:
            out.append(line)
            continue
        kind, layer, n_in, n_out = tokens[0], tokens[1], int(tokens[2]), int(tokens[3])
        blobs = tokens[4:4 + n_in + n_out]
        seen.update(b for b in blobs if b in names)
        if kind == "Input":
            layer = names.get(layer, layer)
        out.append(" ".join([kind, layer, str(n_in), str(n_out)]
                            + [names.get(b, b) for b in blobs] + tokens[4 + n_in + n_out:]))
    missing = sorted(set(names) - seen)
    if missing:
        raise ExportError(f"{param}: blob(s) {', '.join(missing)} not found; the net's inputs "
                          "or outputs are not what mtcnnkit expects")
    param.write_text("\n".join(out) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- verification



def _verify(report: NetReport, net: nn.Module, fmt: Format, folder: Path, tolerance: float,
            real: list[np.ndarray]) -> None:
    t0 = time.perf_counter()
    try:
        run = net_runner(fmt, folder, report.files, report.stage, VERIFY_THREADS)
    except ValueError as e:
        raise ExportError(f"{report.stage}: {e}") from e
    for kind, x in _check_inputs(report.stage, real):
        with torch.inference_mode():
            expected = [t.numpy() for t in net(torch.from_numpy(x))]
            got = [t.numpy() for t in run(torch.from_numpy(x))]
        report.checks.append(Check(tuple(x.shape), kind, _max_abs_diff(expected, got)))
    report.verify_seconds = time.perf_counter() - t0
    report.ok = all(c.max_abs_diff <= tolerance for c in report.checks)  # False for NaN


def _max_abs_diff(expected: list[np.ndarray], got: list[np.ndarray]) -> float:
    if len(expected) != len(got):
        return math.inf
    worst = 0.0
    for e, g in zip(expected, got, strict=True):
        if e.shape != g.shape:
            return math.inf
        d = float(np.max(np.abs(e.astype(np.float64) - g.astype(np.float64)), initial=0.0))
        if not d <= worst:  # keeps NaN
            worst = d
    return worst


def _check_inputs(stage: nets.Stage, real: list[np.ndarray]
                  ) -> list[tuple[Literal["random", "real"], np.ndarray]]:
    gen = np.random.default_rng(20240611)
    size = nets.INPUT_SIZE[stage]
    shapes = (PNET_CHECK_SHAPES if stage == "pnet"
              else tuple((b, size, size) for b in CROP_CHECK_BATCHES))
    out: list[tuple[Literal["random", "real"], np.ndarray]] = [
        ("random", gen.uniform(-1.0, 1.0, (n, 3, h, w)).astype(np.float32))
        for n, h, w in shapes]
    out += [("real", x) for x in _real_inputs(stage, real)]
    return out


def _load_images(images: Sequence[ImageInput]) -> list[np.ndarray]:
    from ..imageio import load_image

    return [load_image(im) for im in images]


def _normalise(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> 1x3xHxW float32 in the nets' input range."""
    return ((rgb.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None].copy()


def _real_inputs(stage: nets.Stage, images: list[np.ndarray]) -> list[np.ndarray]:
    """PNet: three pyramid levels of each image; RNet/ONet: one batch of windows over all
    images, resized to the net's input size."""
    import cv2

    from ..detect.pyramid import level_size, pyramid_scales

    if not images:
        return []
    size = nets.INPUT_SIZE[stage]
    if stage == "pnet":
        out = []
        for rgb in images:
            h, w = rgb.shape[:2]
            scales = pyramid_scales(h, w)
            for s in dict.fromkeys([scales[0], scales[len(scales) // 2], scales[-1]]
                                   if scales else []):
                lh, lw = level_size(h, w, s)
                out.append(_normalise(cv2.resize(rgb, (lw, lh), interpolation=cv2.INTER_AREA)))
        return out
    gen = np.random.default_rng(7)
    crops = []
    for i in range(REAL_CROPS):
        rgb = images[i % len(images)]
        h, w = rgb.shape[:2]
        side = int(gen.integers(min(12, h, w), min(h, w) + 1))
        y, x = int(gen.integers(0, h - side + 1)), int(gen.integers(0, w - side + 1))
        crop = cv2.resize(rgb[y:y + side, x:x + side], (size, size),
                          interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)
        crops.append(_normalise(crop)[0])
    return [np.stack(crops)]


# ---------------------------------------------------------------- files and helpers


def _check_out_dir(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    if any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        raise FileExistsError(f"{out_dir} exists and is not an mtcnnkit export (no {MANIFEST});"
                              " choose another output directory or empty it")


def _publish(staging: Path, out_dir: Path) -> None:
    """Move the complete export into place, replacing an earlier one at ``out_dir``."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700 is too strict for an output folder
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
    try:
        os.replace(out_dir, old / "export")
        try:
            os.replace(staging, out_dir)
        except OSError:
            os.replace(old / "export", out_dir)  # put the earlier export back
            raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _input_shape(stage: nets.Stage) -> list[int | None]:
    size = nets.INPUT_SIZE[stage]
    return [None, 3, None, None] if stage == "pnet" else [None, 3, size, size]


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _shape_arg(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, shape)) + "]f32"


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _max(values) -> float | None:
    values = list(values)
    if not values:
        return None
    return math.nan if any(math.isnan(v) for v in values) else max(values)


def _fmt_diff(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def _json_float(value: float | None) -> float | str | None:
    """JSON has no inf/nan: write them as strings."""
    return value if value is None or math.isfinite(value) else str(value)


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' warnings and prints (deprecations, tracer notes)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield
