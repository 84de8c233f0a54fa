"""summarize: summary.csv / summary.md from fake results folders with small real checkpoints."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from unetflow.comparison.compare import compare
from unetflow.evaluation.evaluate import summary_row
from unetflow.evaluation.rows import SUMMARY_COLUMNS, ReportError, read_row, row_path, write_row
from unetflow.evaluation.subgroups import subgroup_table
from unetflow.model.checkpoint import save_model
from unetflow.model.unet import MeanMask, UNet
from unetflow.summary.references import REFERENCES, comparison_rows
from unetflow.summary.summarize import summarize
from unetflow.summary.tables import markdown_table

ROOT = Path(__file__).resolve().parents[3]

ARCH = {"padding": "same", "width": 4, "depth": 2, "norm": "batch", "up": "transposed"}
ARCH.update(dropout=0.0, init="he")
KINDS = {"synth_em": "em", "synth_cxr": "cxr"}
EM_METRICS = {
    "n_val": 2,
    "n_test": 3,
    "test": {"dice": 0.91, "iou": 0.84, "pixel_error": 0.072, "vrand": 0.93, "vinfo": 0.95,
             "rand_error": 0.065, "hd95": 7.5, "assd": 1.25, "dice_std": 0.01},
    "val": {"dice": 0.9},
}  # fmt: skip
CXR_METRICS = {
    "n_val": 4,
    "n_test": 4,
    "test": {"dice": 0.8, "iou": 0.7, "pixel_error": 0.15, "hd95": 40.0, "assd": 12.0},
    "val": {"dice": 0.81},
}


def meta(kind: str, model_cfg: dict, seconds: float, device: str) -> dict:
    return {
        "model": model_cfg,
        "dataset": {"name": "x", "kind": kind, "preprocess": {}},
        "normalisation": {"mean": 0.0, "std": 1.0},
        "tile": 32,
        "train": {"seconds": seconds, "device": device, "epochs": 2},
    }


def make_results(root: Path) -> tuple[list[Path], int]:
    """Two results folders (EM U-Net, CXR mean mask); returns them and the U-Net's size."""
    em = root / "results" / "synth_em" / "unet_modern"
    cxr = root / "results" / "synth_cxr" / "baseline_mean"
    for folder, metrics in ((em, EM_METRICS), (cxr, CXR_METRICS)):
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(metrics))
    torch.manual_seed(0)
    unet = UNet(out_channels=1, **ARCH)
    save_model(
        em / "model.pt",
        unet,
        meta("em", {"kind": "unet", **ARCH, "out_channels": 1}, 12.5, "cuda:0"),
    )
    mean = MeanMask(torch.full((8, 8), 0.25))
    cxr_meta = meta("cxr", {"kind": "mean_mask", "out_channels": 1}, 0.5, "cpu")
    save_model(cxr / "model.pt", mean, {**cxr_meta, "mean_mask_shape": [8, 8]})
    return [em, cxr], sum(p.numel() for p in unet.parameters())


def rows_of(folders: list[Path], preset: str = "quick") -> list[dict]:
    """The summary rows of results folders, as the evaluate stage computes them."""
    return [
        summary_row(
            folder / "metrics.json",
            folder / "model.pt",
            dataset=folder.parent.name,
            model=folder.name,
            kind=KINDS[folder.parent.name],
            preset=preset,
        )
        for folder in folders
    ]


def test_summary_rows_and_markdown(tmp_path):
    folders, n_params = make_results(tmp_path)
    out_csv, out_md = tmp_path / "results" / "summary.csv", tmp_path / "results" / "summary.md"
    rows = rows_of(folders)
    for row in rows:  # the round trip through results/rows/ keeps every value
        path = row_path(tmp_path / "results" / "rows", row["dataset"], row["model"])
        write_row(path, row)
        assert read_row(path) == row
    assert row_path(tmp_path, "synth_em", "unet_modern") == tmp_path / "synth_em/unet_modern.json"
    out_metrics = tmp_path / "metrics.json"
    summarize(rows, out_csv, out_md, out_metrics)
    # what DVC shows: two test means per run, keyed dataset.model
    assert json.loads(out_metrics.read_text()) == {
        "synth_em": {"unet_modern": {k: EM_METRICS["test"][k] for k in ("dice", "vrand")}},
        "synth_cxr": {"baseline_mean": {k: CXR_METRICS["test"][k] for k in ("dice", "hd95")}},
    }

    table = pd.read_csv(out_csv)
    assert list(table.columns) == list(SUMMARY_COLUMNS)
    assert list(table["dataset"]) == ["synth_em", "synth_cxr"]
    assert list(table["model"]) == ["unet_modern", "baseline_mean"]
    assert list(table["kind"]) == ["em", "cxr"]
    assert list(table["preset"]) == ["quick", "quick"]
    assert list(table["n_test"]) == [3, 4]
    em, cxr = table.iloc[0], table.iloc[1]
    for name in ("dice", "iou", "pixel_error", "vrand", "vinfo", "rand_error", "hd95", "assd"):
        assert em[f"test_{name}"] == pytest.approx(EM_METRICS["test"][name])
    assert cxr["test_dice"] == 0.8 and cxr["test_hd95"] == 40.0
    assert pd.isna(cxr["test_vrand"]) and pd.isna(cxr["test_rand_error"])
    assert list(table["train_seconds"]) == [12.5, 0.5]
    assert n_params > 1000
    assert list(table["parameters"]) == [n_params, 0]  # the mean mask is a buffer, not trained
    assert list(table["device"]) == ["cuda:0", "cpu"]

    md = out_md.read_text()
    lines = md.splitlines()
    assert lines[0] == "# unetflow results (preset `quick`)"
    em_line = next(line for line in lines if line.startswith("| synth_em | em | unet_modern"))
    assert "| 0.9100 | 0.8400 | 0.0720 | 0.9300 | 0.9500 | 0.0650 | 7.50 | 1.25 | 12.5 |" in em_line
    assert f"| {n_params:,} | cuda:0 |" in em_line
    cxr_line = next(line for line in lines if line.startswith("| synth_cxr | cxr | baseline"))
    assert "| 0.1500 | – | – | – | 40.00 | 12.00 | 0.5 | 0 | cpu |" in cxr_line

    comparison = md.split("## Beside the published references")[1]
    rows = [line for line in comparison.splitlines() if line.startswith("| synth_")]
    em_refs = [r for r in REFERENCES if r.kind == "em"]
    cxr_refs = [r for r in REFERENCES if r.kind == "cxr"]
    assert len(rows) == len(em_refs) + len(cxr_refs) == 7
    assert "| synth_em | unet_modern | warping_error | – | U-Net paper | 0.000353 |" in md
    assert "| synth_em | unet_modern | rand_error | 0.0650 | U-Net paper | 0.0382 |" in md
    assert "| synth_em | unet_modern | pixel_error | 0.0720 | U-Net paper | 0.0611 |" in md
    assert "| pixel_error | 0.0720 | TU Delft reproduction | 0.0978 |" in md
    assert "| synth_cxr | baseline_mean | iou | 0.7000 | Shenzhen study | 0.897 |" in md
    assert all("| yes: ours on synth_" in row for row in rows)
    assert "| yes: ours on synth_em, not isbi2012 (reference: ISBI 2012 challenge test" in md
    assert "arxiv.org/abs/1505.04597" in md


def test_missing_metrics_checkpoint_or_row_name_the_file(tmp_path):
    folders, _ = make_results(tmp_path)
    (folders[1] / "metrics.json").write_text("{not json")
    with pytest.raises(ReportError, match=r"baseline_mean/metrics\.json: not valid JSON"):
        rows_of(folders)
    (folders[1] / "metrics.json").write_text(json.dumps({"test": {}}))
    with pytest.raises(ReportError, match=r"baseline_mean/metrics\.json: expected an object"):
        rows_of(folders)
    (folders[1] / "metrics.json").write_text(json.dumps(CXR_METRICS))
    (folders[0] / "model.pt").unlink()
    with pytest.raises(ReportError, match=r"unet_modern/model\.pt: not found"):
        rows_of(folders)
    with pytest.raises(ReportError, match=r"rows/a/b\.json: not found; expected the summary row"):
        read_row(row_path(tmp_path / "rows", "a", "b"))
    bad = row_path(tmp_path / "rows", "a", "c")
    write_row(bad, {"dataset": "a"})
    with pytest.raises(ReportError, match=r"rows/a/c\.json: expected a summary row with the keys"):
        read_row(bad)


def test_summary_of_several_presets_names_them(tmp_path):
    folders, _ = make_results(tmp_path)
    rows = rows_of(folders[:1], "quick") + rows_of(folders[1:], "full")
    summarize(rows, tmp_path / "s.csv", tmp_path / "s.md")
    assert (tmp_path / "s.md").read_text().splitlines()[0] == (
        "# unetflow results (preset `full`, `quick`)"
    )


def test_markdown_table_cells():
    rows = [{"a": 0.000353, "b": None, "c": 1234567, "d": "x|y", "e": float("nan")}]
    text = markdown_table(rows, ("a", "b", "c", "d", "e"))
    assert text.splitlines() == [
        "| a | b | c | d | e |",
        "|---|---|---|---|---|",
        "| 0.000353 | – | 1,234,567 | x\\|y | – |",
    ]
    assert markdown_table([], ("a",)).splitlines()[-1] == "| – |"


def test_comparison_rows_on_the_reference_dataset():
    run = {"dataset": "isbi2012", "model": "unet_paper", "kind": "em", "test_pixel_error": 0.05}
    rows = comparison_rows([run])
    assert [(r["reference"], r["metric"], r["ours"]) for r in rows] == [
        ("U-Net paper", "warping_error", None),
        ("U-Net paper", "rand_error", None),
        ("U-Net paper", "pixel_error", 0.05),
        ("TU Delft reproduction", "pixel_error", 0.05),
        ("TU Delft reproduction", "iou", None),
    ]
    assert rows[0]["test set differs"].startswith("yes: ISBI 2012 challenge test volume")
    assert comparison_rows([{**run, "kind": "cxr"}])[0]["reference"] == "Shenzhen study"


def hand_row(model: str, dice: float, iou: float, hd95: float, assd: float, **extra) -> dict:
    """A summary row of a synth_cxr run, as read from results/rows/."""
    row = dict.fromkeys(SUMMARY_COLUMNS)
    row.update(dataset="synth_cxr", kind="cxr", model=model, preset="quick", n_test=4)
    row.update(test_dice=dice, test_iou=iou, test_hd95=hd95, test_assd=assd, **extra)
    return row


def test_baseline_and_subgroup_sections(tmp_path):
    per_image = pd.DataFrame(
        [
            ("a", "test", "female", 19, "normal", 0.9, 0.8, 4.0, 1.0),
            ("b", "test", "male", 25, "normal", 0.95, 0.9, 2.0, 0.5),
            ("c", "test", "male", 47, "normal", 0.95, 0.9, 2.0, 0.5),
            ("d", "test", "male", 61, "abnormal", 0.7, 0.5, 30.0, 6.0),
        ],
        columns=["id", "split", "sex", "age", "finding", "dice", "iou", "hd95", "assd"],
    )
    csv = tmp_path / "subgroups.csv"
    subgroup_table(per_image).to_csv(csv, index=False)
    folders, _ = make_results(tmp_path)
    [row] = rows_of(folders[1:])  # the synth_cxr baseline folder, with subgroups.csv
    with_groups = summary_row(
        folders[1] / "metrics.json",
        folders[1] / "model.pt",
        dataset="synth_cxr",
        model="unet_modern",
        kind="cxr",
        preset="quick",
        subgroups=csv,
    )
    groups = {(g["grouping"], g["group"]): g for g in with_groups["subgroups"]}
    assert groups["age", "30–39"]["iou"] is None  # empty group: None, never NaN, in the row
    write_row(tmp_path / "row.json", with_groups)
    assert read_row(tmp_path / "row.json")["subgroups"] == with_groups["subgroups"]

    model = {**with_groups, **hand_row("unet_modern", 0.9, 0.8, 5.0, 1.5)}
    baseline = hand_row("baseline_mean", 0.8, 0.7, 40.0, 12.0)
    summarize([model, baseline], tmp_path / "s.csv", tmp_path / "s.md")
    md = (tmp_path / "s.md").read_text()
    baseline_part = md.split("## Against the mean-mask baseline")[1].split("##")[0]
    assert (
        "| synth_cxr | unet_modern | 0.9000 | 0.1000 | 0.8000 | 0.1000 | 5.00 | -35.00 "
        "| 1.50 | -10.50 |"
    ) in baseline_part
    assert "baseline_mean |" not in baseline_part  # the baseline is not compared to itself
    table3 = md.split("## synth_cxr / unet_modern: test IoU by sex × finding")[1]
    assert "| female | 0.8000 (1) | – (0) | 0.8000 (1) |" in table3
    assert "| male | 0.9000 (2) | 0.5000 (1) | 0.7667 (3) |" in table3
    assert "| all | 0.8667 (3) | 0.5000 (1) | 0.7750 (4) |" in table3
    assert "| 20–29 | 1 | 0.9500 | 0.9000 | 2.00 | 0.50 |" in table3
    assert "| 30–39 | 0 | – | – | – | – |" in table3
    assert "baseline_mean: test IoU" not in md  # no subgroups recorded for it
    assert row.get("subgroups") is None


def test_no_baseline_section_without_the_baseline(tmp_path):
    summarize([hand_row("unet_modern", 0.9, 0.8, 5.0, 1.5)], tmp_path / "s.csv", tmp_path / "s.md")
    md = (tmp_path / "s.md").read_text()
    assert "mean-mask baseline" not in md and "by sex × finding" not in md


def test_summarize_script_takes_snakemakes_selection_over_params(tmp_path):
    """`snakemake --config datasets=[...]` is not in params.yaml: the rule passes the selection."""
    folders, _ = make_results(tmp_path)
    rows_dir = tmp_path / "rows"
    for row in rows_of(folders):
        write_row(row_path(rows_dir, row["dataset"], row["model"]), row)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(datasets=["isbi2012"], models=["unet_modern"])  # a run that has no row
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(ROOT / "workflow" / "schemas", tmp_path / "workflow" / "schemas")

    def summarize_script(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, str(ROOT / "scripts" / "summarize.py"), "--params"]
        command += [str(tmp_path / "params.yaml"), "--rows", str(rows_dir), "--csv"]
        command += [str(tmp_path / "s.csv"), "--md", str(tmp_path / "s.md")]
        command += ["--metrics", str(tmp_path / "m.json"), "--comparisons"]
        command += [str(tmp_path / "comparison"), *extra]
        return subprocess.run(command, capture_output=True, text=True, check=False)

    missing = summarize_script()  # params.yaml's own selection
    assert missing.returncode == 1 and "rows/isbi2012/unet_modern.json" in missing.stderr
    assert not (tmp_path / "s.csv").exists()
    no_comparison = summarize_script("--datasets", "synth_em", "--models", "unet_modern")
    assert no_comparison.returncode == 1
    assert "comparison/synth_em.json: not found" in no_comparison.stderr
    (tmp_path / "comparison").mkdir()
    (tmp_path / "comparison" / "synth_em.json").write_text(json.dumps(two_models()))
    done = summarize_script("--datasets", "synth_em", "--models", "unet_modern")
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(tmp_path / "s.csv")
    assert list(zip(table["dataset"], table["model"], strict=True)) == [("synth_em", "unet_modern")]
    unknown = summarize_script("--datasets", "synth_em", "--models", "unet_x")
    assert unknown.returncode == 1
    assert "with --datasets/--models is invalid:" in unknown.stderr
    assert "models: 'unet_x' is not defined under model_defs (" in unknown.stderr


def test_shift_section_leads_with_clean_worst_and_every_shift(tmp_path):
    names = ["exposure_dark", "zoom_out", "text_box"]
    shift = {
        "dice_clean": 0.95,
        "dice_worst": 0.9,
        "dice_drop_worst": 0.05,
        "dice": dict(zip(names, [0.94, 0.9, 0.93], strict=True)),
    }
    robust = {
        **shift,
        "dice_worst": 0.94,
        "dice_drop_worst": 0.01,
        "dice": dict.fromkeys(names, 0.94),
    }
    rows = [
        hand_row("unet_modern", 0.95, 0.9, 5.0, 1.5, shift=shift),
        hand_row("unet_andersen", 0.95, 0.9, 5.0, 1.5, shift=robust),
        hand_row("baseline_mean", 0.8, 0.7, 40.0, 12.0),
    ]
    summarize(rows, tmp_path / "s.csv", tmp_path / "s.md")
    md = (tmp_path / "s.md").read_text()
    part = md.split("## Under acquisition shifts")[1].split("\n## ")[0]
    assert (
        "| dataset | model | clean | worst | Δ worst | exposure_dark | zoom_out | text_box |"
        in part
    )
    assert (
        "| synth_cxr | unet_modern | 0.9500 | zoom_out | -0.0500 | 0.9400 | 0.9000 | 0.9300 |"
        in part
    )
    # ties go to the first shift in the test's order
    assert "| synth_cxr | unet_andersen | 0.9500 | exposure_dark | -0.0100 |" in part
    assert "[synth_cxr / unet_modern](synth_cxr/unet_modern/figures/shifts.png)" in part
    assert "baseline_mean" not in part
    assert pd.read_csv(tmp_path / "s.csv").columns.tolist() == list(SUMMARY_COLUMNS)
    summarize(rows[2:], tmp_path / "t.csv", tmp_path / "t.md")
    assert "acquisition shifts" not in (tmp_path / "t.md").read_text()


def two_models() -> dict:
    """The comparison of two models' Dice on 12 images, unet_modern better on every one."""
    scores = pd.DataFrame(
        [
            {"variant": name, "image": f"img{i:02d}", "seed": 1, "fold": -1, "dice": dice + i / 1e3}
            for name, dice in (("unet_modern", 0.9), ("baseline_mean", 0.7))
            for i in range(12)
        ]
    )
    return compare(scores, ["dice"], seed=0, n_boot=199)


def test_summary_leads_with_which_differences_hold_up(tmp_path):
    result = two_models()
    rows = [hand_row("unet_modern", 0.9, 0.8, 5.0, 1.5), hand_row("baseline_mean", 0.7, 0.5, 40, 9)]
    summarize(rows, tmp_path / "s.csv", tmp_path / "s.md", comparisons={"synth_cxr": result})
    md = (tmp_path / "s.md").read_text()
    assert md.index("## Which differences hold up") < md.index("## Every run")
    assert "### synth_cxr (12 test images)" in md
    assert "- **dice**: holds up: `unet_modern` better than `baseline_mean`." in md
    summarize(rows, tmp_path / "t.csv", tmp_path / "t.md")  # no comparison: no section
    assert "Which differences" not in (tmp_path / "t.md").read_text()
