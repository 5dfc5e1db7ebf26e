"""Turn user input into the RGB ``uint8`` arrays the detector works on.

:func:`load_image` accepts a file path (``str`` or :class:`os.PathLike`), a
:class:`numpy.ndarray` or a :class:`PIL.Image.Image` and returns a C-contiguous
``uint8`` array of shape ``(H, W, 3)`` in RGB order. :func:`source_name` gives a
short display name for any of those inputs, used as the prefix of every error
message.

Conventions:

* Files are decoded with Pillow, never OpenCV, so truncated files are reported
  instead of being silently padded (``ImageFile.LOAD_TRUNCATED_IMAGES`` is read,
  never changed). EXIF orientation is applied; multi-frame files (GIF, TIFF)
  give their first frame. Every failure is a :class:`ValueError` whose message
  starts with the path, chained to the original exception.
* Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) is kept: its
  error becomes a ``ValueError`` ("image too large"), its warning stays a warning.
* Alpha channels are dropped, not composited onto a background.
* 16-bit data is scaled to 8 bits (``round(v / 257)``); Pillow's own conversion
  would clip instead. Mode ``"I"`` counts as 16-bit when its maximum exceeds
  255 (values are clipped to 0..65535 first). Mode ``"F"`` is clipped to
  [0, 255] unless its maximum exceeds 255, in which case it is scaled by that
  maximum; NaN and infinities count as 0.
* PIL images are used as given: their EXIF orientation is *not* applied.
* Arrays are never modified. A C-contiguous ``uint8`` ``(H, W, 3)`` array is
  returned as is (the same object, no copy); anything else gives a new array.
  Three-channel arrays are assumed to be RGB already. Float arrays whose values
  all lie in [0, 1] are scaled by 255; otherwise values in [0, 255] are rounded.
  Other integer dtypes are accepted when their values lie in [0, 255].
* Torch tensors are not accepted; convert them to a numpy ``HxWx3`` array first.
"""

from __future__ import annotations

import os
import stat
import struct
import zlib

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["IMAGE_SUFFIXES", "ImageSource", "load_image", "source_name"]

ImageSource = str | os.PathLike[str] | np.ndarray | Image.Image

#: Lowercase file suffixes treated as images when scanning folders.
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pnm"}
)

# What Pillow raises while parsing or decoding broken files (besides
# UnidentifiedImageError and DecompressionBombError, which are handled apart).
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    EOFError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    struct.error,
    zlib.error,
)

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})

_ACCEPTED = "a path (str or os.PathLike), a numpy.ndarray or a PIL.Image.Image"


def source_name(source: object) -> str:
    """Short display name of an image source, for messages.

    Paths are given back as passed, arrays as ``"<array HxWxC>"``, PIL images
    as ``"<PIL WxH MODE>"``; any other object as ``"<TypeName>"``.
    """
    if isinstance(source, (str, os.PathLike)):
        return os.fsdecode(source)
    if isinstance(source, np.ndarray):
        return "<array " + ("x".join(str(n) for n in source.shape) or "0-d") + ">"
    if isinstance(source, Image.Image):
        width, height = source.size
        return f"<PIL {width}x{height} {source.mode}>"
    return f"<{type(source).__name__}>"


def load_image(source: ImageSource) -> np.ndarray:
    """Return ``source`` as a C-contiguous RGB ``uint8`` array of shape ``(H, W, 3)``.

    Raises ``ValueError`` (message starting with :func:`source_name`) for an
    input of an accepted type that cannot be used, ``TypeError`` for any other
    type, including torch tensors.
    """
    if isinstance(source, (str, os.PathLike)):
        return _load_path(source)
    if isinstance(source, Image.Image):
        return _load_pil(source)
    if isinstance(source, np.ndarray):
        return _load_array(source)
    kind = f"{type(source).__module__}.{type(source).__qualname__}"
    hint = " (convert a tensor to a numpy HxWx3 array first)" if kind.startswith("torch.") else ""
    raise TypeError(f"cannot load an image from {kind}{hint}; expected {_ACCEPTED}")


def _load_path(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file with Pillow (first frame, EXIF orientation applied)."""
    name = source_name(path)
    try:
        info = os.stat(path)
    except FileNotFoundError as e:
        raise ValueError(f"{name}: file not found") from e
    except PermissionError as e:
        raise ValueError(f"{name}: permission denied") from e
    except OSError as e:
        raise ValueError(f"{name}: cannot access file ({e.strerror or e})") from e
    if stat.S_ISDIR(info.st_mode):
        raise ValueError(f"{name}: is a directory")
    if info.st_size == 0:
        raise ValueError(f"{name}: file is empty (0 bytes)")

    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)  # a loaded copy, usable after close
    except Image.DecompressionBombError as e:
        raise ValueError(f"{name}: image too large ({e})") from e
    except UnidentifiedImageError as e:
        raise ValueError(f"{name}: not an image file ({e})") from e
    except FileNotFoundError as e:
        raise ValueError(f"{name}: file not found") from e
    except IsADirectoryError as e:
        raise ValueError(f"{name}: is a directory") from e
    except PermissionError as e:
        raise ValueError(f"{name}: permission denied") from e
    except _DECODE_ERRORS as e:
        raise ValueError(f"{name}: truncated or corrupt image data ({_why(e)})") from e
    return _pil_to_rgb(image, name)


def _load_pil(image: Image.Image) -> np.ndarray:
    """Convert a PIL image as given (no EXIF orientation), loading it if still lazy."""
    name = source_name(image)
    try:
        image.load()
    except _DECODE_ERRORS as e:
        raise ValueError(f"{name}: truncated or corrupt image data ({_why(e)})") from e
    return _pil_to_rgb(image, name)


def _pil_to_rgb(image: Image.Image, name: str) -> np.ndarray:
    """Convert a loaded PIL image of any mode to RGB ``uint8``."""
    width, height = image.size
    if width == 0 or height == 0:
        raise ValueError(f"{name}: image has zero size ({width}x{height})")
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        return _gray_to_rgb(_scale_16bit(np.asarray(image)))
    if mode == "I":
        values = np.asarray(image)
        if values.max() > 255:
            return _gray_to_rgb(_scale_16bit(np.clip(values, 0, 65535)))  # treat as 16-bit
        return _gray_to_rgb(np.clip(values, 0, 255).astype(np.uint8))
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0)
        peak = values.max()
        if peak > 255:
            values = values * (255.0 / peak)
        return _gray_to_rgb(np.rint(np.clip(values, 0, 255)).astype(np.uint8))
    if mode in ("P", "PA"):
        # Via RGBA: Pillow warns when a palette with per-entry transparency goes straight to RGB.
        image = image.convert("RGBA")
    elif mode == "La":
        image = image.convert("LA")  # Pillow has no direct La -> RGB conversion
    try:
        rgb = image.convert("RGB")
    except ValueError as e:
        raise ValueError(f"{name}: unsupported image mode {mode!r}") from e
    return np.array(rgb, dtype=np.uint8)  # np.array copies: writable and C-contiguous


def _load_array(array: np.ndarray) -> np.ndarray:
    """Validate a numpy image and convert it to RGB ``uint8`` without touching the input."""
    name = source_name(array)
    shape_ok = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))
    if not shape_ok:
        raise ValueError(
            f"{name}: expected HxW, HxWx1, HxWx3 or HxWx4 image, got shape {array.shape}"
        )
    if 0 in array.shape:
        raise ValueError(f"{name}: image has zero size, got shape {array.shape}")
    pixels = _array_to_uint8(array, name)
    if pixels.ndim == 2:
        return _gray_to_rgb(pixels)
    if pixels.shape[2] == 1:
        return _gray_to_rgb(pixels[:, :, 0])
    if pixels.shape[2] == 4:
        pixels = pixels[:, :, :3]  # RGBA: alpha dropped
    return np.ascontiguousarray(pixels)  # no copy for contiguous uint8 HxWx3 (taken as RGB)


def _array_to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    """Map the supported dtypes to ``uint8`` (the input itself when already ``uint8``)."""
    kind = array.dtype.kind
    if array.dtype == np.uint8:
        return array
    if kind == "b":
        return array.astype(np.uint8) * np.uint8(255)
    if array.dtype == np.uint16:
        return _scale_16bit(array)
    if kind in "iu":
        low, high = array.min(), array.max()
        if low < 0 or high > 255:
            raise ValueError(
                f"{name}: integer values must lie in [0, 255] for dtype {array.dtype}, "
                f"got [{low}, {high}]"
            )
        return array.astype(np.uint8)
    if kind == "f":
        if not np.isfinite(array).all():
            raise ValueError(f"{name}: array contains NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < 0:
            raise ValueError(f"{name}: float values must not be negative, got minimum {low}")
        if high > 255:
            raise ValueError(f"{name}: float values must lie in [0, 1] or [0, 255], got max {high}")
        values = array.astype(np.float64)
        if high <= 1:
            values = values * 255.0
        return np.rint(values).astype(np.uint8)
    raise ValueError(
        f"{name}: unsupported dtype {array.dtype} "
        "(expected uint8, uint16, bool, float or an integer type in [0, 255])"
    )


def _why(error: BaseException) -> str:
    """Pillow's message for ``error``, or its type name when the message is empty."""
    return str(error) or type(error).__name__


def _scale_16bit(values: np.ndarray) -> np.ndarray:
    """Scale 16-bit values (0..65535) to 8 bits: ``round(v / 257)``."""
    wide = values.astype(np.uint32)
    return ((wide + 128) // 257).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    """Replicate an ``HxW`` ``uint8`` array into a new contiguous ``HxWx3`` array."""
    return np.repeat(gray[:, :, np.newaxis], 3, axis=2)
