"""Snakemake's side of the contract: config checks before any job, profiles, tracked params."""

from __future__ import annotations

import os

import pytest
import yaml

from project import ROOT, copy_project, run
from slurm_cluster import PLUGIN, unavailable
from unetflow.config import ParamsError
from unetflow.pipeline.contract import tracked_params_for


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("engines") / "p")


@pytest.mark.e2e
def test_command_line_contract_selects_jobs(project):
    out = run(
        [
            "snakemake",
            "-n",
            "--config",
            "preset=full",
            "datasets=[isbi2012]",
            "models=[unet_modern]",
        ],
        project,
    )
    assert "--preset full --dataset isbi2012" in out.stdout
    assert "synth_em" not in out.stdout


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            ["seed=3"],
            "--config may set only preset, datasets, models, folds, seeds, noise_datasets, "
            "noise_families, noise_levels, noise_seeds; change seed in params.yaml",
        ),
        (["datasets=[nope]"], "datasets: 'nope' is not defined under dataset_defs"),
        (["folds=[0]"], "folds, seeds: give both (each fold x seed is a run) or neither"),
        (
            ["folds=[9]", "seeds=[1]"],
            "folds: [9] not folds of synth_em (dataset_defs.synth_em.folds = 6)",
        ),
        (["preset=fast"], "preset: 'fast' is not one of"),
        (["datasets=[a/b]"], "'a/b' does not match"),
    ],
)
def test_bad_config_is_refused_before_any_job(project, config, message):
    out = run(["snakemake", "--cores", "1", "--config", *config], project, check=False)
    assert out.returncode != 0
    assert message in out.stdout + out.stderr
    assert not (project / "data" / "raw").exists()


@pytest.mark.e2e
def test_broken_params_file_is_refused_before_any_job(tmp_path):
    project = copy_project(tmp_path / "p")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["model_defs"]["unet_modern"]["widht"] = 8
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    out = run(["snakemake", "--cores", "1"], project, check=False)
    assert out.returncode != 0
    assert "'widht' was unexpected" in out.stdout + out.stderr
    assert not (project / "data" / "raw").exists()


@pytest.mark.e2e
def test_slurm_profile_dry_run(project):
    """The shipped SLURM profile plans the pipeline, with the executor plugin beside the venv
    (make slurm-plugin) on PYTHONPATH, as docs/usage.md says to run it."""
    if not (PLUGIN / "snakemake_executor_plugin_slurm").is_dir():
        unavailable(f"no executor plugin in {PLUGIN}: make slurm-plugin")
    path = os.pathsep.join([str(project / "src"), str(PLUGIN)])
    out = run(["snakemake", "-n", "--workflow-profile", "profiles/slurm"], project, PYTHONPATH=path)
    assert "download" in out.stdout and "augment" in out.stdout


def test_default_profile_limits_gpu_jobs():
    profile = yaml.safe_load((ROOT / "profiles/default/config.yaml").read_text())
    assert "gpu=1" in profile["resources"]
    assert profile["rerun-incomplete"] and profile["show-failed-logs"] and profile["printshellcmds"]


def test_tracked_params_follow_dvc_yaml():
    config = yaml.safe_load((ROOT / "params.yaml").read_text())
    tracked = tracked_params_for(
        str(ROOT / "dvc.yaml"), "augment", config | {"preset": "quick"}, {"dataset": "isbi2012"}
    )
    assert tracked == {
        "seed": config["seed"],
        "augment": config["augment"],
        "dataset_defs.isbi2012.augment": config["dataset_defs"]["isbi2012"]["augment"],
        "presets.quick.dataset_defs.isbi2012": {"augment": {"copies": 4}},
    }
    with pytest.raises(ParamsError, match="key 'dataset_defs.nope.augment'"):
        tracked_params_for(str(ROOT / "dvc.yaml"), "augment", config, {"dataset": "nope"})
