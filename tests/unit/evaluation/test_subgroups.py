"""The Shenzhen study's subgroup analyses on a hand-made per-image table."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from unetflow.evaluation.subgroups import (
    SUBGROUP_COLUMNS,
    age_group,
    age_groups,
    sex_finding_table,
    subgroup_table,
    weighted_mean,
)
from unetflow.plots import age_figure

# Six test images and one val image (which must not count): IoU chosen so that every
# group's mean is easy to work out by hand.
PER_IMAGE = pd.DataFrame(
    [
        # id, split, sex, age, finding, dice, iou, hd95, assd
        ("a", "test", "female", 19, "normal", 0.9, 0.80, 4.0, 1.0),
        ("b", "test", "female", 25, "abnormal", 0.8, 0.60, 10.0, 3.0),
        ("c", "test", "male", 25, "normal", 0.95, 0.90, 2.0, 0.5),
        ("d", "test", "male", 47, "normal", 0.95, 0.90, 2.0, 0.5),
        ("e", "test", "male", 61, "abnormal", 0.7, 0.50, 30.0, 6.0),
        ("f", "test", "male", 89, "abnormal", 0.7, 0.70, 20.0, 4.0),
        ("g", "val", "male", 30, "normal", 0.1, 0.05, 99.0, 50.0),
    ],
    columns=["id", "split", "sex", "age", "finding", "dice", "iou", "hd95", "assd"],
)


def groups_of(table: pd.DataFrame) -> dict[tuple[str, str], dict]:
    return {(r["grouping"], r["group"]): r for r in table.to_dict("records")}


def test_subgroup_means_and_counts():
    table = subgroup_table(PER_IMAGE)
    assert list(table.columns) == list(SUBGROUP_COLUMNS)
    groups = groups_of(table)
    assert groups["all", "all"]["n"] == 6
    assert groups["all", "all"]["iou"] == pytest.approx(4.4 / 6)
    assert groups["sex", "female"]["n"] == 2 and groups["sex", "female"]["iou"] == 0.7
    assert groups["sex", "male"]["iou"] == pytest.approx(0.75)
    assert groups["finding", "normal"]["iou"] == pytest.approx(2.6 / 3)
    assert groups["finding", "abnormal"]["hd95"] == pytest.approx(20.0)
    assert groups["sex × finding", "male / abnormal"]["n"] == 2
    assert groups["sex × finding", "male / abnormal"]["iou"] == pytest.approx(0.6)
    assert groups["sex × finding", "female / normal"]["assd"] == 1.0
    ages = table[table["grouping"] == "age"]
    assert list(ages["group"]) == ["<20", "20–29", "30–39", "40–49", "50–59", "≥60"]
    assert list(ages["n"]) == [1, 2, 0, 1, 0, 2]
    assert groups["age", "20–29"]["iou"] == pytest.approx(0.75)
    assert math.isnan(groups["age", "30–39"]["iou"])  # the val image at 30 does not count


def test_table3_margins_are_class_size_weighted():
    table = sex_finding_table(subgroup_table(PER_IMAGE).to_dict("records"), "iou")
    rows = {row["sex"]: row for row in table}
    assert list(rows) == ["female", "male", "all"]
    assert rows["male"]["normal"] == pytest.approx(0.9) and rows["male"]["normal_n"] == 2
    # male: (2 x 0.9 + 2 x 0.6) / 4
    assert rows["male"]["all"] == pytest.approx(0.75) and rows["male"]["all_n"] == 4
    # normal column: (1 x 0.8 + 2 x 0.9) / 3 = 0.8667 (the unweighted mean would be 0.85)
    assert rows["all"]["normal"] == pytest.approx(2.6 / 3)
    assert rows["all"]["all"] == pytest.approx(4.4 / 6) and rows["all"]["all_n"] == 6
    assert sex_finding_table([{"grouping": "all", "group": "all", "n": 3, "iou": 0.5}]) == []


def test_weighted_mean_and_empty_groups():
    assert weighted_mean([(1, 0.8), (3, 0.4)]) == pytest.approx(0.5)
    assert weighted_mean([(0, None), (2, 0.3), (0, math.nan)]) == pytest.approx(0.3)
    assert weighted_mean([(0, None)]) is None


def test_age_groups():
    assert age_groups() == ["<20", "20–29", "30–39", "40–49", "50–59", "≥60"]
    assert [age_group(a) for a in (0, 19.9, 20, 29, 59, 60, 120)] == [
        "<20", "<20", "20–29", "20–29", "50–59", "≥60", "≥60",
    ]  # fmt: skip
    assert age_group(None) is None and age_group(math.nan) is None and age_group(-1) is None


def test_em_tables_have_only_the_all_row():
    em = PER_IMAGE.drop(columns=["sex", "age", "finding"])
    table = subgroup_table(em)
    assert table[["grouping", "group", "n"]].values.tolist() == [["all", "all", 6]]
    assert age_figure(table) is None


def test_age_figure_plots_one_point_per_non_empty_group():
    fig = age_figure(subgroup_table(PER_IMAGE))
    [ax] = fig.axes
    offsets = ax.collections[0].get_offsets()
    assert [tuple(point) for point in offsets] == [
        (1, 0.8), (2, 0.75), (1, 0.9), (2, 0.6)
    ]  # fmt: skip
