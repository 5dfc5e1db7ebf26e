"""Tests for mtcnnkit.nets (architectures, registry) and mtcnnkit.weights (load/save)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import mtcnnkit.weights as weights_module
from mtcnnkit import Detector, load_weights, nets
from mtcnnkit.nets import ONet, PNet, RNet, available, create, register
from mtcnnkit.reference import find_reference_dir
from mtcnnkit.weights import CascadeNets, from_reference_layout, save_weights

# --------------------------------------------------------------------------- architectures


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(("cls", "count"), [(PNet, 6_632), (RNet, 100_178), (ONet, 389_040)])
def test_parameter_counts_match_the_paper(cls, count: int) -> None:
    assert n_params(cls()) == count


def test_pnet_on_one_window_gives_one_cell() -> None:
    logits, offsets = PNet().eval()(torch.zeros(1, 3, 12, 12))
    assert logits.shape == (1, 2, 1, 1)
    assert offsets.shape == (1, 4, 1, 1)


def test_pnet_map_size_on_30x40() -> None:
    # H x W = 30 x 40: conv3 -> 28 x 38, pool 2/2 ceil -> 14 x 19, conv3 -> 12 x 17,
    # conv3 -> 10 x 15
    logits, offsets = PNet().eval()(torch.zeros(2, 3, 30, 40))
    assert logits.shape == (2, 2, 10, 15)
    assert offsets.shape == (2, 4, 10, 15)


def test_rnet_and_onet_batch_shapes() -> None:
    logits, offsets = RNet().eval()(torch.zeros(5, 3, 24, 24))
    assert logits.shape == (5, 2)
    assert offsets.shape == (5, 4)
    logits, offsets, landmarks = ONet().eval()(torch.zeros(7, 3, 48, 48))
    assert logits.shape == (7, 2)
    assert offsets.shape == (7, 4)
    assert landmarks.shape == (7, 10)


def onet_parameters(c1: int, c2: int, c3: int, c4: int, features: int) -> int:
    """ONet's parameter count from its layer widths, counted by hand: conv weights and
    biases plus one PReLU slope per channel, then the dense layer and the three heads."""
    convs = [(3, c1, 3), (c1, c2, 3), (c2, c3, 3), (c3, c4, 2)]
    total = sum(cin * cout * k * k + 2 * cout for cin, cout, k in convs)
    total += c4 * 3 * 3 * features + 2 * features
    return total + (features + 1) * (2 + 4 + 10)


def test_wide_onet_has_half_as_many_channels_again() -> None:
    assert onet_parameters(32, 64, 64, 128, 256) == n_params(ONet())  # the counter is right
    wide = create("onet_wide")
    assert "onet_wide" in available("onet") and nets.stage_of("onet_wide") == "onet"
    assert n_params(wide) == onet_parameters(48, 96, 96, 192, 384)
    logits, offsets, landmarks = wide.eval()(torch.zeros(3, 3, 48, 48))
    assert (logits.shape, offsets.shape, landmarks.shape) == ((3, 2), (3, 4), (3, 10))


def rnet_parameters(c1: int, c2: int, c3: int, features: int) -> int:
    """RNet's parameter count from its layer widths, counted as for ONet above."""
    convs = [(3, c1, 3), (c1, c2, 3), (c2, c3, 2)]
    total = sum(cin * cout * k * k + 2 * cout for cin, cout, k in convs)
    total += c3 * 3 * 3 * features + 2 * features
    return total + (features + 1) * (2 + 4)


def test_wide_rnet_has_half_as_many_channels_again() -> None:
    assert rnet_parameters(28, 48, 64, 128) == n_params(RNet())  # the counter is right
    wide = create("rnet_wide")
    assert "rnet_wide" in available("rnet") and nets.stage_of("rnet_wide") == "rnet"
    assert n_params(wide) == rnet_parameters(42, 72, 96, 192)
    logits, offsets = wide.eval()(torch.zeros(3, 3, 24, 24))
    assert (logits.shape, offsets.shape) == ((3, 2), (3, 4))


def test_face_probability_is_softmax_of_face_class() -> None:
    logits = torch.tensor([[0.0, 0.0], [0.0, 2.0], [3.0, -1.0]])
    expected = [0.5, 1 / (1 + torch.e**-2), 1 / (1 + torch.e**4)]
    assert nets.face_probability(logits).tolist() == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------- registry


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test vanish afterwards."""
    monkeypatch.setattr(nets, "_REGISTRY", dict(nets._REGISTRY))


def test_registry_lists_and_creates_the_original_nets() -> None:
    assert {"pnet", "rnet", "onet"} <= set(available())
    assert available() == sorted(available())
    assert "pnet" in available("pnet") and "rnet" not in available("pnet")
    assert "onet" in available("onet")
    assert isinstance(create("pnet"), PNet)
    assert isinstance(create("rnet"), RNet)
    assert isinstance(create("onet"), ONet)
    assert create("pnet") is not create("pnet")  # fresh nets


def test_unknown_architecture_lists_registered_names() -> None:
    with pytest.raises(KeyError) as excinfo:
        create("no-such-net")
    message = str(excinfo.value)
    assert "no-such-net" in message
    for name in ("pnet", "rnet", "onet"):
        assert name in message


def test_register_adds_a_variant(isolated_registry: None) -> None:
    @register("tiny-pnet-for-tests", "pnet")
    class TinyPNet(PNet):
        pass

    assert "tiny-pnet-for-tests" in available("pnet")
    assert "tiny-pnet-for-tests" not in available("rnet")
    assert isinstance(create("tiny-pnet-for-tests"), TinyPNet)
    assert nets.stage_of("tiny-pnet-for-tests") == "pnet"


def test_duplicate_registration_raises(isolated_registry: None) -> None:
    with pytest.raises(ValueError, match="pnet"):
        register("pnet", "pnet")(PNet)
    register("twice-for-tests", "rnet")(RNet)
    with pytest.raises(ValueError, match="twice-for-tests"):
        register("twice-for-tests", "rnet")(RNet)


def test_register_unknown_stage_raises(isolated_registry: None) -> None:
    with pytest.raises(ValueError, match="stage"):
        register("qnet-for-tests", "qnet")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- weights files

INPUTS = {"pnet": (2, 3, 25, 31), "rnet": (4, 3, 24, 24), "onet": (4, 3, 48, 48)}


def random_cascade(seed: int) -> CascadeNets:
    torch.manual_seed(seed)
    built = {s: create(s) for s in nets.STAGES}
    with torch.no_grad():  # PReLU slopes start equal; make every parameter distinct
        for net in built.values():
            for p in net.parameters():
                p.copy_(torch.randn_like(p) * 0.1)
    return CascadeNets(**built, source="test")


def outputs(net: nn.Module, stage: str) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(123)
    with torch.no_grad():
        return net.eval()(torch.randn(INPUTS[stage]))


def assert_same_outputs(a: CascadeNets, b: CascadeNets, atol: float = 0.0) -> None:
    for stage in nets.STAGES:
        for x, y in zip(outputs(a.stage(stage), stage), outputs(b.stage(stage), stage),
                        strict=True):
            torch.testing.assert_close(x, y, atol=atol, rtol=0)


def test_save_then_load_file_round_trip(tmp_path: Path) -> None:
    original = random_cascade(0)
    path = save_weights(original, tmp_path / "cascade.pt", meta={"note": "round trip"})
    assert path == tmp_path / "cascade.pt" and path.is_file()
    assert not list(tmp_path.glob("*.part"))  # atomic write leaves nothing behind
    loaded = load_weights(path)
    assert_same_outputs(original, loaded)
    assert loaded.meta == {"note": "round trip"}
    for stage in nets.STAGES:
        net = loaded.stage(stage)
        assert not net.training
        assert not any(p.requires_grad for p in net.parameters())
    assert load_weights(str(path)).meta == {"note": "round trip"}  # str paths too


def test_save_accepts_a_dict_of_modules(tmp_path: Path) -> None:
    original = random_cascade(1)
    modules = {s: original.stage(s) for s in nets.STAGES}
    loaded = load_weights(save_weights(modules, tmp_path / "w.pt"))
    assert_same_outputs(original, loaded)


def test_a_wider_onet_round_trips_and_detects(tmp_path: Path) -> None:
    original = random_cascade(2)
    torch.manual_seed(2)
    original.onet = create("onet_wide").eval()
    path = save_weights(original, tmp_path / "wide.pt", archs={"onet": "onet_wide"})
    assert torch.load(path, weights_only=True)["nets"]["onet"]["arch"] == "onet_wide"
    loaded = load_weights(path)
    assert loaded.archs == {"pnet": "pnet", "rnet": "rnet", "onet": "onet_wide"}
    assert n_params(loaded.onet) == n_params(create("onet_wide"))
    assert_same_outputs(original, loaded)
    # a loaded cascade saved again keeps its architecture names without being told them
    again = load_weights(save_weights(loaded, tmp_path / "again.pt"))
    assert again.archs["onet"] == "onet_wide"
    assert_same_outputs(original, again)
    # every net passes all: the detector's cascade runs the wide ONet through to faces
    for stage in nets.STAGES:
        head = loaded.stage(stage).cls
        with torch.no_grad():
            head.weight.zero_()
            head.bias.copy_(torch.tensor([-5.0, 5.0]))
    faces = Detector(loaded, thresholds=(0.5, 0.5, 0.5)).detect(
        np.zeros((60, 80, 3), dtype=np.uint8))
    assert faces and all(len(f.landmarks) == 5 for f in faces)


def test_subnormal_weights_are_zeroed(tmp_path: Path) -> None:
    tiny = torch.finfo(torch.float32).tiny  # the smallest normal float32
    rnet = create("rnet")
    with torch.no_grad():
        rnet.body[0].weight.view(-1)[:4] = torch.tensor([tiny / 4, -tiny / 1000, tiny, -1e-30])
    before = {k: v.clone() for k, v in rnet.state_dict().items()}
    path = tmp_path / "rnet.pt"
    torch.save({"arch": "rnet", "state_dict": before}, path)
    # loading zeroes exactly the subnormal values; normal ones, however small, stay
    _, loaded = weights_module.load_net(path, "rnet")
    first = loaded.body[0].weight.view(-1)[:4].tolist()
    assert first == [0.0, 0.0, tiny, pytest.approx(-1e-30, rel=1e-6)]
    for key, value in loaded.state_dict().items():
        expected = before[key].clone()
        if key == "body.0.weight":
            expected.view(-1)[:2] = 0
        assert torch.equal(value, expected), key
    # the in-place helper reports how many it zeroed
    assert nets.zero_subnormals_(rnet) == 2
    assert nets.zero_subnormals_(rnet) == 0


def test_directory_of_per_net_files(tmp_path: Path) -> None:
    original = random_cascade(2)
    for stage in nets.STAGES:
        torch.save({"arch": stage, "state_dict": original.stage(stage).state_dict()},
                   tmp_path / f"{stage}.pt")
    assert_same_outputs(original, load_weights(tmp_path))


# facenet-pytorch parameter names, in the order its modules define them
FACENET_KEYS = {
    "pnet": ["conv1.weight", "conv1.bias", "prelu1.weight", "conv2.weight", "conv2.bias",
             "prelu2.weight", "conv3.weight", "conv3.bias", "prelu3.weight",
             "conv4_1.weight", "conv4_1.bias", "conv4_2.weight", "conv4_2.bias"],
    "rnet": ["conv1.weight", "conv1.bias", "prelu1.weight", "conv2.weight", "conv2.bias",
             "prelu2.weight", "conv3.weight", "conv3.bias", "prelu3.weight",
             "dense4.weight", "dense4.bias", "prelu4.weight", "dense5_1.weight",
             "dense5_1.bias", "dense5_2.weight", "dense5_2.bias"],
    "onet": ["conv1.weight", "conv1.bias", "prelu1.weight", "conv2.weight", "conv2.bias",
             "prelu2.weight", "conv3.weight", "conv3.bias", "prelu3.weight",
             "conv4.weight", "conv4.bias", "prelu4.weight", "dense5.weight", "dense5.bias",
             "prelu5.weight", "dense6_1.weight", "dense6_1.bias", "dense6_2.weight",
             "dense6_2.bias", "dense6_3.weight", "dense6_3.bias"],
}
# input (channels, height, width) of the first dense layer
FLATTEN = {"rnet": ("dense4.weight", 64, 3, 3), "onet": ("dense5.weight", 128, 3, 3)}


def to_facenet_layout(stage: str, net: nn.Module) -> dict[str, torch.Tensor]:
    """Our net's weights as facenet-pytorch stores them. facenet flattens the last feature
    map after ``permute(0, 3, 2, 1)``, i.e. in (width, height, channel) order, so its first
    dense layer's column ``w*H*C + h*C + c`` is our column ``c*H*W + h*W + w``."""
    state = dict(zip(FACENET_KEYS[stage], net.state_dict().values(), strict=True))
    if stage in FLATTEN:
        key, c, h, w = FLATTEN[stage]
        ours = state[key]
        state[key] = ours.view(-1, c, h, w).permute(0, 3, 2, 1).reshape(ours.shape[0], -1)
    return state


def test_directory_of_facenet_state_dicts_is_converted(tmp_path: Path) -> None:
    original = random_cascade(3)
    for stage in nets.STAGES:
        torch.save(to_facenet_layout(stage, original.stage(stage)), tmp_path / f"{stage}.pt")
    assert_same_outputs(original, load_weights(tmp_path), atol=1e-6)


def test_from_reference_layout_rejects_foreign_keys() -> None:
    with pytest.raises(ValueError, match="unexpected key"):
        from_reference_layout("pnet", {"fc9.weight": torch.zeros(1)})


def test_corrupt_file_raises_value_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(b"this is not a torch file")
    with pytest.raises(ValueError, match="broken.pt"):
        load_weights(path)


def test_corrupt_file_in_directory_names_that_file(tmp_path: Path) -> None:
    original = random_cascade(4)
    for stage in nets.STAGES:
        torch.save({"arch": stage, "state_dict": original.stage(stage).state_dict()},
                   tmp_path / f"{stage}.pt")
    (tmp_path / "rnet.pt").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="rnet.pt"):
        load_weights(tmp_path)


def test_file_that_is_not_mtcnnkit_weights_raises(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"some": "dict"}, path)
    with pytest.raises(ValueError, match="other.pt"):
        load_weights(path)


def test_weights_of_the_wrong_stage_raise(tmp_path: Path) -> None:
    original = random_cascade(5)
    modules = {"pnet": original.rnet, "rnet": original.rnet, "onet": original.onet}
    with pytest.raises(ValueError, match="w.pt"):
        load_weights(save_weights(modules, tmp_path / "w.pt"))


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_weights(tmp_path / "nowhere.pt")


def test_directory_missing_a_net_raises_file_not_found(tmp_path: Path) -> None:
    original = random_cascade(6)
    for stage in ("pnet", "rnet"):
        torch.save({"arch": stage, "state_dict": original.stage(stage).state_dict()},
                   tmp_path / f"{stage}.pt")
    with pytest.raises(FileNotFoundError, match="onet.pt"):
        load_weights(tmp_path)


BUNDLED = Path(weights_module.__file__).parent / "mtcnnkit.pt"


@pytest.mark.skipif(BUNDLED.exists(), reason="bundled weights exist: 'default' loads them")
def test_default_weights_missing_gives_helpful_error() -> None:
    with pytest.raises(FileNotFoundError) as excinfo:
        load_weights("default")
    message = str(excinfo.value)
    assert "reference" in message
    assert "fetch-reference" in message


def recipe(config: dict) -> dict:
    """A pipeline config without the settings of where it ran, which do not change what it
    computes: the device and the worker process counts."""
    if isinstance(config, dict):
        return {k: recipe(v) for k, v in config.items() if k not in ("device", "workers")}
    return config


@pytest.mark.skipif(not BUNDLED.exists(), reason="no bundled weights in this version")
def test_bundled_weights_load_and_describe_themselves() -> None:
    cascade = load_weights("default")
    assert cascade.source == str(BUNDLED)
    # the shipped ONet is the wide variant; PNet and RNet are the paper's nets
    assert cascade.archs == {"pnet": "pnet", "rnet": "rnet", "onet": "onet_wide"}
    wide = onet_parameters(48, 96, 96, 192, 384)
    for stage, n_params in (("pnet", 6632), ("rnet", 100178), ("onet", wide)):
        net = cascade.stage(stage)
        assert sum(p.numel() for p in net.parameters()) == n_params
        assert all(torch.isfinite(p).all() for p in net.parameters())
        assert not net.training
    # the weights carry the settings they were trained with and each net's best metrics
    assert set(cascade.meta["metrics"]) == {"pnet", "rnet", "onet"}
    # ... and those settings are the shipped defaults (configs/default.yaml): `mtcnnkit
    # train` with no options is the recipe of the model card. Keys newer than the weights take
    # today's defaults, which must then reproduce the weights' behaviour
    from mtcnnkit.train.pipeline import build_config, load_config

    assert recipe(build_config(cascade.meta["config"]).to_dict()) == recipe(
        load_config(None).to_dict())
    # they differ from the reference weights (ours are trained here, never copied)
    reference_dir = find_reference_dir()
    if reference_dir is not None:
        reference = load_weights(reference_dir)
        for stage in ("pnet", "rnet", "onet"):
            ours = cascade.stage(stage).state_dict()
            theirs = reference.stage(stage).state_dict()
            comparable = [k for k in ours
                          if ours[k].numel() > 8 and ours[k].shape == theirs[k].shape]
            # the wide ONet shares no tensor shape with the reference's: it cannot be a copy
            assert comparable or cascade.archs[stage] != stage
            assert all(not torch.allclose(ours[k], theirs[k]) for k in comparable)


def test_reference_weights_not_findable_says_how_to_get_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTCNNKIT_CACHE", str(tmp_path))
    monkeypatch.delenv("MTCNNKIT_REFERENCE_DIR", raising=False)
    for name in [m for m in sys.modules if m == "facenet_pytorch"
                 or m.startswith("facenet_pytorch.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(FileNotFoundError, match="fetch-reference"):
        load_weights("reference")


def test_reference_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = random_cascade(7)
    for stage in nets.STAGES:
        torch.save(to_facenet_layout(stage, original.stage(stage)), tmp_path / f"{stage}.pt")
    monkeypatch.setenv("MTCNNKIT_REFERENCE_DIR", str(tmp_path))
    assert_same_outputs(original, load_weights("reference"), atol=1e-6)
