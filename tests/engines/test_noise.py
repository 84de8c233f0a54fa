"""The annotation-noise study end to end on tiny synth_cxr: a clean and a noisy copy (bias at
level 3, one seed; more levels and seeds are more of the same jobs, as the parity tests expand
them) with unet_modern and baseline_mean, run by Snakemake (the study from --config) and handed
to DVC by `unetflow sync`, whose command of each study stage then writes the same bytes; the
noisy copy differs from the clean set in its training masks only; an edit of one family's
levels re-runs that family's study jobs and nothing else, in both engines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from engine_jobs import dvc_changed, planned_jobs
from project import copy_project, rewrite_by_dvc, run, tree_digest

pytestmark = pytest.mark.e2e

DATASET = "synth_cxr"
MODELS = ["unet_modern", "baseline_mean"]
LEVELS = [3]
STUDY = {
    "noise_datasets": [DATASET],
    "noise_families": ["bias"],
    "noise_levels": LEVELS,
    "noise_seeds": [1],
}
# The study as Snakemake's --config takes it (noise_levels=[3] ...).
SELECTION = [f"{key}={value}".replace(" ", "").replace("'", "") for key, value in STUDY.items()]
NOISY = [f"{DATASET}/bias/level{level}/seed1" for level in LEVELS]
REPORT = [f"results/noise/{DATASET}.{ext}" for ext in ("json", "md", "png")]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The study run by Snakemake from --config, then handed to DVC by `unetflow sync`."""
    project = copy_project(
        tmp_path_factory.mktemp("noise") / "p", tiny=True, datasets=[DATASET], models=MODELS
    )
    run(["snakemake", "--cores", "2", "--config", *SELECTION], project)
    run(["unetflow", "sync", "--to", "dvc", "--config", *SELECTION], project)
    return project


# One job of each study stage, the cheap model's where there is a choice (of a run's folder, the
# files without training times).
TIMELESS = ("metrics.json", "per_image.csv")
(LEVEL,) = LEVELS
STAGES = {
    f"corrupt@{DATASET}-bias-{LEVEL}-1": [
        f"data/{stage}/{noisy}" for stage in ("noisy", "noisy_augmented") for noisy in NOISY
    ],
    f"noise_runs@{DATASET}-baseline_mean-bias-{LEVEL}-1": [
        *(
            f"results/{DATASET}/baseline_mean/noise/bias/level{LEVEL}/seed1/{name}"
            for name in TIMELESS
        ),
        f"results/noise/{DATASET}/trained/baseline_mean/bias/level{LEVEL}/seed1.csv",
    ],
    f"noise_scores@{DATASET}-baseline_mean": [f"results/noise/{DATASET}/tested/baseline_mean.csv"],
    f"noise@{DATASET}": REPORT,
}


def test_dvc_adopts_the_study_and_its_commands_rewrite_the_same_bytes(project):
    """After the sync both engines are clean; DVC's own command of each study stage, forced,
    writes byte for byte what Snakemake's wrote (the engines' job tables are equal by
    test_parity; this runs them)."""
    assert dvc_changed(project) == set()
    assert planned_jobs(project, "--config", *SELECTION) == set()
    assert rewrite_by_dvc(project, STAGES) == dict.fromkeys(STAGES, [])
    assert dvc_changed(project) == set()


def test_noisy_copies_differ_in_their_training_masks_only(project):
    clean = project / "data/processed" / DATASET
    split = pd.read_csv(clean / "split.csv", dtype={"id": str}).set_index("id")["split"]
    clean_files = tree_digest(clean)
    for noisy in NOISY:
        copy = tree_digest(project / "data/noisy" / noisy)
        changed = {name for name in clean_files if copy[name] != clean_files[name]}
        assert changed, noisy
        assert {Path(name).stem for name in changed} <= set(split[split == "train"].index)
        assert all(name.startswith("masks/") for name in changed), changed
        record = json.loads((project / "data/noisy" / noisy / "corruption.json").read_text())
        assert record["n_train"] == (split == "train").sum() and record["mean_dice"] < 1
    for model in MODELS:
        run_dir = project / f"results/{DATASET}/{model}/noise/bias"
        assert not list(run_dir.glob("work-*")), "predictions and checkpoints are removed"


def test_the_report_holds_every_run_and_the_noisy_test(project):
    study = json.loads((project / REPORT[0]).read_text())
    assert study["models"] == MODELS and study["seeds"] == [1]
    assert study["levels"] == {"bias": {"3": 12}}
    labels = {}
    for model in MODELS:
        entries = study["runs"][model]["bias"]
        assert list(entries) == [f"level{level}" for level in LEVELS]
        labels[model] = [entries[f"level{level}"]["label_dice"]["mean"] for level in LEVELS]
    assert labels["unet_modern"] == labels["baseline_mean"]  # the same noisy copies
    assert all(0 < value < 1 for value in labels["unet_modern"])
    assert set(study["noisy_test"]["flips"]) == {f"bias-level{level}" for level in LEVELS}
    text = (project / REPORT[1]).read_text()
    assert "## Noisy test labels: which comparisons flip" in text


def test_editing_the_studied_familys_levels_reruns_the_study_only(project):
    """Both engines: the corrupt jobs of that family and what reads them; no training of the
    clean runs, no data stage."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["dataset_defs"][DATASET]["noise"]["bias"] = [-8, 4, 16]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    target = ["--with-deps", f"noise@{DATASET}"]  # the report and all it is made of
    status = yaml.safe_load(run(["dvc", "status", "--json", *target], project).stdout)
    assert {re.sub(r"@.*", "", name) for name in status} == {"corrupt", "noise_scores", "noise"}
    assert {f"corrupt@{DATASET}-bias-{level}-1" for level in LEVELS} <= set(status)
    dry = run(["snakemake", "-n", REPORT[0], "--config", *SELECTION, "--quiet", "rules"], project)
    ran = set(re.findall(r"^(\w+)\s+\d+$", dry.stdout + dry.stderr, re.M)) - {"total"}
    assert ran == {"corrupt", "noise_runs", "noise_scores", "noise"}, dry.stdout
