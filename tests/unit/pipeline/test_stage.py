"""The stage plumbing: a job gets exactly the params keys its dvc.yaml stage tracks."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from project import ROOT
from unetflow.config import ParamsError
from unetflow.io.logs import configure_logging
from unetflow.pipeline.stage import job_params

PARAMS = ROOT / "params.yaml"


def test_a_job_gets_its_tracked_keys_resolved_for_its_preset():
    base = yaml.safe_load(PARAMS.read_text())
    got = job_params(PARAMS, "train", preset="quick", dataset="shenzhen", model="unet_paper")
    assert sorted(got) == ["dataset_defs", "infer", "model_defs", "seed", "train"]
    assert list(got["model_defs"]) == ["unet_paper"]  # no other model, no presets
    assert got["model_defs"]["unet_paper"]["train"]["lr"] == 0.0005  # quick's, not 0.001
    assert got["model_defs"]["unet_paper"]["width"] == 16
    shenzhen = got["dataset_defs"]["shenzhen"]
    quick_size = base["presets"]["quick"]["dataset_defs"]["shenzhen"]["preprocess"]["size"]
    assert quick_size != base["dataset_defs"]["shenzhen"]["preprocess"]["size"]
    assert shenzhen == {
        "kind": "cxr",
        "preprocess": {**base["dataset_defs"]["shenzhen"]["preprocess"], "size": quick_size},
        "augment": {"flip": False},  # only the key train reads, not quick's copies
    }
    full = job_params(PARAMS, "train", preset="full", dataset="shenzhen", model="unet_paper")
    assert full["model_defs"]["unet_paper"] == base["model_defs"]["unet_paper"]


def test_stages_that_do_not_read_the_preset_get_the_base_values():
    got = job_params(PARAMS, "infer", preset="quick", dataset="isbi2012")
    base = yaml.safe_load(PARAMS.read_text())
    assert got == {
        "train": {"device": base["train"]["device"], "amp": base["train"]["amp"]},
        "infer": base["infer"],
    }


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"dataset": "nope"}, r"dataset 'nope' is not defined under dataset_defs \(\['isbi2012'"),
        ({"dataset": "synth_em", "model": "unet_x"}, r"model 'unet_x' is not defined under model"),
    ],
)
def test_an_undefined_dataset_or_model_is_named(item, message):
    with pytest.raises(ParamsError, match=message):
        job_params(PARAMS, "evaluate", preset="quick", **item)


def test_a_job_says_which_of_its_base_values_the_preset_replaces(tmp_path, capsys):
    """`dvc exp run -S model_defs.unet_paper.train.lr=0.01` under quick changes a shadowed key:
    the job's log says which value it uses and where to change it."""
    (tmp_path / "workflow").symlink_to(ROOT / "workflow")
    (tmp_path / "dvc.yaml").symlink_to(ROOT / "dvc.yaml")
    params = yaml.safe_load(PARAMS.read_text())
    params["model_defs"]["unet_paper"]["train"]["lr"] = 0.01
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    configure_logging()  # as run_stage does: the note is a log record of the job
    got = job_params(
        tmp_path / "params.yaml", "train", preset="quick", dataset="isbi2012", model="unet_paper"
    )
    assert got["model_defs"]["unet_paper"]["train"]["lr"] == 0.0005
    notes = capsys.readouterr().out.splitlines()
    assert (
        "note: model_defs.unet_paper.train.lr = 0.0005 from presets.quick; the base value 0.01 "
        "is not used (to change it, edit presets.quick.model_defs.unet_paper.train.lr)"
    ) in notes
    assert all("unet_modern" not in note for note in notes)  # only what this job reads
    job_params(PARAMS, "train", preset="full", dataset="isbi2012", model="unet_paper")
    assert capsys.readouterr().out == ""  # full shadows nothing


def test_a_stage_script_argument_error_is_one_error_line():
    proc = subprocess.run(
        [sys.executable, "scripts/train.py", "--params", "params.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr == (
        "error: train.py: the following arguments are required: --dataset, --preset, --model, "
        "--processed, --augmented, --model-out, --live, --checkpoints (see train.py --help)\n"
    )
