"""Area resampling of image regions, batched over regions and images of mixed sizes.

Every resize in the cascade (pyramid levels, RNet/ONet crops) is an area average: output
pixel ``(i, j)`` of an ``n x m`` resize of a ``h x w`` region is the mean of the input rows
``[floor(i h / n), ceil((i + 1) h / n))`` and columns likewise (the bins of
``torch.nn.functional.adaptive_avg_pool2d``, which the reference implementation uses).
Means come from integer integral images: exact sums, one division, whatever the region
size. Crops of all images are cut by one gather; whole-image pyramid levels use two
separable row/column selections.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

MEAN, STD_INV = 127.5, 1.0 / 128.0  # MTCNN input normalisation: (x - 127.5) / 128


@dataclass(frozen=True)
class IntegralImages:
    """Integral images of several HxWxC uint8 images, packed row after row into one
    ``(pixels, C)`` buffer (image ``i`` is an ``(H+1, W+1, C)`` block from ``bases[i]``)."""

    flat: Tensor
    bases: Tensor  # (B,) first row of each image's block in ``flat``
    heights: Tensor  # (B,)
    widths: Tensor  # (B,)

    @classmethod
    def build(cls, images: list[Tensor]) -> IntegralImages:
        """``images``: HxWxC uint8 tensors on one device (sizes may differ)."""
        if not images:
            raise ValueError("no images")
        largest = max(im.shape[0] * im.shape[1] for im in images)
        dtype = torch.int32 if largest * 255 < 2**31 else torch.int64
        c = images[0].shape[2]
        sizes = [(im.shape[0] + 1) * (im.shape[1] + 1) for im in images]
        flat = torch.zeros(sum(sizes), c, dtype=dtype, device=images[0].device)
        start = 0
        for im, size in zip(images, sizes, strict=True):
            h, w, _ = im.shape
            block = flat[start:start + size].view(h + 1, w + 1, c)
            torch.cumsum(im.to(dtype), 0, out=block[1:, 1:])
            block[1:, 1:].cumsum_(1)
            start += size
        device = images[0].device
        bases = torch.tensor([0] + sizes[:-1], device=device).cumsum(0)
        return cls(
            flat=flat,
            bases=bases,
            heights=torch.tensor([im.shape[0] for im in images], device=device),
            widths=torch.tensor([im.shape[1] for im in images], device=device),
        )

    @property
    def device(self) -> torch.device:
        return self.flat.device

    @property
    def channels(self) -> int:
        return self.flat.shape[1]

    def block(self, index: int) -> Tensor:
        """Image ``index``'s integral image, ``(H+1, W+1, C)``."""
        h, w = int(self.heights[index]), int(self.widths[index])
        start = int(self.bases[index])
        return self.flat[start:start + (h + 1) * (w + 1)].view(h + 1, w + 1, -1)


def bin_edges(start: Tensor, length: Tensor, bins: int) -> tuple[Tensor, Tensor]:
    """Adaptive-average-pool bin edges: ``(N, bins)`` lower (inclusive) and upper
    (exclusive) input indices for ``N`` spans ``[start, start + length)``."""
    i = torch.arange(bins, device=start.device)
    length = length[:, None]
    lo = torch.div(i * length, bins, rounding_mode="floor")
    hi = torch.div((i + 1) * length + bins - 1, bins, rounding_mode="floor")
    return start[:, None] + lo, start[:, None] + hi


def _normalise(sums: Tensor, counts: Tensor) -> Tensor:
    """Means from exact integer sums, MTCNN-normalised, as NCHW views of NHWC memory."""
    values = sums.to(torch.float32).div_(counts.to(torch.float32))
    return values.sub_(MEAN).mul_(STD_INV).permute(0, 3, 1, 2)


def sample_regions(integral: IntegralImages, image_index: Tensor, regions: Tensor,
                   out_h: int, out_w: int) -> Tensor:
    """Area-resize integer regions ``[x0, y0, x1, y1)`` of the images to ``out_h x out_w``.

    Returns normalised float32 ``(N, C, out_h, out_w)`` in channels-last memory layout.
    """
    x_lo, x_hi = bin_edges(regions[:, 0], regions[:, 2] - regions[:, 0], out_w)
    y_lo, y_hi = bin_edges(regions[:, 1], regions[:, 3] - regions[:, 1], out_h)
    stride = (integral.widths[image_index] + 1)[:, None]
    base = integral.bases[image_index][:, None]
    row_a, row_b = base + y_lo * stride, base + y_hi * stride  # (N, n)

    def corner(row: Tensor, col: Tensor) -> Tensor:
        return integral.flat.index_select(0, (row[:, :, None] + col[:, None, :]).flatten())

    sums = corner(row_b, x_hi) - corner(row_a, x_hi) - corner(row_b, x_lo) + corner(row_a, x_lo)
    counts = (y_hi - y_lo)[:, :, None] * (x_hi - x_lo)[:, None, :]
    return _normalise(sums.view(len(regions), out_h, out_w, -1), counts[..., None])


def sample_levels(integral: IntegralImages, image_index: list[int], out_h: int, out_w: int,
                  rows: slice | None = None) -> Tensor:
    """Whole-image area resize of same-size images to ``out_h x out_w`` (a pyramid level),
    optionally only the output rows in ``rows``. Same layout as `sample_regions`."""
    device = integral.device
    first = image_index[0]
    h, w = int(integral.heights[first]), int(integral.widths[first])
    y_lo, y_hi = bin_edges(torch.zeros(1, dtype=torch.long, device=device),
                           torch.tensor([h], device=device), out_h)
    x_lo, x_hi = bin_edges(torch.zeros(1, dtype=torch.long, device=device),
                           torch.tensor([w], device=device), out_w)
    y_lo, y_hi, x_lo, x_hi = y_lo[0], y_hi[0], x_lo[0], x_hi[0]
    if rows is not None:
        y_lo, y_hi = y_lo[rows], y_hi[rows]
    sums = []
    for i in image_index:
        block = integral.block(i)
        band = block.index_select(0, y_hi) - block.index_select(0, y_lo)  # (n, W+1, C)
        sums.append(band.index_select(1, x_hi) - band.index_select(1, x_lo))
    counts = (y_hi - y_lo)[:, None] * (x_hi - x_lo)[None, :]
    return _normalise(torch.stack(sums), counts[None, :, :, None])
