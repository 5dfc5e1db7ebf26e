"""Faster CPU execution of the nets' layer stacks, with identical results.

Two measured facts about PyTorch's CPU kernels drive this (1 thread, see docs/BENCHMARKS.md):

* oneDNN's channels-last convolutions and PReLU vectorise over channels: with fewer than
  16 channels (PNet's first layer, on the largest pyramid level) NCHW is several times
  faster; with more, channels-last is.
* Layer activations must stay in cache: ONet on 64 crops per call is ~1.6x slower than on
  16 (its first activation alone is 17 MB at 64). `preferred_batch` sizes the RNet/ONet
  calls so that the largest activation stays within ``ACTIVATION_BUDGET`` floats.
* 1x1 convolutions (PNet's heads) take torch's slow non-oneDNN path; on channels-last maps
  they are one matrix product over pixels.
* ``max_pool2d`` (ceil mode) computes and writes an index tensor even in inference; on maps
  that fit in cache, a separable max over strided views is 2-4x faster and returns exactly
  the same values (max is exact, whatever the order).

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
ACTIVATION_BUDGET = 900_000  # floats (~3.6 MB): largest activation of one RNet/ONet call


def for_cpu(net: nn.Module) -> nn.Module:
    """A copy of ``net`` whose ``body`` runs with the faster CPU layouts and pooling."""
    fast = copy.deepcopy(net)
    fast.body = _CpuSequential(fast.body)
    for name, child in list(fast.named_children()):
        if isinstance(child, nn.Conv2d) and child.kernel_size == (1, 1) and _plain_conv(child):
            setattr(fast, name, _PointwiseConv(child))
    return fast


def preferred_batch(net: nn.Module, input_size: int) -> int:
    """Crops per call that keep ``net``'s largest activation within ``ACTIVATION_BUDGET``."""
    largest = 1
    with torch.inference_mode():
        x = torch.zeros(1, 3, input_size, input_size)
        for layer in net.body:
            x = layer(x)
            largest = max(largest, x.numel())
    return max(1, ACTIVATION_BUDGET // largest)


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


class _PointwiseConv(nn.Module):
    """A 1x1 convolution as a matrix product over the pixels of a channels-last map."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach()[:, :, 0, 0].t().contiguous(),
                                   requires_grad=False)
        self.bias = nn.Parameter(conv.bias.detach().clone() if conv.bias is not None
                                 else torch.zeros(conv.out_channels), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        pixels = x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
        return torch.addmm(self.bias, pixels.reshape(-1, pixels.shape[-1]), self.weight
                           ).view(*pixels.shape[:3], -1).permute(0, 3, 1, 2)


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
                if x.numel() <= SEPARABLE_POOL_MAX_ELEMENTS:
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


def _plain_conv(conv: nn.Conv2d) -> bool:
    return (conv.stride in (1, (1, 1)) and conv.padding in (0, (0, 0))
            and conv.dilation in (1, (1, 1)) and conv.groups == 1)


def _plain(pool: nn.MaxPool2d) -> bool:
    """Square kernel and stride, no padding or dilation: the cases the separable pool
    handles."""
    k, s = pool.kernel_size, pool.stride
    square = (isinstance(k, int) or k[0] == k[1]) and (isinstance(s, int) or s[0] == s[1])
    return square and pool.padding in (0, (0, 0)) and pool.dilation in (1, (1, 1))
