"""Tests for mtcnnkit.detect.pyramid (which scales PNet runs at, level sizes)."""

from __future__ import annotations

import pytest

from mtcnnkit.detect.pyramid import level_size, pyramid_scales


def test_scales_for_640x480_by_hand() -> None:
    # min face 20 maps onto PNet's 12 px window: first scale 12 / 20 = 0.6.
    # Each next scale is x 0.709; a level is used while min side (480) x scale >= 12:
    #   k  scale        480 x scale
    #   0  0.6          288.0
    #   1  0.4254       204.19
    #   2  0.30160860   144.77
    #   3  0.21384050   102.64
    #   4  0.15161291    72.77
    #   5  0.10749356    51.60
    #   6  0.07621293    36.58
    #   7  0.05403497    25.94
    #   8  0.03831079    18.39
    #   9  0.02716235    13.04
    #  10  0.01925811     9.24  < 12: stop
    expected = [0.6, 0.4254, 0.30160860, 0.21384050, 0.15161291, 0.10749356,
                0.07621293, 0.05403497, 0.03831079, 0.02716235]
    scales = pyramid_scales(480, 640, 20, 0.709)
    assert scales == pytest.approx(expected, abs=1e-8)
    # the arguments are (height, width): only the shorter side matters
    assert pyramid_scales(640, 480, 20, 0.709) == pytest.approx(expected, abs=1e-8)


def test_defaults_are_min_face_20_factor_0709() -> None:
    assert pyramid_scales(480, 640) == pyramid_scales(480, 640, 20.0, 0.709)


def test_smallest_level_edge() -> None:
    # 24 px image, min face 24: scale 12/24 = 0.5 gives exactly 12 px: one level
    assert pyramid_scales(24, 30, 24, 0.709) == [0.5]
    # min face 25: 24 x 12/25 = 11.52 < 12: none
    assert pyramid_scales(24, 30, 25, 0.709) == []


def test_min_face_larger_than_image_gives_no_scales() -> None:
    assert pyramid_scales(100, 100, 200, 0.709) == []
    assert pyramid_scales(1, 1) == []


def test_smaller_factor_gives_fewer_levels() -> None:
    # 0.5 factor on a 96 px side, min face 12 (scale 1): 96, 48, 24, 12 -> 4 levels
    assert pyramid_scales(96, 200, 12, 0.5) == [1.0, 0.5, 0.25, 0.125]


@pytest.mark.parametrize("min_face", [0, -5])
def test_bad_min_face_raises(min_face: float) -> None:
    with pytest.raises(ValueError, match="min_face_size"):
        pyramid_scales(480, 640, min_face, 0.709)


@pytest.mark.parametrize("factor", [0.0, 1.0, 1.5, -0.2])
def test_bad_scale_factor_raises(factor: float) -> None:
    with pytest.raises(ValueError, match="scale_factor"):
        pyramid_scales(480, 640, 20, factor)


def test_level_size_by_hand() -> None:
    # (int(h * s + 1), int(w * s + 1)), as the reference implementation sizes levels
    assert level_size(480, 640, 0.6) == (289, 385)      # 288 + 1, 384 + 1
    assert level_size(480, 640, 0.4254) == (205, 273)   # 204.19 + 1, 272.26 + 1
    assert level_size(480, 640, 0.5) == (241, 321)
    assert level_size(10, 10, 0.25) == (3, 3)            # 2.5 + 1 = 3.5 -> 3
    assert level_size(7, 33, 1.0) == (8, 34)
