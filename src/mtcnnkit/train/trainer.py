"""Training one MTCNN net on sample shards: configuration, balanced batches, the loop.

:func:`train_stage` trains ``nets.create(config.arch)`` on the shards of a folder and writes
to ``out_dir``:

``metrics.csv``  one row per epoch: learning rate, train and val losses (cls, box offsets,
                 landmarks), cls accuracy, positive recall, time and samples/s
``metrics.png``  the losses and accuracies per epoch
``last.pt``      everything needed to resume exactly (model, optimizer, scheduler, AMP scaler,
                 epoch, RNG states, metrics history, best value), rewritten atomically
                 (temp + rename) after every epoch
``best.pt``      the net of the best epoch as an mtcnnkit per-net file
                 ``{"arch": name, "state_dict": ...}`` (plus ``stage``, ``epoch``,
                 ``metrics``): copy it to ``pnet.pt`` / ``rnet.pt`` / ``onet.pt`` in a folder
                 that ``mtcnnkit.weights.load_weights`` reads

"Best" is the lowest validation classification loss (``best_metric="cls_loss"``, plain
cross-entropy over all val positives and negatives, no OHEM), the highest validation
accuracy (``best_metric="cls_acc"``), or simply the final epoch (``best_metric="last"``:
``best.pt`` then holds the net the schedule ends with; its reported value is that epoch's
val cls loss). Without validation samples the train metric is used.

With ``ema_decay`` > 0 an exponential moving average of the weights
(:class:`~mtcnnkit.train.ema.WeightAverage`, updated after every step) is what the val metrics
measure and what ``best.pt`` holds; training itself is unchanged (the same seed gives the
same trajectory), and ``last.pt`` keeps both nets.

Training batches come from :class:`BalancedBatchSampler` (neg:pos:part:landmark = 3:1:1:2 by
default; the landmark share is dropped for nets without a landmark head). The train metrics
are those of the training batches (OHEM loss, balanced sampling); val metrics are computed on
every val sample once, without OHEM.

Several processes (DistributedDataParallel)
-------------------------------------------
Calling :func:`train_stage` from a script started by ``torchrun`` (e.g. ``torchrun
--nnodes=2 --nproc_per_node=4 train.py``, the script calling ``train_stage`` as usual) trains
with one process per rank. The run is recognised by ``WORLD_SIZE`` > 1 in the environment
(or an already initialised process group of several processes); the process group is then
initialised from the environment (NCCL on CUDA, gloo on CPU) and destroyed again at the end.
With ``device`` "cuda" or "auto" each rank uses ``cuda:LOCAL_RANK``; an explicit "cuda:N" is
used as given.

* Batches: every rank draws the same global batches (same seed and epoch) and trains on its
  share ``indices[rank::world_size]``, so ``batch_size`` stays the global batch size and
  the result does not depend on data loader scheduling. Each rank's loss is weighted by its
  share of each task's samples, so the averaged gradient is that of the global batch's
  loss (exactly without OHEM; with OHEM every rank keeps the hardest ``ohem_ratio`` of its
  own share). The augmentation of a share is drawn from the batch's key plus the rank
  ``(seed, epoch, batch, rank)``: deterministic, independent between ranks, but not the
  draw a single process would make for the same samples.
* Metrics: the train metrics are summed over the ranks (the table is that of the global
  batches); the val samples are split between the ranks and their metrics summed too. The
  row of rank 0 is broadcast, so all ranks take the same "best" decision.
* Files: only rank 0 writes (``last.pt``, ``best.pt``, the metrics), echoes and reports
  progress; the files hold the plain net's state dict (no ``module.`` prefix), exactly as a
  single-process run writes them. ``out_dir`` needs to be on rank 0's machine only.
* Resume: rank 0 reads ``last.pt`` and broadcasts it, so all ranks continue from the same
  state. A checkpoint resumes under any number of processes, single-process included;
  bit-exact (on CPU) only under the number it was written with, as the shares and their
  augmentation draws depend on it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import nets
from ..data.augment import BatchAugment
from ..data.shards import LANDMARK, NEGATIVE, PART, POSITIVE, ShardDataset, to_batch
from ..weights import CHECKPOINT_FORMAT, atomic_save
from . import distributed
from .distributed import DistContext
from .ema import WeightAverage
from .losses import MultiTaskLoss, classification_mask, stage_loss
from .metrics import EpochMetrics, plot_metrics, write_csv

# the order of TrainConfig.batch_ratio
RATIO_LABELS: tuple[int, ...] = (NEGATIVE, POSITIVE, PART, LANDMARK)

Progress = Callable[[int, int], None]


@dataclass
class TrainConfig:
    """Settings of one training run (``arch`` defaults to the stage's original net)."""

    stage: str = "pnet"
    arch: str | None = None
    epochs: int = 10
    batch_size: int = 384
    batches_per_epoch: int | None = None  # default: train samples // batch_size (>= 1)
    lr: float = 1e-3
    weight_decay: float = 5e-4
    optimizer: str = "adam"  # "adam" | "sgd" (momentum 0.9)
    momentum: float = 0.9
    schedule: str = "cosine"  # "cosine" | "step" (per epoch)
    step_epochs: int = 5
    step_gamma: float = 0.1
    batch_ratio: tuple[float, float, float, float] = (3, 1, 1, 2)  # neg:pos:part:landmark
    ohem_ratio: float = 0.7
    regression: str = "smooth_l1"  # "smooth_l1" | "wing" | "l2"
    loss_weights: tuple[float, float, float] | None = None  # (cls, box, landmark); None: paper
    landmark_positives: bool = False  # landmark samples also train classification, as faces
    face_weight: float = 1.0  # training loss of face targets x this (> 1 favours recall);
    #                           the validation losses stay unweighted
    dropout: float = 0.0  # on the features the heads read (training only; not in the weights)
    ema_decay: float = 0.0  # > 0: validate and keep an exponential moving average of the weights
    best_metric: str = "cls_loss"  # "cls_loss" (val, lower) | "cls_acc" (val, higher) | "last"
    seed: int = 0
    num_workers: int = 0
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", or "auto"
    amp: bool = False  # mixed precision; only takes effect on CUDA
    val_fraction: float = 0.1  # used when no val shard root is given; split by source item
    augment: BatchAugment = field(default_factory=BatchAugment)  # training batches only

    def __post_init__(self) -> None:
        self.batch_ratio = tuple(float(r) for r in self.batch_ratio)  # type: ignore[assignment]
        if self.loss_weights is not None:
            self.loss_weights = tuple(float(w) for w in self.loss_weights)  # type: ignore[assignment]
            if (len(self.loss_weights) != 3 or min(self.loss_weights) < 0
                    or not self.loss_weights[0] > 0):
                raise ValueError(
                    "loss_weights must be 3 non-negative numbers (cls, box, landmark) with "
                    f"cls > 0, or null for the paper's; got {self.loss_weights}")
        if isinstance(self.augment, Mapping):
            known = {f.name for f in dataclasses.fields(BatchAugment)}
            unknown = sorted(set(self.augment) - known)
            if unknown:
                raise ValueError(f"unknown augment settings {unknown}; known: {sorted(known)}")
            self.augment = BatchAugment(**self.augment)
        if self.arch is None:
            self.arch = self.stage
        if self.stage not in nets.STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; expected one of {nets.STAGES}")
        if nets.stage_of(self.arch) != self.stage:
            raise ValueError(f"architecture {self.arch!r} is a {nets.stage_of(self.arch)}, "
                             f"not a {self.stage}")
        checks = {
            "optimizer": (self.optimizer, ("adam", "sgd")),
            "schedule": (self.schedule, ("cosine", "step")),
            "regression": (self.regression, ("smooth_l1", "wing", "l2")),
            "best_metric": (self.best_metric, ("cls_loss", "cls_acc", "last")),
        }
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"{name} {value!r}: expected one of {allowed}")
        if len(self.batch_ratio) != 4 or min(self.batch_ratio) < 0 or not any(self.batch_ratio):
            raise ValueError(f"batch_ratio must be 4 non-negative numbers (neg:pos:part:"
                             f"landmark), not all 0; got {self.batch_ratio}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0 = off), got {self.ema_decay}")
        if not self.face_weight > 0:
            raise ValueError(f"face_weight must be > 0, got {self.face_weight}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a plain mapping (e.g. parsed YAML); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; known: {sorted(known)}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["batch_ratio"] = list(self.batch_ratio)
        d["loss_weights"] = None if self.loss_weights is None else list(self.loss_weights)
        return d


def batch_quotas(ratio: Sequence[float], batch_size: int) -> list[int]:
    """Split ``batch_size`` in proportion to ``ratio`` (largest remainder, ties to the
    earlier class)."""
    total = float(sum(ratio))
    exact = [batch_size * r / total for r in ratio]
    quotas = [math.floor(e) for e in exact]
    order = sorted(range(len(ratio)), key=lambda i: (-(exact[i] - quotas[i]), i))
    for i in order[: batch_size - sum(quotas)]:
        quotas[i] += 1
    return quotas


class BalancedBatchSampler:
    """Batches of sample indices drawn per class in a fixed ratio.

    ``ratio`` is neg:pos:part:landmark (labels 0, 1, -1, -2). Classes absent from ``labels``
    (or with ratio 0) drop out and the ratio renormalises over the rest. Each class is
    drawn from a fresh permutation, without replacement until it runs out and then from a
    new permutation (so a short class repeats). Everything depends only on ``(seed, epoch)``:
    call :meth:`set_epoch` before iterating. ``num_batches`` defaults to
    ``len(labels) // batch_size`` (at least 1).
    """

    def __init__(self, labels: np.ndarray | Sequence[int], ratio: Sequence[float],
                 batch_size: int, seed: int = 0, num_batches: int | None = None) -> None:
        labels = np.asarray(labels)
        if len(ratio) != len(RATIO_LABELS):
            raise ValueError(f"ratio needs {len(RATIO_LABELS)} values (neg:pos:part:landmark)")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.epoch = 0
        self.pools: list[np.ndarray] = []
        self.labels: list[int] = []
        weights = []
        for label, r in zip(RATIO_LABELS, ratio, strict=True):
            pool = np.flatnonzero(labels == label)
            if r > 0 and len(pool):
                self.pools.append(pool)
                self.labels.append(label)
                weights.append(float(r))
        if not self.pools:
            raise ValueError("no samples of any class with a non-zero batch ratio")
        self.quotas = batch_quotas(weights, self.batch_size)
        self.num_batches = (max(1, len(labels) // self.batch_size) if num_batches is None
                            else int(num_batches))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        streams = [_Stream(pool, rng) for pool in self.pools]
        for _ in range(self.num_batches):
            batch = np.concatenate([s.take(q) for s, q in zip(streams, self.quotas,
                                                               strict=True)])
            yield batch[rng.permutation(len(batch))]


class _Stream:
    """Endless shuffled passes over one class's indices."""

    def __init__(self, pool: np.ndarray, rng: np.random.Generator) -> None:
        self.pool, self.rng = pool, rng
        self.order = rng.permutation(pool)
        self.pos = 0

    def take(self, n: int) -> np.ndarray:
        out = []
        while n > 0:
            if self.pos == len(self.order):
                self.order, self.pos = self.rng.permutation(self.pool), 0
            k = min(n, len(self.order) - self.pos)
            out.append(self.order[self.pos: self.pos + k])
            self.pos += k
            n -= k
        return np.concatenate(out) if out else self.pool[:0]


class _KeyedBatches:
    """The sampler's batches as ``(key, indices)``, ``key = (seed, epoch, batch number)``:
    what the augmentation of a batch is drawn from, whichever worker loads it."""

    def __init__(self, sampler: BalancedBatchSampler) -> None:
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[tuple[int, int, int], np.ndarray]]:
        s = self.sampler
        for number, indices in enumerate(s):
            yield (s.seed, s.epoch, number), indices


class _BatchSource(torch.utils.data.Dataset):
    """``(key, indices)`` in, an augmented :class:`~mtcnnkit.data.shards.Batch` out (for a
    DataLoader)."""

    def __init__(self, data: ShardDataset, index_map: np.ndarray, augment: BatchAugment) -> None:
        self.data, self.index_map, self.augment = data, index_map, augment

    def __getitem__(self, item: tuple[tuple[int, ...], np.ndarray]
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        key, indices = item
        samples = self.data.arrays(self.index_map[indices])
        if self.augment.active:
            samples = self.augment(samples, (*key, 0xA6))
        return tuple(to_batch(samples))  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.index_map)


class _RankBatchSource(_BatchSource):
    """Under DDP: this rank's share ``indices[rank::world_size]`` of a global batch,
    augmented with draws keyed on ``(*key, rank)``, plus the global batch's sample counts of
    the cls, box and landmark tasks (for :func:`~mtcnnkit.train.distributed.shard_total`)."""

    def __init__(self, data: ShardDataset, index_map: np.ndarray, augment: BatchAugment,
                 rank: int, world_size: int, landmark_positives: bool = False) -> None:
        super().__init__(data, index_map, augment)
        self.rank, self.world_size = rank, world_size
        self.landmark_positives = landmark_positives

    def __getitem__(self, item: tuple[tuple[int, ...], np.ndarray]
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        key, indices = item
        share = super().__getitem__(((*key, self.rank), indices[self.rank::self.world_size]))
        labels = self.data.labels[self.index_map[indices]]
        counts = [classification_mask(labels, self.landmark_positives).sum(),
                  ((labels == POSITIVE) | (labels == PART)).sum(), (labels == LANDMARK).sum()]
        return (*share, torch.tensor([int(c) for c in counts]))


@dataclass
class TrainResult:
    out_dir: Path
    best_path: Path
    last_path: Path
    metrics_csv: Path
    metrics_png: Path
    history: list[dict[str, float]]
    best_epoch: int
    best_value: float
    epochs_run: int  # epochs run by this call (0 when a resumed run was already complete)
    samples_per_s: float  # training throughput of this call
    config: TrainConfig = field(repr=False, default_factory=TrainConfig)


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def split_validation(data: ShardDataset, fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Train / val sample indices, splitting by writer item (source image) so that crops
    of one image never land on both sides. Val is empty when ``fraction`` is 0 or there
    is only one item."""
    all_idx = np.arange(len(data))
    items = np.unique(data.items)
    n_val = math.ceil(fraction * len(items)) if fraction > 0 else 0
    if n_val == 0 or n_val >= len(items):
        return all_idx, all_idx[:0]
    rng = np.random.default_rng([seed, 0x5A1])
    val_items = rng.choice(items, n_val, replace=False)
    is_val = np.isin(data.items, val_items)
    return all_idx[~is_val], all_idx[is_val]


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def with_feature_dropout(net: nn.Module, p: float) -> nn.Module:
    """``net`` with dropout of probability ``p`` appended to its ``body`` (the features its
    heads read). Dropout has no parameters, so the state dict and the architecture name stay
    those of ``net``; in eval mode it does nothing. ``p == 0`` returns ``net`` unchanged."""
    if p == 0:
        return net
    body = getattr(net, "body", None)
    if not isinstance(body, nn.Sequential):
        raise ValueError(f"dropout needs a net whose features come from an nn.Sequential "
                         f"'body'; {type(net).__name__} has none")
    body.append(nn.Dropout(p))
    return net


def _has_landmark_head(net: nn.Module, size: int) -> bool:
    with torch.no_grad():
        return len(net(torch.zeros(1, 3, size, size))) > 2


def _make_optimizer(config: TrainConfig, net: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(net.parameters(), lr=config.lr,
                                weight_decay=config.weight_decay)
    return torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def _make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer
                    ) -> torch.optim.lr_scheduler.LRScheduler:
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_epochs,
                                           gamma=config.step_gamma)


def evaluate(net: nn.Module, data: ShardDataset, indices: np.ndarray, loss: MultiTaskLoss,
             batch_size: int, device: torch.device) -> dict[str, float]:
    """Metrics of ``net`` on the samples ``indices`` (each once, in order)."""
    return _evaluate_metrics(net, data, indices, loss, batch_size, device).as_row()


def _evaluate_metrics(net: nn.Module, data: ShardDataset, indices: np.ndarray,
                      loss: MultiTaskLoss, batch_size: int, device: torch.device
                      ) -> EpochMetrics:
    metrics = EpochMetrics()
    was_training = net.training
    net.eval()
    with torch.no_grad():
        for start in range(0, len(indices), batch_size):
            b = data.batch(indices[start: start + batch_size])
            outputs = net(b.images.to(device))
            labels = b.labels.to(device)
            parts = loss(outputs, labels, b.boxes.to(device), b.landmarks.to(device))
            metrics.update(parts, outputs[0], labels)
    net.train(was_training)
    return metrics


def _selection_value(row: Mapping[str, float], split: str, metric: str) -> float:
    """The figure ``best_metric`` compares (under "last": the epoch's cls loss, reported
    only)."""
    return row[f"{split}_{'cls_loss' if metric == 'last' else metric}"]


def _reselect(history: Sequence[Mapping[str, float]], split: str,
              metric: str) -> tuple[float | None, int]:
    """(best value, best epoch) of ``history`` under ``metric``, as the loop would have
    picked them."""
    best_value, best_epoch = None, -1
    for row in history:
        value = _selection_value(row, split, metric)
        if _is_better(value, best_value, metric):
            best_value, best_epoch = value, int(row["epoch"])
    return best_value, best_epoch


def _is_better(value: float, best: float | None, metric: str) -> bool:
    if metric == "last":
        return True
    if math.isnan(value):
        return best is None
    if best is None or math.isnan(best):
        return True
    return value < best if metric == "cls_loss" else value > best


def _format_row(row: Mapping[str, float]) -> str:
    def f(key: str) -> str:
        v = row.get(key, math.nan)
        return "     -" if math.isnan(v) else f"{v:6.4f}"

    parts = [f"epoch {int(row['epoch']):3d}"]
    for split in ("train", "val"):
        parts.append(f"{split}: cls {f(split + '_cls_loss')} off {f(split + '_box_loss')} "
                     f"lmk {f(split + '_landmark_loss')} acc {f(split + '_cls_acc')} "
                     f"rec {f(split + '_pos_recall')}")
    parts.append(f"{row['samples_per_s']:.0f} samples/s")
    return " | ".join(parts)


def train_stage(config: TrainConfig, train_root: str | os.PathLike[str],
                val_root: str | os.PathLike[str] | None, out_dir: str | os.PathLike[str],
                resume: bool = False, progress: Progress | None = None,
                echo: Callable[[str], None] | None = print) -> TrainResult:
    """Train one net on the shards of ``train_root`` (see the module docstring).

    ``val_root`` (shards of the same size) is the validation set; when None, a
    ``config.val_fraction`` share of the source items of ``train_root`` is held out.
    ``resume=True`` continues from ``out_dir/last.pt`` (bit-exact on CPU: the same weights
    as an uninterrupted run); its saved config must match. ``progress(done, total)`` is
    called after every training batch with the batches done and planned over all epochs.
    ``echo`` receives one line per epoch (None: silent). Under ``torchrun`` every rank calls
    this and gets the same result; only rank 0 writes files, echoes and reports progress.
    """
    device = resolve_device(config.device)
    if not distributed.launched():
        return _train(config, train_root, val_root, Path(out_dir), resume, progress, echo,
                      device, DistContext())
    device = distributed.rank_device(config.device, device)
    ctx = distributed.setup(device)
    try:
        return _train(config, train_root, val_root, Path(out_dir), resume, progress, echo,
                      device, ctx)
    finally:
        distributed.teardown(ctx)


def _read_checkpoint(path: Path, config: TrainConfig) -> dict[str, Any] | None:
    """The training checkpoint at ``path`` (None if there is none), checked against
    ``config``."""
    if not path.is_file():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an mtcnnkit training checkpoint")
    try:  # settings newer than the checkpoint take their defaults, as a fresh run would
        saved = TrainConfig.from_dict(ckpt["config"]).to_dict()
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: saved with settings this version cannot read: {e}") from None
    mine = config.to_dict()
    # these do not change what the epochs so far did (a new best_metric is applied to them)
    free = ("epochs", "device", "num_workers", "amp", "best_metric")
    differ = sorted(k for k in mine if k not in free and saved.get(k) != mine[k])
    if differ:
        raise ValueError(f"{path}: saved with different settings {differ}")
    return ckpt


def _best_payload(config: TrainConfig, state_dict: Mapping[str, Tensor], epoch: int,
                  row: Mapping[str, float]) -> dict[str, Any]:
    """What ``best.pt`` holds: a per-net file plus the epoch and its metrics."""
    return {"arch": config.arch, "stage": config.stage,
            "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
            "epoch": epoch, "metrics": dict(row)}


def _switch_best_metric(ckpt: dict[str, Any], history: Sequence[Mapping[str, float]],
                        split: str, config: TrainConfig, last_path: Path,
                        best_path: Path) -> tuple[float | None, int]:
    """Resuming with another ``best_metric``: pick the best epoch of the run so far again.
    Possible when that epoch's net was kept: the checkpoint's own epoch (always so for
    "last") or the one already in ``best.pt``. ``best.pt`` and ``last.pt`` are rewritten to
    match. Run on rank 0 only."""
    best_value, best_epoch = _reselect(history, split, config.best_metric)
    epoch = int(ckpt["epoch"])
    kept = (torch.load(best_path, map_location="cpu", weights_only=True).get("epoch")
            if best_path.is_file() else None)
    if best_epoch not in (epoch, kept):
        raise ValueError(
            f"{last_path}: best_metric {config.best_metric!r} picks epoch {best_epoch}, whose "
            f"net was not kept (best.pt holds epoch {kept}, last.pt epoch {epoch}); train "
            "anew to select by it")
    if best_epoch == epoch:
        kept_net = ckpt["ema"]["net"] if ckpt.get("ema") else ckpt["model"]
        atomic_save(_best_payload(config, kept_net, epoch, history[epoch]), best_path)
    ckpt["config"]["best_metric"] = config.best_metric
    ckpt["best_value"], ckpt["best_epoch"] = best_value, best_epoch
    atomic_save(ckpt, last_path)
    return best_value, best_epoch


def _train(config: TrainConfig, train_root: str | os.PathLike[str],
           val_root: str | os.PathLike[str] | None, out: Path, resume: bool,
           progress: Progress | None, echo: Callable[[str], None] | None,
           device: torch.device, ctx: DistContext) -> TrainResult:
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    last_path, best_path = out / "last.pt", out / "best.pt"
    csv_path, png_path = out / "metrics.csv", out / "metrics.png"
    use_amp = bool(config.amp and device.type == "cuda")
    size = nets.INPUT_SIZE[config.stage]  # type: ignore[index]
    if config.batch_size < ctx.world_size:
        raise ValueError(f"batch_size {config.batch_size} is smaller than the "
                         f"{ctx.world_size} processes that share every batch")

    train_data = ShardDataset(train_root)
    if len(train_data) == 0:
        raise ValueError(f"{train_root}: no training shards")
    if train_data.size != size:
        raise ValueError(f"{train_root}: {train_data.size}px samples, {config.stage} needs "
                         f"{size}px")
    if val_root is not None:
        val_data = ShardDataset(val_root)
        if len(val_data) and val_data.size != size:
            raise ValueError(f"{val_root}: {val_data.size}px samples, {config.stage} needs "
                             f"{size}px")
        train_idx, val_idx = np.arange(len(train_data)), np.arange(len(val_data))
    else:
        val_data = train_data
        train_idx, val_idx = split_validation(train_data, config.val_fraction, config.seed)
    if len(train_idx) == 0:
        raise ValueError("no training samples left after the validation split")

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    net = nets.create(config.arch)  # type: ignore[arg-type]
    net = with_feature_dropout(net, config.dropout)
    landmarks = _has_landmark_head(net, size)
    net.to(device).train()
    loss_fn = stage_loss(config.stage, config.ohem_ratio, config.regression,
                         config.landmark_positives, config.loss_weights, config.face_weight)
    val_loss_fn = stage_loss(config.stage, 1.0, config.regression, weights=config.loss_weights)
    optimizer = _make_optimizer(config, net)
    scheduler = _make_scheduler(config, optimizer)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    average = WeightAverage(net, config.ema_decay) if config.ema_decay > 0 else None
    scored = net if average is None else average.net  # the net validated and kept as best

    ratio = list(config.batch_ratio)
    if not (landmarks or config.landmark_positives):
        ratio[RATIO_LABELS.index(LANDMARK)] = 0.0
    sampler = BalancedBatchSampler(train_data.labels[train_idx], ratio, config.batch_size,
                                   config.seed, config.batches_per_epoch)
    source = (_RankBatchSource(train_data, train_idx, config.augment, ctx.rank,
                               ctx.world_size, config.landmark_positives) if ctx.active
              else _BatchSource(train_data, train_idx, config.augment))
    # workers start from a fork server, not a fork of this process: forking after torch,
    # OpenVINO or ncnn started their thread pools can crash the child (seen here)
    loader = torch.utils.data.DataLoader(
        source, sampler=_KeyedBatches(sampler), batch_size=None,
        num_workers=config.num_workers, pin_memory=device.type == "cuda",
        multiprocessing_context="forkserver" if config.num_workers > 0 else None)

    split = "val" if len(val_idx) else "train"  # whose metrics pick the best epoch
    history: list[dict[str, float]] = []
    start_epoch, best_value, best_epoch = 0, None, -1
    ckpt = distributed.on_main(ctx, lambda: _read_checkpoint(last_path, config)
                               if resume else None)
    if ckpt is not None:
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if use_amp and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        if average is not None:
            average.load_state_dict(ckpt["ema"])
        start_epoch = int(ckpt["epoch"]) + 1
        best_value, best_epoch = ckpt["best_value"], int(ckpt["best_epoch"])
        history = [dict(r) for r in ckpt["history"]]
        if ckpt["config"].get("best_metric", "cls_loss") != config.best_metric:
            best_value, best_epoch = distributed.on_main(ctx, lambda: _switch_best_metric(
                ckpt, history, split, config, last_path, best_path))
    # DDP averages the gradients of the ranks; files always hold the plain net's weights
    model: nn.Module = net
    if ctx.active:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)

    total_batches = config.epochs * len(sampler)
    done = start_epoch * len(sampler)
    seen_total, time_total = 0, 0.0
    for epoch in range(start_epoch, config.epochs):
        sampler.set_epoch(epoch)
        train_metrics = EpochMetrics()
        lr = optimizer.param_groups[0]["lr"]
        t0 = time.perf_counter()
        for batch in loader:
            images = batch[0].to(device, non_blocking=True)
            labels = batch[1].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                outputs = model(images)
            parts = loss_fn(outputs, labels, batch[2].to(device), batch[3].to(device))
            total = (distributed.shard_total(parts, loss_fn, outputs, batch[4].tolist(),
                                             ctx.world_size) if ctx.active else parts.total)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()
            if average is not None:
                average.update(net)
            train_metrics.update(parts, outputs[0].detach(), labels)
            done += 1
            if progress is not None and ctx.is_main:
                progress(done, total_batches)
        seconds = time.perf_counter() - t0
        scheduler.step()
        nets.zero_subnormals_(net)  # weight decay makes them; they slow every CPU user down
        if average is not None:
            nets.zero_subnormals_(average.net)
        distributed.reduce_metrics(ctx, train_metrics)

        row: dict[str, float] = {"epoch": float(epoch), "lr": float(lr)}
        row.update(train_metrics.as_row("train_"))
        row.update(_validate(scored, val_data, val_idx, val_loss_fn, config.batch_size, device,
                             ctx))
        row["seconds"] = seconds
        row["samples_per_s"] = train_metrics.n_samples / seconds if seconds > 0 else math.nan
        row = distributed.broadcast_object(ctx, row)  # the same row, so the same "best"
        history.append(row)
        seen_total += train_metrics.n_samples
        time_total += row["seconds"]

        value = _selection_value(row, split, config.best_metric)
        if _is_better(value, best_value, config.best_metric):
            best_value, best_epoch = value, epoch
            if ctx.is_main:
                atomic_save(_best_payload(config, scored.state_dict(), epoch, row), best_path)
        if ctx.is_main:
            atomic_save({
                "format": CHECKPOINT_FORMAT, "version": 1, "config": config.to_dict(),
                "arch": config.arch, "epoch": epoch,
                "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if use_amp else {},
                "ema": average.state_dict() if average is not None else None,
                "rng": _rng_state(), "best_value": best_value, "best_epoch": best_epoch,
                "history": history,
            }, last_path)
            write_csv(csv_path, history)
            plot_metrics(png_path, history)
            if echo is not None:
                echo(_format_row(row))

    if ctx.is_main and not csv_path.is_file() and history:
        write_csv(csv_path, history)
        plot_metrics(png_path, history)
    distributed.barrier(ctx)  # every rank returns once rank 0 has written everything
    return TrainResult(
        out_dir=out, best_path=best_path, last_path=last_path, metrics_csv=csv_path,
        metrics_png=png_path, history=history, best_epoch=best_epoch,
        best_value=math.nan if best_value is None else float(best_value),
        epochs_run=config.epochs - start_epoch if start_epoch < config.epochs else 0,
        samples_per_s=seen_total / time_total if time_total > 0 else math.nan,
        config=config,
    )


def _validate(net: nn.Module, data: ShardDataset, indices: np.ndarray, loss: MultiTaskLoss,
              batch_size: int, device: torch.device, ctx: DistContext) -> dict[str, float]:
    """The ``val_`` metrics on ``indices`` (NaN when empty); each rank evaluates its share
    ``indices[rank::world_size]`` and the sums are reduced over the ranks."""
    if not len(indices):
        return {f"val_{k}": math.nan for k in ("cls_loss", "box_loss", "landmark_loss",
                                                 "cls_acc", "pos_recall")}
    metrics = _evaluate_metrics(net, data, indices[ctx.rank::ctx.world_size], loss,
                                batch_size, device)
    distributed.reduce_metrics(ctx, metrics)
    return metrics.as_row("val_")
