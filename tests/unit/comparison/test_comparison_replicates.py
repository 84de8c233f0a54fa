"""The replicates stage's loop on tiny synth_em: each selected fold trained, predicted and scored
on that fold's own test slices, with the job's seed; the compare stage reads what it writes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from project import ROOT
from unetflow.comparison.replicates import fold_dir, run_replicates
from unetflow.comparison.runs import load_scores
from unetflow.data.augment import augment_dataset
from unetflow.data.em import preprocess_em
from unetflow.data.synthetic import generate_synth_em
from unetflow.model.checkpoint import load_model
from unetflow.pipeline.stage import job_params

PARAMS = ROOT / "params.yaml"
JOB = {"preset": "tiny", "dataset": "synth_em"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """synth_em at 64 px in 4 folds of 2 slices, one augmented copy per labelled slice."""
    root = tmp_path_factory.mktemp("replicates")
    (root / "raw").mkdir()
    generate_synth_em(root / "raw", n_train=8, n_test=1, size=64, seed=1)
    split = {"train": [0, 5], "val": [5, 7], "test": [7, 8]}
    preprocess_em(root / "raw", root / "processed", {"split": split, "folds": 4, "preprocess": {}})
    augment = job_params(PARAMS, "augment", **JOB)["dataset_defs"]["synth_em"]["augment"]
    augment_dataset(root / "processed", root / "augmented", augment, example_pairs=1, seed=1)
    return {"processed": root / "processed", "augmented": root / "augmented"}


def replicate(data: dict[str, Path], out: Path, seed: int, folds: list[int]) -> None:
    """One seed of the tiny unet_modern over `folds`, its runs and scores under `out`."""
    params = job_params(PARAMS, "replicates", model="unet_modern", **JOB)
    params["train"].update(workers=0, threads=1)
    run_replicates(
        dataset="synth_em",
        model="unet_modern",
        seed=seed,
        folds=folds,
        params=params,
        processed=data["processed"],
        augmented=data["augmented"],
        runs=out / "runs",
        scores=out / "scores" / "unet_modern" / f"seed{seed}",
        checkpoints=out / "checkpoints",
    )


def test_each_fold_is_tested_on_its_own_slices_and_compare_reads_them(data, tmp_path):
    replicate(data, tmp_path, seed=1, folds=[0, 2])
    folds = pd.read_csv(data["processed"] / "folds.csv", dtype={"id": str})
    for fold in (0, 2):
        run = fold_dir(tmp_path / "runs", fold)
        assert {p.name for p in run.iterdir()} >= {"model.pt", "predictions", "metrics.json"}
        table = pd.read_csv(run / "per_image.csv", dtype={"id": str})
        tested = sorted(table.loc[table["split"] == "test", "id"])
        assert tested == sorted(folds.loc[folds["fold"] == fold, "id"])
        assert not set(tested) & set(table.loc[table["split"] == "val", "id"])
    assert not (tmp_path / "checkpoints").exists()
    scores = load_scores(tmp_path / "scores", ["unet_modern"], [0, 2], [1], 2015, ["dice"])
    assert sorted(scores["fold"].unique()) == [0, 2] and set(scores["seed"]) == {1}
    assert len(scores) == (folds["fold"].isin([0, 2])).sum()
    assert scores["dice"].between(0, 1).all()


def test_the_seed_changes_the_model_and_the_same_seed_repeats_it(data, tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        replicate(data, tmp_path / name, seed=seed, folds=[1])
    weights = {
        name: load_model(fold_dir(tmp_path / name / "runs", 1) / "model.pt")[0].state_dict()
        for name in "abc"
    }
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])
    assert not all(torch.equal(weights["a"][k], weights["c"][k]) for k in weights["a"])
