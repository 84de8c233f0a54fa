"""The runs the compare stage reads: the per-image test scores evaluate writes to
``results/scores/<dataset>/<model>.csv`` (a run of the fixed split) or the replicates stage to
``results/scores/<dataset>/<model>/seed<s>/fold<f>.csv`` (cross-validation fold f, training
seed s), gathered into the long table :func:`unetflow.comparison.compare.compare`
takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

# The fold of a run of the fixed split (split.csv) in the long table.
FIXED_SPLIT = -1
# What each kind of dataset is compared on (the list; EM adds the ISBI scores).
COMPARED = {
    "em": ["dice", "iou", "hd95", "assd", "vrand", "vinfo", "pixel_error"],
    "cxr": ["dice", "iou", "hd95", "assd"],
}


def score_path(scores: Path, model: str, fold: int | None = None, seed: int | None = None) -> Path:
    """Where the test scores of a run are: a fixed-split run's without fold and seed."""
    if fold is None:
        return Path(scores) / f"{model}.csv"
    return Path(scores) / model / f"seed{seed}" / f"fold{fold}.csv"


def load_scores(
    scores: Path,
    models: Sequence[str],
    folds: Sequence[int],
    seeds: Sequence[int],
    fixed_seed: int,
    metrics: Sequence[str],
) -> pd.DataFrame:
    """The long table (variant, image, seed, fold, metrics) of every model's replicates, or
    of its fixed-split run (trained with `fixed_seed`) when no folds are selected."""
    runs = [(m, f, s) for m in models for f in folds for s in seeds] or [
        (m, None, None) for m in models
    ]
    tables = []
    for model, fold, seed in runs:
        path = score_path(scores, model, fold, seed)
        try:
            table = pd.read_csv(path, dtype={"id": str})
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"{path}: not found; expected the test scores evaluate writes for this run"
            ) from exc
        missing = [c for c in ("id", *metrics) if c not in table.columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; expected id and {metrics}")
        table = table[["id", *metrics]].rename(columns={"id": "image"})
        table.insert(0, "variant", model)
        table.insert(2, "seed", fixed_seed if seed is None else seed)
        table.insert(3, "fold", FIXED_SPLIT if fold is None else fold)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)
