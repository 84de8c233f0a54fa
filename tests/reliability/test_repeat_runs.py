"""The same pipeline twice with the same seed gives byte-identical results on the CPU.

A fresh copy of the project (tiny preset, synth_em, unet_modern) run through evaluate by
Snakemake, against the session's shared tiny run (tests/project.py: two datasets and two models,
so its jobs were scheduled otherwise). Compared byte for byte: metrics.json, per_image.csv,
subgroups.csv, the predictions, the processed and augmented data, the model weights and the
learning curves. Left out on purpose, because they hold timings: the summary row
(results/rows/..., `train_seconds`), model.pt's training summary (`seconds`, `images_per_s`) and
the `img_per_s` curve.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from project import SHARED_ENV, built_once, copy_project, run, tree_digest

pytestmark = pytest.mark.e2e

DATASET, MODEL = "synth_em", "unet_modern"
RESULT = f"results/{DATASET}/{MODEL}"
TIMINGS = {"seconds", "images_per_s"}  # of model.pt's training summary


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """The shared run, and a fresh copy of the project run through evaluate by Snakemake."""
    shared, _ = built_once(tmp_path_factory, "tiny_two_datasets")
    fresh = copy_project(
        tmp_path_factory.mktemp("repeat") / "fresh", tiny=True, datasets=[DATASET], models=[MODEL]
    )
    run(["snakemake", "--cores", "2", "--until", "evaluate"], fresh, **SHARED_ENV)
    return shared, fresh


@pytest.mark.parametrize("name", ["metrics.json", "per_image.csv", "subgroups.csv"])
def test_evaluation_files_are_byte_identical(runs, name):
    first, second = (project / RESULT / name for project in runs)
    assert first.read_bytes() == second.read_bytes(), f"{name} differs between the two runs"


def test_metrics_json_holds_no_timing(runs):
    def keys(value: object) -> list[str]:
        if isinstance(value, dict):
            return [k for key, item in value.items() for k in (key, *keys(item))]
        return []

    metrics = json.loads((runs[0] / RESULT / "metrics.json").read_text())
    assert metrics["n_test"] == 3 and 0 < metrics["test"]["dice"] <= 1
    timed = [k for k in keys(metrics) if any(w in k for w in ("second", "per_s", "time"))]
    assert timed == []


def test_data_and_predictions_are_byte_identical(runs):
    for folder in (
        f"data/processed/{DATASET}",
        f"data/augmented/{DATASET}",
        RESULT + "/predictions",
    ):
        digests = [tree_digest(project / folder) for project in runs]
        assert digests[0], f"{folder} is empty"
        assert digests[0] == digests[1], f"{folder} differs between the two runs"


def test_weights_are_byte_identical_and_only_timings_differ(runs):
    payloads = [torch.load(p / RESULT / "model.pt", weights_only=True) for p in runs]
    weights = [payload.pop("state_dict") for payload in payloads]
    assert list(weights[0]) == list(weights[1])
    for key, tensor in weights[0].items():
        other = weights[1][key]
        assert tensor.dtype == other.dtype and tensor.shape == other.shape, key
        assert tensor.numpy().tobytes() == other.numpy().tobytes(), f"weight {key} differs"
    summaries = [payload.pop("train") for payload in payloads]
    assert payloads[0] == payloads[1]
    assert summaries[0].keys() >= TIMINGS
    timeless = [{k: v for k, v in s.items() if k not in TIMINGS} for s in summaries]
    assert timeless[0] == timeless[1]


def test_curves_are_identical_but_the_throughput(runs):
    curves = Path(RESULT, "dvclive/plots/metrics")
    digests = [tree_digest(project / curves) for project in runs]
    assert "img_per_s.tsv" in digests[0] and "val/dice.tsv" in digests[0]
    for digest in digests:
        del digest["img_per_s.tsv"]
    assert digests[0] == digests[1]


def test_summary_rows_differ_only_in_train_seconds(runs):
    rows = [json.loads((p / f"results/rows/{DATASET}/{MODEL}.json").read_text()) for p in runs]
    assert rows[0]["train_seconds"] > 0 and rows[1]["train_seconds"] > 0
    for row in rows:
        del row["train_seconds"]
    assert rows[0] == rows[1]
