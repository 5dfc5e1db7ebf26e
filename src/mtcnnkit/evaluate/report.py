"""Per-net validation of a training run: each stage's held-out samples scored by the run's own
nets and, side by side, by other weights (e.g. the reference MTCNN nets).

A run folder of ``mtcnnkit train`` holds, per stage, ``train_<stage>/data`` (the shards the
net trained on) and ``train_<stage>/last.pt`` (its settings). The validation samples are the
ones the trainer held out: :func:`mtcnnkit.train.trainer.split_validation` with the run's
``val_fraction`` and ``seed``, so every set of weights is scored on exactly the samples the
run's net never saw. Metrics are the trainer's (plain cross-entropy, no OHEM; box and landmark
losses with the run's regression loss; accuracy and positive recall at probability 0.5).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import nets
from ..data.shards import ShardDataset
from ..train.losses import stage_loss
from ..train.trainer import TrainConfig, evaluate, split_validation
from ..weights import CascadeNets

COLUMNS = ("cls_loss", "box_loss", "landmark_loss", "cls_acc", "pos_recall")


@dataclass(frozen=True)
class StageValidation:
    stage: str
    samples: int  # validation samples scored
    metrics: dict[str, dict[str, float]]  # weights name -> metric -> value


def run_training_config(run_dir: str | os.PathLike[str], stage: str) -> TrainConfig:
    """The training settings a run used for ``stage`` (from its ``last.pt``)."""
    path = Path(run_dir) / f"train_{stage}" / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training checkpoint (has train_{stage} run? a "
                                "net given with `train --nets` has no held-out samples: "
                                "leave it out of --stages)")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return TrainConfig.from_dict(ckpt["config"])


def validate_stage(run_dir: str | os.PathLike[str], stage: str,
                   weights: dict[str, CascadeNets], batch_size: int = 512,
                   device: str = "cpu") -> StageValidation:
    """Score ``stage``'s net of every entry of ``weights`` on the run's validation samples."""
    config = run_training_config(run_dir, stage)
    data = ShardDataset(Path(run_dir) / f"train_{stage}" / "data")
    _, val_idx = split_validation(data, config.val_fraction, config.seed)
    if not len(val_idx):
        raise ValueError(f"{run_dir}: {stage} has no validation samples (val_fraction 0?)")
    loss = stage_loss(stage, 1.0, config.regression, weights=config.loss_weights)
    metrics = {}
    for name, cascade in weights.items():
        net = cascade.stage(stage).to(device)  # type: ignore[arg-type]
        metrics[name] = evaluate(net, data, val_idx, loss, batch_size, torch.device(device))
    return StageValidation(stage, len(val_idx), metrics)


def validation_table(results: list[StageValidation]) -> str:
    """Markdown: one row per (stage, weights)."""
    lines = ["| net | weights | val samples | cls loss | offset loss | landmark loss | cls acc "
             "| positive recall |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        for name, m in r.metrics.items():
            cells = ["–" if math.isnan(m[c]) else f"{m[c]:.4f}" for c in COLUMNS]
            lines.append(f"| {r.stage} | {name} | {r.samples} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def validate_run(run_dir: str | os.PathLike[str], weights: dict[str, CascadeNets],
                 stages: tuple[str, ...] = nets.STAGES, device: str = "cpu"
                 ) -> list[StageValidation]:
    return [validate_stage(run_dir, stage, weights, device=device) for stage in stages]
