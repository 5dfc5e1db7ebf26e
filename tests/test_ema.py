"""The moving average of a net's weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtcnnkit.train.ema import WeightAverage


def constant_net(value: float) -> nn.Module:
    net = nn.Linear(3, 2)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(value)
    return net


def test_average_follows_the_ramped_decay() -> None:
    net = constant_net(0.0)
    average = WeightAverage(net, decay=0.5)
    expected = 0.0
    for n, value in enumerate([4.0, 8.0, 2.0, 6.0]):
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(value)
        keep = min(0.5, (1 + n) / (10 + n))  # 0.1, 0.18.., 0.25, 0.3..: below 0.5 throughout
        assert average.next_decay() == pytest.approx(keep)
        average.update(net)
        expected = keep * expected + (1 - keep) * value
        for p in average.net.parameters():
            assert torch.allclose(p, torch.full_like(p, expected))
    assert average.updates == 4
    # the copy is independent of the net, needs no gradients and is in eval mode
    assert all(not p.requires_grad for p in average.net.parameters())
    assert not average.net.training and net.training
    assert net.weight[0, 0].item() == 6.0


def test_decay_caps_the_ramp() -> None:
    average = WeightAverage(constant_net(0.0), decay=0.2)
    average.updates = 1000
    assert average.next_decay() == 0.2


def test_state_round_trip_and_bad_input() -> None:
    net = constant_net(1.0)
    average = WeightAverage(net, decay=0.9)
    average.update(constant_net(3.0))
    restored = WeightAverage(constant_net(0.0), decay=0.9)
    restored.load_state_dict(average.state_dict())
    assert restored.updates == 1
    assert torch.equal(restored.net.weight, average.net.weight)
    for decay in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="decay"):
            WeightAverage(net, decay)
    with pytest.raises(ValueError, match="does not match"):
        average.update(nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2)))
