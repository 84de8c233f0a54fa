"""The numbers of the noise stage (noise.json): per dataset, every model trained on each
family x level of noisy training masks (mean and SD over the seeds), set against the quality
of those labels (the mean Dice of the corrupted training masks against the clean ones), the
clean run as the reference, and the fixed-split models scored against noisy test masks.

Where things are (literal paths, one home for each): the corrupt stage writes
``data/noisy/<d>/<family>/level<l>/seed<s>/`` (with ``corruption.json``); noise_runs writes the
test scores to ``results/noise/<d>/trained/<model>/<family>/level<l>/seed<s>.csv``;
noise_scores writes ``results/noise/<d>/tested/<model>.csv``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from unetflow.comparison.compare import clean, compare
from unetflow.comparison.runs import COMPARED, FIXED_SPLIT, score_path
from unetflow.data.corrupt import level_value

CLEAN = "clean"  # the family name of the clean test masks in a tested table
STEP = 0.1  # slopes are given per this loss of label Dice


def corrupted_dir(noisy: Path, family: str, level: int, seed: int) -> Path:
    """The corrupt stage's noisy copy of a processed dataset."""
    return Path(noisy) / family / f"level{level}" / f"seed{seed}"


def trained_path(results: Path, model: str, family: str, level: int, seed: int) -> Path:
    """The test scores of `model` trained on one noisy dataset."""
    return Path(results) / "trained" / model / family / f"level{level}" / f"seed{seed}.csv"


def noisy_test_path(results: Path, model: str) -> Path:
    """The test scores of `model`'s fixed-split run against every noisy version of the test."""
    return Path(results) / "tested" / f"{model}.csv"


def _read(path: Path, what: str) -> pd.DataFrame:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: not found; expected {what}")
    return pd.read_csv(path, dtype={"id": str})


def metric_means(table: pd.DataFrame, metrics: Sequence[str]) -> dict[str, float]:
    """Each metric's mean over the images, and the area bias of the predictions (mean of
    |predicted| / |true| - 1 = recall / precision - 1, over images where both are > 0)."""
    means = {metric: float(table[metric].mean()) for metric in metrics}
    usable = table[(table["precision"] > 0) & (table["recall"] > 0)]
    means["area_bias"] = float((usable["recall"] / usable["precision"] - 1).mean())
    return means


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean and SD (ddof 1; 0 for one value) over seeds."""
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "sd": float(array.std(ddof=1)) if len(array) > 1 else 0.0}


def run_entry(
    noisy: Path,
    results: Path,
    model: str,
    family: str,
    level: int,
    seeds: Sequence[int],
    metrics: Sequence[str],
) -> dict[str, Any]:
    """One model x family x level over the seeds: label Dice and every test metric."""
    labels, tests, applied = [], [], None
    for seed in seeds:
        record = corrupted_dir(noisy, family, level, seed) / "corruption.json"
        if not record.is_file():
            raise FileNotFoundError(f"{record}: not found; expected the corrupt stage's record")
        found = json.loads(record.read_text())
        labels.append(found["mean_dice"])
        applied = found["level"]  # at the processed size, the same for every seed
        path = trained_path(results, model, family, level, seed)
        tests.append(metric_means(_read(path, "the noise_runs stage's test scores"), metrics))
    entry = {"level": level, "applied": applied, "label_dice": spread(labels)}
    for name in (*metrics, "area_bias"):
        entry[name] = spread([test[name] for test in tests])
    return entry


def slope(points: list[tuple[float, float]]) -> float | None:
    """The least-squares change of a metric per STEP loss of label Dice (None below 2 points)."""
    if len({x for x, _ in points}) < 2:
        return None
    x, y = np.array(points, dtype=np.float64).T
    return float(-np.polyfit(x, y, 1)[0] * STEP)


def noise_study(
    *,
    dataset: str,
    kind: str,
    models: Sequence[str],
    families: Sequence[str],
    levels: Sequence[int],
    seeds: Sequence[int],
    noise: dict[str, Any],
    noisy: Path,
    results: Path,
    clean_scores: Path,
    seed: int,
    n_boot: int,
) -> dict[str, Any]:
    """The dict behind noise.json (module docstring): `noise` is the dataset's noise
    definition, `clean_scores` compare's folder of fixed-split test scores."""
    metrics = COMPARED[kind]
    study: dict[str, Any] = {
        "dataset": dataset,
        "kind": kind,
        "metrics": metrics,
        "models": list(models),
        "seeds": list(seeds),
        "levels": {f: {str(i): level_value(noise, f, i) for i in levels} for f in families},
        "clean": {},
        "runs": {},
        "slopes": {},
    }
    for model in models:
        reference = _read(score_path(clean_scores, model), "the fixed-split run's test scores")
        study["clean"][model] = metric_means(reference, metrics)
        study["runs"][model] = {
            f: {f"level{i}": run_entry(noisy, results, model, f, i, seeds, metrics) for i in levels}
            for f in families
        }
        study["slopes"][model] = {
            f: {m: slope(_points(study, model, f, m)) for m in (*metrics, "area_bias")}
            for f in families
        }
    study["noisy_test"] = noisy_test(results, clean_scores, models, families, metrics, seed, n_boot)
    return clean(study)


def _points(
    study: dict[str, Any], model: str, family: str, metric: str
) -> list[tuple[float, float]]:
    """(label Dice, metric) of the clean run (label Dice 1) and of each level of `family`."""
    points = [(1.0, study["clean"][model][metric])]
    for entry in study["runs"][model][family].values():
        points.append((entry["label_dice"]["mean"], entry[metric]["mean"]))
    return points


def noisy_test(
    results: Path,
    clean_scores: Path,
    models: Sequence[str],
    families: Sequence[str],
    metrics: Sequence[str],
    seed: int,
    n_boot: int,
) -> dict[str, Any]:
    """The fixed-split models compared (compare's statistics) on the clean test masks and on
    each noisy version of them; a pair's verdict flips when its winner or its significance
    changes."""
    tables = []
    for model in models:
        clean_rows = _read(score_path(clean_scores, model), "the fixed-split run's test scores")
        tables.append(clean_rows.assign(family=CLEAN, level=0, label_dice=1.0, variant=model))
        noisy = _read(noisy_test_path(results, model), "the noise_scores stage's table")
        tables.append(noisy[noisy["family"].isin(families)].assign(variant=model))
    long = pd.concat(tables, ignore_index=True)
    verdicts, label_dice = {}, {}
    for (family, level), rows in long.groupby(["family", "level"], sort=False):
        name = CLEAN if family == CLEAN else f"{family}-level{level}"
        label_dice[name] = float(rows.groupby("id")["label_dice"].first().mean())
        verdicts[name] = _verdicts(rows, metrics, seed, n_boot)
    flips = {
        name: {
            pair: [m for m in metrics if found[pair][m] != verdicts[CLEAN][pair][m]]
            for pair in found
        }
        for name, found in verdicts.items()
        if name != CLEAN
    }
    return {"label_dice": label_dice, "verdicts": verdicts, "flips": flips}


def _verdicts(
    rows: pd.DataFrame, metrics: Sequence[str], seed: int, n_boot: int
) -> dict[str, dict[str, str]]:
    """Per pair and metric: the better variant's name where the difference holds up after
    Holm, otherwise "n.s."."""
    scores = rows.rename(columns={"id": "image"}).assign(seed=seed, fold=FIXED_SPLIT)
    result = compare(
        scores[["variant", "image", "seed", "fold", *metrics]], list(metrics), seed, n_boot
    )
    out: dict[str, dict[str, str]] = {}
    for name, pair in result["pairs"].items():
        out[name] = {}
        for metric in metrics:
            entry = pair["metrics"][metric]
            better = pair["a"] if (entry["effect"] or 0) > 0 else pair["b"]
            out[name][metric] = better if entry["significant"] else "n.s."
    return out
