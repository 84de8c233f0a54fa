"""The summarize stage: one table of every dataset × model run, and our numbers beside the
published references.

``summary.csv`` has one row per run (dataset × model) with the columns
:data:`SUMMARY_COLUMNS`: the run's names and preset, the test-set headline metrics of its
``metrics.json`` (empty where a metric does not apply, such as V_Rand for CXR, or where the
test split is empty), the training time, parameter count and device from its ``model.pt``.
The evaluate stage writes each run's row (``evaluation.summary_row``, ``rows.write_row``)
to ``results/rows/<dataset>/<model>.json``; the summarize stage collects them.
``summary.md`` shows the same table and a second one that pairs each run with
every reference of :data:`REFERENCES` for its dataset kind, with the source and whether the
test sets differ (they always do here; the column says how).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from unetflow.evaluation.rows import SUMMARY_COLUMNS
from unetflow.evaluation.subgroups import FINDINGS, SUBGROUP_METRICS, sex_finding_table
from unetflow.io.outputs import write_text_atomic


@dataclass(frozen=True)
class Reference:
    """One published number: `low`..`high` (equal for a single value) of `metric` (a key of
    metrics.json's test section, or a metric we do not compute such as warping_error)."""

    kind: str  # dataset kind it compares with: "em" or "cxr"
    dataset: str  # the dataset it was measured on (our name for it)
    name: str
    metric: str
    low: float
    high: float
    test_set: str  # what the reference was measured on, and how ours differs
    source: str

    @property
    def value(self) -> str:
        """The number as printed: one value or a low–high range."""
        if self.low == self.high:
            return f"{self.low:g}"
        return f"{self.low:g}–{self.high:g}"


UNET_PAPER = "https://arxiv.org/abs/1505.04597 (Ronneberger et al., MICCAI 2015, Table 1)"
UNET_TEST = "ISBI 2012 challenge test volume (labels withheld); ours: held-out training slices"
DELFT = (
    "https://medium.com/@djangobrunink/the-road-to-u-net-reproduction-9dfcb80ea8dd "
    "(TU Delft reproduction, reproducedpapers.org, 2020)"
)
DELFT_TEST = "their own held-out ISBI 2012 training slices; ours: slices of params split.test"
SHENZHEN = (
    'A. O. Andersen, "A Look into U-Net" (the Shenzhen chest X-ray study that unet_andersen '
    "reproduces): test IoU"
)
SHENZHEN_TEST = "their own Shenzhen split; ours: the seeded split of params split"

#: The published references, in the order they are printed. The U-Net paper reports the ISBI
#: 2012 challenge's scores on the challenge test volume, whose labels are not public, so no
#: run here measures the same images; the TU Delft reproduction and the Shenzhen study used
#: their own splits. The Shenzhen Dice row is the target of docs/targets.md, not a citation.
REFERENCES: tuple[Reference, ...] = (
    Reference(
        "em", "isbi2012", "U-Net paper", "warping_error", 0.000353, 0.000353, UNET_TEST, UNET_PAPER
    ),
    Reference("em", "isbi2012", "U-Net paper", "rand_error", 0.0382, 0.0382, UNET_TEST, UNET_PAPER),
    Reference(
        "em", "isbi2012", "U-Net paper", "pixel_error", 0.0611, 0.0611, UNET_TEST, UNET_PAPER
    ),
    Reference(
        "em", "isbi2012", "TU Delft reproduction", "pixel_error", 0.084, 0.098, DELFT_TEST, DELFT
    ),
    Reference("cxr", "shenzhen", "Shenzhen study", "iou", 0.897, 0.897, SHENZHEN_TEST, SHENZHEN),
    Reference(
        "cxr",
        "shenzhen",
        "Shenzhen lung Dice target (≈ best published)",
        "dice",
        0.963,
        0.963,
        "various splits of the Shenzhen set; ours: the seeded split of params split",
        "docs/targets.md: unetflow's target, approximate; no publication is cited for it",
    ),
)
COMPARISON_COLUMNS = (
    "dataset",
    "model",
    "metric",
    "ours",
    "reference",
    "published",
    "test set differs",
    "source",
)


def comparison_rows(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each run beside every reference of its dataset kind (ours empty where not computed)."""
    rows = []
    for run in summary:
        for ref in REFERENCES:
            if ref.kind != run["kind"]:
                continue
            rows.append(
                {
                    "dataset": run["dataset"],
                    "model": run["model"],
                    "metric": ref.metric,
                    "ours": run.get(f"test_{ref.metric}"),
                    "reference": ref.name,
                    "published": ref.value,
                    "test set differs": _differs(run["dataset"], ref),
                    "source": ref.source,
                }
            )
    return rows


def _differs(dataset: str, ref: Reference) -> str:
    """The "test set differs" mark: always yes here, with how."""
    if dataset == ref.dataset:
        return f"yes: {ref.test_set}"
    return f"yes: ours on {dataset}, not {ref.dataset} (reference: {ref.test_set.split(';')[0]})"


def summarize(summary: list[dict[str, Any]], out_csv: Path, out_md: Path) -> None:
    """Write summary.csv and summary.md for the summary rows `summary`, in that order."""
    table = pd.DataFrame(summary, columns=list(SUMMARY_COLUMNS))
    table["parameters"] = table["parameters"].astype("Int64")
    table["n_test"] = table["n_test"].astype("Int64")
    comparison = comparison_rows(summary)
    presets = sorted({str(row["preset"]) for row in summary})
    md = [
        f"# unetflow results (preset {', '.join(f'`{p}`' for p in presets) or '–'})",
        "",
        "Test-split means over images (metrics.json `test.*`); – where a metric does not "
        "apply or was not computed. Training time in seconds, parameters counted from the "
        "checkpoint's model.",
        "",
        markdown_table(summary, SUMMARY_COLUMNS),
        "",
        "## Beside the published references",
        "",
        "The published numbers were measured on other test sets (see the last columns): read "
        "them as orientation, not as a like-for-like ranking.",
        "",
        markdown_table(comparison, COMPARISON_COLUMNS),
        "",
        *baseline_section(summary),
        *subgroup_sections(summary),
    ]
    write_text_atomic(Path(out_csv), table.to_csv(index=False))
    write_text_atomic(Path(out_md), "\n".join(md))


BASELINE = "baseline_mean"
BASELINE_METRICS = ("dice", "iou", "hd95", "assd")


def baseline_section(summary: list[dict[str, Any]]) -> list[str]:
    """summary.md lines: every model beside the mean-mask baseline of its dataset (test means
    and their differences), for the datasets where the baseline ran; none otherwise."""
    baselines = {run["dataset"]: run for run in summary if run["model"] == BASELINE}
    rows = []
    for run in summary:
        base = baselines.get(run["dataset"])
        if base is None or run["model"] == BASELINE:
            continue
        row: dict[str, Any] = {"dataset": run["dataset"], "model": run["model"]}
        for name in BASELINE_METRICS:
            ours, theirs = run.get(f"test_{name}"), base.get(f"test_{name}")
            row[f"test_{name}"] = ours
            row[f"Δ {name}"] = None if ours is None or theirs is None else ours - theirs
        rows.append(row)
    if not rows:
        return []
    columns = ("dataset", "model", *(c for n in BASELINE_METRICS for c in (f"test_{n}", f"Δ {n}")))
    return [
        "## Against the mean-mask baseline",
        "",
        f"Test means and the difference to `{BASELINE}` (the mean training mask) of the same "
        "dataset: Dice and IoU should rise, HD95 and ASSD (pixels) should fall.",
        "",
        markdown_table(rows, columns),
        "",
    ]


def subgroup_sections(summary: list[dict[str, Any]]) -> list[str]:
    """summary.md lines: per run with sex × finding metadata, the study's Table 3 (IoU by sex
    × finding, class-size-weighted margins) and the metrics by age group."""
    lines: list[str] = []
    for run in summary:
        groups = run.get("subgroups") or []
        table = sex_finding_table(groups, "iou")
        if not table:
            continue
        cells = [
            {
                "sex": row["sex"],
                **{f: _with_n(row[f], row[f"{f}_n"]) for f in (*FINDINGS, "all")},
            }
            for row in table
        ]
        ages = [g for g in groups if g["grouping"] == "age"]
        lines += [
            f"## {run['dataset']} / {run['model']}: test IoU by sex × finding",
            "",
            "Mean IoU (images); the `all` row and column are class-size-weighted means.",
            "",
            markdown_table(cells, ("sex", *FINDINGS, "all")),
            "",
            f"### {run['dataset']} / {run['model']}: by age group",
            "",
            markdown_table(ages, ("group", "n", *SUBGROUP_METRICS)),
            "",
        ]
    return lines


def _with_n(value: float | None, n: int) -> str:
    """A Table 3 cell: the mean with its image count, or – (0) for an empty group."""
    return f"{_cell(value)} ({n})"


#: Decimals of float cells in summary.md (default 4): distances in pixels and seconds need fewer.
DECIMALS = {
    "test_hd95": 2,
    "test_assd": 2,
    "train_seconds": 1,
    "hd95": 2,
    "assd": 2,
    "Δ hd95": 2,
    "Δ assd": 2,
}


def markdown_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    """A GitHub-flavoured Markdown table; None is –, floats get :data:`DECIMALS` (default 4)."""
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        cells = [_cell(row.get(column), DECIMALS.get(column, 4)) for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    if not rows:
        lines.append("| " + " | ".join("–" for _ in columns) + " |")
    return "\n".join(lines)


def _cell(value: Any, decimals: int = 4) -> str:
    """One Markdown cell: – for missing, `decimals` decimals (3 significant digits below
    0.001, so 0.000353 stays readable) for floats, thousands separators for integers."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.3g}" if 0 < abs(value) < 1e-3 else f"{value:.{decimals}f}"
    return str(value).replace("|", "\\|")
