"""Training loop on tiny synthetic shards: sampler, config, learning, checkpoints, resume."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from mtcnnkit import nets
from mtcnnkit.data.shards import Samples, ShardWriter
from mtcnnkit.train.metrics import EpochMetrics, append_csv, read_csv
from mtcnnkit.train.trainer import (
    BalancedBatchSampler,
    TrainConfig,
    _is_better,
    batch_quotas,
    split_validation,
    train_stage,
    with_feature_dropout,
)
from mtcnnkit.weights import is_net_file, load_net, load_weights, net_digest

torch.set_num_threads(2)


def synthetic_samples(rng: np.random.Generator, size: int, labels: np.ndarray) -> Samples:
    """Faces are a bright square whose position the box targets describe; negatives are
    dark noise; landmark samples carry the square's corners as landmarks."""
    n = len(labels)
    images = rng.integers(0, 90, (n, size, size, 3)).astype(np.uint8)
    boxes = np.zeros((n, 4), np.float32)
    landmarks = np.zeros((n, 10), np.float32)
    for i, label in enumerate(labels):
        if label == 0:
            continue
        shift = rng.uniform(-0.2, 0.2, 2) if label != -1 else rng.uniform(-0.45, 0.45, 2)
        x0, y0 = (0.25 + shift) * size
        x1, y1 = x0 + size / 2, y0 + size / 2
        a, b = max(0, round(x0)), max(0, round(y0))
        images[i, b: max(b, round(y1)), a: max(a, round(x1))] = 220
        boxes[i] = [x0 / size, y0 / size, x1 / size - 1, y1 / size - 1]
        if label == -2:
            landmarks[i] = np.r_[[x0, x1, (x0 + x1) / 2, x0, x1], [y0, y0, (y0 + y1) / 2,
                                                                   y1, y1]] / size
    return Samples(images, labels.astype(np.int8), boxes, landmarks,
                   np.zeros((n, 4), np.float32))


def write_shards(root: Path, size: int, n_items: int, per_item: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    pattern = np.array([0, 0, 0, 1, -1, -2, -2, 0, 1, -1])
    with ShardWriter(root, size, samples_per_shard=120, seed=seed) as writer:
        for _ in range(n_items):
            labels = rng.permutation(np.resize(pattern, per_item))
            writer.add(synthetic_samples(rng, size, labels))
    return root


@pytest.fixture(scope="module")
def shards12(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shards(tmp_path_factory.mktemp("s12"), 12, 30, 10, seed=1)


@pytest.fixture(scope="module")
def shards48(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shards(tmp_path_factory.mktemp("s48"), 48, 20, 10, seed=2)


# --- sampler ---------------------------------------------------------------------------


def labels_of(neg: int, pos: int, part: int, lmk: int) -> np.ndarray:
    return np.random.default_rng(0).permutation(
        np.r_[np.zeros(neg), np.ones(pos), -np.ones(part), np.full(lmk, -2)].astype(int))


def test_batch_quotas() -> None:
    assert batch_quotas([3, 1, 1, 2], 70) == [30, 10, 10, 20]
    assert batch_quotas([3, 1, 1, 2], 8) == [4, 1, 1, 2]
    assert sum(batch_quotas([3, 1, 1, 2], 13)) == 13


def test_sampler_ratio_per_batch() -> None:
    labels = labels_of(300, 100, 100, 200)
    sampler = BalancedBatchSampler(labels, (3, 1, 1, 2), 70, seed=0)
    assert len(sampler) == 700 // 70
    for batch in sampler:
        assert len(batch) == 70
        assert Counter(labels[batch].tolist()) == {0: 30, 1: 10, -1: 10, -2: 20}
        assert len(set(batch.tolist())) == 70  # enough samples: no repeats within a batch


def test_sampler_absent_class_renormalises_and_short_class_repeats() -> None:
    labels = labels_of(300, 3, 100, 0)
    sampler = BalancedBatchSampler(labels, (3, 1, 1, 2), 50, seed=0, num_batches=4)
    pos_seen = set()
    for batch in sampler:
        assert Counter(labels[batch].tolist()) == {0: 30, 1: 10, -1: 10}
        pos_seen |= {int(i) for i in batch if labels[i] == 1}
    assert pos_seen == set(np.flatnonzero(labels == 1).tolist())
    # a zero ratio drops a class too
    zero = BalancedBatchSampler(labels_of(30, 10, 10, 20), (3, 1, 1, 0), 10, seed=0)
    assert all(-2 not in labels_of(30, 10, 10, 20)[b] for b in zero)


def test_sampler_is_deterministic_per_seed_and_epoch() -> None:
    labels = labels_of(300, 100, 100, 200)

    def batches(seed: int, epoch: int) -> list[list[int]]:
        s = BalancedBatchSampler(labels, (3, 1, 1, 2), 70, seed=seed)
        s.set_epoch(epoch)
        return [b.tolist() for b in s]

    assert batches(0, 0) == batches(0, 0)
    assert batches(0, 3) == batches(0, 3)
    assert batches(0, 0) != batches(0, 1)
    assert batches(0, 0) != batches(1, 0)


# --- config, split, metrics --------------------------------------------------------------


def test_config_from_dict() -> None:
    c = TrainConfig.from_dict({"stage": "onet", "batch_ratio": [3, 1, 1, 2], "lr": 0.01})
    assert c.arch == "onet" and c.batch_ratio == (3.0, 1.0, 1.0, 2.0) and c.lr == 0.01
    for bad in ({"stagee": "pnet"}, {"stage": "pnet", "arch": "onet"},
                {"optimizer": "lbfgs"}, {"schedule": "poly"}, {"batch_ratio": [0, 0, 0, 0]},
                {"loss_weights": [1, 2]}, {"loss_weights": [0, 1, 1]},
                {"loss_weights": [1, -1, 1]}, {"dropout": 1.0}, {"dropout": -0.1},
                {"ema_decay": 1.0}, {"ema_decay": -0.1}, {"face_weight": 0}):
        with pytest.raises(ValueError):
            TrainConfig.from_dict(bad)
    w = TrainConfig.from_dict({"stage": "rnet", "loss_weights": [1, 2, 0]})
    assert w.loss_weights == (1.0, 2.0, 0.0) and w.to_dict()["loss_weights"] == [1.0, 2.0, 0.0]
    assert TrainConfig().loss_weights is None and TrainConfig().to_dict()["loss_weights"] is None


def test_validation_split_by_item(shards12: Path) -> None:
    from mtcnnkit.data.shards import ShardDataset

    data = ShardDataset(shards12)
    train, val = split_validation(data, 0.2, seed=0)
    assert len(train) + len(val) == len(data) == 300
    assert len(val) == 60
    assert not set(data.items[train].tolist()) & set(data.items[val].tolist())


def test_metrics_accumulator_and_csv(tmp_path: Path) -> None:
    from mtcnnkit.train.losses import MultiTaskLoss

    m = EpochMetrics()
    labels = torch.tensor([1, 1, 0, 0, -1])
    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 9.0]])
    parts = MultiTaskLoss()((logits, torch.zeros(5, 4)), labels, torch.zeros(5, 4),
                            torch.zeros(5, 10))
    m.update(parts, logits, labels)
    row = m.as_row("val_")
    assert row["val_cls_acc"] == 0.5 and row["val_pos_recall"] == 0.5
    assert row["val_box_loss"] == 0.0 and math.isnan(row["val_landmark_loss"])
    append_csv(tmp_path / "m.csv", {"epoch": 0, **row})
    append_csv(tmp_path / "m.csv", {"epoch": 1, **row})
    back = read_csv(tmp_path / "m.csv")
    assert [r["epoch"] for r in back] == [0.0, 1.0] and math.isnan(back[1]["val_landmark_loss"])


# --- training ------------------------------------------------------------------------------


def small(stage: str, **kw: object) -> TrainConfig:
    base = {"stage": stage, "epochs": 4, "batch_size": 35, "lr": 3e-3, "seed": 7,
            "val_fraction": 0.2}
    return TrainConfig.from_dict({**base, **kw})


def test_pnet_learns_and_writes_outputs(shards12: Path, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    result = train_stage(small("pnet"), shards12, None, tmp_path,
                         progress=lambda d, t: calls.append((d, t)), echo=None)
    h = result.history
    assert len(h) == 4 and result.epochs_run == 4
    assert h[-1]["train_cls_loss"] < h[0]["train_cls_loss"]
    assert h[-1]["val_cls_loss"] < h[0]["val_cls_loss"]
    assert calls[-1][0] == calls[-1][1] == len(calls)
    assert result.metrics_png.stat().st_size > 1000
    rows = read_csv(result.metrics_csv)
    assert len(rows) == 4
    assert {"train_cls_loss", "val_box_loss", "val_cls_acc", "val_pos_recall"} <= set(rows[0])
    assert math.isnan(rows[0]["train_landmark_loss"])  # PNet has no landmark head
    assert not list(tmp_path.glob(".tmp-*"))
    # best.pt is a per-net file that load_weights reads from a folder
    best = torch.load(result.best_path, weights_only=True)
    assert best["arch"] == "pnet" and best["epoch"] == result.best_epoch
    assert best["metrics"]["val_cls_loss"] == pytest.approx(min(r["val_cls_loss"] for r in h))
    nets.create("pnet").load_state_dict(best["state_dict"])
    folder = tmp_path / "cascade"
    folder.mkdir()
    (folder / "pnet.pt").write_bytes(result.best_path.read_bytes())
    for stage in ("rnet", "onet"):
        torch.save({"arch": stage, "state_dict": nets.create(stage).state_dict()},
                   folder / f"{stage}.pt")
    cascade = load_weights(folder)
    for k, v in best["state_dict"].items():
        assert torch.equal(cascade.pnet.state_dict()[k], v)
    last = torch.load(result.last_path, weights_only=True)
    nets.create("pnet").load_state_dict(last["model"])
    assert last["epoch"] == 3
    # the last.pt checkpoint is a net too (the last epoch's, where best.pt keeps the best)
    assert is_net_file(result.last_path) and is_net_file(result.best_path)
    arch, from_last = load_net(result.last_path, "pnet")
    assert arch == "pnet"
    assert all(torch.equal(from_last.state_dict()[k], v) for k, v in last["model"].items())
    (folder / "pnet.pt").write_bytes(result.last_path.read_bytes())
    assert net_digest(load_weights(folder).pnet) == net_digest(from_last)


def test_loss_weights_reach_the_training_loss(shards12: Path, tmp_path: Path) -> None:
    # box weight 0: the box head gets no gradient, so (Adam, no weight decay) it keeps its
    # initial values while the classifier learns; with the paper's weights both move
    initial = (torch.manual_seed(7), nets.create("pnet").state_dict())[1]
    moved = {}
    for name, weights in (("no_box", [1.0, 0.0, 0.0]), ("paper", None)):
        result = train_stage(small("pnet", epochs=1, weight_decay=0.0, loss_weights=weights),
                             shards12, None, tmp_path / name, echo=None)
        last = torch.load(result.last_path, weights_only=True)["model"]
        moved[name] = {k: not torch.equal(last[k], initial[k]) for k in ("cls.weight",
                                                                        "box.weight")}
    assert moved["no_box"] == {"cls.weight": True, "box.weight": False}
    assert moved["paper"] == {"cls.weight": True, "box.weight": True}


def test_trained_nets_hold_no_subnormal_values(shards12: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # a PNet whose box head starts with subnormal weights; with box weight 0 and no weight
    # decay nothing else would change them (previous test), so the trainer's flush must
    tiny = torch.finfo(torch.float32).tiny

    def pnet_with_subnormals() -> nets.PNet:
        net = nets.PNet()
        with torch.no_grad():
            net.box.weight.view(-1)[:3] = torch.tensor([tiny / 8, -tiny / 2, tiny * 2])
        return net

    monkeypatch.setitem(nets._REGISTRY, "pnet_subnormal", ("pnet", pnet_with_subnormals))
    result = train_stage(small("pnet", arch="pnet_subnormal", epochs=1, weight_decay=0.0,
                               loss_weights=[1.0, 0.0, 0.0]), shards12, None, tmp_path,
                         echo=None)
    for state in (torch.load(result.last_path, weights_only=True)["model"],
                  torch.load(result.best_path, weights_only=True)["state_dict"]):
        assert state["box.weight"].view(-1)[:3].tolist() == [0.0, 0.0, tiny * 2]


def test_feature_dropout_is_training_only_and_leaves_the_weights_alone() -> None:
    torch.manual_seed(0)
    plain = nets.create("onet")
    dropped = with_feature_dropout(nets.create("onet"), 0.5)
    dropped.load_state_dict(plain.state_dict())  # strict: the same keys, nothing added
    assert dropped.state_dict().keys() == plain.state_dict().keys()
    x = torch.rand(4, 3, 48, 48)
    with torch.no_grad():
        plain.eval()
        dropped.eval()
        for a, b in zip(plain(x), dropped(x), strict=True):
            assert torch.equal(a, b)
        dropped.train()
        first, second = dropped(x)[0], dropped(x)[0]
    assert not torch.equal(first, second)
    untouched = nets.create("pnet")
    assert with_feature_dropout(untouched, 0.0) is untouched
    assert not any(isinstance(m, torch.nn.Dropout) for m in untouched.modules())
    with pytest.raises(ValueError, match="body"):
        with_feature_dropout(torch.nn.Linear(2, 2), 0.25)


def test_dropout_changes_training_and_the_net_loads_as_its_arch(shards48: Path,
                                                                tmp_path: Path) -> None:
    states = {}
    for p in (0.0, 0.5):
        result = train_stage(small("onet", epochs=1, batch_size=28, dropout=p), shards48,
                             None, tmp_path / str(p), echo=None)
        states[p] = torch.load(result.best_path, weights_only=True)["state_dict"]
        nets.create("onet").load_state_dict(states[p])
        assert load_net(result.best_path, "onet")[0] == "onet"
    assert not torch.equal(states[0.0]["cls.weight"], states[0.5]["cls.weight"])


class Stop(Exception):
    pass


@pytest.mark.parametrize("optimizer, ema_decay", [("adam", 0.0), ("sgd", 0.9)])
def test_resume_is_exact(shards12: Path, tmp_path: Path, optimizer: str,
                         ema_decay: float) -> None:
    schedule = "step" if optimizer == "sgd" else "cosine"
    config = small("pnet", epochs=2, optimizer=optimizer, schedule=schedule, step_epochs=1,
                   ema_decay=ema_decay)
    whole = train_stage(config, shards12, None, tmp_path / "whole", echo=None)
    per_epoch = len(BalancedBatchSampler(np.zeros(240), (1, 0, 0, 0), 35))

    def interrupt(done: int, total: int) -> None:
        if done > per_epoch:  # die in the middle of the second epoch
            raise Stop

    with pytest.raises(Stop):
        train_stage(config, shards12, None, tmp_path / "split", progress=interrupt, echo=None)
    assert torch.load(tmp_path / "split" / "last.pt", weights_only=True)["epoch"] == 0
    resumed = train_stage(config, shards12, None, tmp_path / "split", resume=True, echo=None)
    assert resumed.epochs_run == 1 and len(resumed.history) == 2
    a = torch.load(whole.last_path, weights_only=True)
    b = torch.load(resumed.last_path, weights_only=True)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    if ema_decay:
        assert a["ema"]["updates"] == b["ema"]["updates"] == 2 * per_epoch
        for k, v in a["ema"]["net"].items():
            assert torch.equal(v, b["ema"]["net"][k]), k
    assert a["history"][1]["val_cls_loss"] == b["history"][1]["val_cls_loss"]
    # a finished run resumes to a no-op; other settings are refused
    again = train_stage(config, shards12, None, tmp_path / "split", resume=True, echo=None)
    assert again.epochs_run == 0
    with pytest.raises(ValueError, match="different settings"):
        train_stage(small("pnet", epochs=2, lr=0.5), shards12, None, tmp_path / "split",
                    resume=True, echo=None)
    # a checkpoint from before a setting existed resumes with that setting's default
    ckpt = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    del ckpt["config"]["loss_weights"], ckpt["config"]["augment"]["downscale_landmarks"]
    torch.save(ckpt, tmp_path / "split" / "last.pt")
    assert train_stage(config, shards12, None, tmp_path / "split", resume=True,
                       echo=None).epochs_run == 0


def test_onet_trains_landmarks_with_val_root(shards48: Path, tmp_path: Path) -> None:
    config = small("onet", epochs=3, batch_size=28, regression="wing", best_metric="cls_acc")
    result = train_stage(config, shards48, shards48, tmp_path, echo=None)
    h = result.history
    assert all(not math.isnan(r["train_landmark_loss"]) for r in h)
    assert all(not math.isnan(r["val_landmark_loss"]) for r in h)
    assert h[-1]["train_cls_loss"] + h[-1]["train_landmark_loss"] < (
        h[0]["train_cls_loss"] + h[0]["train_landmark_loss"])
    best = torch.load(result.best_path, weights_only=True)
    assert best["metrics"]["val_cls_acc"] == max(r["val_cls_acc"] for r in h)
    nets.create("onet").load_state_dict(best["state_dict"])


def test_best_metric_last_keeps_the_final_epoch(shards12: Path, tmp_path: Path) -> None:
    result = train_stage(small("pnet", epochs=3, best_metric="last"), shards12, None,
                         tmp_path, echo=None)
    h = result.history
    assert result.best_epoch == len(h) - 1 == 2
    assert result.best_value == h[-1]["val_cls_loss"]
    best = torch.load(result.best_path, weights_only=True)
    last = torch.load(result.last_path, weights_only=False)
    assert best["epoch"] == 2
    for name, tensor in last["model"].items():
        assert torch.equal(best["state_dict"][name], tensor)
    # whatever the loss did: a worse value than the best so far still wins under "last"
    assert _is_better(1.0, 0.1, "last") and not _is_better(1.0, 0.1, "cls_loss")
    with pytest.raises(ValueError, match="best_metric"):
        small("pnet", best_metric="final")


def test_best_metric_can_change_on_resume_when_its_net_was_kept(shards12: Path,
                                                                 tmp_path: Path) -> None:
    first = train_stage(small("pnet", epochs=3), shards12, None, tmp_path, echo=None)
    switched = train_stage(small("pnet", epochs=3, best_metric="last"), shards12, None,
                           tmp_path, resume=True, echo=None)
    assert switched.epochs_run == 0 and switched.best_epoch == 2
    assert [r["val_cls_loss"] for r in switched.history] == [
        r["val_cls_loss"] for r in first.history]
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert best["epoch"] == 2 and last["best_epoch"] == 2
    assert last["config"]["best_metric"] == "last"
    for name, tensor in last["model"].items():
        assert torch.equal(best["state_dict"][name], tensor)
    # back to cls_loss: fine when the lowest loss is the kept epoch, refused when it is not
    for lowest, ok in ((2, True), (0, False)):
        last["history"] = [{**row, "val_cls_loss": 0.1 if int(row["epoch"]) == lowest else 0.9}
                           for row in first.history]
        torch.save(last, tmp_path / "last.pt")
        if ok:
            back = train_stage(small("pnet", epochs=3), shards12, None, tmp_path,
                               resume=True, echo=None)
            assert back.best_epoch == 2 and back.best_value == 0.1
        else:
            with pytest.raises(ValueError, match="picks epoch 0, whose net was not kept"):
                train_stage(small("pnet", epochs=3), shards12, None, tmp_path, resume=True,
                            echo=None)


def test_ema_is_what_is_validated_and_kept_and_leaves_training_alone(
        shards12: Path, tmp_path: Path) -> None:
    plain = train_stage(small("pnet", epochs=3), shards12, None, tmp_path / "plain", echo=None)
    averaged = train_stage(small("pnet", epochs=3, ema_decay=0.9), shards12, None,
                           tmp_path / "ema", echo=None)
    a = torch.load(plain.last_path, weights_only=True)
    b = torch.load(averaged.last_path, weights_only=True)
    assert a["ema"] is None
    for name, tensor in a["model"].items():  # the same training trajectory
        assert torch.equal(tensor, b["model"][name]), name
    # the val metrics are the average's: different figures, the train ones identical
    assert [r["train_cls_loss"] for r in plain.history] == [
        r["train_cls_loss"] for r in averaged.history]
    assert [r["val_cls_loss"] for r in plain.history] != [
        r["val_cls_loss"] for r in averaged.history]
    # switching to the final epoch keeps the average's net in best.pt, not the raw one
    switched = train_stage(small("pnet", epochs=3, ema_decay=0.9, best_metric="last"),
                           shards12, None, tmp_path / "ema", resume=True, echo=None)
    assert switched.best_epoch == 2
    best = torch.load(switched.best_path, weights_only=True)
    assert any(not torch.equal(t, b["model"][n]) for n, t in best["state_dict"].items())
    for name, tensor in b["ema"]["net"].items():
        assert torch.equal(best["state_dict"][name], tensor), name
    assert load_net(switched.best_path, "pnet")[0] == "pnet"


def test_size_mismatch_is_refused(shards48: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="48px"):
        train_stage(small("pnet"), shards48, None, tmp_path, echo=None)


def test_amp_is_ignored_on_cpu(shards12: Path, tmp_path: Path) -> None:
    result = train_stage(small("pnet", epochs=1, amp=True), shards12, None, tmp_path, echo=None)
    assert torch.load(result.last_path, weights_only=True)["scaler"] == {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_amp_on_cuda(shards48: Path, tmp_path: Path) -> None:
    config = small("onet", epochs=2, amp=True, device="cuda")
    result = train_stage(config, shards48, None, tmp_path, echo=None)
    assert all(math.isfinite(r["train_cls_loss"]) for r in result.history)
    assert torch.load(result.last_path, weights_only=True)["scaler"]
    nets.create("onet").load_state_dict(torch.load(result.best_path, weights_only=True)
                                        ["state_dict"])


def test_worker_processes_give_the_same_weights(shards12: Path, tmp_path: Path) -> None:
    a = train_stage(small("pnet", epochs=1), shards12, None, tmp_path / "a", echo=None)
    b = train_stage(small("pnet", epochs=1, num_workers=2), shards12, None, tmp_path / "b",
                    echo=None)
    ma = torch.load(a.last_path, weights_only=True)["model"]
    mb = torch.load(b.last_path, weights_only=True)["model"]
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


@pytest.mark.parametrize("landmark_positives", [False, True])
def test_pnet_batches_take_landmark_samples_only_as_positives(
        shards12: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        landmark_positives: bool) -> None:
    from mtcnnkit.train import trainer

    seen: list[np.ndarray] = []
    real = trainer.BalancedBatchSampler

    class Recording(real):  # type: ignore[misc, valid-type]
        def __iter__(self):  # type: ignore[no-untyped-def]
            for batch in super().__iter__():
                seen.append(self_labels[batch])
                yield batch

    def sampler(labels, *args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal self_labels
        self_labels = np.asarray(labels)
        return Recording(labels, *args, **kwargs)

    self_labels = np.zeros(0)
    monkeypatch.setattr(trainer, "BalancedBatchSampler", sampler)
    result = train_stage(small("pnet", epochs=1, landmark_positives=landmark_positives),
                         shards12, None, tmp_path, echo=None)
    drawn = np.concatenate(seen)
    assert (drawn == -2).any() == landmark_positives  # PNet has no landmark head
    assert math.isfinite(result.history[0]["train_cls_loss"])


def test_training_batches_are_augmented_by_key(shards12: Path) -> None:
    from mtcnnkit.data.augment import BatchAugment, mirror_box_targets
    from mtcnnkit.data.shards import ShardDataset
    from mtcnnkit.train.trainer import _BatchSource

    data = ShardDataset(shards12)
    idx = np.arange(len(data))
    plain = data.batch(idx[:50])
    always = _BatchSource(data, idx, BatchAugment(flip_p=1.0))[(0, 0, 0), idx[:50]]
    torch.testing.assert_close(always[0], plain.images.flip(-1))
    torch.testing.assert_close(always[2], torch.from_numpy(mirror_box_targets(
        plain.boxes.numpy())))
    off = _BatchSource(data, idx, BatchAugment(flip_p=0.0))[(0, 0, 0), idx[:50]]
    torch.testing.assert_close(off[0], plain.images)
    half = _BatchSource(data, idx, BatchAugment(flip_p=0.5))
    a, b = half[(0, 3, 1), idx[:50]], half[(0, 3, 1), idx[:50]]
    torch.testing.assert_close(a[0], b[0])
    assert not torch.equal(a[0], plain.images) and not torch.equal(a[0], always[0])


def test_unknown_augment_setting_is_an_error() -> None:
    with pytest.raises(ValueError, match="augment"):
        TrainConfig.from_dict({"augment": {"flip": 0.5}})
    assert TrainConfig.from_dict({"augment": {"flip_p": 0.0}}).augment.flip_p == 0.0
