"""The evaluate stage on hand-made 32×32 processed and prediction folders with known metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from unetflow.evaluation import metrics as m
from unetflow.evaluation.cases import panel_cases
from unetflow.evaluation.evaluate import evaluate, read_curves
from unetflow.evaluation.scoring import COMMON_METRICS, METRICS, RAND_DETAILS
from unetflow.io.images import read_gray, write_float_tiff, write_png
from unetflow.io.processed import DataError
from unetflow.plots import error_overlay

N = 32


def _rect(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    mask = np.zeros((N, N), dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


SQUARE = _rect(8, 24, 8, 24)  # 256 px
#: id -> (split, truth, prediction, hand-computed dice, iou, pixel_error, precision, recall)
CASES = {
    "a_perfect": ("val", _rect(0, 32, 0, 16), _rect(0, 32, 0, 16), 1.0, 1.0, 0.0, 1.0, 1.0),
    # prediction: the upper half (256 px) of the truth (512 px)
    "b_half": ("val", _rect(0, 16, 0, 32), _rect(0, 8, 0, 32), 2 / 3, 0.5, 0.25, 1.0, 0.5),
    # empty prediction of a 256 px square
    "c_empty": ("test", SQUARE, np.zeros((N, N), bool), 0.0, 0.0, 0.25, 0.0, 0.0),
    # the square shifted right by 2 columns: 224 px shared, 32 FP, 32 FN
    "d_shift": ("test", SQUARE, _rect(8, 24, 10, 26), 0.875, 224 / 288, 64 / 1024, 0.875, 0.875),
    "e_train": ("train", SQUARE, None, None, None, None, None, None),
}
HAND = ("dice", "iou", "pixel_error", "precision", "recall")


def _probability(pred: np.ndarray) -> np.ndarray:
    """A soft probability map whose 0.5-threshold is `pred`."""
    return np.where(pred, 0.9, 0.1).astype(np.float32)


def make_folders(root: Path, metadata: dict[str, list] | None = None) -> tuple[Path, Path]:
    """processed/ (split.csv, images, masks {0,1}) and predictions/ (masks 0/255, probs)."""
    processed, predictions = root / "processed", root / "predictions"
    for sub in ("processed/images", "processed/masks", "predictions/masks"):
        (root / sub).mkdir(parents=True)
    (predictions / "probabilities").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i, (sid, (split, truth, pred, *_)) in enumerate(CASES.items()):
        image = rng.normal(size=(N, N)).astype(np.float32) + truth
        write_float_tiff(processed / "images" / f"{sid}.tif", image)
        write_png(processed / "masks" / f"{sid}.png", truth.astype(np.uint8))
        if pred is not None:
            write_png(predictions / "masks" / f"{sid}.png", pred.astype(np.uint8) * 255)
            write_float_tiff(predictions / "probabilities" / f"{sid}.tif", _probability(pred))
        rows.append({"id": sid, "split": split, "index": i, "height": N, "width": N})
    table = pd.DataFrame(rows)
    for column, values in (metadata or {}).items():
        table[column] = values
    table.to_csv(processed / "split.csv", index=False)
    return processed, predictions


def run(root: Path, kind: str, figures: bool = False, **kwargs) -> dict:
    processed, predictions = kwargs.pop("folders", None) or make_folders(root)
    return evaluate(
        dataset="toy",
        kind=kind,
        processed=processed,
        predictions=predictions,
        out_metrics=root / "out" / "metrics.json",
        out_per_image=root / "out" / "per_image.csv",
        out_figures=root / "out" / "figures" if figures else None,
        **kwargs,
    )


def test_em_per_image_values_and_aggregates(tmp_path):
    summary = run(tmp_path, "em")
    table = pd.read_csv(tmp_path / "out" / "per_image.csv", dtype={"id": str})
    meta = ["id", "split", "index", "height", "width"]
    assert list(table.columns) == [*meta, *METRICS, *RAND_DETAILS]
    assert list(table["id"]) == ["a_perfect", "b_half", "c_empty", "d_shift"]  # val, then test
    assert list(table["split"]) == ["val", "val", "test", "test"]
    assert list(table["index"]) == [0, 1, 2, 3]
    assert not table[[*METRICS, *RAND_DETAILS]].isna().any().any()
    for sid, (_, truth, pred, *hand) in CASES.items():
        if pred is None:
            continue
        row = table.set_index("id").loc[sid]
        for name, expected in zip(HAND, hand, strict=True):
            assert row[name] == pytest.approx(expected, abs=1e-12), (sid, name)
        assert row["hd95"] == pytest.approx(m.hd95(pred, truth))
        assert row["assd"] == pytest.approx(m.assd(pred, truth))
        rand = m.rand_and_info_scores(1.0 - _probability(pred).astype(np.float64), truth)
        for name in ("vrand", "vinfo", "rand_error", *RAND_DETAILS):
            assert row[name] == pytest.approx(rand[name]), (sid, name)
    perfect = table.set_index("id").loc["a_perfect"]
    assert perfect["hd95"] == 0.0 and perfect["assd"] == 0.0
    assert perfect["vrand"] == pytest.approx(1.0) and perfect["vinfo"] == pytest.approx(1.0)
    assert perfect["rand_error"] == pytest.approx(0.0)

    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written == summary
    assert summary["n_val"] == 2 and summary["n_test"] == 2
    assert set(summary) == {"n_val", "n_test", "val", "test"}
    for split in ("val", "test"):
        assert set(summary[split]) == {k for n in METRICS for k in (n, f"{n}_std")}
    assert summary["test"]["dice"] == pytest.approx(0.4375)
    assert summary["test"]["dice_std"] == pytest.approx(0.4375)  # population std of {0, .875}
    assert summary["val"]["iou"] == pytest.approx(0.75)
    assert summary["val"]["iou_std"] == pytest.approx(0.25)
    assert summary["test"]["pixel_error"] == pytest.approx((0.25 + 0.0625) / 2)
    assert summary["val"]["recall_std"] == pytest.approx(0.25)
    means = table[table["split"] == "test"][list(METRICS)].mean()
    for name in METRICS:
        assert summary["test"][name] == pytest.approx(means[name])
        assert math.isfinite(summary["test"][name]) and math.isfinite(summary["val"][name])


def test_em_gets_a_shift_table_with_the_header_only(tmp_path):
    summary = run(tmp_path, "em", out_shifts=tmp_path / "out" / "shifts.csv")
    assert "shift" not in summary
    assert (tmp_path / "out" / "shifts.csv").read_text() == "id,shift,dice,iou,hd95,assd\n"


def test_cxr_has_no_rand_scores_and_keeps_metadata(tmp_path):
    meta = {
        "sex": ["male", "female", "female", "male", "male"],
        "age": [45, 30, 61, 22, 50],
        "finding": ["normal", "abnormal", "normal", "abnormal", "normal"],
    }
    folders = make_folders(tmp_path, meta)
    out_subgroups = tmp_path / "out" / "subgroups.csv"
    summary = run(tmp_path, "cxr", True, folders=folders, out_subgroups=out_subgroups)
    table = pd.read_csv(tmp_path / "out" / "per_image.csv")
    columns = ["id", "split", "index", "height", "width", "sex", "age", "finding"]
    assert list(table.columns) == [*columns, *COMMON_METRICS]
    assert list(table["sex"]) == ["male", "female", "female", "male"]
    assert list(table["age"]) == [45, 30, 61, 22]
    groups = pd.read_csv(out_subgroups).set_index(["grouping", "group"])
    test = table[table["split"] == "test"]
    assert groups.loc[("all", "all"), "n"] == len(test) == 2
    assert groups.loc[("all", "all"), "iou"] == pytest.approx(test["iou"].mean())
    assert groups.loc[("sex", "female"), "n"] == 1 and groups.loc[("age", "≥60"), "n"] == 1
    figures = sorted(p.name for p in (tmp_path / "out" / "figures").iterdir())
    assert figures == ["iou_by_age.png", "learning_curves.png", "panels.png"]
    assert set(summary["test"]) == {k for n in COMMON_METRICS for k in (n, f"{n}_std")}
    assert "vrand" not in summary["val"]
    assert summary["test"]["dice"] == pytest.approx(0.4375)
    assert "NaN" not in (tmp_path / "out" / "metrics.json").read_text()


def test_empty_split_gives_zero_count_and_no_section(tmp_path):
    processed, predictions = make_folders(tmp_path)
    split = pd.read_csv(processed / "split.csv")
    split.loc[split["split"] == "val", "split"] = "train"
    split.to_csv(processed / "split.csv", index=False)
    summary = run(tmp_path, "em", folders=(processed, predictions))
    assert summary["n_val"] == 0 and summary["n_test"] == 2
    assert "val" not in summary and "test" in summary
    text = (tmp_path / "out" / "metrics.json").read_text()
    assert "NaN" not in text and "null" not in text
    assert len(pd.read_csv(tmp_path / "out" / "per_image.csv")) == 2


def test_figures_panels_and_curves(tmp_path):
    live = tmp_path / "dvclive" / "plots" / "metrics"
    (live / "train").mkdir(parents=True)
    (live / "val").mkdir()
    (live / "train" / "loss.tsv").write_text("step\tloss\n0\t0.7\n1\t0.5\n2\t0.4\n")
    (live / "val" / "dice.tsv").write_text("step\tdice\n0\t0.5\n1\tnan\n2\t0.8\n")
    run(tmp_path, "em", figures=True, live_dir=tmp_path / "dvclive")
    figures = tmp_path / "out" / "figures"
    assert sorted(p.name for p in figures.iterdir()) == ["learning_curves.png", "panels.png"]
    panels = read_gray(figures / "panels.png")
    assert panels.shape == (900, 1200)  # 3 rows × 4 columns of 3-inch axes at 100 dpi
    assert panels.std() > 10
    curves = read_gray(figures / "learning_curves.png")
    assert curves.shape == (300, 800)  # two curves side by side, 4×3 inches each

    read = read_curves(tmp_path / "dvclive")
    assert list(read) == ["train/loss", "val/dice"]
    assert list(read["train/loss"]["value"]) == [0.7, 0.5, 0.4]
    assert np.isnan(read["val/dice"]["value"][1])


def test_figures_without_curves_or_test_images_are_notices(tmp_path):
    processed, predictions = make_folders(tmp_path)
    split = pd.read_csv(processed / "split.csv")
    split.loc[split["split"] == "test", "split"] = "val"
    split.to_csv(processed / "split.csv", index=False)
    run(tmp_path, "cxr", figures=True, folders=(processed, predictions))
    for name in ("panels.png", "learning_curves.png"):
        assert read_gray(tmp_path / "out" / "figures" / name).shape == (150, 400)


def test_panel_cases_best_median_worst():
    test = pd.DataFrame({"id": ["p", "q", "r", "s", "t"], "dice": [0.5, 0.9, 0.1, 0.7, 0.5]})
    assert panel_cases(test) == [("best", "q", 0.9), ("median", "t", 0.5), ("worst", "r", 0.1)]
    one = [("best", "p", 0.5), ("median", "p", 0.5), ("worst", "p", 0.5)]
    assert panel_cases(test.iloc[:1]) == one
    assert panel_cases(test.iloc[:0]) == []


def test_error_overlay_colours():
    image = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    truth = np.zeros((4, 4), bool)
    pred = np.zeros((4, 4), bool)
    truth[0, :2] = True
    pred[0, 1:3] = True
    rgb = error_overlay(image, pred, truth)
    assert rgb.shape == (4, 4, 3)
    assert tuple(rgb[0, 2]) == (1.0, 0.0, 0.0)  # false positive: red
    assert rgb[0, 0, 2] == 1.0 and rgb[0, 0, 0] == 0.0  # false negative: blue
    assert rgb[0, 1, 0] == rgb[0, 1, 1] == rgb[0, 1, 2]  # true positive: the grey input
    assert rgb[3, 3, 0] == rgb[3, 3, 2]


def test_missing_prediction_names_the_file(tmp_path):
    processed, predictions = make_folders(tmp_path)
    (predictions / "probabilities" / "d_shift.tif").unlink()
    with pytest.raises(DataError, match=r"d_shift\.tif: not found; expected the probability"):
        run(tmp_path, "em", folders=(processed, predictions))
    assert not (tmp_path / "out" / "metrics.json").exists()
    assert not (tmp_path / "out" / "per_image.csv").exists()


def test_shape_mismatch_and_bad_kind(tmp_path):
    processed, predictions = make_folders(tmp_path)
    write_png(predictions / "masks" / "b_half.png", np.zeros((16, 32), np.uint8))
    with pytest.raises(DataError, match=r"b_half\.png: shape \(16, 32\) differs"):
        run(tmp_path, "em", folders=(processed, predictions))
    with pytest.raises(ValueError, match="kind: 'ct' is not a dataset kind"):
        run(tmp_path, "ct", folders=(processed, predictions))
