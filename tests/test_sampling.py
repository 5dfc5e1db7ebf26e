"""Tests for mtcnnkit.detect.sampling: area resampling of regions and whole images.

The reference is torch's own ``adaptive_avg_pool2d`` / ``interpolate(mode="area")`` (what
facenet-pytorch resizes with), in float64, followed by MTCNN's (x - 127.5) / 128.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mtcnnkit.detect.pyramid import level_size, pyramid_scales
from mtcnnkit.detect.sampling import IntegralImages, sample_levels, sample_regions

TOL = 1e-5


def random_image(rng: np.random.Generator, h: int, w: int) -> torch.Tensor:
    return torch.from_numpy(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def reference_crop(image: torch.Tensor, region, out_h: int, out_w: int) -> torch.Tensor:
    """(C, out_h, out_w) float64: adaptive average pool of image[y0:y1, x0:x1], normalised."""
    x0, y0, x1, y1 = region
    crop = image[y0:y1, x0:x1].permute(2, 0, 1)[None].double()
    return ((F.adaptive_avg_pool2d(crop, (out_h, out_w)) - 127.5) / 128.0)[0]


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual.double(), expected, atol=TOL, rtol=0)


@st.composite
def region_problems(draw):
    """1-3 random images of different sizes and 1-12 random regions, each in one image."""
    seed = draw(st.integers(0, 2**32 - 1))
    sizes = draw(st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40)),
                          min_size=1, max_size=3))
    regions, index = [], []
    for _ in range(draw(st.integers(1, 12))):
        i = draw(st.integers(0, len(sizes) - 1))
        h, w = sizes[i]
        x0 = draw(st.integers(0, w - 1))
        y0 = draw(st.integers(0, h - 1))
        x1 = draw(st.integers(x0 + 1, w))
        y1 = draw(st.integers(y0 + 1, h))
        regions.append([x0, y0, x1, y1])
        index.append(i)
    out_h = draw(st.integers(1, 30))
    out_w = draw(st.integers(1, 30))
    return seed, sizes, index, regions, out_h, out_w


@settings(max_examples=80, deadline=None)
@given(problem=region_problems())
def test_sample_regions_equals_adaptive_avg_pool(problem) -> None:
    seed, sizes, index, regions, out_h, out_w = problem
    rng = np.random.default_rng(seed)
    images = [random_image(rng, h, w) for h, w in sizes]
    out = sample_regions(IntegralImages.build(images), torch.tensor(index),
                         torch.tensor(regions), out_h, out_w)
    assert out.shape == (len(regions), 3, out_h, out_w)
    assert out.dtype == torch.float32
    expected = torch.stack([reference_crop(images[i], r, out_h, out_w)
                            for i, r in zip(index, regions, strict=True)])
    assert_close(out, expected)


def test_sample_regions_shrinking_and_enlarging_in_one_call() -> None:
    rng = np.random.default_rng(0)
    images = [random_image(rng, 120, 90), random_image(rng, 31, 47), random_image(rng, 64, 64)]
    regions = [
        [0, 0, 90, 120],    # whole first image, shrunk to 24x24
        [3, 5, 10, 9],      # 7x4 region, enlarged
        [10, 20, 47, 31],   # to the image's edge
        [0, 0, 64, 64],
        [63, 63, 64, 64],   # one pixel
        [20, 7, 83, 101],   # not square
    ]
    index = [0, 1, 1, 2, 2, 0]
    integral = IntegralImages.build(images)
    for size in (24, 48):
        out = sample_regions(integral, torch.tensor(index), torch.tensor(regions), size, size)
        assert out.shape == (6, 3, size, size)
        expected = torch.stack([reference_crop(images[i], r, size, size)
                                for i, r in zip(index, regions, strict=True)])
        assert_close(out, expected)
    # a one-pixel region is that pixel everywhere
    pixel = (images[2][63, 63].double() - 127.5) / 128.0
    out = sample_regions(integral, torch.tensor([2]), torch.tensor([[63, 63, 64, 64]]), 5, 5)
    assert_close(out[0], pixel[:, None, None].expand(3, 5, 5))


def test_sample_regions_constant_image_hand_value() -> None:
    image = torch.full((10, 10, 3), 200, dtype=torch.uint8)
    out = sample_regions(IntegralImages.build([image]), torch.tensor([0]),
                         torch.tensor([[2, 2, 9, 7]]), 12, 12)
    # (200 - 127.5) / 128 = 0.56640625
    assert torch.all(out == 0.56640625)


def test_sample_regions_bright_large_image_sums_do_not_overflow() -> None:
    # 3000 x 3000 x 255 = 2.3e9 > 2^31: sums must not wrap around
    image = torch.full((3000, 3000, 3), 255, dtype=torch.uint8)
    out = sample_regions(IntegralImages.build([image]), torch.tensor([0]),
                         torch.tensor([[0, 0, 3000, 3000]]), 2, 2)
    torch.testing.assert_close(out, torch.full_like(out, 127.5 / 128.0), atol=TOL, rtol=0)


def test_sample_levels_equal_area_interpolation_for_pyramid_levels() -> None:
    rng = np.random.default_rng(1)
    same = [random_image(rng, 97, 131) for _ in range(2)]
    other = random_image(rng, 60, 45)
    integral = IntegralImages.build([same[0], other, same[1]])
    for scale in pyramid_scales(97, 131, 20, 0.709):
        lh, lw = level_size(97, 131, scale)
        out = sample_levels(integral, [0, 2], lh, lw)
        assert out.shape == (2, 3, lh, lw)
        assert out.dtype == torch.float32
        batch = torch.stack(same).permute(0, 3, 1, 2).double()
        expected = (F.interpolate(batch, size=(lh, lw), mode="area") - 127.5) / 128.0
        assert_close(out, expected)
    lh, lw = level_size(60, 45, 0.6)
    expected = (F.interpolate(other.permute(2, 0, 1)[None].double(), size=(lh, lw),
                              mode="area") - 127.5) / 128.0
    assert_close(sample_levels(integral, [1], lh, lw), expected)


@pytest.mark.parametrize("rows", [slice(0, 5), slice(7, 20), slice(30, 37)])
def test_sample_levels_row_band_is_a_slice_of_the_full_level(rows: slice) -> None:
    rng = np.random.default_rng(2)
    image = random_image(rng, 80, 50)
    integral = IntegralImages.build([image])
    full = sample_levels(integral, [0], 37, 23)
    band = sample_levels(integral, [0], 37, 23, rows)
    assert band.shape == (1, 3, rows.stop - rows.start, 23)
    assert_close(band, full[:, :, rows].double())


def test_sample_levels_and_regions_agree_on_whole_images() -> None:
    rng = np.random.default_rng(3)
    images = [random_image(rng, 33, 70), random_image(rng, 33, 70)]
    integral = IntegralImages.build(images)
    whole = torch.tensor([[0, 0, 70, 33]] * 2)
    assert_close(sample_levels(integral, [0, 1], 20, 42),
                 sample_regions(integral, torch.tensor([0, 1]), whole, 20, 42).double())


def test_build_requires_images() -> None:
    with pytest.raises(ValueError):
        IntegralImages.build([])
