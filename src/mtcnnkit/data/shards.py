"""Packed storage of training samples: shards of memory-mappable ``.npy`` arrays.

A shard is a folder ``shard-NNNNN`` holding, for its ``N`` samples of side ``S``:

``images.npy``     ``(N, S, S, 3)`` uint8 RGB crops (already resized to the net's input)
``labels.npy``     ``(N,)`` int8: 1 positive, 0 negative, -1 part face, -2 landmark sample
``boxes.npy``      ``(N, 4)`` float32 box regression targets: the ground-truth box relative to
                   the crop ``x1, y1, x2, y2`` (side ``w = x2 - x1``, ``h = y2 - y1``), as
                   ``(gx1 - x1) / w, (gy1 - y1) / h, (gx2 - x2) / w, (gy2 - y2) / h``;
                   zeros for negatives
``landmarks.npy``  ``(N, 10)`` float32 five x then five y, ``(px - x1) / w``, ``(py - y1) / h``
                   (left eye, right eye, nose, left and right mouth corner); zeros where unused
``crops.npy``      ``(N, 4)`` float32 the crop box in source-image pixels, for auditing
``items.npy``      ``(N,)`` int32 the writer item each sample came from (for sample
                   generation: the index of the source image or landmark face group)
``meta.json``      size, count, counts per class, source, seed and the range of writer items
                   (e.g. source images) the shard holds; written last

A shard is written into a temporary folder ``.tmp-shard-NNNNN`` next to its final place and
renamed when complete, so a killed run never leaves a half-written ``shard-NNNNN``: readers
only see complete shards and ignore (writers remove) leftover temporary folders. One writer
per folder at a time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..detect.sampling import MEAN, STD_INV

StrPath = str | os.PathLike[str]

POSITIVE, NEGATIVE, PART, LANDMARK = 1, 0, -1, -2
CLASS_NAMES: dict[int, str] = {
    POSITIVE: "positive", NEGATIVE: "negative", PART: "part", LANDMARK: "landmark"
}
SHARD_PATTERN = re.compile(r"shard-(\d{5})")
TEMP_PREFIX = ".tmp-"
ARRAYS = ("images", "labels", "boxes", "landmarks", "crops")
FORMAT_VERSION = 1


def class_counts(labels: np.ndarray) -> dict[str, int]:
    """Samples per class name (every class listed, zeros included)."""
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    found = dict(zip(values.tolist(), counts.tolist(), strict=True))
    unknown = set(found) - set(CLASS_NAMES)
    if unknown:
        raise ValueError(f"unknown sample labels {sorted(unknown)}")
    return {name: int(found.get(label, 0)) for label, name in CLASS_NAMES.items()}


@dataclass(frozen=True)
class Samples:
    """A group of samples as parallel arrays (the shard format, in memory)."""

    images: np.ndarray  # (N, S, S, 3) uint8
    labels: np.ndarray  # (N,) int8
    boxes: np.ndarray  # (N, 4) float32
    landmarks: np.ndarray  # (N, 10) float32
    crops: np.ndarray  # (N, 4) float32

    def __post_init__(self) -> None:
        n = len(self.labels)
        shapes = {
            "images": (n, *self.images.shape[1:]), "labels": (n,), "boxes": (n, 4),
            "landmarks": (n, 10), "crops": (n, 4),
        }
        dtypes = {"images": np.uint8, "labels": np.int8, "boxes": np.float32,
                  "landmarks": np.float32, "crops": np.float32}
        for name in ARRAYS:
            array = getattr(self, name)
            if array.shape != shapes[name] or array.dtype != dtypes[name]:
                raise ValueError(
                    f"Samples.{name}: expected {shapes[name]} {np.dtype(dtypes[name])}, "
                    f"got {array.shape} {array.dtype}"
                )
        s = self.images.shape[1:]
        if len(s) != 3 or s[0] != s[1] or s[2] != 3:
            raise ValueError(f"Samples.images: expected (N, S, S, 3), got {self.images.shape}")

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        return class_counts(self.labels)

    @classmethod
    def empty(cls, size: int) -> Samples:
        return cls(
            images=np.zeros((0, size, size, 3), np.uint8),
            labels=np.zeros(0, np.int8),
            boxes=np.zeros((0, 4), np.float32),
            landmarks=np.zeros((0, 10), np.float32),
            crops=np.zeros((0, 4), np.float32),
        )

    @classmethod
    def concat(cls, parts: Sequence[Samples], size: int) -> Samples:
        if not parts:
            return cls.empty(size)
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in ARRAYS))


@dataclass(frozen=True)
class ShardInfo:
    """What :meth:`ShardWriter.flush` wrote."""

    name: str
    items: tuple[int, int]  # writer items [first, end) held by the shard
    counts: dict[str, int]


def shard_dirs(root: StrPath) -> list[Path]:
    """The complete shards of ``root`` (``shard-NNNNN`` folders with a ``meta.json``), in
    order; temporary folders and anything else are ignored."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        d for d in root.iterdir()
        if d.is_dir() and SHARD_PATTERN.fullmatch(d.name) and (d / "meta.json").is_file()
    )


def remove_temporary(root: StrPath) -> list[str]:
    """Delete leftover ``.tmp-*`` folders of a killed writer; returns their names."""
    root = Path(root)
    removed = []
    if root.is_dir():
        for d in sorted(root.iterdir()):
            if d.name.startswith(TEMP_PREFIX) and d.is_dir():
                shutil.rmtree(d)
                removed.append(d.name)
    return removed


def write_json_atomic(path: StrPath, data: Any) -> None:
    """Write JSON (sorted keys, so byte-identical for equal data) via a temp file + rename."""
    path = Path(path)
    tmp = path.with_name(f"{TEMP_PREFIX}{path.name}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class ShardWriter:
    """Buffers samples and writes them as shards ``shard-00000``, ``shard-00001``, … of
    ``root``.

    Every :meth:`add` call is one *item* (for sample generation: one source image) and is
    never split across shards: a shard is flushed as soon as the buffer holds at least
    ``samples_per_shard`` samples, so it holds whole items and between ``samples_per_shard``
    and ``samples_per_shard`` + (one item's samples) samples; :meth:`close` flushes the rest.
    Numbering continues after the shards already in ``root``; leftover temporary folders are
    removed. ``first_item`` is the index of the first item added (for resumed runs).
    """

    def __init__(self, root: StrPath, size: int, samples_per_shard: int = 50_000, *,
                 source: str = "", seed: int | None = None, first_item: int = 0) -> None:
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
        self.root = Path(root)
        self.size = size
        self.samples_per_shard = samples_per_shard
        self.source = source
        self.seed = seed
        self.root.mkdir(parents=True, exist_ok=True)
        remove_temporary(self.root)
        existing = [int(SHARD_PATTERN.fullmatch(d.name).group(1))  # type: ignore[union-attr]
                    for d in self.root.iterdir() if SHARD_PATTERN.fullmatch(d.name)]
        self._next_index = max(existing, default=-1) + 1
        self._buffer: list[Samples] = []
        self._buffer_items: list[np.ndarray] = []
        self._buffered = 0
        self._first_item = first_item
        self._next_item = first_item
        self.written: list[ShardInfo] = []

    def add(self, samples: Samples) -> ShardInfo | None:
        """Buffer one item's samples; returns the shard written when this filled one."""
        if samples.size != self.size:
            raise ValueError(f"samples of size {samples.size} added to a size {self.size} writer")
        if len(samples):
            self._buffer.append(samples)
            self._buffer_items.append(np.full(len(samples), self._next_item, np.int32))
            self._buffered += len(samples)
        self._next_item += 1
        if self._buffered >= self.samples_per_shard:
            return self.flush()
        return None

    def flush(self) -> ShardInfo | None:
        """Write the buffered samples as one shard (nothing when the buffer is empty)."""
        if not self._buffered:
            self._first_item = self._next_item
            return None
        samples = Samples.concat(self._buffer, self.size)
        name = f"shard-{self._next_index:05d}"
        info = ShardInfo(name, (self._first_item, self._next_item), samples.counts())
        final = self.root / name
        if final.exists():
            raise FileExistsError(f"{final} already exists")
        tmp = self.root / f"{TEMP_PREFIX}{name}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        for array_name in ARRAYS:
            np.save(tmp / f"{array_name}.npy", getattr(samples, array_name), allow_pickle=False)
        np.save(tmp / "items.npy", np.concatenate(self._buffer_items), allow_pickle=False)
        meta = {
            "format": FORMAT_VERSION, "size": self.size, "count": len(samples),
            "counts": info.counts, "source": self.source, "seed": self.seed,
            "items": list(info.items),
        }
        write_json_atomic(tmp / "meta.json", meta)
        os.rename(tmp, final)
        self._next_index += 1
        self._buffer, self._buffer_items, self._buffered = [], [], 0
        self._first_item = self._next_item
        self.written.append(info)
        return info

    def close(self) -> ShardInfo | None:
        return self.flush()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()


class Sample(NamedTuple):
    image: np.ndarray  # (S, S, 3) uint8
    label: int
    box: np.ndarray  # (4,) float32
    landmarks: np.ndarray  # (10,) float32
    crop: np.ndarray  # (4,) float32
    item: int  # the writer item (source image) it came from


class Batch(NamedTuple):
    images: Tensor  # (B, 3, S, S) float32, (x - 127.5) / 128, NCHW view of NHWC memory
    labels: Tensor  # (B,) int64
    boxes: Tensor  # (B, 4) float32
    landmarks: Tensor  # (B, 10) float32


def normalise_images(images: np.ndarray) -> Tensor:
    """uint8 ``(B, S, S, 3)`` crops as the detector feeds them to a net: float32
    ``(x - 127.5) / 128``, NCHW view of channels-last memory."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32)
    return x.sub_(MEAN).mul_(STD_INV).permute(0, 3, 1, 2)


class ShardDataset:
    """All complete shards of a folder, memory-mapped (``np.load(mmap_mode="r")``)."""

    def __init__(self, root: StrPath) -> None:
        self.root = Path(root)
        self.shard_names: list[str] = []
        self._arrays: list[dict[str, np.ndarray]] = []
        sizes = set()
        for d in shard_dirs(self.root):
            meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
            arrays = {name: np.load(d / f"{name}.npy", mmap_mode="r")
                      for name in (*ARRAYS, "items")}
            if any(len(a) != meta["count"] for a in arrays.values()):
                raise ValueError(f"{d}: array lengths disagree with meta.json count")
            sizes.add(int(meta["size"]))
            self.shard_names.append(d.name)
            self._arrays.append(arrays)
        if len(sizes) > 1:
            raise ValueError(f"{self.root}: shards of different sizes {sorted(sizes)}")
        self.size: int | None = sizes.pop() if sizes else None
        lengths = [len(a["labels"]) for a in self._arrays]
        self._offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        self._labels: np.ndarray | None = None
        self._items: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getstate__(self) -> dict:
        """Pickled as its folder: a worker process re-opens the memory maps instead of
        receiving a copy of the data."""
        return {"root": self.root}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["root"])

    def _locate(self, index: int) -> tuple[int, int]:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"sample {index} out of range for {n} samples")
        shard = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return shard, index - int(self._offsets[shard])

    def __getitem__(self, index: int) -> Sample:
        shard, local = self._locate(int(index))
        a = self._arrays[shard]
        return Sample(np.asarray(a["images"][local]), int(a["labels"][local]),
                      np.asarray(a["boxes"][local]), np.asarray(a["landmarks"][local]),
                      np.asarray(a["crops"][local]), int(a["items"][local]))

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    @property
    def labels(self) -> np.ndarray:
        """All labels, concatenated (int8, loaded once)."""
        if self._labels is None:
            parts = [np.asarray(a["labels"]) for a in self._arrays]
            self._labels = np.concatenate(parts) if parts else np.zeros(0, np.int8)
        return self._labels

    @property
    def items(self) -> np.ndarray:
        """The writer item (source image) of every sample, concatenated (int32)."""
        if self._items is None:
            parts = [np.asarray(a["items"]) for a in self._arrays]
            self._items = np.concatenate(parts) if parts else np.zeros(0, np.int32)
        return self._items

    def counts(self) -> dict[str, int]:
        return class_counts(self.labels)

    def arrays(self, indices: Sequence[int] | np.ndarray) -> Samples:
        """The samples at ``indices`` (in that order) as in-memory arrays."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"indices out of range for {n} samples")
        idx = np.where(idx < 0, idx + n, idx)
        size = self.size or 0
        out = {
            "images": np.empty((len(idx), size, size, 3), np.uint8),
            "labels": np.empty(len(idx), np.int8),
            "boxes": np.empty((len(idx), 4), np.float32),
            "landmarks": np.empty((len(idx), 10), np.float32),
            "crops": np.empty((len(idx), 4), np.float32),
        }
        shard_of = np.searchsorted(self._offsets, idx, side="right") - 1
        for shard in np.unique(shard_of):
            where = np.nonzero(shard_of == shard)[0]
            local = idx[where] - self._offsets[shard]
            order = np.argsort(local, kind="stable")  # sorted reads from the memory map
            for name in ARRAYS:
                out[name][where[order]] = self._arrays[shard][name][local[order]]
        return Samples(**out)

    def batch(self, indices: Sequence[int] | np.ndarray) -> Batch:
        """Torch tensors for training: normalised float32 NCHW images, int64 labels,
        float32 box and landmark targets."""
        return to_batch(self.arrays(indices))


def to_batch(s: Samples) -> Batch:
    """In-memory samples as training tensors (see :meth:`ShardDataset.batch`)."""
    return Batch(
        images=normalise_images(s.images),
        labels=torch.from_numpy(s.labels.astype(np.int64)),
        boxes=torch.from_numpy(s.boxes),
        landmarks=torch.from_numpy(s.landmarks),
    )


def summary(root: StrPath) -> dict[str, int]:
    """Counts per class over the complete shards of ``root`` (from their ``meta.json``),
    plus ``total``, ``shards`` and ``bytes`` (their size on disk)."""
    totals = dict.fromkeys(CLASS_NAMES.values(), 0)
    dirs = shard_dirs(root)
    size_on_disk = 0
    for d in dirs:
        meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
        for name, count in meta["counts"].items():
            totals[name] += int(count)
        size_on_disk += sum(f.stat().st_size for f in d.iterdir() if f.is_file())
    totals["total"] = sum(totals[name] for name in CLASS_NAMES.values())
    totals["shards"] = len(dirs)
    totals["bytes"] = size_on_disk
    return totals
