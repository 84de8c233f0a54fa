"""The Shenzhen study's analyses of a run's per-image scores: means by sex, finding,
sex × finding and age group, so that a model that works for one group only shows it.

``subgroups.csv`` (one per dataset × model, written by the evaluate stage) has the columns
:data:`SUBGROUP_COLUMNS`, one row per group of the test split: ``grouping`` (``all``,
``sex``, ``finding``, ``sex × finding``, ``age``), ``group`` (``all``, ``female``,
``female / abnormal``, ``20–29``, ...), ``n`` (images in the group) and the group's mean of
every metric of :data:`SUBGROUP_METRICS` (Dice and IoU beside the boundary metrics HD95 and
ASSD, which show an error at the lung border that Dice hides). Groupings whose metadata
column is missing (EM has none) are left out, so EM runs get only the ``all`` row.

The study's Table 3 layout (:func:`sex_finding_table`) puts sex in rows and finding in
columns; its margins are class-size-weighted means of the cells, i.e. each cell's mean
weighted by its number of images, which equals the mean over the pooled images.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

SUBGROUP_METRICS = ("dice", "iou", "hd95", "assd")
SUBGROUP_COLUMNS = ("grouping", "group", "n", *SUBGROUP_METRICS)
SEXES = ("female", "male")
FINDINGS = ("normal", "abnormal")
#: Lower edges of the age groups in years; the last group is open-ended.
AGE_EDGES = (0, 20, 30, 40, 50, 60)


def age_group(age: float | None) -> str | None:
    """The age group label of an age in years (``<20``, ``20–29``, ..., ``≥60``); None when
    the age is unknown (None, NaN or negative)."""
    if age is None or not math.isfinite(age) or age < 0:
        return None
    i = max(k for k, edge in enumerate(AGE_EDGES) if age >= edge)
    if i == len(AGE_EDGES) - 1:
        return f"≥{AGE_EDGES[i]}"
    upper = AGE_EDGES[i + 1] - 1
    return f"<{upper + 1}" if i == 0 else f"{AGE_EDGES[i]}–{upper}"


def age_groups() -> list[str]:
    """Every age group label, youngest first."""
    return [str(age_group(float(edge))) for edge in AGE_EDGES]


def subgroup_table(per_image: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """The rows of subgroups.csv for the images of `split` in a per_image.csv table."""
    rows = per_image[per_image["split"] == split]
    groups: list[tuple[str, str, pd.DataFrame]] = [("all", "all", rows)]
    if "sex" in rows:
        groups += [("sex", s, rows[rows["sex"] == s]) for s in SEXES]
    if "finding" in rows:
        groups += [("finding", f, rows[rows["finding"] == f]) for f in FINDINGS]
    if "sex" in rows and "finding" in rows:
        groups += [
            ("sex × finding", f"{s} / {f}", rows[(rows["sex"] == s) & (rows["finding"] == f)])
            for s in SEXES
            for f in FINDINGS
        ]
    if "age" in rows:
        labels = pd.to_numeric(rows["age"], errors="coerce").map(age_group)
        groups += [("age", label, rows[labels == label]) for label in age_groups()]
    records = []
    for grouping, group, members in groups:
        record: dict[str, Any] = {"grouping": grouping, "group": group, "n": len(members)}
        for name in SUBGROUP_METRICS:
            values = members[name].to_numpy(dtype=np.float64) if len(members) else np.array([])
            record[name] = float(values.mean()) if len(values) else None
        records.append(record)
    return pd.DataFrame(records, columns=list(SUBGROUP_COLUMNS))


def weighted_mean(cells: list[tuple[int, float | None]]) -> float | None:
    """The class-size-weighted mean of (n, mean) cells; cells without images (n = 0, whose
    mean is None or NaN) do not count; None when no cell has images."""
    filled = [(n, value) for n, value in cells if n > 0]
    total = sum(n for n, _ in filled)
    if total == 0:
        return None
    return sum(n * float(value) for n, value in filled) / total  # type: ignore[arg-type]


def sex_finding_table(subgroups: list[dict[str, Any]], metric: str = "iou") -> list[dict]:
    """The study's Table 3: one row per sex and a weighted ``all`` row; per finding and
    ``all`` the mean of `metric` and its image count (``<finding>`` and ``<finding>_n``).
    Empty when the run has no sex × finding groups."""
    cells = {
        tuple(row["group"].split(" / ")): (int(row["n"]), row[metric])
        for row in subgroups
        if row["grouping"] == "sex × finding"
    }
    if not cells:
        return []
    table = []
    for sex in (*SEXES, "all"):
        record: dict[str, Any] = {"sex": sex}
        for finding in (*FINDINGS, "all"):
            chosen = [
                cells.get((s, f), (0, None))
                for s in (SEXES if sex == "all" else (sex,))
                for f in (FINDINGS if finding == "all" else (finding,))
            ]
            record[finding] = weighted_mean(chosen)
            record[f"{finding}_n"] = sum(n for n, _ in chosen)
        table.append(record)
    return table
