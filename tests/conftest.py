"""Shared fixtures: the shared data folder, the reference (original MTCNN) weights and a
session-wide `Detector` built on them. Each fixture skips, with the reason, when what it
needs is not available (no ../shared/data, offline with no cached weights)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtcnnkit import Detector

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
DLIB_FACES = SHARED_DATA / "dlib_faces" / "examples" / "faces"


def dlib_photos() -> list[Path]:
    """The nine dlib example photos (empty when the shared data is missing)."""
    return sorted(DLIB_FACES.glob("*.jpg"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is missing")
    return SHARED_DATA


@pytest.fixture(scope="session")
def dlib_faces(shared_data: Path) -> list[Path]:
    photos = dlib_photos()
    if len(photos) != 9:
        pytest.skip(f"expected the 9 dlib example photos in {DLIB_FACES}, found {len(photos)}")
    return photos


@pytest.fixture(scope="session")
def reference_weights_dir() -> Path:
    """Directory holding the original pnet.pt/rnet.pt/onet.pt (downloaded once, cached)."""
    from mtcnnkit.reference import fetch_reference_weights

    try:
        return fetch_reference_weights()
    except (RuntimeError, OSError) as e:
        pytest.skip(f"reference MTCNN weights unavailable (offline and not cached?): {e}")


@pytest.fixture(scope="session")
def reference_detector(reference_weights_dir: Path) -> Detector:
    """A default-settings detector with the original weights. Do not mutate it."""
    return Detector(weights=reference_weights_dir)


@pytest.fixture(autouse=True)
def _subnormals_kept() -> None:
    """The CLI makes its process flush subnormal floats to zero; tests that run it in-process
    must not pass that on to the next test (on this thread, where small tensors compute)."""
    yield
    torch.set_flush_denormal(False)
