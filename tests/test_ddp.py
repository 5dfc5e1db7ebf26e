"""train_stage under DistributedDataParallel: two CPU processes on the gloo backend.

The workers are started with ``torch.multiprocessing.spawn`` and given the environment that
``torchrun`` would set (RANK, WORLD_SIZE, ... with a free port on 127.0.0.1), so nothing
but the loopback interface is needed.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mtcnnkit import nets
from mtcnnkit.data.augment import BatchAugment
from mtcnnkit.data.shards import ShardDataset
from mtcnnkit.train import trainer
from mtcnnkit.train.distributed import shard_total
from mtcnnkit.train.losses import stage_loss
from mtcnnkit.train.metrics import read_csv
from mtcnnkit.train.trainer import BalancedBatchSampler, TrainConfig, train_stage
from test_trainer import write_shards  # tests/ is on sys.path (no package, rootdir mode)

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="needs torch.distributed with the gloo backend")

WORLD = 2
OUTPUTS = {"best.pt", "last.pt", "metrics.csv", "metrics.png"}
TIMEOUT_S = 300.0

# (out folder name, config settings, resume)
Job = tuple[str, dict[str, Any], bool]


def settings(**kw: object) -> dict[str, Any]:
    base = {"stage": "pnet", "epochs": 3, "batch_size": 35, "lr": 3e-3, "seed": 7,
            "val_fraction": 0.2}
    return {**base, **kw}


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shards(tmp_path_factory.mktemp("ddp12"), 12, 30, 10, seed=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _forbidden(name: str) -> Callable[..., None]:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{name} called on a rank other than 0")

    return fail


def _run_job(job: Job, shards: Path, out: Path) -> dict[str, Any]:
    folder, config, resume = job
    lines: list[str] = []
    calls: list[tuple[int, int]] = []
    try:
        r = train_stage(TrainConfig.from_dict(config), shards, None, out / folder,
                        resume=resume, progress=lambda d, t: calls.append((d, t)),
                        echo=lines.append)
    except ValueError as e:  # must be raised on every rank alike
        return {"error": str(e)}
    return {"history": r.history, "best_epoch": r.best_epoch, "epochs_run": r.epochs_run,
            "lines": lines, "calls": calls}


def _worker(rank: int, port: int, shards: Path, out: Path, jobs: Sequence[Job],
            own_group: bool) -> None:
    """One rank: run ``jobs`` in order, then save what each returned to ``out``. With
    ``own_group`` the process group is set up here, with no WORLD_SIZE etc. in the
    environment (train_stage must find it and leave it be); otherwise the environment is
    that of ``torchrun`` and train_stage sets the group up (and tears it down)."""
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    if rank != 0:  # only rank 0 may write files
        for name in ("_atomic_save", "write_csv", "plot_metrics"):
            setattr(trainer, name, _forbidden(name))
    if own_group:
        for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            os.environ.pop(name, None)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=WORLD)
    else:
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                          LOCAL_WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
    results = [_run_job(job, shards, out) for job in jobs]
    assert dist.is_initialized() == own_group  # train_stage only destroys its own group
    if own_group:
        dist.destroy_process_group()
    torch.save(results, out / f"rank{rank}.pt")


def run_ranks(shards: Path, out: Path, jobs: Sequence[Job], own_group: bool = False,
              meanwhile: Callable[[], object] | None = None) -> list[list[dict[str, Any]]]:
    """Run ``jobs`` on ``WORLD`` ranks (``meanwhile()`` runs here as they start); what
    each rank's calls returned."""
    context = mp.spawn(_worker, args=(_free_port(), shards, out, list(jobs), own_group),
                       nprocs=WORLD, join=False)
    try:
        if meanwhile is not None:
            meanwhile()
        deadline = time.monotonic() + TIMEOUT_S
        while not context.join(timeout=1.0):
            if time.monotonic() > deadline:
                pytest.fail(f"the ranks did not finish within {TIMEOUT_S:.0f} s")
    finally:
        for p in context.processes:
            if p.is_alive():
                p.terminate()
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def check_outputs(folder: Path, epochs: int) -> dict[str, Any]:
    """The files of one run: exactly one set, a plain PNet state dict in best.pt; returns
    last.pt."""
    assert {p.name for p in folder.iterdir()} == OUTPUTS
    best = torch.load(folder / "best.pt", weights_only=True)
    assert best["arch"] == "pnet"
    assert not [k for k in best["state_dict"] if k.startswith("module.")]
    nets.create("pnet").load_state_dict(best["state_dict"])
    assert len(read_csv(folder / "metrics.csv")) == epochs
    last = torch.load(folder / "last.pt", weights_only=True)
    nets.create("pnet").load_state_dict(last["model"])
    assert last["epoch"] == epochs - 1
    return last


def same_rows(a: Sequence[Mapping[str, float]], b: Sequence[Mapping[str, float]]) -> bool:
    """Equal metrics tables, NaN equal to NaN."""
    def cells(rows: Sequence[Mapping[str, float]]) -> list[list[tuple[str, float | None]]]:
        return [[(k, None if math.isnan(v) else v) for k, v in r.items()] for r in rows]

    return cells(a) == cells(b)


def check_ranks_agree(results: Sequence[Sequence[Mapping[str, Any]]]) -> None:
    """Every rank returned the same; only rank 0 echoed lines and reported progress."""
    main, *others = results
    for other in others:
        for a, b in zip(main, other, strict=True):
            if "error" in a or "error" in b:
                assert "error" in a and "error" in b
                continue
            assert same_rows(a["history"], b["history"])
            assert a["best_epoch"] == b["best_epoch"] and a["epochs_run"] == b["epochs_run"]
            assert b["lines"] == [] and b["calls"] == []
    for r in main:
        if "error" in r:
            continue
        assert len(r["lines"]) == r["epochs_run"]
        done = [d for d, _ in r["calls"]]
        assert done == list(range(done[0], done[0] + len(done)))
        assert r["calls"][-1][0] == r["calls"][-1][1]  # the last call: all batches done


# --- in one process: the shares and the loss weighting -------------------------------------


def test_rank_shares_split_every_batch(shards: Path) -> None:
    data = ShardDataset(shards)
    index_map = np.arange(len(data))
    batch = next(iter(BalancedBatchSampler(data.labels, (3, 1, 1, 2), 35, seed=3)))
    shares = [trainer._RankBatchSource(data, index_map, BatchAugment(flip_p=0.0), r, WORLD)
              [(3, 0, 0), batch] for r in range(WORLD)]
    for r, share in enumerate(shares):
        plain = data.batch(batch[r::WORLD])
        torch.testing.assert_close(share[0], plain.images)
        assert torch.equal(share[1], plain.labels)
        assert share[4].tolist() == [15 + 5, 5 + 5, 10]  # the global batch's cls, box, lmk
    assert sum(len(s[1]) for s in shares) == 35
    as_faces = trainer._RankBatchSource(data, index_map, BatchAugment(flip_p=0.0), 0, WORLD,
                                        landmark_positives=True)[(3, 0, 0), batch]
    assert as_faces[4].tolist() == [15 + 5 + 10, 5 + 5, 10]  # landmark samples classified
    # flips are drawn per rank, the same on every call
    flip = [trainer._RankBatchSource(data, index_map, BatchAugment(flip_p=0.5), r, WORLD)
            for r in range(WORLD)]
    a, b = flip[0][(3, 0, 0), batch], flip[0][(3, 0, 0), batch]
    torch.testing.assert_close(a[0], b[0])
    assert not torch.equal(a[0], shares[0][0])


def test_shard_losses_average_to_the_global_gradient() -> None:
    """What DDP averages (the gradients of each rank's weighted loss) is the gradient of
    the whole batch's loss (without OHEM), also when a share lacks a task."""
    torch.manual_seed(0)
    net = nets.create("onet")
    images = torch.randn(11, 3, 48, 48)
    labels = torch.tensor([0, 1, -1, -2, 0, 0, 1, -2, -2, -1, 0])
    boxes, landmarks = torch.randn(11, 4), torch.randn(11, 10)
    loss = stage_loss("onet", ohem_ratio=1.0)

    def grads(total: torch.Tensor) -> list[torch.Tensor]:
        net.zero_grad(set_to_none=True)
        total.backward()
        return [p.grad.clone() for p in net.parameters()]

    whole = grads(loss(net(images), labels, boxes, landmarks).total)
    counts = [6, 4, 3]  # cls (4 neg + 2 pos), box (2 pos + 2 part), landmark samples
    shares = [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [0, 4, 5]]  # the last: no box, no lmk
    for world, split in ((2, shares[:2]), (1, [list(range(11))])):
        summed = [torch.zeros_like(g) for g in whole]
        for idx in split:
            out = net(images[idx])
            parts = loss(out, labels[idx], boxes[idx], landmarks[idx])
            for s, g in zip(summed, grads(shard_total(parts, loss, out, counts, world)),
                            strict=True):
                s += g / world
        for s, g in zip(summed, whole, strict=True):
            torch.testing.assert_close(s, g)
    out = net(images[shares[2]])  # a share without box or landmark samples still reaches
    parts = loss(out, labels[shares[2]], boxes[shares[2]], landmarks[shares[2]])
    assert all(g is not None for g in grads(shard_total(parts, loss, out, counts, 2)))


# --- two processes ------------------------------------------------------------------------


def test_two_ranks_train_like_one_process(shards: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ranks draw the same global batches and each trains on half of every batch;
    with the loss weighted by each rank's share, DDP's averaged gradient is the gradient
    of the whole batch, so the weights are those of one process. Exact only without OHEM
    (each rank keeps the hardest 70 % of its own half, not of the whole batch) and without
    augmentation (each rank draws its own flips), hence ``ohem_ratio=1`` and ``flip_p=0``."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    config = settings(ohem_ratio=1.0, augment={"flip_p": 0.0})
    single: list[trainer.TrainResult] = []

    def one_process() -> None:  # runs here while the ranks start
        single.append(train_stage(TrainConfig.from_dict(config), shards, None,
                                  tmp_path / "one", echo=None))

    results = run_ranks(shards, tmp_path, [("ddp", config, False)], meanwhile=one_process)
    check_ranks_agree(results)
    last = check_outputs(tmp_path / "ddp", epochs=3)
    reference = torch.load(single[0].last_path, weights_only=True)["model"]
    for k, v in reference.items():
        torch.testing.assert_close(last["model"][k], v, rtol=1e-4, atol=1e-5,
                                   msg=lambda m, k=k: f"{k}: {m}")
    h, h1 = results[0][0]["history"], single[0].history
    assert h[-1]["train_cls_loss"] < h[0]["train_cls_loss"]
    assert h[-1]["val_cls_loss"] < h[0]["val_cls_loss"]
    for row, row1 in zip(h, h1, strict=True):  # the table is that of the global batches
        for key in ("train_cls_loss", "train_box_loss", "train_cls_acc", "val_cls_loss",
                    "val_box_loss", "val_cls_acc", "val_pos_recall"):
            assert row[key] == pytest.approx(row1[key], rel=1e-4, abs=1e-6), key
    assert math.isnan(h[0]["train_landmark_loss"])


def test_two_ranks_with_ohem_and_augmentation_resume(shards: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Default OHEM and flips, in a process group the caller set up: the net learns, a
    run stopped after epoch 0 and resumed under DDP ends with the weights of an
    uninterrupted DDP run, and a single process can resume a DDP run."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    whole = settings(epochs=2, schedule="step", step_epochs=5)
    jobs = [("whole", whole, False), ("split", {**whole, "epochs": 1}, False),
            ("split", whole, True), ("split", {**whole, "lr": 0.5}, True)]
    results = run_ranks(shards, tmp_path, jobs, own_group=True)
    check_ranks_agree(results)
    assert [r["epochs_run"] for r in results[0][:3]] == [2, 1, 1]
    for rank in results:  # refused settings: every rank raises, none is left waiting
        assert "different settings" in rank[3]["error"]
    a = check_outputs(tmp_path / "whole", epochs=2)
    b = check_outputs(tmp_path / "split", epochs=2)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["history"][1]["val_cls_loss"] == b["history"][1]["val_cls_loss"]
    h = a["history"]
    assert h[-1]["train_cls_loss"] < h[0]["train_cls_loss"]
    # a DDP checkpoint resumes in one process
    more = train_stage(TrainConfig.from_dict({**whole, "epochs": 3}), shards, None,
                       tmp_path / "whole", resume=True, echo=None)
    assert more.epochs_run == 1 and len(more.history) == 3
    assert same_rows(more.history[:2], h)
