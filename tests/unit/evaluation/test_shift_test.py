"""The shift test of evaluate: a real checkpoint on re-rendered test images, and its summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from skimage.transform import resize

from project import cxr_definition
from unetflow.data.cxr import preprocess_cxr
from unetflow.data.shifts import SHIFT_NAMES
from unetflow.data.synthetic import generate_synth_cxr
from unetflow.evaluation import metrics as m
from unetflow.evaluation.evaluate import evaluate
from unetflow.evaluation.shifts import ShiftModel, shift_summary, worst_shift
from unetflow.io.images import read_gray, write_float_tiff, write_png
from unetflow.io.processed import read_split
from unetflow.model.checkpoint import save_model
from unetflow.model.unet import MeanMask

INFER = {"overlap": 0.25, "blend": "gaussian", "tta": False, "batch_size": 4, "threshold": 0.5}


@pytest.fixture(scope="module")
def processed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shift")
    (root / "raw").mkdir()
    generate_synth_cxr(root / "raw", n_images=12, n_unmasked=0, size=128, seed=5)
    cfg = cxr_definition(64, 128, "image_window", {"train": 0.5, "val": 0.25, "test": 0.25})
    preprocess_cxr(root / "raw", root / "processed", cfg, seed=1)
    return root / "processed"


@pytest.fixture(scope="module")
def mean_mask(processed: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """The mean-mask baseline as a model.pt: it ignores the image, so only zooms can move it."""
    table = read_split(processed)
    train = table.loc[table["split"] == "train", "id"]
    mean = np.mean([read_gray(processed / "masks" / f"{sid}.png") for sid in train], axis=0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    meta = {
        "model": {"kind": "mean_mask"},
        "normalisation": json.loads((processed / "stats.json").read_text())["normalisation"],
        "tile": 64,
        "mean_mask_shape": list(mean.shape),
    }
    save_model(path, MeanMask(torch.from_numpy(mean.astype(np.float32))), meta)
    return path, mean


def test_the_shift_test_scores_every_test_image_under_every_shift(processed, mean_mask):
    path, mean = mean_mask
    ids = list(read_split(processed).query("split == 'test'")["id"])
    table = ShiftModel(path, INFER, "cpu").run(processed, ids)
    assert list(table["shift"].unique()) == ["clean", *SHIFT_NAMES]
    assert len(table) == len(ids) * 12 and list(table["id"].unique()) == ids
    means = table.groupby("shift")["dice"].mean()
    for name in SHIFT_NAMES:
        if not name.startswith("zoom"):
            assert means[name] == means["clean"], name  # the image never reaches the mean mask
    assert means["zoom_out"] < means["clean"] - 0.1  # but the lungs moved
    # clean is the mean mask at 64 px, mapped to the 128 px score masks and thresholded
    pred = resize(mean, (128, 128), order=1, mode="edge", anti_aliasing=True) > 0.5
    truth = read_gray(processed / "score_masks" / f"{ids[0]}.png") > 0
    clean = table.query("shift == 'clean'").iloc[0]
    assert clean["dice"] == pytest.approx(m.dice(pred, truth), abs=1e-3)
    again = ShiftModel(path, INFER, "cpu").run(processed, ids)
    pd.testing.assert_frame_equal(table, again)


def test_shift_summary_reports_clean_worst_and_every_shift():
    rows = [{"id": f"i{k}", "shift": "clean", "dice": 0.9 + 0.02 * k} for k in range(2)]
    for j, name in enumerate(SHIFT_NAMES):
        rows += [{"id": f"i{k}", "shift": name, "dice": 0.85 + 0.001 * j} for k in range(2)]
    rows[-1]["dice"] = 0.5  # text_box of i1
    summary = shift_summary(pd.DataFrame(rows))
    assert summary["dice_clean"] == pytest.approx(0.91)
    assert list(summary["dice"]) == list(SHIFT_NAMES)
    assert summary["dice"]["text_box"] == pytest.approx((0.86 + 0.5) / 2)
    assert summary["dice_worst"] == summary["dice"]["text_box"]
    assert summary["dice_drop_worst"] == pytest.approx(0.91 - 0.68)
    assert worst_shift(summary) == "text_box"


def test_cxr_without_a_model_is_refused_before_anything_is_written(processed, tmp_path):
    predictions = tmp_path / "predictions"
    with pytest.raises(ValueError, match="shift test of a chest X-ray set needs shift_model"):
        evaluate(
            dataset="x",
            kind="cxr",
            processed=processed,
            predictions=_predictions(processed, predictions),
            out_metrics=tmp_path / "metrics.json",
            out_per_image=tmp_path / "per_image.csv",
            out_shifts=tmp_path / "shifts.csv",
        )
    assert not (tmp_path / "metrics.json").exists()


def _predictions(processed: Path, out: Path) -> Path:
    """Perfect predictions of every val/test image: the score masks themselves."""
    (out / "masks").mkdir(parents=True)
    (out / "probabilities").mkdir()
    for sid in read_split(processed).query("split != 'train'")["id"]:
        truth = read_gray(processed / "score_masks" / f"{sid}.png")
        write_png(out / "masks" / f"{sid}.png", truth * 255)
        write_float_tiff(out / "probabilities" / f"{sid}.tif", truth.astype(np.float32))
    return out
