"""The annotation-noise study end to end on tiny synth_cxr: a clean and a noisy copy (bias at
level 3, one seed; more levels and seeds are more of the same jobs, as the parity tests expand
them) with unet_modern and baseline_mean, run by Snakemake (the study from --config) and by DVC
(from params.yaml), give the same outputs; the noisy copy differs from the clean set in its
training masks only; an edit of one family's levels re-runs that family's study jobs and
nothing else."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from project import copy_project, run, tree_digest

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
OWN = (".snakemake_timestamp", ".gitignore")  # each engine's bookkeeping in output folders


@pytest.fixture(scope="module")
def engines(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("noise")
    smk = copy_project(root / "snakemake", tiny=True, datasets=[DATASET], models=MODELS)
    run(["snakemake", "--cores", "2", REPORT[0], "--config", *SELECTION], smk)
    dvc = copy_project(
        root / "dvc", git=True, tiny=True, datasets=[DATASET], models=MODELS, **STUDY
    )
    run(["dvc", "repro", f"noise@{DATASET}"], dvc)
    return {"snakemake": smk, "dvc": dvc}


def test_both_engines_give_the_same_study(engines):
    folders = [f"data/{stage}/{noisy}" for stage in ("noisy", "noisy_augmented") for noisy in NOISY]
    folders += [f"results/noise/{DATASET}"]
    for out in folders:
        smk, dvc = (tree_digest(engines[name] / out, OWN) for name in ("snakemake", "dvc"))
        assert smk and smk == dvc, f"{out} differs between engines"
    runs = [
        f"results/{DATASET}/{model}/noise/{noisy.split('/', 1)[1]}/{name}"
        for model in MODELS
        for noisy in NOISY
        for name in ("metrics.json", "per_image.csv")
    ]
    for out in [*REPORT, *runs]:
        smk, dvc = (engines[name] / out for name in ("snakemake", "dvc"))
        assert smk.read_bytes() == dvc.read_bytes(), f"{out} differs between engines"


def test_noisy_copies_differ_in_their_training_masks_only(engines):
    project = engines["dvc"]
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


def test_the_report_holds_every_run_and_the_noisy_test(engines):
    study = json.loads((engines["dvc"] / REPORT[0]).read_text())
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
    text = (engines["dvc"] / REPORT[1]).read_text()
    assert "## Noisy test labels: which comparisons flip" in text


def test_editing_the_studied_familys_levels_reruns_the_study_only(engines):
    """Both engines: the corrupt jobs of that family and what reads them; no training of the
    clean runs, no data stage."""
    for project in engines.values():
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["dataset_defs"][DATASET]["noise"]["bias"] = [-8, 4, 16]
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    target = ["--with-deps", f"noise@{DATASET}"]  # the report and all it is made of
    status = yaml.safe_load(run(["dvc", "status", "--json", *target], engines["dvc"]).stdout)
    assert {re.sub(r"@.*", "", name) for name in status} == {"corrupt", "noise_scores", "noise"}
    assert {f"corrupt@{DATASET}-bias-{level}-1" for level in LEVELS} <= set(status)
    dry = run(
        ["snakemake", "-n", REPORT[0], "--config", *SELECTION, "--quiet", "rules"],
        engines["snakemake"],
    )
    ran = set(re.findall(r"^(\w+)\s+\d+$", dry.stdout + dry.stderr, re.M)) - {"total"}
    assert ran == {"corrupt", "noise_runs", "noise_scores", "noise"}, dry.stdout
