"""The per-epoch learning-rate schedules and the comparison of validation values."""

from __future__ import annotations

import math

import pytest
import torch

from unetflow.training.schedules import LrSchedule, better

NAN = float("nan")


def _lrs(
    settings, values: list[float], maximise: bool = True, resume_after: int | None = None
) -> list[float]:
    """The lr of each epoch, driven as the trainer drives it, `values` its validation values;
    after `resume_after` epochs, a fresh optimizer and schedule go on from their state dicts
    as a resumed run does."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=settings.lr)
    schedule, out = LrSchedule(settings, optimizer, maximise=maximise), []
    for epoch, value in enumerate(values):
        if epoch == resume_after:
            saved = optimizer.state_dict(), schedule.state_dict()
            optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=settings.lr)
            schedule = LrSchedule(settings, optimizer, maximise=maximise)
            optimizer.load_state_dict(saved[0])
            schedule.load_state_dict(saved[1])
        out.append(schedule.start_epoch(epoch))
        optimizer.step()
        schedule.end_epoch(value)
    return out


def test_schedules(unet_settings):
    def lrs(schedule: str, values: list[float] | None = None, **extra) -> list[float]:
        s = unet_settings(lr=1.0, min_lr=0.01, epochs=4, schedule=schedule, **extra)
        return _lrs(s, values or [0.0] * 4)

    assert lrs("constant") == [1.0] * 4
    assert lrs("cosine") == pytest.approx(
        [1.0, 0.01 + 0.99 * (1 + math.sqrt(0.5)) / 2, 0.505, 0.01 + 0.99 * (1 - math.sqrt(0.5)) / 2]
    )
    assert lrs("poly", poly_power=1.0) == pytest.approx([1.0, 0.75, 0.5, 0.25])
    got = lrs(
        "plateau", [0.5, 0.6, 0.6, 0.6, 0.7, 0.1, 0.1], plateau_patience=2, plateau_factor=0.1
    )
    assert got == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1])


def test_cosine_follows_the_closed_formula_to_float_rounding(unet_settings):
    # unet_modern's full recipe: torch steps the curve recursively, within ~1e-14 of the formula
    s = unet_settings(lr=0.002, min_lr=1e-5, epochs=60, schedule="cosine")
    got = _lrs(s, [0.0] * 60)
    formula = [1e-5 + (0.002 - 1e-5) * (1 + math.cos(math.pi * e / 60)) / 2 for e in range(60)]
    assert got == pytest.approx(formula, rel=1e-13, abs=0.0) and got[0] == 0.002


def test_cosine_state_resumes_to_the_uninterrupted_lrs(unet_settings):
    # epoch 3's lr is one the recursion and the formula round differently
    s = unet_settings(lr=0.002, min_lr=1e-5, epochs=12, schedule="cosine")
    assert _lrs(s, [0.0] * 12, resume_after=3) == _lrs(s, [0.0] * 12)


def test_poly_is_floored_at_min_lr(unet_settings):
    s = unet_settings(lr=0.01, min_lr=0.001, epochs=20, schedule="poly", poly_power=2.0)
    got = _lrs(s, [0.0] * 20)
    assert got[13] == pytest.approx(0.01 * (7 / 20) ** 2) and got[14:] == [0.001] * 6


def test_plateau_counts_ties_and_tiny_improvements_as_recipes_say(unet_settings):
    # patience 2: the lr drops at the 2nd epoch in a row without a strictly better value;
    # an exact tie is no improvement, one of 1e-7 (below torch's default threshold) is one
    s = unet_settings(
        lr=1.0, min_lr=0.01, schedule="plateau", plateau_patience=2, plateau_factor=0.1
    )
    values = [0.5, 0.6, 0.6, 0.6, 0.6000001, 0.6000001, 0.6000001, 0.7]
    assert _lrs(s, values) == [1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1 * 0.1]
    # minimising (val loss): the same counts
    assert _lrs(s, [-v for v in values], maximise=False) == _lrs(s, values)


def test_plateau_reduces_down_to_min_lr_and_below_1e8_when_min_lr_is_0(unet_settings):
    plateau = {"schedule": "plateau", "lr": 0.01, "plateau_patience": 1}
    floored = unet_settings(**plateau, min_lr=1e-5, plateau_factor=0.1)
    # the first value is the best so far; every later one is an epoch without improvement
    assert _lrs(floored, [1.0] * 7) == pytest.approx([0.01, 0.01, 1e-3, 1e-4, 1e-5, 1e-5, 1e-5])
    got = _lrs(unet_settings(**plateau, min_lr=0.0, plateau_factor=0.01), [1.0] * 9)
    assert got == pytest.approx([0.01] + [10.0**-e for e in range(2, 17, 2)], rel=1e-9)


def test_plateau_state_resumes_to_the_uninterrupted_lrs(unet_settings):
    s = unet_settings(lr=0.01, min_lr=1e-5, schedule="plateau", plateau_patience=2)
    assert s.plateau_factor == 0.5
    values = [0.5, 0.4, 0.4, 0.6, 0.6, NAN, 0.6, 0.6, 0.7]
    full = _lrs(s, values)
    assert full == [0.01] * 3 + [0.005] * 3 + [0.0025] * 2 + [0.00125]
    # stopped with one epoch without improvement counted
    assert _lrs(s, values, resume_after=5) == full


def test_better_counts_none_and_nan_as_worst():
    nan = float("nan")
    assert better(0.1, None, maximise=True) and better(nan, None, maximise=True)
    assert better(0.1, nan, maximise=True) and not better(nan, nan, maximise=True)
    assert not better(nan, 0.1, maximise=False)
    assert better(0.2, 0.1, maximise=True) and not better(0.1, 0.1, maximise=True)
    assert better(0.1, 0.2, maximise=False) and not better(0.2, 0.1, maximise=False)
