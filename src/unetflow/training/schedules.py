"""The optimizer and the per-epoch learning-rate schedule of a U-Net recipe.

Schedules are set per epoch: ``constant``; ``cosine`` from ``lr`` to ``min_lr``; ``poly``
(``lr * (1 - epoch/epochs) ** poly_power``, floored at ``min_lr``); ``plateau`` (lr times
``plateau_factor`` once ``plateau_patience`` epochs pass without a better ``select`` metric,
not below ``min_lr``).

``cosine`` is torch's ``CosineAnnealingLR`` (``T_max=epochs``, ``eta_min=min_lr``). It steps
the curve recursively, so its lrs differ from the closed formula in the last bits (within
1e-13 relative); the resume checkpoint keeps the scheduler's state and the optimizer's lr, so
a resumed run goes on with the lrs of an uninterrupted one.

``poly`` stays a formula of ours: torch's ``PolynomialLR`` has no floor (its lr goes below
``min_lr`` wherever ``lr * (1 - epoch/epochs) ** poly_power`` does: 8.5e-6 instead of 1e-5 in
the last of 200 epochs from 1e-3): it takes no floor.

``plateau`` is torch's ``ReduceLROnPlateau``, set to count as the recipe says: torch reduces
once its count of epochs without improvement *exceeds* its patience, so it gets
``plateau_patience - 1``; ``threshold=0`` (torch's default, 1e-4 relative, would not count a
smaller improvement as one), no cooldown, and ``eps=0`` (the default, 1e-8, would stop
reductions below ~1e-8 when ``min_lr`` is 0). An exact tie is not an improvement; any strictly
better value is. It never raises the lr (a recipe with ``lr`` below ``min_lr`` keeps its lr),
and a NaN value is never an improvement, not even the first one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, ReduceLROnPlateau

from unetflow.training.settings import Settings


def better(value: float, best: float | None, maximise: bool) -> bool:
    """Is `value` strictly better than `best` (None or NaN counts as worst)?"""
    if best is None or math.isnan(best):
        return not math.isnan(value) or best is None
    if math.isnan(value):
        return False
    return value > best if maximise else value < best


def _plateau(s: Settings, optimizer: torch.optim.Optimizer, maximise: bool) -> ReduceLROnPlateau:
    """torch's plateau schedule, reducing at the `plateau_patience`-th epoch without a strictly
    better value (see the module's docstring)."""
    return ReduceLROnPlateau(
        optimizer,
        mode="max" if maximise else "min",
        factor=s.plateau_factor,
        patience=s.plateau_patience - 1,
        threshold=0.0,
        threshold_mode="abs",
        cooldown=0,
        min_lr=s.min_lr,
        eps=0.0,
    )


def _scheduler(s: Settings, optimizer: torch.optim.Optimizer, maximise: bool) -> LRScheduler | None:
    """torch's scheduler of the recipe's schedule; None for constant and poly."""
    if s.schedule == "plateau":
        return _plateau(s, optimizer, maximise)
    if s.schedule == "cosine":
        return CosineAnnealingLR(optimizer, T_max=s.epochs, eta_min=s.min_lr)
    return None


class LrSchedule:
    """The learning rate of `optimizer`, epoch by epoch: constant, cosine, poly or plateau.

    Per epoch the trainer calls `start_epoch` before training and `end_epoch` after
    validation; `state_dict` is what a resume checkpoint keeps (``{}`` for the schedules that
    are a formula of the epoch).
    """

    def __init__(self, s: Settings, optimizer: torch.optim.Optimizer, maximise: bool) -> None:
        self.s, self.optimizer, self.maximise = s, optimizer, maximise
        self.scheduler = _scheduler(s, optimizer, maximise)

    def _formula(self, epoch: int) -> float:
        """The lr of `epoch` (0-based) of the schedules that are a formula of the epoch."""
        s = self.s
        if s.schedule == "poly":
            return max(s.min_lr, s.lr * (1.0 - epoch / s.epochs) ** s.poly_power)
        return s.lr

    def start_epoch(self, epoch: int) -> float:
        """Set the optimizer's lr for `epoch` (0-based); that lr."""
        if self.scheduler is None:
            lr = self._formula(epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        return float(self.optimizer.param_groups[0]["lr"])

    def end_epoch(self, value: float) -> None:
        """After validation, with the epoch's `select` value: step the scheduler to the next
        epoch's lr (cosine: one step along the curve; plateau: count the epoch, or reset the
        count, and reduce after the patience)."""
        if isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step(value)
        elif self.scheduler is not None:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state, for the resume checkpoint."""
        return self.scheduler.state_dict() if self.scheduler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict` (after the optimizer's state, which holds the lr)."""
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state)


def build_optimizer(s: Settings, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The recipe's optimizer (sgd, adam or adamw) at its initial lr."""
    if s.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=s.lr, momentum=s.momentum, nesterov=s.nesterov, weight_decay=s.weight_decay
        )
    if s.optimizer == "adam":
        return torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
