"""The three MTCNN nets and a name -> constructor registry.

Every net returns raw outputs, never probabilities, so training can use them directly:
``(cls_logits (N, 2, ...), box_offsets (N, 4, ...)[, landmarks (N, 10)])``. Landmarks are
five x coordinates then five y coordinates, as fractions of the input crop.

Register a new variant with ``@register("name", stage)``; the cascade and the weights files
only know names, so lighter or larger nets plug in without touching them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

Stage = Literal["pnet", "rnet", "onet"]
STAGES: tuple[Stage, ...] = ("pnet", "rnet", "onet")
INPUT_SIZE: dict[Stage, int] = {"pnet": 12, "rnet": 24, "onet": 48}

_REGISTRY: dict[str, tuple[Stage, Callable[[], nn.Module]]] = {}  # name -> (stage, factory)


Factory = Callable[[], nn.Module]


def register(name: str, stage: Stage) -> Callable[[Factory], Factory]:
    """Class or factory decorator adding an architecture to the registry."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")

    def add(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is already registered")
        _REGISTRY[name] = (stage, factory)
        return factory

    return add


def available(stage: Stage | None = None) -> list[str]:
    """Registered architecture names, optionally only those of one stage."""
    return sorted(n for n, (s, _) in _REGISTRY.items() if stage is None or s == stage)


def stage_of(name: str) -> Stage:
    return _lookup(name)[0]


def create(name: str) -> nn.Module:
    """A freshly initialised net of the named architecture."""
    return _lookup(name)[1]()


def _lookup(name: str) -> tuple[Stage, Callable[[], nn.Module]]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; registered: {available()}") from None


def _conv_prelu(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k), nn.PReLU(cout)]


@register("pnet", "pnet")
class PNet(nn.Module):
    """Proposal net: fully convolutional, one 12x12 window per output cell (stride 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_prelu(3, 10, 3),
            nn.MaxPool2d(2, 2, ceil_mode=True),
            *_conv_prelu(10, 16, 3),
            *_conv_prelu(16, 32, 3),
        )
        self.cls = nn.Conv2d(32, 2, 1)
        self.box = nn.Conv2d(32, 4, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.body(x)
        return self.cls(x), self.box(x)


@register("rnet", "rnet")
class RNet(nn.Module):
    """Refinement net on 24x24 crops.

    ``channels`` are the three convolutions' widths and ``features`` the fully connected
    layer's; the defaults are the paper's net."""

    def __init__(self, channels: tuple[int, int, int] = (28, 48, 64),
                 features: int = 128) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.body = nn.Sequential(
            *_conv_prelu(3, c1, 3),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            *_conv_prelu(c1, c2, 3),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            *_conv_prelu(c2, c3, 2),
            nn.Flatten(),
            nn.Linear(c3 * 3 * 3, features),
            nn.PReLU(features),
        )
        self.cls = nn.Linear(features, 2)
        self.box = nn.Linear(features, 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.body(x)
        return self.cls(x), self.box(x)


@register("onet", "onet")
class ONet(nn.Module):
    """Output net on 48x48 crops, with 5-point landmarks.

    ``channels`` are the four convolutions' widths and ``features`` the shared fully
    connected layer's; the defaults are the paper's net."""

    def __init__(self, channels: tuple[int, int, int, int] = (32, 64, 64, 128),
                 features: int = 256) -> None:
        super().__init__()
        c1, c2, c3, c4 = channels
        self.body = nn.Sequential(
            *_conv_prelu(3, c1, 3),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            *_conv_prelu(c1, c2, 3),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            *_conv_prelu(c2, c3, 3),
            nn.MaxPool2d(2, 2, ceil_mode=True),
            *_conv_prelu(c3, c4, 2),
            nn.Flatten(),
            nn.Linear(c4 * 3 * 3, features),
            nn.PReLU(features),
        )
        self.cls = nn.Linear(features, 2)
        self.box = nn.Linear(features, 4)
        self.landmarks = nn.Linear(features, 10)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.body(x)
        return self.cls(x), self.box(x), self.landmarks(x)


@register("rnet_wide", "rnet")
def rnet_wide() -> RNet:
    """RNet with 1.5x the channels and features: about 2.1x the multiply-adds."""
    return RNet(channels=(42, 72, 96), features=192)


@register("onet_wide", "onet")
def onet_wide() -> ONet:
    """ONet with 1.5x the channels and features: about 2.1x the multiply-adds."""
    return ONet(channels=(48, 96, 96, 192), features=384)


def face_probability(cls_logits: Tensor) -> Tensor:
    """Probability of the face class from ``(N, 2, ...)`` logits."""
    return torch.softmax(cls_logits, dim=1)[:, 1]


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def zero_subnormals_(net: nn.Module) -> int:
    """Set the subnormal values of a net's floating-point parameters and buffers (nonzero but
    below the dtype's smallest normal number, about 1.2e-38 for float32) to zero, in place, and
    return how many there were.

    Weight decay leaves the weights of channels that stopped learning drifting towards zero
    until they are subnormal. On x86 CPUs an arithmetic operation with a subnormal operand
    takes a slow path: trained RNets with a few thousand such weights made the whole cascade
    over 2x slower on an Intel Xeon. Zero differs from them by less than 1.2e-38.
    """
    count = 0
    with torch.no_grad():
        for tensor in (*net.parameters(), *net.buffers()):
            if not tensor.is_floating_point():
                continue
            subnormal = (tensor != 0) & (tensor.abs() < torch.finfo(tensor.dtype).tiny)
            n = int(subnormal.sum())
            if n:
                tensor.masked_fill_(subnormal, 0)
                count += n
    return count
