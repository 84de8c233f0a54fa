"""Which runs the explain stage applies to: chest X-ray datasets (kind ``cxr``, whose metadata
give the groups) and U-Net models. Decided from the kinds in params, so that a run it does not
apply to gets its ``summary.json`` without loading torch, the network or the data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unetflow.io.outputs import staged_dir


def skip_reason(dataset_kind: str, model_kind: str) -> str | None:
    """Why explain does not apply to a run of these kinds; None when it does."""
    if model_kind != "unet":
        return "the model has no network to explain"
    if dataset_kind != "cxr":
        return f"kind {dataset_kind}: the groups (sex, finding) exist for chest X-rays (cxr) only"
    return None


def skipped_summary(dataset: str, model: str, reason: str, out: Path) -> dict[str, Any]:
    """Write `out` holding only the summary.json of a run explain does not apply to; return it."""
    summary = {"dataset": dataset, "model": model, "applicable": False, "reason": reason}
    with staged_dir(out) as work:
        (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
