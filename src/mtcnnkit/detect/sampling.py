"""Area resampling of image regions, batched over regions and images of mixed sizes.

Every resize in the cascade (pyramid levels, RNet/ONet crops) is an area average: output
pixel ``(i, j)`` of an ``n x m`` resize of a ``h x w`` region is the mean of the input rows
``[floor(i h / n), ceil((i + 1) h / n))`` and columns likewise (the bins of
``torch.nn.functional.adaptive_avg_pool2d``, which the reference implementation uses).
Means come from integer integral images, so each output pixel is four gathers, exact sums,
and one division, whatever the region size; all regions of all images go in one gather.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

MEAN, STD_INV = 127.5, 1.0 / 128.0  # MTCNN input normalisation: (x - 127.5) / 128


@dataclass(frozen=True)
class IntegralImages:
    """Integral images of several HxWxC uint8 images packed into one flat buffer."""

    flat: Tensor  # all integral images, each (H+1, W+1, C), flattened and concatenated
    bases: Tensor  # (B,) offset of each image's integral image in ``flat``
    heights: Tensor  # (B,)
    widths: Tensor  # (B,)
    channels: int

    @classmethod
    def build(cls, images: list[Tensor]) -> IntegralImages:
        """``images``: HxWxC uint8 tensors on one device (sizes may differ)."""
        if not images:
            raise ValueError("no images")
        largest = max(im.shape[0] * im.shape[1] for im in images)
        dtype = torch.int32 if largest * 255 < 2**31 else torch.int64
        parts = []
        for im in images:
            h, w, c = im.shape
            ii = torch.zeros(h + 1, w + 1, c, dtype=dtype, device=im.device)
            ii[1:, 1:] = im.to(dtype).cumsum(0, dtype=dtype).cumsum(1, dtype=dtype)
            parts.append(ii.flatten())
        sizes = torch.tensor([p.numel() for p in parts])
        bases = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
        device = images[0].device
        return cls(
            flat=torch.cat(parts),
            bases=bases.to(device),
            heights=torch.tensor([im.shape[0] for im in images], device=device),
            widths=torch.tensor([im.shape[1] for im in images], device=device),
            channels=images[0].shape[2],
        )

    @property
    def device(self) -> torch.device:
        return self.flat.device


def bin_edges(start: Tensor, length: Tensor, bins: int) -> tuple[Tensor, Tensor]:
    """Adaptive-average-pool bin edges: ``(N, bins)`` lower (inclusive) and upper
    (exclusive) input indices for ``N`` spans ``[start, start + length)``."""
    i = torch.arange(bins, device=start.device)
    length = length[:, None]
    lo = torch.div(i * length, bins, rounding_mode="floor")
    hi = torch.div((i + 1) * length + bins - 1, bins, rounding_mode="floor")
    return start[:, None] + lo, start[:, None] + hi


def sample_regions(
    integral: IntegralImages,
    image_index: Tensor,
    regions: Tensor,
    out_h: int,
    out_w: int,
    rows: slice | None = None,
) -> Tensor:
    """Area-resize integer regions ``[x0, y0, x1, y1)`` of the images to ``out_h x out_w``.

    Returns normalised float32 of shape ``(N, C, out_h, out_w)`` in channels-last memory
    layout (what the nets run fastest on). ``rows`` optionally restricts the output to a
    band of output rows (used to tile huge pyramid levels).
    """
    device = integral.device
    x_lo, x_hi = bin_edges(regions[:, 0], regions[:, 2] - regions[:, 0], out_w)
    y_lo, y_hi = bin_edges(regions[:, 1], regions[:, 3] - regions[:, 1], out_h)
    if rows is not None:
        y_lo, y_hi = y_lo[:, rows], y_hi[:, rows]
    c = integral.channels
    row_stride = (integral.widths[image_index] + 1) * c  # (N,)
    base = integral.bases[image_index]
    ya = base[:, None] + y_lo * row_stride[:, None]  # (N, n)
    yb = base[:, None] + y_hi * row_stride[:, None]
    xa, xb = x_lo * c, x_hi * c  # (N, m)
    ch = torch.arange(c, device=device)

    def corner(y: Tensor, x: Tensor) -> Tensor:
        index = y[:, :, None, None] + x[:, None, :, None] + ch  # (N, n, m, C)
        return integral.flat[index]

    sums = corner(yb, xb) - corner(ya, xb) - corner(yb, xa) + corner(ya, xa)
    counts = ((y_hi - y_lo)[:, :, None] * (x_hi - x_lo)[:, None, :])[..., None]
    mean = sums.to(torch.float32) / counts.to(torch.float32)
    normalised = (mean - MEAN) * STD_INV
    return normalised.permute(0, 3, 1, 2)  # NCHW view of NHWC memory
