"""The summary row of one run: the evaluate stage writes it, the summarize stage collects it.

Each dataset × model run leaves ``results/rows/<dataset>/<model>.json`` with the keys
:data:`SUMMARY_COLUMNS` (and, for runs with subgroups, their records). This module is the
format both stages share, and nothing else, so that neither stage's code re-runs the other.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from unetflow.io.outputs import write_text_atomic

HEADLINE = ("dice", "iou", "pixel_error", "vrand", "vinfo", "rand_error", "hd95", "assd")
SUMMARY_COLUMNS = (
    "dataset",
    "kind",
    "model",
    "preset",
    "n_test",
    *(f"test_{name}" for name in HEADLINE),
    "train_seconds",
    "parameters",
    "device",
)


class ReportError(ValueError):
    """A run that cannot be summarised; the message names the file."""


def row_path(rows_dir: Path, dataset: str, model: str) -> Path:
    """Where the evaluate stage leaves the summary row of a run: ``<rows>/<dataset>/<model>.json``.

    One folder of rows lets DVC's summarize stage depend on every run through a single path
    (dvc.yaml cannot list the datasets × models files, and cannot depend on ``results/``
    while writing ``results/summary.csv`` inside it)."""
    return Path(rows_dir) / dataset / f"{model}.json"


def write_row(path: Path, row: dict[str, Any]) -> None:
    """Write a summary row as JSON, atomically."""
    write_text_atomic(Path(path), json.dumps(row, indent=2) + "\n")


def read_row(path: Path) -> dict[str, Any]:
    """A summary row written by :func:`write_row`; errors name the file."""
    path = Path(path)
    try:
        row = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ReportError(
            f"{path}: not found; expected the summary row that the evaluate stage writes"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc})") from exc
    missing = [c for c in SUMMARY_COLUMNS if not isinstance(row, dict) or c not in row]
    if missing:
        raise ReportError(f"{path}: expected a summary row with the keys {missing}")
    return row


def finite(value: Any) -> float | None:
    """`value` as a float, or None when absent or not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
