"""The summarize stage: one table of every dataset × model run, and our numbers beside the
published references.

``summary.csv`` has one row per run (dataset × model) with the columns
:data:`SUMMARY_COLUMNS`: the run's names and preset, the test-set headline metrics of its
``metrics.json`` (empty where a metric does not apply, such as V_Rand for CXR, or where the
test split is empty), the training time, parameter count and device from its ``model.pt``.
The evaluate stage writes each run's row (``evaluate.summary_row``, ``rows.write_row``)
to ``results/rows/<dataset>/<model>.json``; the summarize stage collects them.
``summary.md`` leads with the compare stage's verdicts (which differences between the models
hold up on the same test images, per dataset and metric), then shows the table and a second
one that pairs each run with every reference (``references.yaml``) for its dataset kind, with
the source and whether the test sets differ (they always do here; the column says how).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from unetflow.comparison.report import replicate_line, verdict
from unetflow.evaluation.rows import SUMMARY_COLUMNS
from unetflow.evaluation.subgroups import FINDINGS, SUBGROUP_METRICS, sex_finding_table
from unetflow.io.outputs import write_text_atomic
from unetflow.summary.references import COMPARISON_COLUMNS, comparison_rows
from unetflow.summary.tables import markdown_table, with_n

#: What DVC shows of each run (metrics.json, the pipeline's declared metrics): two test means,
#: so that `dvc exp show --only-changed` of a few runs fits a terminal. Dice for both kinds,
#: V_Rand (the ISBI challenge's score) for EM and HD95 (the boundary error) for lungs; every
#: other number is in results/<dataset>/<model>/metrics.json and summary.csv.
DVC_VIEW = {"em": ("dice", "vrand"), "cxr": ("dice", "hd95")}


def dvc_view(summary: list[dict[str, Any]]) -> dict[str, Any]:
    """metrics.json: ``{dataset: {model: {metric: test mean}}}`` of :data:`DVC_VIEW`."""
    view: dict[str, Any] = {}
    for run in summary:
        names = DVC_VIEW[run["kind"]]
        scores = {name: run.get(f"test_{name}") for name in names}
        view.setdefault(run["dataset"], {})[run["model"]] = {
            name: value for name, value in scores.items() if value is not None
        }
    return view


def summarize(
    summary: list[dict[str, Any]],
    out_csv: Path,
    out_md: Path,
    out_metrics: Path | None = None,
    comparisons: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Write summary.csv, summary.md and (given `out_metrics`) metrics.json for the summary
    rows `summary`, in that order; summary.md opens with the verdicts of `comparisons`
    (dataset -> its comparison.json)."""
    table = pd.DataFrame(summary, columns=list(SUMMARY_COLUMNS))
    table["parameters"] = table["parameters"].astype("Int64")
    table["n_test"] = table["n_test"].astype("Int64")
    comparison = comparison_rows(summary)
    presets = sorted({str(row["preset"]) for row in summary})
    md = [
        f"# unetflow results (preset {', '.join(f'`{p}`' for p in presets) or '–'})",
        "",
        *comparison_section(comparisons or {}),
        "## Every run",
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
        *shift_section(summary),
        *baseline_section(summary),
        *subgroup_sections(summary),
    ]
    write_text_atomic(Path(out_csv), table.to_csv(index=False))
    write_text_atomic(Path(out_md), "\n".join(md))
    if out_metrics is not None:
        write_text_atomic(Path(out_metrics), json.dumps(dvc_view(summary), indent=2) + "\n")


def comparison_section(comparisons: dict[str, dict[str, Any]]) -> list[str]:
    """summary.md lines: per dataset, which differences between the models hold up (the
    compare stage's verdict for each metric) and where the details are; none without."""
    if not comparisons:
        return []
    lines = [
        "## Which differences hold up",
        "",
        "From the compare stage: paired Wilcoxon tests on the same test images, Holm-adjusted "
        "over the pairs of each metric; the CIs, effect sizes and ranks are in "
        "`results/comparison/<dataset>.md`. The tables below show means only.",
    ]
    for dataset, result in comparisons.items():
        lines += ["", f"### {dataset} ({result['n_images']} test images)", ""]
        lines += [replicate_line(result), ""]
        lines += [f"- {verdict(result, metric)}" for metric in result["metrics"]]
    return [*lines, ""]


def shift_section(summary: list[dict[str, Any]]) -> list[str]:
    """summary.md lines: the shift test of every chest X-ray run (its ``shift`` section), the
    clean and the worst shift's test Dice and the Dice under every shift, with each run's
    figure; none when no run has one."""
    runs = [run for run in summary if run.get("shift")]
    if not runs:
        return []
    names = tuple(runs[0]["shift"]["dice"])
    rows = []
    for run in runs:
        shift = run["shift"]
        worst = min(shift["dice"], key=lambda name: shift["dice"][name])
        rows.append(
            {
                "dataset": run["dataset"],
                "model": run["model"],
                "clean": shift["dice_clean"],
                "worst": worst,
                "Δ worst": -shift["dice_drop_worst"],
                **shift["dice"],
            }
        )
    figures = [
        f"[{run['dataset']} / {run['model']}]({run['dataset']}/{run['model']}/figures/shifts.png)"
        for run in runs
    ]
    return [
        "## Under acquisition shifts",
        "",
        "Test Dice of chest X-ray models on their test images re-rendered as another "
        "hospital's scanner might make them (exposure, windowing, gamma, zoom, blur, noise, a "
        "burned-in text box; docs/shifts.md). `Δ worst` is the worst shift's Dice minus the "
        "clean Dice; the goal is no worse than −0.02. Figures: " + ", ".join(figures) + ".",
        "",
        markdown_table(rows, ("dataset", "model", "clean", "worst", "Δ worst", *names)),
        "",
    ]


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
                **{f: with_n(row[f], row[f"{f}_n"]) for f in (*FINDINGS, "all")},
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
