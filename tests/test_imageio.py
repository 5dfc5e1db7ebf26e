"""Tests for mtcnnkit.imageio: every input kind, every mode, every failure."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, ImageFile

from mtcnnkit import imageio
from mtcnnkit.imageio import IMAGE_SUFFIXES, load_image, source_name

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def assert_rgb_uint8(out: np.ndarray, height: int, width: int) -> None:
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.uint8
    assert out.shape == (height, width, 3)
    assert out.flags.c_contiguous


def noise(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (height, width, channels) if channels else (height, width)
    return rng.integers(0, 256, shape, dtype=np.uint8)


# --------------------------------------------------------------------------- files


def test_png_rgb_round_trip_is_exact(tmp_path: Path) -> None:
    pixels = noise(7, 11)
    path = tmp_path / "rgb.png"
    Image.fromarray(pixels).save(path)
    out = load_image(path)
    assert_rgb_uint8(out, 7, 11)
    np.testing.assert_array_equal(out, pixels)
    assert out.flags.writeable


def test_jpeg_rgb_round_trip_shape_and_colour(tmp_path: Path) -> None:
    pixels = np.zeros((48, 80, 3), np.uint8)
    pixels[:] = (200, 40, 90)
    path = tmp_path / "rgb.jpg"
    Image.fromarray(pixels).save(path, quality=95)
    out = load_image(str(path))
    assert_rgb_uint8(out, 48, 80)
    assert np.abs(out.astype(int) - pixels).max() <= 6


def test_grayscale_png_gives_three_equal_channels(tmp_path: Path) -> None:
    gray = noise(5, 9, channels=0)
    path = tmp_path / "gray.png"
    Image.fromarray(gray).save(path)
    assert Image.open(path).mode == "L"
    out = load_image(path)
    assert_rgb_uint8(out, 5, 9)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_one_bit_png_gives_0_and_255(tmp_path: Path) -> None:
    bits = np.array([[True, False, True], [False, False, True]])
    path = tmp_path / "bits.png"
    Image.fromarray(bits).save(path)
    assert Image.open(path).mode == "1"
    out = load_image(path)
    np.testing.assert_array_equal(out[:, :, 0], np.where(bits, 255, 0))
    np.testing.assert_array_equal(out[:, :, 1], out[:, :, 2])


def test_rgba_png_keeps_rgb_and_drops_alpha(tmp_path: Path) -> None:
    rgba = noise(6, 4, channels=4, seed=1)
    rgba[0, 0, 3] = 0  # fully transparent pixel: colour still kept, not composited
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba).save(path)
    out = load_image(path)
    assert_rgb_uint8(out, 6, 4)
    np.testing.assert_array_equal(out, rgba[:, :, :3])


def test_la_png_keeps_gray_and_drops_alpha(tmp_path: Path) -> None:
    la = np.stack([np.array([[10, 20, 30]], np.uint8), np.array([[0, 128, 255]], np.uint8)], -1)
    path = tmp_path / "la.png"
    Image.fromarray(la).save(path)
    assert Image.open(path).mode == "LA"
    out = load_image(path)
    np.testing.assert_array_equal(out, [[[10] * 3, [20] * 3, [30] * 3]])


def palette_image(with_transparency: bool = False) -> Image.Image:
    image = Image.new("P", (3, 2))
    image.putpalette([*RED, 0, 255, 0, *BLUE, 12, 34, 56])
    image.putdata([0, 1, 2, 3, 2, 1])
    if with_transparency:
        image.info["transparency"] = bytes([0, 255, 128, 255])
    return image


PALETTE_EXPECTED = np.array(
    [[RED, (0, 255, 0), BLUE], [(12, 34, 56), BLUE, (0, 255, 0)]], dtype=np.uint8
)


@pytest.mark.parametrize("with_transparency", [False, True])
def test_palette_png_gives_palette_colours(tmp_path: Path, with_transparency: bool) -> None:
    path = tmp_path / "palette.png"
    palette_image(with_transparency).save(path)
    assert Image.open(path).mode == "P"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "palette with transparency" warning from Pillow
        out = load_image(path)
    np.testing.assert_array_equal(out, PALETTE_EXPECTED)


def test_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257 * 100, 65535], [128, 129, 200]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    out = load_image(path)
    assert_rgb_uint8(out, 2, 3)
    # round(v / 257): 128/257 rounds down, 129/257 up, 200/257 up.
    expected = np.array([[0, 100, 255], [0, 1, 1]], dtype=np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], expected)


def test_16bit_tiff_is_scaled(tmp_path: Path) -> None:
    values = np.array([[0, 257 * 7, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.tif"
    Image.fromarray(values).save(path)
    np.testing.assert_array_equal(load_image(path)[:, :, 0], [[0, 7, 255]])


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (32, 16), (0, 0, 0, 0)).save(path, quality=95)  # no ink: white
    out = load_image(path)
    assert_rgb_uint8(out, 16, 32)
    assert out.min() >= 250


def test_gif_gives_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    first, second = Image.new("RGB", (8, 6), RED), Image.new("RGB", (8, 6), BLUE)
    first.save(path, save_all=True, append_images=[second])
    assert Image.open(path).n_frames == 2
    out = load_image(path)
    assert_rgb_uint8(out, 6, 8)
    assert (out == RED).all()


def test_multipage_tiff_gives_first_page(tmp_path: Path) -> None:
    path = tmp_path / "pages.tif"
    first, second = Image.new("RGB", (5, 4), BLUE), Image.new("RGB", (3, 3), RED)
    first.save(path, save_all=True, append_images=[second])
    out = load_image(path)
    assert_rgb_uint8(out, 4, 5)
    assert (out == BLUE).all()


@pytest.mark.parametrize("suffix", [".bmp", ".webp", ".ppm"])
def test_other_lossless_formats_round_trip(tmp_path: Path, suffix: str) -> None:
    pixels = noise(9, 5, seed=3)
    path = tmp_path / f"img{suffix}"
    Image.fromarray(pixels).save(path, **({"lossless": True} if suffix == ".webp" else {}))
    np.testing.assert_array_equal(load_image(path), pixels)


def test_exif_orientation_6_rotates_clockwise(tmp_path: Path) -> None:
    # Stored 64 wide x 32 high, blue, with a red 16x16 block in the stored top-left corner.
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:] = BLUE
    stored[:16, :16] = RED
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)

    out = load_image(path)
    assert_rgb_uint8(out, 64, 32)  # shape transposed
    # Rotating clockwise moves the stored top-left corner to the displayed top-right.
    tol = 40
    assert np.abs(out[8, 24].astype(int) - RED).max() <= tol
    assert np.abs(out[8, 8].astype(int) - BLUE).max() <= tol
    assert np.abs(out[56, 24].astype(int) - BLUE).max() <= tol
    assert np.abs(out[56, 8].astype(int) - BLUE).max() <= tol
    # Whole picture: matches numpy's clockwise rotation up to JPEG loss.
    expected = np.rot90(stored, k=-1)
    assert np.abs(out.astype(int) - expected).mean() < 8


def test_exif_orientation_is_not_applied_to_pil_input(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.new("RGB", (64, 32), BLUE).save(path, exif=exif)
    with Image.open(path) as image:
        assert_rgb_uint8(load_image(image), 32, 64)


def test_one_by_one_image_file(tmp_path: Path) -> None:
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (1, 2, 3)).save(path)
    out = load_image(path)
    assert_rgb_uint8(out, 1, 1)
    np.testing.assert_array_equal(out, [[[1, 2, 3]]])


def test_uppercase_suffix_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "UPPER.PNG"
    Image.new("RGB", (2, 3), RED).save(path)
    assert (load_image(path) == RED).all()


# --------------------------------------------------------------------------- file errors


def file_error(path: Path) -> tuple[str, ValueError]:
    """Load ``path`` expecting a ValueError; give the reason after the ``"<path>: "`` prefix.

    Matching on the reason only matters: pytest's tmp_path contains the test name
    (``.../test_truncated_jpeg0/...``), so a plain ``match=`` could hit the path itself.
    """
    with pytest.raises(ValueError) as info:
        load_image(path)
    message = str(info.value)
    prefix = f"{path}: "
    assert message.startswith(prefix), message
    return message[len(prefix) :], info.value


def cut_in_half(tmp_path: Path, pixels: np.ndarray, suffix: str) -> Path:
    whole = tmp_path / f"whole{suffix}"
    Image.fromarray(pixels).save(whole)
    assert load_image(whole).shape == pixels.shape  # the uncut file is fine
    data = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    return cut


def test_random_bytes_with_jpg_suffix(tmp_path: Path) -> None:
    path = tmp_path / "junk.jpg"
    path.write_bytes(np.random.default_rng(42).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    reason, error = file_error(path)
    assert reason.startswith("not an image file (cannot identify image file")
    assert isinstance(error.__cause__, OSError)


def test_truncated_jpeg(tmp_path: Path) -> None:
    cut = cut_in_half(tmp_path, noise(128, 128), ".jpg")
    reason, error = file_error(cut)
    assert reason.startswith("truncated or corrupt image data (image file is truncated")
    assert isinstance(error.__cause__, OSError)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # global state untouched


def test_truncated_png(tmp_path: Path) -> None:
    cut = cut_in_half(tmp_path, noise(64, 64), ".png")
    reason, _ = file_error(cut)
    assert reason.startswith("truncated or corrupt image data (")


def test_corrupt_png_body(tmp_path: Path) -> None:
    whole = tmp_path / "whole.png"
    Image.fromarray(noise(32, 32)).save(whole)
    data = bytearray(whole.read_bytes())
    data[60:200] = bytes(140)  # zero out part of the compressed pixel data
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    reason, error = file_error(bad)
    assert reason.startswith("truncated or corrupt image data (")
    assert error.__cause__ is not None


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.touch()
    assert file_error(path)[0] == "file is empty (0 bytes)"


def test_missing_file(tmp_path: Path) -> None:
    reason, error = file_error(tmp_path / "nope.jpg")
    assert reason == "file not found"
    assert isinstance(error.__cause__, FileNotFoundError)


def test_missing_file_given_as_str(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.jpg")
    with pytest.raises(ValueError, match=r"^.*nope\.jpg: file not found$"):
        load_image(path)


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    assert file_error(folder)[0] == "is a directory"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.png"
    Image.new("RGB", (2, 2)).save(path)
    path.chmod(0)
    try:
        try:
            path.read_bytes()
        except PermissionError:
            pass
        else:
            pytest.skip("this user reads files regardless of permissions (root)")
        assert file_error(path)[0] == "permission denied"
    finally:
        path.chmod(0o644)


def test_permission_error_from_open_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secret.png"
    Image.new("RGB", (2, 2)).save(path)

    def deny(*args: object, **kwargs: object) -> Image.Image:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(imageio.Image, "open", deny)
    reason, error = file_error(path)
    assert reason == "permission denied"
    assert isinstance(error.__cause__, PermissionError)


def test_decompression_bomb_error_becomes_value_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (20, 20)).save(path)  # 400 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # error above 2 * 100
    reason, error = file_error(path)
    assert reason.startswith("image too large (")
    assert "400 pixels" in reason
    assert isinstance(error.__cause__, Image.DecompressionBombError)


def test_decompression_bomb_warning_still_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "biggish.png"
    Image.new("RGB", (15, 10), RED).save(path)  # 150 pixels: between limit and 2 * limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.warns(Image.DecompressionBombWarning):
        out = load_image(path)
    assert (out == RED).all()


def test_errors_never_leak_pillow_exceptions(tmp_path: Path) -> None:
    cases = {
        "junk.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 50,
        "text.jpg": b"hello, I am not a picture",
        "head.jpg": b"\xff\xd8\xff\xe0" + b"\x00" * 10,
        "head.gif": b"GIF89a\x10\x00\x10\x00",
    }
    for file_name, payload in cases.items():
        path = tmp_path / file_name
        path.write_bytes(payload)
        reason, _ = file_error(path)
        assert reason.startswith(("not an image file (", "truncated or corrupt image data (")), (
            reason
        )


# --------------------------------------------------------------------------- PIL input


def test_pil_rgb_input() -> None:
    pixels = noise(4, 6)
    np.testing.assert_array_equal(load_image(Image.fromarray(pixels)), pixels)


def test_pil_l_input() -> None:
    gray = noise(3, 5, channels=0)
    out = load_image(Image.fromarray(gray))
    assert_rgb_uint8(out, 3, 5)
    np.testing.assert_array_equal(out, np.stack([gray] * 3, axis=-1))


def test_pil_rgba_input() -> None:
    rgba = noise(3, 5, channels=4)
    np.testing.assert_array_equal(load_image(Image.fromarray(rgba)), rgba[:, :, :3])


@pytest.mark.parametrize("with_transparency", [False, True])
def test_pil_palette_input(with_transparency: bool) -> None:
    np.testing.assert_array_equal(load_image(palette_image(with_transparency)), PALETTE_EXPECTED)


def test_pil_pa_input() -> None:
    image = Image.new("PA", (2, 1))
    image.putpalette([*RED, *BLUE])
    image.putdata([(0, 10), (1, 200)])
    np.testing.assert_array_equal(load_image(image), [[RED, BLUE]])


def test_pil_i16_input() -> None:
    image = Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=np.uint16))
    assert image.mode == "I;16"
    np.testing.assert_array_equal(load_image(image), [[[0] * 3, [100] * 3, [255] * 3]])


def test_pil_i16b_input() -> None:
    values = np.array([[0, 257 * 50, 65535]], dtype=">u2")
    image = Image.frombytes("I;16B", (3, 1), values.tobytes())
    np.testing.assert_array_equal(load_image(image)[:, :, 0], [[0, 50, 255]])


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0, 100, 255], [0, 100, 255]),  # 8-bit range: kept
        ([0, 257 * 3, 65535], [0, 3, 255]),  # max > 255: treated as 16-bit
        ([-5, 10, 200], [0, 10, 200]),  # negatives clipped
    ],
)
def test_pil_mode_i_input(values: list[int], expected: list[int]) -> None:
    image = Image.fromarray(np.array([values], dtype=np.int32))
    assert image.mode == "I"
    np.testing.assert_array_equal(load_image(image)[:, :, 0], [expected])


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.0, 100.4, 255.0], [0, 100, 255]),  # max <= 255: rounded
        ([-3.0, 0.6, 1.0], [0, 1, 1]),  # clipped, not rescaled from [0, 1]
        ([0.0, 255.0, 510.0], [0, 128, 255]),  # max > 255: scaled by max
    ],
)
def test_pil_mode_f_input(values: list[float], expected: list[int]) -> None:
    image = Image.fromarray(np.array([values], dtype=np.float32))
    assert image.mode == "F"
    np.testing.assert_array_equal(load_image(image)[:, :, 0], [expected])


def test_pil_one_bit_la_cmyk_ycbcr_inputs() -> None:
    np.testing.assert_array_equal(load_image(Image.new("1", (2, 1), 1)), [[[255] * 3] * 2])
    np.testing.assert_array_equal(load_image(Image.new("LA", (1, 1), (77, 3))), [[[77] * 3]])
    np.testing.assert_array_equal(
        load_image(Image.new("CMYK", (1, 1), (255, 0, 0, 0))), [[[0, 255, 255]]]
    )
    ycbcr = load_image(Image.new("YCbCr", (1, 1), (128, 128, 128)))
    assert np.abs(ycbcr.astype(int) - 128).max() <= 1


def test_pil_zero_size_input() -> None:
    with pytest.raises(ValueError, match=r"<PIL 0x5 RGB>: .*zero size"):
        load_image(Image.new("RGB", (0, 5)))


def test_pil_lazy_truncated_image(tmp_path: Path) -> None:
    cut = cut_in_half(tmp_path, noise(96, 96), ".jpg")
    with Image.open(cut) as lazy, pytest.raises(ValueError) as info:
        load_image(lazy)
    assert str(info.value).startswith("<PIL 96x96 RGB>: truncated or corrupt image data (")


def test_pil_input_is_not_modified() -> None:
    image = Image.fromarray(noise(4, 4, channels=4))
    before = image.tobytes()
    load_image(image)
    assert image.mode == "RGBA"
    assert image.tobytes() == before


# --------------------------------------------------------------------------- numpy input


def test_uint8_rgb_contiguous_is_returned_without_copy() -> None:
    pixels = noise(5, 6)
    out = load_image(pixels)
    assert out is pixels
    assert np.shares_memory(out, pixels)


def test_gray_array() -> None:
    gray = noise(4, 7, channels=0)
    out = load_image(gray)
    assert_rgb_uint8(out, 4, 7)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)
    assert not np.shares_memory(out, gray)


def test_single_channel_array() -> None:
    gray = noise(4, 7, channels=1)
    out = load_image(gray)
    assert_rgb_uint8(out, 4, 7)
    np.testing.assert_array_equal(out, np.repeat(gray, 3, axis=2))


def test_rgba_array_drops_alpha_and_keeps_input() -> None:
    rgba = noise(3, 4, channels=4)
    before = rgba.copy()
    out = load_image(rgba)
    assert_rgb_uint8(out, 3, 4)
    np.testing.assert_array_equal(out, rgba[:, :, :3])
    np.testing.assert_array_equal(rgba, before)
    assert not np.shares_memory(out, rgba)


def test_uint16_array_is_scaled() -> None:
    values = np.array([[0, 257 * 100, 65535, 128, 129]], dtype=np.uint16)
    out = load_image(values)
    np.testing.assert_array_equal(out[:, :, 0], [[0, 100, 255, 0, 1]])
    rgb16 = np.full((2, 2, 3), 257 * 9, dtype=np.uint16)
    assert (load_image(rgb16) == 9).all()


def test_bool_array() -> None:
    mask = np.array([[True, False], [False, True]])
    out = load_image(mask)
    assert_rgb_uint8(out, 2, 2)
    np.testing.assert_array_equal(out[:, :, 1], [[255, 0], [0, 255]])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_array_in_unit_range_is_scaled(dtype: type) -> None:
    values = np.array([[0.0, 0.5, 1.0], [0.25, 0.1, 0.9]], dtype=dtype)
    expected = np.rint(values.astype(np.float64) * 255).astype(np.uint8)
    out = load_image(values)
    np.testing.assert_array_equal(out[:, :, 2], expected)
    assert out[0, 2, 0] == 255


def test_float_array_in_byte_range_is_rounded() -> None:
    values = np.array([[[0.0, 12.4, 254.6]], [[3.0, 100.0, 255.0]]])
    np.testing.assert_array_equal(load_image(values), [[[0, 12, 255]], [[3, 100, 255]]])


def test_integer_array_in_byte_range() -> None:
    values = np.array([[0, 1, 255]], dtype=np.int64)
    np.testing.assert_array_equal(load_image(values)[:, :, 0], [[0, 1, 255]])


def test_non_contiguous_view() -> None:
    base = noise(6, 8)
    before = base.copy()
    view = base[:, ::-1]
    assert not view.flags.c_contiguous
    out = load_image(view)
    assert_rgb_uint8(out, 6, 8)
    np.testing.assert_array_equal(out, base[:, ::-1])
    np.testing.assert_array_equal(base, before)
    for other in (base[::2, 1::3], np.asfortranarray(base), base.transpose(1, 0, 2)):
        result = load_image(other)
        assert result.flags.c_contiguous
        np.testing.assert_array_equal(result, other)


def test_one_by_one_array() -> None:
    out = load_image(np.array([[7]], dtype=np.uint8))
    assert_rgb_uint8(out, 1, 1)
    np.testing.assert_array_equal(out, [[[7, 7, 7]]])


def test_read_only_array_input() -> None:
    gray = noise(3, 3, channels=0)
    gray.flags.writeable = False
    np.testing.assert_array_equal(load_image(gray)[:, :, 0], gray)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (
            np.zeros((10, 10, 5), np.uint8),
            r"^<array 10x10x5>: expected HxW.*got shape \(10, 10, 5\)",
        ),
        (np.zeros((10, 10, 2), np.uint8), r"got shape \(10, 10, 2\)"),
        (np.zeros(10, np.uint8), r"^<array 10>: expected"),
        (np.zeros((2, 3, 4, 3), np.uint8), r"got shape \(2, 3, 4, 3\)"),
        (np.array(3, np.uint8), r"^<array 0-d>: expected"),
        (np.zeros((0, 4, 3), np.uint8), r"^<array 0x4x3>: .*zero size"),
        (np.zeros((4, 0), np.uint8), "zero size"),
        (np.array([[0.5, np.nan]]), "NaN"),
        (np.array([[0.5, np.inf]]), "infinite"),
        (np.array([[-0.1, 0.5]]), "negative"),
        (np.array([[3.0, 256.0]]), "255"),
        (np.array([[0, 300]], dtype=np.int32), r"\[0, 255\]"),
        (np.array([[-1, 3]], dtype=np.int16), r"\[0, 255\]"),
        (np.array([[object(), object()]], dtype=object), "unsupported dtype object"),
        (np.array([[1 + 2j]]), "unsupported dtype complex"),
        (np.array([["a", "b"]]), "unsupported dtype"),
    ],
)
def test_bad_arrays_raise_value_error(array: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_image(array)


# --------------------------------------------------------------------------- types


def test_torch_tensor_is_rejected() -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"torch\.Tensor.*numpy\.ndarray"):
        load_image(torch.zeros(3, 4, 4, dtype=torch.uint8))


@pytest.mark.parametrize("bad", [42, 3.5, None, b"face.jpg", [[1, 2], [3, 4]], {"a": 1}])
def test_other_types_are_rejected(bad: object) -> None:
    with pytest.raises(TypeError, match="expected a path"):
        load_image(bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- names


def test_source_name() -> None:
    assert source_name("some/dir/face.jpg") == "some/dir/face.jpg"
    assert source_name(Path("a") / "b.png") == os.path.join("a", "b.png")
    assert source_name(np.zeros((10, 20, 3), np.uint8)) == "<array 10x20x3>"
    assert source_name(np.zeros((10, 20), np.uint8)) == "<array 10x20>"
    assert source_name(Image.new("RGBA", (20, 10))) == "<PIL 20x10 RGBA>"
    assert source_name(7) == "<int>"


def test_pil_error_message_uses_pil_name() -> None:
    with pytest.raises(ValueError, match=r"^<PIL 0x0 L>"):
        load_image(Image.new("L", (0, 0)))


def test_image_suffixes() -> None:
    assert isinstance(IMAGE_SUFFIXES, frozenset)
    assert {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"} <= IMAGE_SUFFIXES
    assert {".ppm", ".pgm", ".pnm"} <= IMAGE_SUFFIXES
    assert all(s == s.lower() and s.startswith(".") for s in IMAGE_SUFFIXES)


# --------------------------------------------------------------------------- properties

small = st.integers(min_value=1, max_value=12)


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, st.tuples(small, small, st.just(3))))
def test_property_uint8_rgb_round_trips(pixels: np.ndarray) -> None:
    before = pixels.copy()
    out = load_image(pixels)
    assert_rgb_uint8(out, *pixels.shape[:2])
    np.testing.assert_array_equal(out, before)


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, st.tuples(small, small)))
def test_property_uint8_gray_becomes_three_equal_channels(gray: np.ndarray) -> None:
    out = load_image(gray)
    assert_rgb_uint8(out, *gray.shape)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)
