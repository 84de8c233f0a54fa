"""The preflight's probe: a recipe's first steps through the train stage's own trainer, and
the verdict on its losses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from unetflow.training.preflight import Probe, from_record, probe, steps_for, table
from unetflow.training.trainer import new_job


def losses(values: list[float]) -> Probe:
    return Probe("d", "m", "sgd", 0.01, 1, 64, "cpu", len(values), list(values))


@pytest.mark.parametrize(
    ("values", "verdict", "at"),
    [
        ([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.5, 0.4, 0.3, 0.2], "fell", None),
        ([1.0, 1.0, 1.0, 1.0, 1.0], "flat", None),
        ([1.0, 1.1, 1.2, 1.3, 0.99], "flat", None),  # 1 % lower: within the 2 % band
        ([1.0, 1.1, 1.2, 1.3, 1.4], "flat", None),  # rose by 40 %: not below the start
        ([17.0, 1.3, 1.2, 1.3, *[1.25] * 12, *[1.3] * 4], "flat", None),  # a random start
        ([1.0, 1.0, 2.0, 3.0, 1.6], "rose", None),  # last fifth 1.6 > 1.5 x 1.0
        ([1.0, 0.5, math.nan, 0.1], "diverged", 3),
        ([1.0, math.inf], "diverged", 2),
    ],
)
def test_verdict_from_the_first_and_last_fifth(values, verdict, at) -> None:
    result = losses(values)
    assert result.verdict == verdict
    assert result.diverged_at == at
    assert result.ok is (verdict in ("fell", "flat"))  # safe to run; only a blow-up stops it


def test_fifths_are_medians_of_a_fifth_of_the_steps() -> None:
    result = losses([9.0, 2.0, 4.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 5.0, 3.0, 2.0, 1.0, 1.0])
    assert result.fifths() == (4.0, 1.0)


def test_a_record_judged_again_gives_the_same_probe() -> None:
    result = losses([1.0, 0.5, math.nan])
    back = from_record(json.loads(json.dumps(result.record())))
    assert back.losses[:2] == [1.0, 0.5] and math.isnan(back.losses[2])
    assert (back.dataset, back.model, back.steps, back.verdict) == ("d", "m", 3, "diverged")


def test_record_is_strict_json_with_its_verdict() -> None:
    row = losses([1.0, 0.5, math.nan]).record()
    text = json.dumps(row, allow_nan=False)
    assert json.loads(text)["losses"] == [1.0, 0.5, "nan"]
    assert (row["verdict"], row["diverged_at"], row["ok"]) == ("diverged", 3, False)
    assert row["first_fifth"] is None and row["last_fifth"] is None
    assert "| d | m | sgd | 0.01 | 1 | 64 | 3/3 | — | — | — |" in table([row])
    assert "diverged at step 3" in table([row])


def test_batch_one_recipes_get_the_long_probe() -> None:
    assert steps_for(1, 150, 30) == 150
    assert steps_for(8, 150, 30) == 30


def _job(em, tmp_path: Path, run_kwargs, **recipe):
    kwargs = run_kwargs(em, tmp_path, **recipe)
    return new_job(**{**kwargs, "augmented": None})


def test_a_sane_recipe_falls_and_is_repeatable(em, tmp_path, run_kwargs) -> None:
    seen: list[tuple[int, float]] = []
    first = probe(_job(em, tmp_path, run_kwargs), 8, lambda k, v: seen.append((k, v)))
    again = probe(_job(em, tmp_path, run_kwargs), 8)
    assert len(first.losses) == 8 and first.steps == 8
    assert [k for k, _ in seen] == list(range(1, 9))
    assert first.losses == again.losses  # same seed, same machine: same losses
    assert len(first.step_seconds) == 8 and min(first.step_seconds) > 0
    times = sorted(first.step_seconds)
    assert first.record()["s_per_step"] == pytest.approx((times[3] + times[4]) / 2)  # median
    assert first.verdict == "fell"
    assert (first.optimizer, first.batch_size, first.tile, first.device) == ("adam", 4, 32, "cpu")


def test_steps_are_capped_by_the_recipe(em, tmp_path, run_kwargs) -> None:
    result = probe(_job(em, tmp_path, run_kwargs, epochs=1, steps_per_epoch=3), 50)
    assert result.steps == 3 and len(result.losses) == 3


def test_a_diverging_recipe_stops_at_its_first_non_finite_loss(em, tmp_path, run_kwargs) -> None:
    job = _job(em, tmp_path, run_kwargs, optimizer="sgd", lr=1e6, momentum=0.99, norm="none")
    result = probe(job, 30)
    assert result.verdict == "diverged"
    assert result.diverged_at == len(result.losses) < 30
    assert not math.isfinite(result.losses[-1])
