"""Loading cascade weights: the project's own (bundled), the reference ones, or a path.

Formats understood:

* an mtcnnkit weights file (``.pt``): ``{"format": "mtcnnkit-weights", "version": 1,
  "nets": {stage: {"arch": name, "state_dict": ...}}, "meta": {...}}``;
* a directory with ``pnet.pt``, ``rnet.pt``, ``onet.pt``, each either an mtcnnkit per-net
  file (``{"arch": name, "state_dict": ...}``) or a facenet-pytorch state dict (the
  original MTCNN weights, converted on load).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import nets
from ..reference import HOW_TO_GET, find_reference_dir

BUNDLED_DIR = Path(__file__).parent
BUNDLED_FILE = BUNDLED_DIR / "mtcnnkit.pt"
CHECKPOINT_FORMAT = "mtcnnkit-train-checkpoint"  # a trainer's last.pt (train/trainer.py)
FORMAT = "mtcnnkit-weights"


@dataclass
class CascadeNets:
    """The three nets of a cascade, in eval mode, plus where they came from and what they are."""

    pnet: nn.Module
    rnet: nn.Module
    onet: nn.Module
    source: str
    meta: dict = field(default_factory=dict)
    archs: dict[str, str] = field(default_factory=dict)  # stage -> registry name (default: stage)

    def to(self, device: torch.device | str) -> CascadeNets:
        for net in (self.pnet, self.rnet, self.onet):
            net.to(device)
        return self

    def stage(self, name: nets.Stage) -> nn.Module:
        return getattr(self, name)


def load_weights(weights: str | os.PathLike = "default", device: str | torch.device = "cpu"
                 ) -> CascadeNets:
    """Load a cascade: ``"default"`` (bundled), ``"reference"`` (original MTCNN, for
    comparison only), or a path to an mtcnnkit file / a directory of per-net files."""
    path = _resolve(weights)
    entries, meta = _entries(path)
    loaded = CascadeNets(**{s: _build(s, *entries[s]) for s in nets.STAGES}, source=str(path),
                         meta=meta, archs={s: entries[s][0] for s in nets.STAGES})
    for net in (loaded.pnet, loaded.rnet, loaded.onet):
        net.eval().requires_grad_(False)
    return loaded.to(device)


def load_net(weights: str | os.PathLike, stage: nets.Stage) -> tuple[str, nn.Module]:
    """One net and its architecture name: a per-net file (a training run's ``best.pt``, or
    its ``last.pt`` checkpoint) or the ``stage`` net of a cascade (anything
    :func:`load_weights` takes)."""
    path = _resolve(weights)
    if path.is_file() and (entry := _net_entry(_read(path), stage)) is not None:
        arch, state_dict = entry
        return arch, _build(stage, arch, state_dict, path)
    arch, state_dict, origin = _entries(path)[0][stage]
    return arch, _build(stage, arch, state_dict, origin)


def is_net_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds one net (``{"arch", "state_dict"}``, a trainer's ``best.pt``,
    or a trainer's ``last.pt`` checkpoint) rather than a cascade."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a torch file: the loaders report it
        return False
    return _net_entry(payload, "") is not None


def _net_entry(payload: object, stage: str) -> tuple[str, dict[str, Tensor]] | None:
    """(architecture, state dict) of a one-net payload, None for anything else (a cascade
    file, a reference net): a per-net file, or a training checkpoint, whose net is under
    "model". Without an architecture name the stage's original one is meant."""
    if not isinstance(payload, dict):
        return None
    if payload.get("format") == CHECKPOINT_FORMAT:
        return payload.get("arch", stage), payload["model"]
    if "state_dict" in payload and "format" not in payload:
        return payload.get("arch", stage), payload["state_dict"]
    return None


def net_digest(net: nn.Module) -> str:
    """SHA-256 of a net's parameters and buffers (names and values): equal nets, equal
    digests, whatever file they came from."""
    digest = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def atomic_save(obj: object, path: str | os.PathLike) -> Path:
    """``torch.save`` through a temporary file and a rename: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def save_weights(cascade: CascadeNets | dict[str, nn.Module], path: str | os.PathLike,
                 archs: dict[str, str] | None = None, meta: dict | None = None) -> Path:
    """Write an mtcnnkit weights file atomically. ``archs`` maps stage -> registry name
    (default: the names a loaded cascade carries, else the stage name, i.e. the original
    architectures)."""
    if isinstance(cascade, CascadeNets):
        modules = {s: cascade.stage(s) for s in nets.STAGES}
        archs = {**cascade.archs, **(archs or {})}
    else:
        modules, archs = cascade, archs or {}
    payload = {
        "format": FORMAT,
        "version": 1,
        "nets": {s: {"arch": archs.get(s, s), "state_dict": m.state_dict()}
                 for s, m in modules.items()},
        "meta": meta or {},
    }
    return atomic_save(payload, path)


def _read(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickle that is not plain data, ...
        raise ValueError(f"{path}: not a readable weights file ({e})") from e


def _resolve(weights: str | os.PathLike) -> Path:
    """The file or directory a weights spec names ("default", "reference" or a path)."""
    spec = os.fspath(weights)
    if spec == "default":
        if not BUNDLED_FILE.is_file():
            raise FileNotFoundError(
                "mtcnnkit's own trained weights are not bundled in this version yet; use "
                "weights='reference' (the original MTCNN weights). " + HOW_TO_GET)
        return BUNDLED_FILE
    if spec == "reference":
        directory = find_reference_dir()
        if directory is None:
            raise FileNotFoundError(HOW_TO_GET)
        return directory
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"weights {spec!r}: no such file or directory (expected 'default', "
            "'reference', an mtcnnkit .pt file or a directory with pnet.pt/rnet.pt/onet.pt)")
    return path


Entry = tuple[str, dict[str, Tensor], Path]  # architecture, state dict, file it came from


def _build(stage: nets.Stage, arch: str, state_dict: dict[str, Tensor], origin: Path) -> nn.Module:
    if nets.stage_of(arch) != stage:
        raise ValueError(f"{origin}: architecture {arch!r} is a {nets.stage_of(arch)}, "
                         f"not a {stage}")
    net = nets.create(arch)
    try:
        net.load_state_dict(state_dict)
    except RuntimeError as e:
        raise ValueError(f"{origin}: weights do not fit architecture {arch!r}: {e}") from e
    nets.zero_subnormals_(net)  # files trained before the trainer flushed them still have some
    return net


def _entries(path: Path) -> tuple[dict[str, Entry], dict]:
    """Each stage's (architecture, state dict, origin) of a cascade, and its meta."""
    return _directory_entries(path) if path.is_dir() else _file_entries(path)


def _file_entries(path: Path) -> tuple[dict[str, Entry], dict]:
    payload = _read(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not an mtcnnkit weights file (missing format={FORMAT!r})")
    entries = {}
    for stage in nets.STAGES:
        entry = payload["nets"].get(stage)
        if entry is None:
            raise ValueError(f"{path}: no {stage} in weights file")
        entries[stage] = (entry["arch"], entry["state_dict"], path)
    return entries, payload.get("meta", {})


def _directory_entries(directory: Path) -> tuple[dict[str, Entry], dict]:
    entries = {}
    for stage in nets.STAGES:
        path = directory / f"{stage}.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{directory}: missing {stage}.pt")
        payload = _read(path)
        if (entry := _net_entry(payload, stage)) is not None:
            entries[stage] = (*entry, path)
        else:
            entries[stage] = (stage, from_reference_layout(stage, payload), path)
    return entries, {}


# facenet-pytorch key prefix -> ours, per stage
_REFERENCE_KEYS: dict[str, dict[str, str]] = {
    "pnet": {"conv1": "body.0", "prelu1": "body.1", "conv2": "body.3", "prelu2": "body.4",
             "conv3": "body.5", "prelu3": "body.6", "conv4_1": "cls", "conv4_2": "box"},
    "rnet": {"conv1": "body.0", "prelu1": "body.1", "conv2": "body.3", "prelu2": "body.4",
             "conv3": "body.6", "prelu3": "body.7", "dense4": "body.9", "prelu4": "body.10",
             "dense5_1": "cls", "dense5_2": "box"},
    "onet": {"conv1": "body.0", "prelu1": "body.1", "conv2": "body.3", "prelu2": "body.4",
             "conv3": "body.6", "prelu3": "body.7", "conv4": "body.9", "prelu4": "body.10",
             "dense5": "body.12", "prelu5": "body.13", "dense6_1": "cls", "dense6_2": "box",
             "dense6_3": "landmarks"},
}
# first dense layer after the convolutions: (layer, channels, height, width) of its input
_REFERENCE_FLATTEN = {"rnet": ("dense4", 64, 3, 3), "onet": ("dense5", 128, 3, 3)}


def from_reference_layout(stage: nets.Stage, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Convert a facenet-pytorch (original Caffe MTCNN) state dict to our nets.

    The original nets flatten feature maps in (width, height, channel) order, a legacy of
    Caffe's transposed images; ours flatten in PyTorch's (channel, height, width) order, so
    the first dense layer's input columns are permuted once here.
    """
    if not isinstance(state_dict, dict):
        raise ValueError(f"{stage}: expected a state dict, got {type(state_dict).__name__}")
    mapping = _REFERENCE_KEYS[stage]
    out = {}
    for key, value in state_dict.items():
        prefix, _, leaf = key.rpartition(".")
        if prefix not in mapping:
            raise ValueError(f"{stage}: unexpected key {key!r} in reference weights")
        out[f"{mapping[prefix]}.{leaf}"] = value
    if stage in _REFERENCE_FLATTEN:
        layer, c, h, w = _REFERENCE_FLATTEN[stage]
        key = f"{mapping[layer]}.weight"
        weight = out[key]
        out[key] = weight.view(-1, w, h, c).permute(0, 3, 2, 1).reshape(weight.shape[0], -1)
    return out
