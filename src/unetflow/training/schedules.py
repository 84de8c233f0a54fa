"""The optimizer and the per-epoch learning-rate schedule of a U-Net recipe.

Schedules are set per epoch: ``constant``; ``cosine`` from ``lr`` to ``min_lr``; ``poly``
(``lr * (1 - epoch/epochs) ** poly_power``, floored at ``min_lr``); ``plateau`` (lr times
``plateau_factor`` once ``plateau_patience`` epochs pass without a better ``select`` metric,
not below ``min_lr``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from unetflow.training.settings import Settings


def better(value: float, best: float | None, maximise: bool) -> bool:
    """Is `value` strictly better than `best` (None or NaN counts as worst)?"""
    if best is None or math.isnan(best):
        return not math.isnan(value) or best is None
    if math.isnan(value):
        return False
    return value > best if maximise else value < best


class LrSchedule:
    """Per-epoch learning rate: constant, cosine, poly or plateau (stateful).

    ``state`` (the plateau's lr, best value and epochs without improvement) is what a resume
    checkpoint keeps.
    """

    def __init__(self, s: Settings, maximise: bool) -> None:
        self.s, self.maximise = s, maximise
        self.state: dict[str, Any] = {"lr": s.lr, "best": None, "bad": 0}

    def lr(self, epoch: int) -> float:
        """The learning rate of `epoch` (0-based)."""
        s = self.s
        fraction = epoch / s.epochs
        if s.schedule == "cosine":
            return s.min_lr + (s.lr - s.min_lr) * 0.5 * (1.0 + math.cos(math.pi * fraction))
        if s.schedule == "poly":
            return max(s.min_lr, s.lr * (1.0 - fraction) ** s.poly_power)
        if s.schedule == "plateau":
            return float(self.state["lr"])
        return s.lr

    def observe(self, value: float) -> None:
        """After validation: count epochs without improvement; reduce lr after the patience."""
        if self.s.schedule != "plateau":
            return
        if better(value, self.state["best"], self.maximise):
            self.state["best"], self.state["bad"] = value, 0
            return
        self.state["bad"] += 1
        if self.state["bad"] >= self.s.plateau_patience:
            self.state["lr"] = max(self.s.min_lr, self.state["lr"] * self.s.plateau_factor)
            self.state["bad"] = 0


def build_optimizer(s: Settings, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The recipe's optimizer (sgd, adam or adamw) at its initial lr."""
    if s.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=s.lr, momentum=s.momentum, nesterov=s.nesterov, weight_decay=s.weight_decay
        )
    if s.optimizer == "adam":
        return torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
