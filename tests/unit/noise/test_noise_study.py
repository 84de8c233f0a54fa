"""The noise stage's numbers and report on hand-made score tables: label Dice and metrics over
seeds, slopes per loss of label Dice, the area bias, and the comparisons noisy test labels
flip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from unetflow.comparison.runs import score_path
from unetflow.noise.report import noise_markdown
from unetflow.noise.study import (
    corrupted_dir,
    noise_study,
    noisy_test_path,
    slope,
    trained_path,
)
from unetflow.plots import noise_figure

MODELS = ["good", "poor"]
IDS = [f"img{i:02d}" for i in range(10)]
NOISE = {"bias": [-4, 4, 8], "boundary": [2, 4, 8], "omission": [0.1], "warp": [4]}
SEEDS = [1, 2]
LABEL_DICE = [(1, [0.9, 0.8]), (3, [0.7, 0.6])]  # the training labels' Dice per level and seed


def scores(
    dice: list[float], precision: float = 0.9, recall: float = 0.9, ramp: float = 1.0
) -> pd.DataFrame:
    """A test score table of the cxr metrics, one row per image; `ramp` spreads the Dice
    around its values without moving their mean (so that paired differences do not tie)."""
    dice = np.asarray(dice, dtype=float) + ramp * (np.arange(len(IDS)) - 4.5) * 1e-3
    return pd.DataFrame(
        {
            "id": IDS,
            "dice": dice,
            "iou": dice / (2 - dice),
            "hd95": 10 * (1 - dice),
            "assd": 2 * (1 - dice),
            "precision": precision,
            "recall": recall,
        }
    )


def write(path: Path, table: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """Clean scores, two bias levels x two seeds of noisy runs, and noisy test tables where
    `good`'s clear lead over `poor` survives bias but not boundary noise."""
    noisy, results, clean = (tmp_path / name for name in ("noisy", "results", "scores"))
    rng = np.random.default_rng(0)
    runs = [(f, level, dice) for f in ("bias", "boundary") for level, dice in LABEL_DICE]
    write(score_path(clean, "good"), scores([0.9] * 10))
    write(score_path(clean, "poor"), scores([0.7] * 10, ramp=-1))
    for family, level, label_dice in runs:
        for seed, labels in zip(SEEDS, label_dice, strict=True):
            record = corrupted_dir(noisy, family, level, seed) / "corruption.json"
            record.parent.mkdir(parents=True)
            record.write_text(json.dumps({"mean_dice": labels, "level": level}))
            for model, base in (("good", 0.9), ("poor", 0.7)):
                fall = (1 - labels) / 2
                table = scores([base - fall] * 10, precision=0.8, recall=1.0)
                write(trained_path(results, model, family, level, seed), table)
    for model, base in (("good", 0.9), ("poor", 0.7)):
        rows = []
        for family in ("bias", "boundary"):
            for level in (1, 3):
                dice = [base - 0.05] * 10 if family == "bias" else 0.8 + rng.normal(0, 0.1, 10)
                ramp = 1 if model == "good" else -1
                table = scores(dice, ramp=ramp).assign(family=family, level=level, label_dice=0.85)
                rows.append(table)
        write(noisy_test_path(results, model), pd.concat(rows))
    return {"noisy": noisy, "results": results, "clean_scores": clean}


def study_of(tree: dict[str, Path], families: list[str]) -> dict:
    return noise_study(
        dataset="synth_cxr",
        kind="cxr",
        models=MODELS,
        families=families,
        levels=[1, 3],
        seeds=SEEDS,
        noise=NOISE,
        seed=5,
        n_boot=99,
        **tree,
    )


def test_runs_average_their_seeds_against_the_labels_dice(tree):
    study = study_of(tree, ["bias"])
    first, third = study["runs"]["good"]["bias"].values()
    assert study["levels"] == {"bias": {"1": -4, "3": 8}}
    assert first["label_dice"]["mean"] == pytest.approx(0.85)
    assert first["label_dice"]["sd"] == pytest.approx(np.std([0.9, 0.8], ddof=1))
    assert first["dice"]["mean"] == pytest.approx(0.9 - 0.075)
    assert third["dice"]["mean"] == pytest.approx(0.9 - 0.175)
    # predicted area / true area = recall / precision = 1.25 in every noisy run
    assert third["area_bias"]["mean"] == pytest.approx(0.25)
    assert study["clean"]["good"]["area_bias"] == pytest.approx(0.0)
    # dice = 0.9 - (1 - label Dice) / 2 through the clean point: -0.05 per 0.1 of label Dice
    assert study["slopes"]["good"]["bias"]["dice"] == pytest.approx(-0.05)


def test_slope_needs_two_distinct_label_qualities():
    assert slope([(1.0, 0.9)]) is None
    assert slope([(1.0, 0.9), (0.8, 0.7)]) == pytest.approx(-0.1)


def test_noisy_test_labels_flip_the_comparisons_they_blur(tree):
    noisy = study_of(tree, ["bias"])["noisy_test"]
    pair = "good_vs_poor"
    assert noisy["verdicts"]["clean"][pair]["dice"] == "good"
    assert noisy["flips"]["bias-level1"][pair] == []  # the same lead under a bias
    noisy = study_of(tree, ["boundary"])["noisy_test"]
    assert noisy["verdicts"]["boundary-level3"][pair]["dice"] == "n.s."
    assert "dice" in noisy["flips"]["boundary-level3"][pair]
    assert noisy["label_dice"] == {"clean": 1.0, "boundary-level1": 0.85, "boundary-level3": 0.85}


def test_the_report_answers_each_question(tree):
    study = study_of(tree, ["bias"])
    text = noise_markdown(study)
    assert text.startswith("# Annotation noise: synth_cxr")
    for heading in ("## good", "## poor", "How fast each metric moves", "## Noisy test labels"):
        assert heading in text
    assert "| bias | 3 | 8 | 3 | 0.6500 ± 0.0707 | 0.7250 ± 0.0354 |" in text
    assert "Not run: the study has no `boundary` family." in text
    figure = noise_figure(study)
    assert len(figure.axes) == len(study["metrics"]) * len(MODELS)


def test_the_figure_draws_each_family_from_the_clean_run_down_in_label_quality(tree):
    study = study_of(tree, ["bias"])
    runs = study["runs"]["good"]["bias"]
    for rank, level in enumerate(sorted(runs)):  # label quality rising with the level
        runs[level]["label_dice"] = {"mean": 0.7 + 0.1 * rank, "sd": 0.0}
    dice_axis = noise_figure(study).axes[0]  # the first metric of the first model
    (line,) = [c.lines[0] for c in dice_axis.containers if c.get_label() == "bias"]
    assert list(line.get_xdata()) == pytest.approx(
        [1.0, *(0.7 + 0.1 * r for r in reversed(range(len(runs))))]
    )


def test_a_missing_run_is_named(tree):
    trained_path(tree["results"], "poor", "bias", 3, 2).unlink()
    with pytest.raises(FileNotFoundError, match=r"poor/bias/level3/seed2\.csv: not found"):
        study_of(tree, ["bias"])
