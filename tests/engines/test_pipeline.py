"""End to end in a temporary git + DVC repo: Snakemake runs every stage, `unetflow sync` hands
the run to DVC, and DVC's own command of one job of each stage (of each dataset kind where the
kinds run different code) rewrites the same bytes; then the DVC-side tools on that run.

The `tiny` preset of tests/project.py keeps the model stages to seconds. DVC runs whole
pipelines from nothing in test_remote and test_replicates; test_parity proves that the two
engines' job tables (commands, deps, outs, params) are the same for every job."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest
import torch
import yaml

from engine_jobs import planned_jobs
from project import ENGINES_OWN, copy_project, rewrite_by_dvc, run
from unetflow.data.shifts import SHIFT_NAMES
from unetflow.io.images import read_gray
from unetflow.model.checkpoint import load_model

pytestmark = pytest.mark.e2e

# synth_em runs in the other engine tests (replicates, rerun, remote, cluster): here the real
# EM data and the synthetic chest X-rays.
DATASETS = ["isbi2012", "synth_cxr"]
MODELS = ["unet_modern", "baseline_mean"]
ENGINES = ("snakemake", "dvc")
COMPARISON = [f"results/comparison/synth_cxr.{ext}" for ext in ("json", "md", "png")]
# The job of each stage whose DVC command is forced after the hand-over, and the outputs that
# must come back byte for byte (model.pt and the summary rows hold training times: their
# weights and rows are compared apart).
REWRITES = {
    "download@isbi2012": ["data/raw/isbi2012"],
    **{f"preprocess@{name}": [f"data/processed/{name}"] for name in DATASETS},
    **{f"augment@{name}": [f"data/augmented/{name}"] for name in DATASETS},
    "train@synth_cxr-unet_modern": ["results/synth_cxr/unet_modern/dvclive/plots/metrics/val"],
    "infer@isbi2012-baseline_mean": ["results/isbi2012/baseline_mean/predictions"],
    "infer@synth_cxr-unet_modern": ["results/synth_cxr/unet_modern/predictions"],
    **{
        f"evaluate@{name}-{model}": [
            *(f"results/{name}/{model}/{out}" for out in ("metrics.json", "per_image.csv")),
            f"results/{name}/{model}/shifts.csv",
            f"results/scores/{name}/{model}.csv",
        ]
        for name, model in [("isbi2012", "baseline_mean"), ("synth_cxr", "unet_modern")]
    },
    "explain@synth_cxr-unet_modern": ["results/synth_cxr/unet_modern/explain"],
    "compare@synth_cxr": COMPARISON,
    "summarize": ["metrics.json"],
}


@pytest.fixture(scope="module")
def engines(tmp_path_factory, mirror) -> dict:
    """The project run by Snakemake from the mirror; a copy handed to DVC by `unetflow sync`,
    what DVC saw then, and the outputs of REWRITES that DVC's commands changed."""
    root = tmp_path_factory.mktemp("e2e")
    smk = copy_project(root / "snakemake", git=True, tiny=True, datasets=DATASETS)
    run(["snakemake", "--cores", "2"], smk, UNETFLOW_MIRROR=str(mirror))
    dvc = shutil.copytree(smk, root / "dvc", symlinks=True)
    run(["unetflow", "sync", "--to", "dvc"], dvc)
    adopted = {
        "status": run(["dvc", "status"], dvc).stdout,
        "dry": run(["dvc", "repro", "--dry"], dvc).stdout,
        "planned": planned_jobs(dvc),
    }
    changed = rewrite_by_dvc(dvc, REWRITES, UNETFLOW_MIRROR=str(mirror))
    return {"snakemake": smk, "dvc": dvc, "adopted": adopted, "changed": changed}


def test_dvc_commands_rewrite_what_snakemake_wrote(engines):
    assert engines["changed"] == dict.fromkeys(REWRITES, [])
    augmented = engines["dvc"] / "data/augmented/isbi2012"
    # every labelled slice (each trains in some fold) x 1 copy
    assert len(list((augmented / "images").glob("*.tif"))) == 30
    assert (augmented / "examples.png").stat().st_size > 10_000
    assert not list((engines["dvc"] / "data").rglob(".*partial-*"))
    result = "results/synth_cxr/unet_modern"  # trained by both engines
    weights = [load_model(engines[e] / result / "model.pt")[0].state_dict() for e in ENGINES]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0]), result
    for name in DATASETS:
        for model in MODELS:
            result = f"results/{name}/{model}"
            assert (engines["dvc"] / result / "dvclive/plots/metrics/val/dice.tsv").is_file()
            assert not (engines["dvc"] / result / "checkpoints").exists()
    predictions = engines["dvc"] / "results/isbi2012/baseline_mean/predictions"
    assert len(list((predictions / "masks").glob("*.png"))) == 5 + 5 + 30  # val, test, predict
    assert (predictions / "isbi_submission.tif").is_file()


def test_compare_pairs_the_models_on_the_same_test_images(engines):
    """Per dataset, unet_modern against baseline_mean on every test image of the fixed split."""
    for name in DATASETS:
        folder, compared = (engines["dvc"] / "results" / d for d in (name, "comparison"))
        result = json.loads((compared / f"{name}.json").read_text())
        n_test = len(pd.read_csv(folder / "unet_modern" / "per_image.csv").query("split == 'test'"))
        assert result["variants"] == MODELS and result["n_images"] == n_test > 0
        pair = result["pairs"]["unet_modern_vs_baseline_mean"]["metrics"]["dice"]
        assert pair["wins"] + pair["ties"] + pair["losses"] == n_test
        assert 0 <= pair["p"] <= pair["p_holm"] <= 1
        modern = result["per_variant"]["unet_modern"]["dice"]
        assert modern["ci_low"] <= modern["mean"] <= modern["ci_high"]
        assert result["replicates"]["unet_modern"] == {"seeds": [2015], "folds": [-1]}
        assert "## dice (higher is better)" in (compared / f"{name}.md").read_text()


def test_summary_has_one_row_per_run_with_its_metrics(engines):
    project = engines["dvc"]
    summary = pd.read_csv(project / "results/summary.csv")
    runs = [(d, m) for d in DATASETS for m in MODELS]
    assert list(zip(summary["dataset"], summary["model"], strict=True)) == runs
    assert set(summary["preset"]) == {"tiny"}
    assert list(summary["kind"]) == ["em"] * 2 + ["cxr"] * 2
    for _, row in summary.iterrows():
        metrics = json.loads(
            (project / "results" / row["dataset"] / row["model"] / "metrics.json").read_text()
        )
        assert row["n_test"] == metrics["n_test"]
        assert row["test_dice"] == pytest.approx(metrics["test"]["dice"])
        if row["kind"] == "em":
            assert row["test_vrand"] == pytest.approx(metrics["test"]["vrand"])
        else:
            assert pd.isna(row["test_vrand"]) and row["test_hd95"] >= 0
    assert (summary["train_seconds"] > 0).all()
    assert summary.set_index("model").loc["baseline_mean", "parameters"].tolist() == [0, 0]
    timeless = [  # DVC trained one model again: its time differs, nothing else may
        pd.read_csv(engines[e] / "results/summary.csv").drop(columns="train_seconds")
        for e in ENGINES
    ]
    pd.testing.assert_frame_equal(*timeless)
    md = (project / "results/summary.md").read_text()
    assert md.index("## Which differences hold up") < md.index("## Every run")
    assert "### isbi2012 (5 test images)" in md
    assert "## Beside the published references" in md
    assert "| isbi2012 | unet_modern | pixel_error |" in md
    assert "| synth_cxr | unet_modern | iou |" in md and "| Shenzhen study | 0.897 |" in md
    assert "## synth_cxr / unet_modern: test IoU by sex × finding" in md
    assert "## isbi2012 / unet_modern: test IoU" not in md  # EM has no such metadata


def test_cxr_is_trained_small_and_scored_at_the_source_mask_size(engines):
    project = engines["dvc"]
    processed = project / "data/processed/synth_cxr"
    split = pd.read_csv(processed / "split.csv")
    assert len(split) == 20 and set(split["split"]) == {"train", "val", "test"}
    sid = split["id"][0]
    assert read_gray(processed / "images" / f"{sid}.tif").shape == (64, 64)
    assert read_gray(processed / "score_masks" / f"{sid}.png").shape == (128, 128)
    predictions = project / "results/synth_cxr/unet_modern/predictions"
    scored = split[split["split"].isin(["val", "test"])]["id"]
    for sid in scored:
        assert read_gray(predictions / "masks" / f"{sid}.png").shape == (128, 128)
    groups = pd.read_csv(project / "results/synth_cxr/unet_modern/subgroups.csv")
    assert groups.set_index("grouping").loc["all", "n"] == (split["split"] == "test").sum()
    assert (project / "results/synth_cxr/unet_modern/figures/iou_by_age.png").is_file()


def test_cxr_runs_get_the_shift_test_and_em_runs_an_empty_table(engines):
    project = engines["dvc"]
    split = pd.read_csv(project / "data/processed/synth_cxr/split.csv")
    test_ids = list(split.loc[split["split"] == "test", "id"])
    for model in MODELS:
        result = project / "results/synth_cxr" / model
        table = pd.read_csv(result / "shifts.csv")
        assert list(table.columns) == ["id", "shift", "dice", "iou", "hd95", "assd"]
        assert list(table["shift"].unique()) == ["clean", *SHIFT_NAMES]
        assert sorted(table["id"].unique()) == sorted(test_ids)
        assert len(table) == len(test_ids) * (1 + len(SHIFT_NAMES))
        metrics = json.loads((result / "metrics.json").read_text())
        shift = metrics["shift"]
        assert shift["dice_clean"] == pytest.approx(metrics["test"]["dice"], abs=1e-12)
        assert shift["dice_worst"] == min(shift["dice"].values())
        assert (result / "figures/shifts.png").stat().st_size > 10_000
    baseline = pd.read_csv(project / "results/synth_cxr/baseline_mean/shifts.csv")
    means = baseline.groupby("shift")["dice"].mean()
    assert means["exposure_dark"] == means["clean"]  # the mean mask ignores the image...
    assert means["zoom_out"] < means["clean"] - 0.05  # ...but not where the lungs are
    assert pd.read_csv(project / "results/isbi2012/unet_modern/shifts.csv").empty
    md = (project / "results/summary.md").read_text()
    assert "## Under acquisition shifts" in md and "| synth_cxr | baseline_mean |" in md


def test_explain_covers_the_cxr_unet_and_says_why_it_skips_the_others(engines):
    project = engines["dvc"]
    explain = project / "results/synth_cxr/unet_modern/explain"
    summary = json.loads((explain / "summary.json").read_text())
    split = pd.read_csv(project / "data/processed/synth_cxr/split.csv")
    assert summary["applicable"] and summary["images"] == len(split) == 20
    selection = pd.read_csv(explain / "selection.csv")
    test_ids = set(split.loc[split["split"] == "test", "id"])
    assert set(selection["id"]) <= test_ids and set(selection["case"]) == {"best", "worst"}
    for sid in summary["explained"]:
        assert (explain / f"features_{sid}.png").is_file()
    clusters = pd.read_csv(explain / "clusters.csv", dtype={"cluster": str})
    per_cluster = clusters[(clusters["cluster"] != "all") & (clusters["sex"] == "all")]
    assert per_cluster["all"].sum() == 20 and len(per_cluster) == 4  # explain.clusters
    for name, model in [
        (d, m) for d in DATASETS for m in MODELS if (d, m) != ("synth_cxr", "unet_modern")
    ]:
        skipped = project / "results" / name / model / "explain"
        written = [p.name for p in skipped.iterdir() if p.name not in ENGINES_OWN]
        assert written == ["summary.json"], (name, model)
        assert not json.loads((skipped / "summary.json").read_text())["applicable"]


def test_snakemake_report_holds_the_summary_and_every_run_figure(engines):
    project = engines["snakemake"]
    run(["snakemake", "--report", "report.html"], project)
    html = (project / "report.html").read_text()
    assert "summary.csv" in html and "Beside" not in html
    for name in DATASETS:
        for model in MODELS:
            for figure in ("panels.png", "learning_curves.png"):
                assert f"results/{name}/{model}/figures/{figure}" in html, (name, model, figure)
    for figure in ("latent.png", "occlusion_male.png", "occlusion_abnormal.png"):
        assert f"results/synth_cxr/unet_modern/explain/{figure}" in html, figure


def test_dvc_plots_show_the_learning_curves(engines):
    project = engines["dvc"]
    shown = json.loads(run(["dvc", "plots", "show", "--json", "--split"], project).stdout)
    for name in DATASETS:
        for model in MODELS:
            curve = f"results/{name}/{model}/dvclive/plots/metrics/val/dice.tsv"
            [plot] = shown["data"][curve]
            assert plot["type"] == "vega" and plot["revisions"] == ["workspace"], curve


def test_sync_to_dvc_adopts_a_snakemake_run(engines):
    adopted = engines["adopted"]
    assert "Data and pipelines are up to date" in adopted["status"], adopted["status"]
    assert adopted["dry"].count("Running stage") == 0 and adopted["planned"] == set()
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], engines["dvc"]).stdout)
    (workspace,) = shown.values()
    # the view DVC shows: summarize's file and each dataset's comparison
    comparisons = {f"results/comparison/{name}.json" for name in DATASETS}
    assert set(workspace["data"]) == {"metrics.json"} | comparisons
    view = workspace["data"]["metrics.json"]["data"]
    assert {(d, m) for d in view for m in view[d]} == {(d, m) for d in DATASETS for m in MODELS}


def test_sync_to_snakemake_adopts_a_dvc_run(engines):
    """DVC's rewritten outputs are newer than Snakemake's records; the sync hands them over."""
    project = engines["dvc"]
    assert "train@isbi2012-unet_modern" in planned_jobs(project)  # its augmented data is newer
    run(["unetflow", "sync", "--to", "snakemake"], project)
    assert planned_jobs(project) == set()


def test_a_param_change_reruns_the_same_stages_in_both(engines):
    """Params tracked in dvc.yaml trigger the same reruns in Snakemake and in DVC."""
    project = engines["dvc"]
    params_file = project / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["dataset_defs"]["isbi2012"]["augment"]["noise_std"] = 0.05
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status = run(["dvc", "status", "--json"], project).stdout
        changed = sorted(yaml.safe_load(status))
        assert changed == ["augment@isbi2012"], status
        dry = run(["snakemake", "-n", "--quiet", "rules"], project)
        jobs = dry.stdout + dry.stderr
        assert "augment" in jobs and "preprocess" not in jobs and "download" not in jobs, jobs
    finally:
        params_file.write_text(original)


def test_metrics_and_params_diff_name_only_the_affected_experiments(engines):
    """Commit, change one model's param, repro: the diffs name only that model's results."""
    project = engines["dvc"]
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "a complete run"], project)
    params_file = project / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["model_defs"]["unet_modern"]["train"]["lr"] = 0.01
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    run(["dvc", "repro"], project)
    changed_params = json.loads(run(["dvc", "params", "diff", "--json"], project).stdout)
    assert list(changed_params) == ["params.yaml"]
    assert list(changed_params["params.yaml"]) == ["model_defs.unet_modern.train.lr"]
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], project).stdout)
    comparisons = [f"results/comparison/{name}.json" for name in DATASETS]
    assert sorted(diff) == sorted(["metrics.json", *comparisons]), diff
    changed = {key.rsplit(".", 1)[0] for key in diff["metrics.json"]}  # <dataset>.<model>
    assert changed == {f"{name}.unet_modern" for name in DATASETS}, diff
    # the comparison moves with it: unet_modern's mean and CI, and its difference to the baseline
    for comparison in comparisons:
        keys = set(diff[comparison])
        assert "headline.unet_modern.dice_mean" in keys, keys
        assert "headline.unet_modern_vs_baseline_mean.dice_diff" in keys, keys
        assert not any(key.startswith("headline.baseline_mean.") for key in keys), keys
    # every mean and std of a run is one step away
    full = "results/isbi2012/unet_modern/metrics.json"
    out = run(["dvc", "metrics", "diff", "--json", "--targets", full], project)
    detail = json.loads(out.stdout)
    assert {"test.dice", "test.dice_std", "val.iou"} <= set(detail[full]), detail


def test_dvc_exp_run_selects_preset_datasets_and_models_from_the_command_line(engines):
    """The command-line contract: `dvc exp run -S preset=... -S 'datasets=[...]' -S models=...`."""
    project = engines["dvc"]
    out = run(
        [
            "dvc",
            "exp",
            "run",
            "-S",
            "preset=tiny_b",
            "-S",
            "datasets=[synth_em]",
            "-S",
            "models=[baseline_mean]",
        ],
        project,
    )
    ran = set(re.findall(r"Running stage '([^']+)'", out.stdout))
    required = {
        "download@synth_em",  # a dataset the project has not run yet
        "preprocess@synth_em",
        "augment@synth_em",
        "train@synth_em-baseline_mean",
        "infer@synth_em-baseline_mean",
        "evaluate@synth_em-baseline_mean",  # the summary row names the preset
        "explain@synth_em-baseline_mean",  # a summary.json: nothing to explain
        "summarize",
        "compare@synth_em",
    }
    assert ran == required, out.stdout
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["preset"] == "tiny_b" and params["datasets"] == ["synth_em"]
    assert "Data and pipelines are up to date" in run(["dvc", "status"], project).stdout
