"""An exponential moving average (EMA) of a net's weights, updated after every optimiser step.

The average is often a better net than the last step's weights: it smooths the step-to-step
noise of the optimiser. The decay ramps up over the first updates, ``min(decay, (1 + n) /
(10 + n))`` after ``n`` updates, so the start's random weights are forgotten quickly. Buffers
(none in the MTCNN nets) are copied, not averaged.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


class WeightAverage:
    """The moving average of ``net``'s weights, held in a copy of ``net`` (:attr:`net`, in
    eval mode, no gradients)."""

    def __init__(self, net: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.net = copy.deepcopy(net).eval().requires_grad_(False)
        self.updates = 0

    def next_decay(self) -> float:
        """The weight the average keeps at the next :meth:`update`."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """Move the average towards ``net``'s current weights (same architecture)."""
        keep = self.next_decay()
        mine = list(self.net.parameters())
        theirs = [p.detach() for p in net.parameters()]
        if len(mine) != len(theirs):
            raise ValueError("the net does not match the averaged one")
        torch._foreach_lerp_(mine, theirs, 1.0 - keep)
        for own, other in zip(self.net.buffers(), net.buffers(), strict=True):
            own.copy_(other)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.updates = int(state["updates"])
