"""Helpers for running :func:`~mtcnnkit.train.trainer.train_stage` as one of several ranks
(``torchrun``, DistributedDataParallel).

A :class:`DistContext` says which rank this process is and how many there are. The default
context (rank 0 of 1) is the plain single-process run, for which every helper here does
nothing, so the trainer calls them unconditionally.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from .losses import LossParts, MultiTaskLoss
from .metrics import EpochMetrics

T = TypeVar("T")

# the running sums of EpochMetrics besides its per-task loss sums and counts
_METRIC_COUNTERS: tuple[str, ...] = ("n_samples", "n_cls", "n_correct", "n_pos", "n_pos_found")


@dataclass(frozen=True)
class DistContext:
    """This process's place in a distributed run (rank 0 of 1: not distributed)."""

    rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # set up the process group here, so tear it down here
    comm_device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def launched() -> bool:
    """Whether this process is one of several ranks: a process group of more than one
    process is already initialised, or ``WORLD_SIZE`` > 1 in the environment (as
    ``torchrun`` sets it)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    world = _env_int("WORLD_SIZE", 1)
    if world > 1 and not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={world} asks for distributed training, but this "
                           "PyTorch build has no torch.distributed")
    return world > 1


def rank_device(spec: str, device: torch.device) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` when ``spec`` is "cuda" or "auto" and
    ``device`` (``spec`` resolved) is CUDA (without LOCAL_RANK, in a process group set up
    by the caller: the global rank modulo the number of devices); an explicit "cuda:N" or a
    CPU is kept. A CUDA device is made the current one (NCCL collectives run on it)."""
    if device.type != "cuda":
        return device
    if spec in ("cuda", "auto"):
        count = torch.cuda.device_count()
        fallback = dist.get_rank() % count if dist.is_initialized() else 0
        local = _env_int("LOCAL_RANK", fallback)
        if not 0 <= local < count:
            raise ValueError(f"LOCAL_RANK={local}, but this machine has {count} CUDA devices")
        device = torch.device("cuda", local)
    torch.cuda.set_device(device)
    return device


def setup(device: torch.device) -> DistContext:
    """Join the process group, initialising it from the environment (``env://``: RANK,
    WORLD_SIZE, MASTER_ADDR, MASTER_PORT) with NCCL for a CUDA ``device``, else gloo,
    unless it is already initialised."""
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    comm = device if dist.get_backend() == "nccl" else torch.device("cpu")
    return DistContext(dist.get_rank(), dist.get_world_size(), owns, comm)


def teardown(ctx: DistContext) -> None:
    """Destroy the process group if :func:`setup` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.active:
        dist.barrier()


def all_reduce_sum(ctx: DistContext, values: Sequence[float]) -> list[float]:
    """The element-wise sum of ``values`` over all ranks (float64)."""
    if not ctx.active:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=ctx.comm_device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def broadcast_object(ctx: DistContext, obj: T) -> T:
    """Rank 0's ``obj`` (picklable) on every rank."""
    if not ctx.active:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0, device=ctx.comm_device)
    return box[0]  # type: ignore[return-value]


def on_main(ctx: DistContext, fn: Callable[[], T]) -> T:
    """``fn()`` run on rank 0 only, its result broadcast to every rank. If it raises, every
    rank raises too (a ValueError stays a ValueError), so no rank is left waiting."""
    if not ctx.active:
        return fn()
    outcome: tuple[bool, Any] = (True, None)
    if ctx.is_main:
        try:
            outcome = (True, fn())
        except Exception as e:
            broadcast_object(ctx, (False, (isinstance(e, ValueError), str(e))))
            raise
    ok, payload = broadcast_object(ctx, outcome)
    if not ok:
        is_value_error, message = payload
        raise (ValueError if is_value_error else RuntimeError)(f"on rank 0: {message}")
    return payload


def reduce_metrics(ctx: DistContext, metrics: EpochMetrics) -> None:
    """Sum the running sums of ``metrics`` over all ranks, in place: afterwards every rank
    holds the metrics of all the samples the ranks saw together."""
    if not ctx.active:
        return
    # EpochMetrics keeps plain sums: loss * count per task, counts, and sample counters
    tasks = sorted(metrics._loss_sum)
    values = ([metrics._loss_sum[t] for t in tasks] + [metrics._loss_n[t] for t in tasks]
              + [getattr(metrics, name) for name in _METRIC_COUNTERS])
    summed = all_reduce_sum(ctx, values)
    k = len(tasks)
    for i, task in enumerate(tasks):
        metrics._loss_sum[task] = summed[i]
        metrics._loss_n[task] = round(summed[k + i])
    for name, value in zip(_METRIC_COUNTERS, summed[2 * k:], strict=True):
        setattr(metrics, name, round(value))


def shard_total(parts: LossParts, loss_fn: MultiTaskLoss, outputs: Sequence[Tensor],
                global_counts: Sequence[int], world_size: int) -> Tensor:
    """This rank's training loss, scaled so that DDP's gradient average over the ranks is
    the gradient of the loss of the whole global batch.

    Each task loss is a mean over the samples of that task; a rank's share of a batch holds
    ``n`` of the global batch's ``N`` samples of the task, so its mean is weighted by
    ``world_size * n / N`` (``global_counts`` = N for cls, box, landmark). Without OHEM this
    is exact; with OHEM each rank keeps its own hardest ``ohem_ratio`` share, which only
    approximates keeping the hardest of the global batch.

    Every output also enters with an exact zero (an empty slice), so every head takes part
    in every backward pass on every rank, as DDP requires, even when this rank's share has
    no sample of that head's task.
    """
    total = sum(o.reshape(-1)[:0].float().sum() for o in outputs)
    terms = ((loss_fn.cls_weight, parts.cls, parts.n_cls, global_counts[0]),
             (loss_fn.box_weight, parts.box, parts.n_box, global_counts[1]),
             (loss_fn.landmark_weight, parts.landmark, parts.n_landmark, global_counts[2]))
    for weight, value, n, n_global in terms:
        if n:
            total = total + value * (weight * world_size * n / int(n_global))
    return total  # type: ignore[return-value]
