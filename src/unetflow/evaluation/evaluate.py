"""The evaluate stage: per-image and aggregated metrics of one dataset × model, and figures.

Inputs: the processed set (``split.csv``, ``images/<id>.tif``, ``masks/<id>.png`` with {0, 1},
1 = foreground: EM cell, CXR lung; scored against ``score_masks/<id>.png`` instead where
preprocessing wrote them, at the resolution the predictions were mapped back to) and the
infer stage's ``predictions/`` folder (``masks/<id>.png`` 0/255, binarised as > 0, and
``probabilities/<id>.tif``, the float32 foreground probability). Every ``val`` and ``test``
row of ``split.csv`` is evaluated.

Outputs:

- ``per_image.csv``: one row per image, val rows before test rows, each in split.csv order:
  ``id, split``, every other column of split.csv (metadata: source, index, size, and for CXR
  sex, age, finding, ...) and then every metric of the kind
  (:func:`unetflow.evaluation.scoring.metric_names`), named like the metrics.json keys; EM
  rows also carry the split and merge parts of V_Rand / V_Info and the thresholds at which
  V_Rand, V_Info and the Rand error were best, which metrics.json does not aggregate.
- ``metrics.json``: ``{"n_val": n, "n_test": n, "val": {...}, "test": {...}}`` where each
  section maps ``<metric>`` to the mean over the split's images and ``<metric>_std`` to their
  population standard deviation (ddof 0, so one image gives 0.0, never NaN). Keys are sorted
  and stable: ``dice, iou, pixel_error, precision, recall, hd95, assd`` for every kind, plus
  ``vrand, vinfo, rand_error`` for EM only (V_Rand and V_Info are ISBI 2012 EM scores;
  CXR sections simply do not have them). A split without images gets ``n_<split>: 0`` and
  no section at all, so that no placeholder can be read as a measurement and no NaN is
  written. Every value is a finite float; a metric that comes out NaN or infinite (which the
  conventions of :mod:`unetflow.evaluation.metrics` rule out) is an error naming the image, not a
  silently bad number. The file is written atomically (temporary file, then rename).
- ``figures/`` (optional, built in a staged folder so it appears complete or not at all):
  ``panels.png``, input / ground truth / prediction / error overlay (false positives red,
  false negatives blue over the grey input) for the best, median and worst test image by
  Dice (ties broken by id); ``learning_curves.png``, one axis per DVCLive
  ``plots/metrics/**/*.tsv`` curve of the training run. Both files are always written, with
  a short notice in place of the plot when there are no test images or no curves, so that
  workflow engines can declare them as outputs. Where split.csv gives ages (CXR),
  ``iou_by_age.png`` plots each age group's size against its mean IoU.
- ``subgroups.csv`` (optional): the test split's means by sex, finding, sex × finding and age
  group, see :mod:`unetflow.evaluation.subgroups`.

Metric definitions and their empty-mask conventions are those of :mod:`unetflow.evaluation.metrics`;
for EM, V_Rand, V_Info and the Rand error come from the *membrane* probability
(1 - cell probability) against the ground-truth cells.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from unetflow.evaluation.cases import panel_cases
from unetflow.evaluation.rows import HEADLINE, ReportError, finite
from unetflow.evaluation.scoring import image_metrics, load_pair, metric_names, per_image_names
from unetflow.evaluation.shifts import SHIFT_COLUMNS, SHIFT_LABELS, ShiftModel, shift_summary
from unetflow.evaluation.subgroups import SUBGROUP_METRICS, subgroup_table
from unetflow.io.images import (
    read_gray,
    read_processed_image,
    resize_image,
)
from unetflow.io.outputs import staged_dir, write_text_atomic
from unetflow.io.processed import DataError, read_split, scoring_mask_path
from unetflow.io.progress import progress
from unetflow.model.checkpoint import CheckpointError, load_model
from unetflow.model.unet import count_parameters
from unetflow.plots import age_figure, curves_figure, panels_figure, shifts_figure

EVAL_SPLITS = ("val", "test")


def aggregate(table: pd.DataFrame, names: tuple[str, ...]) -> dict[str, Any]:
    """metrics.json content from per-image rows: counts, and mean/std per metric per split."""
    out: dict[str, Any] = {}
    for split in EVAL_SPLITS:
        rows = table[table["split"] == split]
        out[f"n_{split}"] = len(rows)
        if len(rows) == 0:
            continue
        section: dict[str, float] = {}
        for name in names:
            values = rows[name].to_numpy(dtype=np.float64)
            section[name] = float(values.mean())
            section[f"{name}_std"] = float(values.std(ddof=0))
        out[split] = dict(sorted(section.items()))
    return out


def evaluate(
    *,
    dataset: str,
    kind: str,
    processed: Path,
    predictions: Path,
    out_metrics: Path,
    out_per_image: Path,
    out_figures: Path | None = None,
    live_dir: Path | None = None,
    out_subgroups: Path | None = None,
    out_shifts: Path | None = None,
    shift_model: ShiftModel | None = None,
    fold: int | None = None,
    out_scores: Path | None = None,
) -> dict[str, Any]:
    """Evaluate the predictions of one dataset × model; write per_image.csv, metrics.json and,
    when `out_figures` is given, the figures, and when `out_subgroups` is given, the test
    split's subgroups.csv (:mod:`unetflow.evaluation.subgroups`). Returns the metrics.json content.
    `live_dir` is the DVCLive folder of the training run (default:
    ``<predictions>/../dvclive``), read for the learning curves only.

    With `out_shifts`, chest X-rays also get the shift test of `shift_model`
    (:mod:`unetflow.evaluation.shifts`): its table goes to `out_shifts`, its summary to the
    ``shift`` section of metrics.json and its figure to ``shifts.png``; other kinds get a
    table with the header only. With `fold`, the val and test images are those of that
    cross-validation fold. `out_scores` gets the test images' metrics (``id`` and
    :func:`metric_names`), what the compare stage reads."""
    names = metric_names(kind)
    columns = per_image_names(kind)
    processed, predictions = Path(processed), Path(predictions)
    split = read_split(processed, fold)
    rows = pd.concat([split[split["split"] == s] for s in EVAL_SPLITS], ignore_index=True)
    metadata = [c for c in split.columns if c not in ("id", "split")]

    records = []
    for sid in progress(list(rows["id"]), desc=f"evaluate {dataset}", unit="image"):
        pred, truth, prob = load_pair(processed, predictions, sid)
        values = image_metrics(pred, truth, prob, kind)
        bad = [name for name, value in values.items() if not math.isfinite(value)]
        if bad:
            raise ValueError(
                f"{predictions / 'masks' / f'{sid}.png'}: metric(s) {bad} are not finite; "
                "expected the finite conventions of unetflow.evaluation.metrics"
            )
        records.append(values)
    table = pd.concat(
        [rows[["id", "split", *metadata]], pd.DataFrame(records, columns=list(columns))], axis=1
    )
    summary = aggregate(table, names)
    groups = subgroup_table(table)
    test = table[table["split"] == "test"]
    shifts = None
    if out_shifts is not None and kind == "cxr":
        if shift_model is None:
            raise ValueError("evaluate: the shift test of a chest X-ray set needs shift_model")
        shifts = shift_model.run(processed, list(test["id"]))
        summary["shift"] = shift_summary(shifts)

    if out_figures is not None:
        live = Path(live_dir) if live_dir is not None else predictions.parent / "dvclive"
        write_figures(Path(out_figures), processed, predictions, test, live, groups, shifts)
    if out_shifts is not None:
        empty = pd.DataFrame(columns=SHIFT_COLUMNS)
        write_text_atomic(
            Path(out_shifts), (shifts if shifts is not None else empty).to_csv(index=False)
        )
    if out_subgroups is not None:
        write_text_atomic(Path(out_subgroups), groups.to_csv(index=False))
    write_text_atomic(Path(out_per_image), table.to_csv(index=False))
    if out_scores is not None:
        scores = test[["id", *names]].to_csv(index=False)
        write_text_atomic(Path(out_scores), scores)
    write_text_atomic(Path(out_metrics), json.dumps(summary, indent=2) + "\n")
    return summary


def summary_row(
    metrics_path: Path,
    checkpoint: Path,
    *,
    dataset: str,
    model: str,
    kind: str,
    preset: str,
    subgroups: Path | None = None,
) -> dict[str, Any]:
    """The summary.csv row of one run, from its metrics.json and its model.pt; with
    `subgroups` (the run's subgroups.csv) also its ``subgroups`` records, and for chest X-rays
    the ``shift`` section of metrics.json, for summary.md."""
    metrics = _read_metrics(Path(metrics_path))
    try:
        net, meta = load_model(Path(checkpoint))
    except CheckpointError as exc:
        raise ReportError(str(exc)) from exc
    train = meta.get("train") or {}
    test = metrics.get("test") or {}
    row: dict[str, Any] = {
        "dataset": dataset,
        "kind": kind,
        "model": model,
        "preset": preset,
        "n_test": int(metrics.get("n_test", 0)),
    }
    for name in HEADLINE:
        row[f"test_{name}"] = finite(test.get(name))
    row["train_seconds"] = finite(train.get("seconds"))
    row["parameters"] = count_parameters(net)
    row["device"] = str(train.get("device", ""))
    if "shift" in metrics:
        row["shift"] = metrics["shift"]
    if subgroups is not None:
        table = pd.read_csv(subgroups)
        row["subgroups"] = [
            {k: finite(v) if k in SUBGROUP_METRICS else v for k, v in record.items()}
            for record in table.to_dict("records")
        ]
    return row


def _read_metrics(path: Path) -> dict[str, Any]:
    """metrics.json of the evaluate stage; errors name the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ReportError(f"{path}: not found; expected the evaluate stage's metrics") from exc
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or "n_test" not in data:
        raise ReportError(f"{path}: expected an object with n_test (and test, val sections)")
    return data


def write_figures(
    out: Path,
    processed: Path,
    predictions: Path,
    test: pd.DataFrame,
    live_dir: Path,
    subgroups: pd.DataFrame | None = None,
    shifts: pd.DataFrame | None = None,
) -> None:
    """Write ``panels.png``, ``learning_curves.png``, where the images have ages,
    ``iou_by_age.png`` (group size against IoU) and, with a shift table, ``shifts.png`` (Dice
    per shift) into the folder `out`, atomically."""
    curves = read_curves(live_dir)
    with staged_dir(out) as work:
        rows = [_panel_row(processed, predictions, *case) for case in panel_cases(test)]
        panels_figure(rows).savefig(work / "panels.png", dpi=100)
        where = Path(live_dir) / "plots" / "metrics"
        curves_figure(curves, where).savefig(work / "learning_curves.png", dpi=100)
        ages = age_figure(subgroups) if subgroups is not None else None
        if ages is not None:
            ages.savefig(work / "iou_by_age.png", dpi=100)
        if shifts is not None:
            shifts_figure(shifts, SHIFT_LABELS).savefig(work / "shifts.png", dpi=100)


def _panel_row(
    processed: Path, predictions: Path, label: str, sid: str, dice: float
) -> tuple[str, str, float, np.ndarray, np.ndarray, np.ndarray]:
    """A row of the panels figure: the image at the scoring size, its truth and prediction."""
    truth = read_gray(scoring_mask_path(processed, sid)) > 0
    image = read_processed_image(processed / "images" / f"{sid}.tif")
    if image.shape != truth.shape:  # trained at a lower resolution than scored at
        image = resize_image(image, truth.shape)
    pred = read_gray(predictions / "masks" / f"{sid}.png") > 0
    return label, sid, dice, image, truth, pred


def read_curves(live_dir: Path) -> dict[str, pd.DataFrame]:
    """DVCLive curves: ``plots/metrics/<name>.tsv`` (columns step, value) keyed by <name>,
    sorted by name; an absent folder gives no curves. Non-numeric values become NaN."""
    root = Path(live_dir) / "plots" / "metrics"
    curves: dict[str, pd.DataFrame] = {}
    for path in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        try:
            table = pd.read_csv(path, sep="\t")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot parse as a DVCLive TSV ({exc})") from exc
        if "step" not in table.columns or len(table.columns) != 2:
            raise DataError(f"{path}: expected two columns, step and the metric value")
        value = next(c for c in table.columns if c != "step")
        curves[path.relative_to(root).with_suffix("").as_posix()] = pd.DataFrame(
            {
                "step": pd.to_numeric(table["step"], errors="coerce"),
                "value": pd.to_numeric(table[value], errors="coerce"),
            }
        )
    return curves
