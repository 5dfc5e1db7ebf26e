"""The CPU inference rewrite must not change any output."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mtcnnkit import nets
from mtcnnkit.detect.cpu_runtime import for_cpu, max_pool_separable


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 9), h=st.integers(3, 30), w=st.integers(3, 30),
       kernel=st.sampled_from([2, 3]), seed=st.integers(0, 2**31 - 1))
def test_separable_pool_equals_torch_ceil_mode_pool(n, c, h, w, kernel, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g).contiguous(memory_format=torch.channels_last)
    expected = F.max_pool2d(x, kernel, 2, ceil_mode=True)
    got = max_pool_separable(x, kernel, 2)
    assert got.shape == expected.shape
    assert torch.equal(got, expected)


@pytest.mark.parametrize(("arch", "shape"), [
    ("pnet", (1, 3, 289, 385)),  # large map: NCHW first layer, separable pool
    ("pnet", (2, 3, 17, 23)),  # small map: native pool
    ("rnet", (5, 3, 24, 24)),
    ("onet", (4, 3, 48, 48)),
    ("rnet_wide", (5, 3, 24, 24)),
    ("onet_wide", (4, 3, 48, 48)),
])
def test_for_cpu_gives_the_same_outputs(arch: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = nets.create(arch).eval()
    with torch.no_grad():  # random PReLU slopes, some negative, like the trained nets
        for m in net.modules():
            if isinstance(m, torch.nn.PReLU):
                m.weight.uniform_(-1.0, 1.0)
    fast = for_cpu(net)
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for a, b in zip(net(x), fast(x), strict=True):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert next(net.parameters()).data_ptr() != next(fast.parameters()).data_ptr()  # a copy
