"""The noise_scores stage on a hand-made processed set: each test prediction scored against
its mask corrupted at every selected level, the masks' own Dice beside the scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from unetflow.io.images import write_float_tiff, write_png
from unetflow.noise.scores import score_noisy_tests

SIZE = 64
NOISE = {"bias": [-32, 48], "boundary": [0], "omission": [1.0], "warp": [8]}


def lungs() -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    left = np.hypot(yy - 32, xx - 16) <= 10
    right = np.hypot(yy - 32, xx - 47) <= 11
    return (left | right).astype(np.uint8)


@pytest.fixture
def run(tmp_path):
    """A processed set of two test and one train image, and perfect predictions."""
    processed, predictions = tmp_path / "processed", tmp_path / "predictions"
    for sub in (processed / "masks", predictions / "masks", predictions / "probabilities"):
        sub.mkdir(parents=True)
    splits = {"a": "train", "b": "test", "c": "test"}
    pd.DataFrame({"id": list(splits), "split": list(splits.values())}).to_csv(
        processed / "split.csv", index=False
    )
    for sid in splits:
        write_png(processed / "masks" / f"{sid}.png", lungs())
        write_png(predictions / "masks" / f"{sid}.png", lungs() * 255)
        write_float_tiff(predictions / "probabilities" / f"{sid}.tif", lungs().astype(float))
    return processed, predictions


def score(run, family, levels, out):
    processed, predictions = run
    return score_noisy_tests(
        kind="cxr",
        families=[family],
        levels=levels,
        noise=NOISE,
        seed=7,
        processed=processed,
        predictions=predictions,
        out=out,
    )


def test_each_test_image_is_scored_at_each_level(run, tmp_path):
    table = score(run, "bias", [1, 2], tmp_path / "bias.csv")
    assert list(table["id"]) == ["b", "c", "b", "c"] and list(table["level"]) == [1, 1, 2, 2]
    assert list(table.columns[:4]) == ["id", "family", "level", "label_dice"]
    # a perfect prediction scores against a noisy mask what that mask scores against the truth
    assert np.allclose(table["dice"], table["label_dice"]) and (table["dice"] < 1).all()
    eroded, dilated = table[table["level"] == 1], table[table["level"] == 2]
    assert (eroded["recall"] == 1).all() and (dilated["precision"] == 1).all()
    assert pd.read_csv(tmp_path / "bias.csv").equals(table)


def test_identity_levels_leave_the_clean_scores(run, tmp_path):
    table = score(run, "boundary", [1], tmp_path / "boundary.csv")
    assert (table["label_dice"] == 1).all() and (table["dice"] == 1).all()
    gone = score(run, "omission", [1], tmp_path / "omission.csv")
    assert (gone["label_dice"] == 0).all()  # p = 1: both lungs dropped from the test masks
