"""Faster CPU execution of the nets' layer stacks, with identical results.

Two measured facts about PyTorch's CPU kernels drive this (`bench/nets.py`, 1 thread):

* oneDNN's channels-last convolutions and PReLU vectorise over channels: for PNet's
  10-channel first layer on big pyramid levels NCHW is faster, for everything else
  channels-last is (whole PNet 1.06-1.08x faster than all-channels-last, 1.4-1.5x than
  all-NCHW).
* ``max_pool2d`` (ceil mode) computes and writes an index tensor even in inference; on maps
  of at least 22x22 that fit in cache, a separable max over strided views is 1.1-3.6x faster
  and returns exactly the same values (max is exact, whatever the order); on smaller maps
  the native kernel wins.

`for_cpu` rewrites a net's ``body`` (an ``nn.Sequential``) accordingly; the net's weights
and outputs are unchanged, so training and export keep using the plain modules.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

THIN_CHANNELS = 16  # layers with fewer output channels run in NCHW
SEPARABLE_POOL_MAX_ELEMENTS = 2_000_000  # beyond this, the pass-per-offset pool loses
SEPARABLE_POOL_MIN_PIXELS = 22 * 22  # below this map size the native pool is faster


def for_cpu(net: nn.Module) -> nn.Module:
    """A copy of ``net`` whose ``body`` runs with the faster CPU layouts and pooling."""
    fast = copy.deepcopy(net)
    fast.body = _CpuSequential(fast.body)
    return fast


def _out_len(size: int, kernel: int, stride: int) -> int:
    return -(-(size - kernel) // stride) + 1  # ceil mode, no padding


def max_pool_separable(x: Tensor, kernel: int, stride: int) -> Tensor:
    """``F.max_pool2d(x, kernel, stride, ceil_mode=True)`` for channels-last ``x``, as
    maxima of strided row views, then of strided column views (windows clipped at the
    border, as in ceil mode)."""
    xh = x.permute(0, 2, 3, 1)  # NHWC, contiguous
    _, h, w, _ = xh.shape
    oh, ow = _out_len(h, kernel, stride), _out_len(w, kernel, stride)
    rows = xh[:, 0:stride * (oh - 1) + 1:stride].clone()
    for d in range(1, kernel):
        n = min(oh, (h - d + stride - 1) // stride)
        torch.maximum(rows[:, :n], xh[:, d:d + stride * (n - 1) + 1:stride], out=rows[:, :n])
    out = rows[:, :, 0:stride * (ow - 1) + 1:stride].clone()
    for d in range(1, kernel):
        n = min(ow, (w - d + stride - 1) // stride)
        torch.maximum(out[:, :, :n], rows[:, :, d:d + stride * (n - 1) + 1:stride],
                      out=out[:, :, :n])
    return out.permute(0, 3, 1, 2)


class _CpuSequential(nn.Module):
    def __init__(self, body: nn.Sequential) -> None:
        super().__init__()
        self.layers = body
        self.thin = [_channels(m) is not None and _channels(m) < THIN_CHANNELS for m in body]
        for layer, thin in zip(body, self.thin, strict=True):
            if isinstance(layer, nn.Conv2d) and not thin:
                layer.to(memory_format=torch.channels_last)

    def __iter__(self):
        return iter(self.layers)

    def forward(self, x: Tensor) -> Tensor:
        for layer, thin in zip(self.layers, self.thin, strict=True):
            if x.dim() == 4:
                x = x.contiguous(memory_format=torch.contiguous_format if thin
                                 else torch.channels_last)
            if isinstance(layer, nn.MaxPool2d) and layer.ceil_mode and _plain(layer):
                if (x.numel() <= SEPARABLE_POOL_MAX_ELEMENTS
                        and x.shape[2] * x.shape[3] >= SEPARABLE_POOL_MIN_PIXELS):
                    x = max_pool_separable(x, _int(layer.kernel_size), _int(layer.stride))
                else:
                    x = F.max_pool2d(x, layer.kernel_size, layer.stride, ceil_mode=True)
            else:
                x = layer(x)
        return x


def _channels(layer: nn.Module) -> int | None:
    if isinstance(layer, nn.Conv2d):
        return layer.out_channels
    if isinstance(layer, nn.PReLU):
        return layer.num_parameters
    return None


def _int(value: int | tuple[int, ...]) -> int:
    return value if isinstance(value, int) else value[0]


def _plain(pool: nn.MaxPool2d) -> bool:
    """Square kernel and stride, no padding or dilation: the cases the separable pool
    handles."""
    k, s = pool.kernel_size, pool.stride
    square = (isinstance(k, int) or k[0] == k[1]) and (isinstance(s, int) or s[0] == s[1])
    return square and pool.padding in (0, (0, 0)) and pool.dilation in (1, (1, 1))
