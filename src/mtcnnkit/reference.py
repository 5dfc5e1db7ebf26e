"""Getting the original MTCNN weights (Zhang et al.) for comparisons.

They are never shipped with mtcnnkit: they come from the ``facenet-pytorch`` wheel on PyPI,
read as data. facenet-pytorch itself is never imported by the package.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import types
import zipfile
from importlib.util import find_spec
from pathlib import Path

WHEEL_REQUIREMENT = "facenet-pytorch==2.6.0"
WEIGHT_FILES = ("pnet.pt", "rnet.pt", "onet.pt")
HOW_TO_GET = (
    "The reference (original MTCNN) weights are not bundled. Get them with "
    "`mtcnnkit fetch-reference` (downloads the facenet-pytorch 2.6.0 wheel from PyPI and "
    "keeps only its weight files), or `pip download --no-deps facenet-pytorch==2.6.0` and "
    "pass the directory holding facenet_pytorch/data/{pnet,rnet,onet}.pt, or set "
    "MTCNNKIT_REFERENCE_DIR to that directory."
)


def cache_dir() -> Path:
    """Where mtcnnkit keeps downloaded files: ``$MTCNNKIT_CACHE`` or ``~/.cache/mtcnnkit``."""
    return Path(os.environ.get("MTCNNKIT_CACHE", Path.home() / ".cache" / "mtcnnkit"))


def _has_weights(directory: Path) -> bool:
    return all((directory / f).is_file() for f in WEIGHT_FILES)


def find_reference_dir() -> Path | None:
    """First directory holding the three reference weight files, or None.

    Looks at ``$MTCNNKIT_REFERENCE_DIR``, an installed facenet-pytorch (located, not
    imported), then the mtcnnkit cache filled by :func:`fetch_reference_weights`.
    """
    candidates = []
    if os.environ.get("MTCNNKIT_REFERENCE_DIR"):
        candidates.append(Path(os.environ["MTCNNKIT_REFERENCE_DIR"]))
    candidates += [Path(p) / "data" for p in _facenet_package_dirs()]
    candidates.append(cache_dir() / "reference")
    return next((c for c in candidates if _has_weights(c)), None)


def _facenet_package_dirs() -> list[str]:
    """Directories of an installed facenet-pytorch package, found without importing it."""
    loaded = sys.modules.get("facenet_pytorch")
    if loaded is not None:
        return list(getattr(loaded, "__path__", []))
    try:
        spec = find_spec("facenet_pytorch")
    except (ImportError, ValueError):
        return []
    return list(spec.submodule_search_locations or []) if spec else []


def download_reference_wheel(dest: Path | None = None) -> Path:
    """Download the facenet-pytorch wheel (no dependencies) into ``dest`` (cached)."""
    dest = Path(dest) if dest is not None else cache_dir() / "wheels"
    existing = sorted(dest.glob("facenet_pytorch-2.6.0-*.whl"))
    if existing:
        return existing[0]
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-d", str(dest), WHEEL_REQUIREMENT]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("facenet_pytorch-2.6.0-*.whl"))
    if result.returncode != 0 or not wheels:
        reason = result.stderr.strip()[-500:]
        raise RuntimeError(f"could not download {WHEEL_REQUIREMENT}: {reason}")
    return wheels[0]


def extract_wheel(wheel: Path, dest: Path) -> Path:
    """Unpack a wheel into ``dest`` (once) and return ``dest``."""
    marker = dest / ".complete"
    if not marker.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent))
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tmp)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        marker.touch()
    return dest


def fetch_reference_weights(dest: Path | None = None) -> Path:
    """Download the wheel and copy its three weight files into ``dest`` (default: the cache).
    Returns the directory holding them."""
    dest = Path(dest) if dest is not None else cache_dir() / "reference"
    if _has_weights(dest):
        return dest
    wheel = download_reference_wheel()
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for name in WEIGHT_FILES:
            tmp = dest / (name + ".part")
            tmp.write_bytes(zf.read(f"facenet_pytorch/data/{name}"))
            tmp.replace(dest / name)
    return dest


def load_reference_implementation(wheel_dir: Path | None = None) -> types.ModuleType:
    """facenet-pytorch 2.6.0's ``mtcnn`` module, for comparisons in tests and benchmarks.

    Downloads and unpacks the wheel (cached), then imports only ``facenet_pytorch.models.mtcnn``
    (its package ``__init__`` needs ``requests``; it is bypassed). Never used by the
    detector itself. Raises ``RuntimeError`` when the wheel cannot be downloaded.
    """
    wheel = download_reference_wheel(wheel_dir)
    root = extract_wheel(wheel, cache_dir() / "facenet_pytorch-2.6.0")
    for name, sub in (("facenet_pytorch", ""), ("facenet_pytorch.models", "models")):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(root / "facenet_pytorch" / sub)]
            sys.modules[name] = package
    return importlib.import_module("facenet_pytorch.models.mtcnn")
