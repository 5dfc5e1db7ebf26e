"""Inference runtimes behind one interface: a net is a callable taking a normalised NCHW
float32 tensor and returning the net's raw outputs (``cls`` logits, ``box`` offsets
[, ``landmarks``]) as torch tensors, so the cascade runs unchanged on every runtime.

Runtimes load an export directory written by `mtcnnkit.deploy.export` (its
``manifest.json`` names the files); the torch runtime uses the modules directly.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..nets import STAGES

Net = Callable[[Tensor], tuple[Tensor, ...]]
INPUT_NAME = "input"
OUTPUT_NAMES: dict[str, tuple[str, ...]] = {
    "pnet": ("cls", "box"), "rnet": ("cls", "box"), "onet": ("cls", "box", "landmarks")}
RUNTIME_FORMATS = {"onnxruntime": "onnx", "openvino": "openvino", "ncnn": "ncnn"}
INSTALL_HINT = 'pip install "mtcnnkit[deploy]"'


@dataclass
class CascadeRunners:
    """The three nets of a cascade as callables, and where they came from."""

    pnet: Net
    rnet: Net
    onet: Net
    backend: str
    source: str


def read_manifest(export_dir: str | os.PathLike, backend: str) -> dict:
    """The manifest of an export directory, checked against the runtime that will use it."""
    path = Path(export_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{export_dir}: not an export directory (no manifest.json); "
                                f"create one with `mtcnnkit export --format "
                                f"{RUNTIME_FORMATS[backend]}`")
    manifest = json.loads(path.read_text())
    wanted = RUNTIME_FORMATS[backend]
    if manifest.get("format") != wanted:
        raise ValueError(f"{export_dir} holds a {manifest.get('format')!r} export; backend "
                         f"{backend!r} needs {wanted!r}")
    return manifest


def load_runners(backend: str, export_dir: str | os.PathLike, num_threads: int | None = None
                 ) -> CascadeRunners:
    """Runners for ``backend`` (onnxruntime, openvino, ncnn) from an export directory."""
    if backend not in RUNTIME_FORMATS:
        raise ValueError(f"unknown runtime {backend!r}; available: "
                         f"{', '.join(RUNTIME_FORMATS)}")
    manifest = read_manifest(export_dir, backend)
    fmt = RUNTIME_FORMATS[backend]
    nets = {stage: net_runner(fmt, Path(export_dir), manifest["nets"][stage]["files"], stage,
                              num_threads) for stage in STAGES}
    return CascadeRunners(**nets, backend=backend, source=str(export_dir))


# Options every runner uses, in verification and detection alike (recorded in manifests).
RUNTIME_OPTIONS: dict[str, dict[str, object]] = {
    "onnx": {"providers": ["CPUExecutionProvider"]},
    # CPUs with bf16/fp16 support otherwise run reduced precision by default
    "openvino": {"device": "CPU", "INFERENCE_PRECISION_HINT": "f32",
                 "PERFORMANCE_HINT": "LATENCY"},
    # ncnn's defaults store activations/weights as fp16 where the CPU allows (~1e-3 error)
    "ncnn": {"use_fp16_storage": False, "use_fp16_packed": False,
             "use_fp16_arithmetic": False, "use_bf16_storage": False},
}


def net_runner(fmt: str, folder: Path, files: list[str], stage: str,
               num_threads: int | None = None) -> Net:
    """A callable running one exported net (``fmt``: onnx, openvino, ncnn) on NCHW float32
    tensors, returning its outputs in the torch net's order as tensors."""
    build = {"onnx": _onnxruntime, "openvino": _openvino, "ncnn": _ncnn}[fmt]
    return build(Path(folder), files, OUTPUT_NAMES[stage], num_threads)


def _check_names(inputs: list[str], outputs: list[str], expected: tuple[str, ...]) -> None:
    if inputs != [INPUT_NAME] or sorted(outputs) != sorted(expected):
        raise ValueError(f"exported net has inputs {inputs} and outputs {outputs}; expected "
                         f"[{INPUT_NAME!r}] and {list(expected)}")


def _numpy_nchw(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)


def _import(module: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise ImportError(f"the {module} runtime is not installed: {INSTALL_HINT}") from e


def _onnxruntime(folder: Path, files: list[str], names: tuple[str, ...],
                 num_threads: int | None) -> Net:
    ort = _import("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if num_threads:
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
    # spinning threads make 2 threads slower than 1 on small VMs (DESIGN.md)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(folder / files[0]), options,
                                   providers=RUNTIME_OPTIONS["onnx"]["providers"])
    _check_names([i.name for i in session.get_inputs()],
                 [o.name for o in session.get_outputs()], names)

    def run(x: Tensor) -> tuple[Tensor, ...]:
        return tuple(torch.from_numpy(o)
                     for o in session.run(list(names), {INPUT_NAME: _numpy_nchw(x)}))

    return run


def _openvino(folder: Path, files: list[str], names: tuple[str, ...],
              num_threads: int | None) -> Net:
    ov = _import("openvino")
    config = dict(RUNTIME_OPTIONS["openvino"])
    device = str(config.pop("device"))
    if num_threads:
        config["INFERENCE_NUM_THREADS"] = num_threads
    model = ov.Core().compile_model(str(folder / files[0]), device, config)
    _check_names([i.get_any_name() for i in model.inputs],
                 [o.get_any_name() for o in model.outputs], names)
    request = model.create_infer_request()
    outputs = [model.output(name) for name in names]

    def run(x: Tensor) -> tuple[Tensor, ...]:
        result = request.infer({INPUT_NAME: _numpy_nchw(x)})
        return tuple(torch.from_numpy(np.array(result[o])) for o in outputs)

    return run


def _ncnn(folder: Path, files: list[str], names: tuple[str, ...],
          num_threads: int | None) -> Net:
    ncnn = _import("ncnn")
    model = ncnn.Net()
    for option, value in RUNTIME_OPTIONS["ncnn"].items():
        setattr(model.opt, option, value)
    if num_threads:
        model.opt.num_threads = num_threads
    param, weights = (str(folder / f) for f in files[:2])
    if model.load_param(param) != 0 or model.load_model(weights) != 0:
        raise ValueError(f"{folder}: ncnn could not load {param} / {weights}")
    _check_names(list(model.input_names()), list(model.output_names()), names)

    def run(x: Tensor) -> tuple[Tensor, ...]:
        # ncnn's Python API runs one sample at a time (a Mat has no batch dimension)
        per_sample = []
        for sample in _numpy_nchw(x):
            with model.create_extractor() as ex:
                ex.input(INPUT_NAME, ncnn.Mat(sample).clone())
                outs = []
                for name in names:
                    status, mat = ex.extract(name)
                    if status != 0:
                        raise RuntimeError(f"ncnn could not compute {name!r}")
                    outs.append(np.array(mat))
            per_sample.append(outs)
        return tuple(torch.from_numpy(np.stack([p[k] for p in per_sample]))
                     for k in range(len(names)))

    return run


def weights_key(nets) -> str:
    """A short content hash of a cascade's weights (names an automatic export)."""
    digest = hashlib.sha256()
    for stage in STAGES:
        for name, value in nets.stage(stage).state_dict().items():
            digest.update(name.encode())
            digest.update(value.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def runners_for(backend: str, weights, num_threads: int | None = None) -> CascadeRunners:
    """Runners for ``backend`` from an export directory, or from any weights spec
    (``"default"``, ``"reference"``, a path, a `CascadeNets`), exported once into the cache
    (``<cache>/exports/<weights hash>/<format>``) and verified against torch."""
    if isinstance(weights, (str, os.PathLike)) and (Path(weights) / "manifest.json").is_file():
        return load_runners(backend, weights, num_threads)
    from ..reference import cache_dir
    from ..weights import CascadeNets, load_weights
    from .export import export

    nets = weights if isinstance(weights, CascadeNets) else load_weights(weights)
    fmt = RUNTIME_FORMATS.get(backend)
    if fmt is None:
        raise ValueError(f"unknown runtime {backend!r}; available: {', '.join(RUNTIME_FORMATS)}")
    target = cache_dir() / "exports" / weights_key(nets) / fmt
    if not (target / "manifest.json").is_file():
        export(nets, fmt, target, source=str(getattr(nets, "source", "")))
    return load_runners(backend, target, num_threads)
