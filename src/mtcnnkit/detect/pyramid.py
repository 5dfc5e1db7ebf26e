"""Image pyramid: which scales PNet runs at, and the size of each level."""

from __future__ import annotations

PNET_SIZE = 12  # PNet's receptive field: a 12x12 window is one candidate face


def pyramid_scales(height: int, width: int, min_face_size: float = 20.0,
                   scale_factor: float = 0.709) -> list[float]:
    """Scales at which a face of ``min_face_size`` px (and larger ones, level by level) maps
    onto PNet's 12 px window. Empty when the image is smaller than ``min_face_size``."""
    if min_face_size <= 0:
        raise ValueError(f"min_face_size must be positive, got {min_face_size}")
    if not 0.0 < scale_factor < 1.0:
        raise ValueError(f"scale_factor must be in (0, 1), got {scale_factor}")
    scale = PNET_SIZE / min_face_size
    side = min(height, width) * scale
    scales = []
    while side >= PNET_SIZE:
        scales.append(scale)
        scale *= scale_factor
        side *= scale_factor
    return scales


def level_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """Pixel size ``(h, w)`` of the pyramid level at ``scale``."""
    return int(height * scale + 1), int(width * scale + 1)
