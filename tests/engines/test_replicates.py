"""Replicates end to end: two models x 2 cross-validation folds x 2 training seeds of tiny
synth_em, run by Snakemake (folds and seeds from --config) and by DVC (from params.yaml), give
the same replicate runs and the same comparison, pooled over the folds' test images."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from project import ENGINES_OWN, copy_project, run, tree_digest

pytestmark = pytest.mark.e2e

DATASET = "synth_em"
MODELS = ["unet_modern", "baseline_mean"]
FOLDS, SEEDS = [0, 1], [1, 2]
COMPARISON = [f"results/comparison/{DATASET}.{ext}" for ext in ("json", "md", "png")]
REPLICATES = [
    f"results/{DATASET}/{model}/replicates/seed{seed}/fold{fold}"
    for model in MODELS
    for seed in SEEDS
    for fold in FOLDS
]


@pytest.fixture(scope="module")
def engines(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("replicates")
    smk = copy_project(root / "snakemake", tiny=True, datasets=[DATASET], models=MODELS)
    selection = [f"folds={FOLDS}".replace(" ", ""), f"seeds={SEEDS}".replace(" ", "")]
    target = COMPARISON[0]
    run(["snakemake", "--cores", "2", target, "--config", *selection], smk)
    dvc = copy_project(
        root / "dvc",
        git=True,
        tiny=True,
        datasets=[DATASET],
        models=MODELS,
        folds=FOLDS,
        seeds=SEEDS,
    )
    run(["dvc", "repro", f"compare@{DATASET}"], dvc)
    return {"snakemake": smk, "dvc": dvc}


def test_both_engines_give_the_same_replicates_and_comparison(engines):
    for out in [*COMPARISON, *(f"{r}/per_image.csv" for r in REPLICATES)]:
        smk, dvc = (engines[name] / out for name in ("snakemake", "dvc"))
        assert smk.read_bytes() == dvc.read_bytes(), f"{out} differs between engines"
    scores = [engines[name] / "results" / "scores" / DATASET for name in ("snakemake", "dvc")]
    assert tree_digest(scores[0], ENGINES_OWN) == tree_digest(scores[1], ENGINES_OWN)
    assert not list((engines["dvc"] / "results" / DATASET).rglob("checkpoints*"))


def test_the_comparison_pools_every_folds_test_images_over_the_seeds(engines):
    project = engines["dvc"]
    folds = pd.read_csv(project / "data" / "processed" / DATASET / "folds.csv", dtype={"id": str})
    tested = sorted(folds.loc[folds["fold"].isin(FOLDS), "id"])
    for replicate in REPLICATES:
        table = pd.read_csv(project / replicate / "per_image.csv", dtype={"id": str})
        fold = int(replicate.rsplit("fold", 1)[1])
        test = sorted(table.loc[table["split"] == "test", "id"])
        assert test == sorted(folds.loc[folds["fold"] == fold, "id"]), replicate
    result = json.loads((project / COMPARISON[0]).read_text())
    assert result["n_images"] == len(tested) and result["variants"] == MODELS
    assert result["replicates"]["unet_modern"] == {"seeds": SEEDS, "folds": FOLDS}
    modern = result["per_variant"]["unet_modern"]["dice"]
    assert modern["n_seeds"] == 2 and modern["seed_sd"] > 0, "two seeds train two models"
    assert result["per_variant"]["baseline_mean"]["dice"]["seed_sd"] == 0  # a mean mask


def test_dvc_metrics_diff_shows_the_comparison_after_a_param_change(engines):
    project = engines["dvc"]
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "replicates"], project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["compare"]["n_boot"] = 199
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro", f"compare@{DATASET}"], project)
    ran = set(re.findall(r"Running stage '([^']+)'", out.stdout))
    assert ran == {f"compare@{DATASET}"}, out.stdout
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], project).stdout)
    changed = diff[COMPARISON[0]]
    assert changed["settings.n_boot"] == {"old": 9999, "new": 199, "diff": -9800}
    # the intervals move with the resamples (the means do not)
    assert any(key.startswith("headline.") and "_ci_" in key for key in changed), changed
    assert not any(key.endswith("_mean") for key in changed), changed
