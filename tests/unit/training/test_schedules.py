"""The per-epoch learning-rate schedules and the comparison of validation values."""

from __future__ import annotations

import math

import pytest

from unetflow.training.schedules import LrSchedule, better


def test_schedules(unet_settings):
    def lrs(schedule: str, values: list[float] | None = None, **extra) -> list[float]:
        s = unet_settings(lr=1.0, min_lr=0.01, epochs=4, schedule=schedule, **extra)
        sched, out = LrSchedule(s, maximise=True), []
        for epoch in range(len(values or [0] * 4)):
            out.append(sched.lr(epoch))
            sched.observe(values[epoch] if values else 0.0)
        return out

    assert lrs("constant") == [1.0] * 4
    assert lrs("cosine") == pytest.approx(
        [1.0, 0.01 + 0.99 * (1 + math.sqrt(0.5)) / 2, 0.505, 0.01 + 0.99 * (1 - math.sqrt(0.5)) / 2]
    )
    assert lrs("poly", poly_power=1.0) == pytest.approx([1.0, 0.75, 0.5, 0.25])
    got = lrs(
        "plateau", [0.5, 0.6, 0.6, 0.6, 0.7, 0.1, 0.1], plateau_patience=2, plateau_factor=0.1
    )
    assert got == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1])


def test_better_counts_none_and_nan_as_worst():
    nan = float("nan")
    assert better(0.1, None, maximise=True) and better(nan, None, maximise=True)
    assert better(0.1, nan, maximise=True) and not better(nan, nan, maximise=True)
    assert not better(nan, 0.1, maximise=False)
    assert better(0.2, 0.1, maximise=True) and not better(0.1, 0.1, maximise=True)
    assert better(0.1, 0.2, maximise=False) and not better(0.2, 0.1, maximise=False)
