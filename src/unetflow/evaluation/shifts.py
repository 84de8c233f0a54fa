"""The shift test of evaluate: a chest X-ray model on its test split under acquisition shifts.

Every test image is read on the [0, 1] scale from the processed set's ``unit/`` folder (the
image before normalisation, written by preprocess), re-rendered under each shift of
:data:`unetflow.data.shifts.SHIFT_TEST` (the geometric ones move the scoring mask alike),
normalised by the model's own ``normalisation`` record, predicted with the infer stage's
settings, mapped to the scoring size and scored like the clean test: Dice, IoU, HD95 and ASSD.
``clean`` is the same path without a shift, so it equals the infer stage's test predictions.
Noise is drawn from a generator fixed by the image id (:data:`SHIFT_SEED`): the shifted images
are the same in every run, for every model.

Outputs: ``shifts.csv`` (``id, shift`` and the metrics, one row per test image × shift,
``clean`` first) and the ``shift`` section of metrics.json (:func:`shift_summary`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from unetflow.data.intensity import normalise
from unetflow.data.seeding import image_rng
from unetflow.data.shifts import SHIFT_TEST, Shift, apply_shift
from unetflow.evaluation import metrics as m
from unetflow.inference.infer import infer_settings
from unetflow.inference.tiling import predict_probability, resized_probability, to_mask
from unetflow.io.images import read_gray, read_processed_image
from unetflow.io.processed import UNIT_DIR, DataError, scoring_mask_path
from unetflow.io.progress import progress
from unetflow.model.checkpoint import load_model
from unetflow.model.device import resolve_device

SHIFT_METRICS = ("dice", "iou", "hd95", "assd")
SHIFT_COLUMNS = ["id", "shift", *SHIFT_METRICS]
CLEAN = "clean"
SHIFT_SEED = 0
SHIFT_LABELS = {CLEAN: "clean", **{s.name: s.label for s in SHIFT_TEST}}


@dataclass(frozen=True)
class ShiftModel:
    """The model a shift test runs: its checkpoint, params.yaml ``infer:`` and the device."""

    checkpoint: Path
    infer: dict[str, Any]
    device: str = "auto"
    amp: str = "none"

    def run(self, processed: Path, ids: list[str]) -> pd.DataFrame:
        """The shift table of the test images `ids` (:func:`shift_test`)."""
        device = resolve_device(self.device)
        model, meta = load_model(self.checkpoint, device)
        return shift_test(
            model, meta, processed, ids, infer=self.infer, device=device, amp=self.amp
        )


def shift_test(
    model: nn.Module,
    meta: dict[str, Any],
    processed: Path,
    ids: list[str],
    *,
    infer: dict[str, Any],
    device: torch.device | str,
    amp: str = "none",
) -> pd.DataFrame:
    """The shift table (module docstring) of the test images `ids` of `processed`, for the
    model `model` with checkpoint metadata `meta`; `infer` is params.yaml ``infer:``."""
    processed = Path(processed)
    settings = infer_settings(infer)
    rows = []
    for sid in progress(ids, desc="shift test", unit="image"):
        unit = read_processed_image(_unit_path(processed, sid))
        truth = read_gray(scoring_mask_path(processed, sid)) > 0
        rng = image_rng(SHIFT_SEED, sid)
        for shift in (None, *SHIFT_TEST):
            image, mask = _render(unit, truth, shift, rng)
            prob = predict_probability(
                model,
                normalise(image, meta["normalisation"]),
                tile=int(meta["tile"]),
                device=device,
                amp=amp,
                **settings,
            )
            pred = to_mask(resized_probability(prob, mask.shape), infer["threshold"]) > 0
            rows.append({"id": sid, "shift": shift.name if shift else CLEAN, **_score(pred, mask)})
    return pd.DataFrame(rows, columns=SHIFT_COLUMNS)


def shift_summary(table: pd.DataFrame) -> dict[str, Any]:
    """The ``shift`` section of metrics.json: the clean and the worst shift's mean Dice, their
    difference, and the mean Dice under every shift (in :data:`SHIFT_TEST` order)."""
    means = table.groupby("shift", sort=False)["dice"].mean()
    shifted = {s.name: float(means[s.name]) for s in SHIFT_TEST}
    clean, worst = float(means[CLEAN]), min(shifted.values())
    return {
        "dice_clean": clean,
        "dice_worst": worst,
        "dice_drop_worst": clean - worst,
        "dice": shifted,
    }


def worst_shift(section: dict[str, Any]) -> str:
    """The name of the shift with the lowest mean Dice in a ``shift`` section (the first in
    :data:`SHIFT_TEST` order on ties)."""
    dice = section["dice"]
    return min(dice, key=lambda name: dice[name])


def _render(
    unit: np.ndarray, truth: np.ndarray, shift: Shift | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The image and its scoring mask under `shift` (None: unchanged)."""
    if shift is None:
        return unit, truth
    return apply_shift(unit, truth, shift, rng)


def _score(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {
        "dice": m.dice(pred, truth),
        "iou": m.iou(pred, truth),
        "hd95": m.hd95(pred, truth),
        "assd": m.assd(pred, truth),
    }


def _unit_path(processed: Path, sid: str) -> Path:
    path = processed / UNIT_DIR / f"{sid}.tif"
    if not path.is_file():
        raise DataError(
            f"{path}: not found; expected the [0, 1] test image preprocess writes for chest "
            "X-rays (re-run preprocess)"
        )
    return path
