"""The re-run contract, end to end: a job re-runs exactly when its code, its params entry or its
input changes, in both engines, and `unetflow sync` hands a finished run from one to the other.

One tiny project is run once by Snakemake with a `--config` selection that differs from
params.yaml's, synced to DVC, and then edited one thing at a time; each edit is checked with
`snakemake -n` and `dvc status` and undone, except the last (the training code and a params
entry), which DVC re-runs and hands back to Snakemake."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from engine_jobs import dvc_changed, planned_jobs
from project import SHARED_ENV, SHARED_SELECTION, TINY_PRESET, built_once, run

pytestmark = pytest.mark.e2e

DATASETS = ["synth_em", "synth_cxr"]  # params.yaml selects synth_em only: see `project`
MODELS = ["unet_modern", "baseline_mean"]
SELECTION = f"datasets=[{','.join(DATASETS)}]"
ENV = {"OMP_NUM_THREADS": "1"}


def runs_of(*stages: str, datasets=DATASETS, models=MODELS) -> set[str]:
    """`stage@dataset-model` for every dataset x model run."""
    return {f"{s}@{d}-{m}" for s in stages for d in datasets for m in models}


DOWNSTREAM = ("infer", "evaluate", "explain")


def compares(datasets=DATASETS) -> set[str]:
    """The compare job of each dataset (it reads every run's test scores)."""
    return {f"compare@{d}" for d in datasets}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A finished Snakemake run of DATASETS x MODELS, whose params.yaml selects one dataset
    (a copy of the session's shared run, which test_slurm reads too)."""
    shared, _ = built_once(tmp_path_factory, "tiny_two_datasets")
    project = shutil.copytree(shared, tmp_path_factory.mktemp("rerun") / "p", symlinks=True)
    assert yaml.safe_load((project / "params.yaml").read_text())["datasets"] == ["synth_em"]
    assert SELECTION == SHARED_SELECTION and ENV == SHARED_ENV
    return project


@contextmanager
def edited(path: Path, old: str, new: str) -> Iterator[None]:
    """`path` with its first `old` replaced by `new`, restored afterwards."""
    original = path.read_text()
    assert old in original, f"{old!r} not in {path}"
    path.write_text(original.replace(old, new, 1))
    try:
        yield
    finally:
        path.write_text(original)


@contextmanager
def preset_entry(project: Path, defs: str, name: str, value: dict) -> Iterator[None]:
    """params.yaml with the active preset's entry `<defs>.<name>` set to `value`, restored
    afterwards (written as copy_project writes it, so only that entry differs)."""
    path = project / "params.yaml"
    original = path.read_text()
    params = yaml.safe_load(original)
    params["presets"][params["preset"]][defs][name] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        yield
    finally:
        path.write_text(original)


def dvc_stages(project: Path) -> set[str]:
    """The stages DVC defines for params.yaml's selection."""
    return set(run(["dvc", "stage", "list", "--name-only"], project).stdout.split())


def shown_runs(project: Path) -> set[str]:
    """The <dataset>/<model> runs in the metrics DVC shows (the summarize stage's file)."""
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)
    (workspace,) = shown.values()
    view = workspace["data"]["metrics.json"]["data"]
    return {f"{dataset}/{model}" for dataset, models in view.items() for model in models}


def test_sync_to_dvc_records_the_selection_snakemake_ran(project):
    before = (project / "params.yaml").read_text()
    model = project / "results/synth_cxr/unet_modern/model.pt"
    stamp = model.stat().st_mtime_ns
    assert not any("synth_cxr" in s for s in dvc_stages(project))  # DVC: params.yaml's only
    out = run(["unetflow", "sync", "--to", "dvc", "--config", SELECTION], project)
    assert "params.yaml now selects {'datasets': ['synth_em', 'synth_cxr']}" in out.stdout
    after = (project / "params.yaml").read_text()
    assert yaml.safe_load(after) == {**yaml.safe_load(before), "datasets": DATASETS}
    changed = [line for line in after.splitlines() if line not in before.splitlines()]
    assert changed == ["- synth_cxr"]  # the rest of the file is left as it was
    assert model.stat().st_mtime_ns == stamp  # committed without rewriting the file
    assert {f"evaluate@{d}-{m}" for d in DATASETS for m in MODELS} <= dvc_stages(project)
    assert shown_runs(project) == {f"{d}/{m}" for d in DATASETS for m in MODELS}
    assert dvc_changed(project) == set()
    assert planned_jobs(project) == set()


def test_sync_refuses_an_unfinished_selection(project):
    out = run(
        ["unetflow", "sync", "--to", "dvc", "--config", "datasets=[isbi2012]"],
        project,
        check=False,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: Snakemake has not finished this selection (it would run ")
    assert "download: 1" in out.stderr
    assert yaml.safe_load((project / "params.yaml").read_text())["datasets"] == DATASETS


def test_a_comment_in_params_reruns_nothing(project):
    with edited(project / "params.yaml", "preset: tiny\n", "preset: tiny  # a comment\n"):
        assert planned_jobs(project) == set()
        assert dvc_changed(project) == set()


def test_a_summary_code_change_reruns_summarize_only(project):
    reports = project / "src/unetflow/summary/summarize.py"
    with edited(reports, "BASELINE = ", "# a changed line\nBASELINE = "):
        assert planned_jobs(project) == {"summarize"}
        assert dvc_changed(project) == {"summarize"}
    assert planned_jobs(project) == set()  # same content again: nothing to do
    # the published numbers are data the summary code reads: an edit reruns the same
    references = project / "src/unetflow/summary/references.yaml"
    with edited(references, "low: 0.0382, high: 0.0382", "low: 0.0383, high: 0.0383"):
        assert planned_jobs(project) == {"summarize"}
        assert dvc_changed(project) == {"summarize"}


def test_a_preset_entry_of_one_model_reruns_that_model_only(project):
    entry = {**TINY_PRESET["model_defs"]["unet_modern"], "width": 6}
    with preset_entry(project, "model_defs", "unet_modern", entry):
        jobs = runs_of("train", *DOWNSTREAM, models=["unet_modern"]) | {"summarize"} | compares()
        assert planned_jobs(project) == jobs
        assert dvc_changed(project) == runs_of("train", models=["unet_modern"])


def test_a_preset_entry_of_one_dataset_reruns_that_dataset_only(project):
    entry = {"preprocess": {"size": 48, "score_size": 128}, "augment": {"copies": 1}}
    with preset_entry(project, "dataset_defs", "synth_cxr", entry):
        jobs = {"preprocess@synth_cxr", "augment@synth_cxr", "summarize", "compare@synth_cxr"}
        jobs |= runs_of("train", *DOWNSTREAM, datasets=["synth_cxr"])
        assert planned_jobs(project) == jobs
        tracking = {"preprocess@synth_cxr", "augment@synth_cxr"}
        assert dvc_changed(project) == tracking | runs_of("train", datasets=["synth_cxr"])


def test_a_model_that_is_not_selected_reruns_nothing(project):
    assert "unet_paper" not in yaml.safe_load((project / "params.yaml").read_text())["models"]
    with preset_entry(project, "model_defs", "unet_paper", {"width": 8}):
        assert planned_jobs(project) == set()
        assert dvc_changed(project) == set()


def stage_deps(project: Path) -> dict[str, dict]:
    """Each stage's recorded deps in dvc.lock: {path: hash}, params included."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    return {
        name: {
            "deps": {d["path"]: d.get("md5") for d in stage.get("deps", [])},
            "params": stage.get("params", {}),
        }
        for name, stage in lock.items()
    }


def test_a_training_code_change_reruns_training_and_what_follows(project):
    """Then, with a changed params entry too, DVC re-runs and the sync hands over to Snakemake,
    whose records still hold the old params."""
    training = project / "src/unetflow/training/trainer.py"
    training.write_text(training.read_text() + "\n# a changed line\n")
    trains = runs_of("train")
    assert planned_jobs(project) == trains | runs_of(*DOWNSTREAM) | {"summarize"} | compares()
    assert dvc_changed(project) == trains  # nothing upstream; later stages wait for hashes

    params = project / "params.yaml"
    values = yaml.safe_load(params.read_text())
    values["presets"]["tiny"]["model_defs"]["baseline_mean"] = {"kind": "mean_mask"}
    params.write_text(yaml.safe_dump(values, sort_keys=False))
    before = stage_deps(project)
    out = run(["dvc", "repro"], project, **ENV)
    ran = set(re.findall(r"Running stage '([^']+)'", out.stdout))
    after = stage_deps(project)
    # DVC re-runs a later stage exactly where the hash of something it reads changed
    moved = {name for name in after if after[name] != before.get(name)}
    assert trains <= ran and ran == moved, (ran, moved)
    assert not ran & {f"{s}@{d}" for s in ("download", "preprocess", "augment") for d in DATASETS}

    # Snakemake's own benchmark file of each job DVC re-ran is now older than the job's new
    # outputs: Snakemake plans those jobs again (the baseline's for its params too) until the
    # sync hands DVC's run over
    assert trains <= planned_jobs(project)
    out = run(["unetflow", "sync", "--to", "snakemake"], project)
    assert "snakemake -n and dvc status are clean" in out.stdout
    assert planned_jobs(project) == set()
    assert dvc_changed(project) == set()


def test_sync_to_snakemake_refuses_while_dvc_has_work(project):
    training = project / "src/unetflow/training/trainer.py"
    with edited(training, "# a changed line\n", "# another changed line\n"):
        out = run(["unetflow", "sync", "--to", "snakemake"], project, check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: DVC has not finished (train@synth_cxr-baseline_mean, ")
