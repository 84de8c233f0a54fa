"""Bad models met through the real engines and the `unetflow predict` command.

The tiny pipeline is run once through train (synth_em, unet_modern); each test works on a copy
of that project and breaks one thing: a loss that turns non-finite during training, a model.pt
that carries pickled code, a model.pt whose weights belong to another architecture. Each must
fail with a message naming the step or the file, leave no model.pt or predictions behind, and
never run the pickled code.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from project import copy_project, run
from unetflow.io.outputs import PARTIAL_MARK
from unetflow.model.checkpoint import read_checkpoint, save_model
from unetflow.model.unet import build_model

pytestmark = pytest.mark.e2e  # every test here runs Snakemake or DVC

RUN = Path("results/synth_em/unet_modern")
MODEL = RUN / "model.pt"
PREDICTIONS = RUN / "predictions"
INPUT = "data/raw/synth_em/test/images/00.png"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The tiny project with synth_em preprocessed, augmented and unet_modern trained."""
    project = copy_project(
        tmp_path_factory.mktemp("trained") / "project",
        tiny=True,
        datasets=["synth_em"],
        models=["unet_modern"],
    )
    run(["snakemake", "--cores", "2", "--until", "train"], project)
    assert (project / MODEL).is_file()
    return project


def clone(trained: Path, dest: Path) -> Path:
    """A copy of the trained project (mtimes and Snakemake's records kept)."""
    shutil.copytree(trained, dest, symlinks=True)
    return dest


def assert_no_partial_files(project: Path) -> None:
    """No half-written model.pt or folder left anywhere under results/."""
    assert not list((project / "results").rglob("*partial*"))


class CodeInPickle:
    """Unpickling this runs a shell command that creates `marker`: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def checkpoint_with_code(good: Path, out: Path, marker: Path) -> None:
    """The weights and metadata of `good`, plus an object whose unpickling runs code."""
    payload = read_checkpoint(good)
    payload["train"] = CodeInPickle(marker)
    torch.save(payload, out)


def checkpoint_of_other_weights(good: Path, out: Path, **arch: int) -> None:
    """`good`'s metadata (width 4, depth 2) with the weights of a network built with `arch`."""
    payload = read_checkpoint(good)
    meta = {key: value for key, value in payload.items() if key not in ("state_dict", "format")}
    cfg = {**meta["model"], **arch}
    save_model(out, build_model(cfg, int(cfg["out_channels"])), meta)


def snakemake_infer(project: Path):
    return run(["snakemake", "--cores", "1", "--until", "infer"], project, check=False)


def predict(project: Path, model: Path, output: str = "out"):
    return run(
        ["unetflow", "predict", "--model", str(model), "--input", INPUT, "--output", output],
        project,
        check=False,
        OMP_NUM_THREADS="1",
    )


def assert_infer_refused(project: Path, proc, message: str) -> None:
    """Snakemake reran infer only, which failed with `message`; no predictions published."""
    assert proc.returncode != 0
    assert re.findall(r"Error in rule (\w+):", proc.stderr) == ["infer"]
    assert re.findall(r"localrule (\w+):", proc.stdout + proc.stderr) == ["infer"]
    log = (project / "logs/synth_em/unet_modern/infer.log").read_text()
    assert f"error: {message}" in log and "Traceback" not in log
    assert f"error: {message}" in proc.stderr
    assert not (project / PREDICTIONS).exists()
    assert not list((project / RUN).glob(f".predictions{PARTIAL_MARK}*"))
    assert_no_partial_files(project)


def test_non_finite_loss_stops_training_and_names_the_step(trained, tmp_path):
    project = clone(trained, tmp_path / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    unet = params["model_defs"]["unet_modern"]
    unet["norm"] = "none"  # no batch norm to tame the exploding weights
    # lr at the schema's maximum and a weight decay that sends every weight past float32 at the
    # first update: the loss of step 1 is finite, the next one is not.
    unet["train"].update(optimizer="sgd", lr=10.0, momentum=0.0, weight_decay=1e30)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    processed = (project / "data/processed/synth_em").stat().st_mtime_ns

    step = r"non-finite loss \((nan|inf)\) at step (\d+) \(epoch (\d+), iteration (\d+)\)"
    expected = re.compile(rf"error: {step} of unet_modern on synth_em \(lr 10\); no model written")
    proc = run(["snakemake", "--cores", "1", "--until", "train"], project, check=False)
    assert proc.returncode != 0
    assert re.findall(r"Error in rule (\w+):", proc.stderr) == ["train"]
    log = (project / "logs/synth_em/unet_modern/train.log").read_text()
    found = expected.search(log)
    assert found, log
    at, epoch, iteration = (int(found[i]) for i in (2, 3, 4))
    assert at >= 2 and (epoch, iteration) == ((at - 1) // 2 + 1, (at - 1) % 2 + 1)  # 2 steps/epoch
    assert expected.search(proc.stderr)
    assert not (project / MODEL).exists()
    assert_no_partial_files(project)
    assert (project / "data/processed/synth_em").stat().st_mtime_ns == processed  # data kept


def test_pickled_code_in_model_pt_is_refused_and_never_runs(trained, tmp_path):
    project = clone(trained, tmp_path / "project")
    # The file is a real exploit: a plain torch.load of a twin runs its code.
    twin, twin_marker = tmp_path / "twin.pt", tmp_path / "twin-code-ran"
    checkpoint_with_code(trained / MODEL, twin, twin_marker)
    torch.load(twin, weights_only=False)
    assert twin_marker.exists()

    marker = tmp_path / "code-ran"
    checkpoint_with_code(trained / MODEL, project / MODEL, marker)
    refused = (
        "refused: not a plain weights file (it holds pickled code or objects that weights_only "
        "loading does not allow: Trying to load unsupported GLOBAL posix.system whose module "
        "posix is blocked)"
    )
    assert_infer_refused(project, snakemake_infer(project), f"{MODEL}: {refused}")
    assert not marker.exists()

    proc = predict(project, project / MODEL)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"error: {project / MODEL}: {refused}"
    assert "Traceback" not in proc.stderr
    assert not (project / "out").exists()
    assert not marker.exists()


def test_weights_of_another_width_are_a_mismatch_naming_the_file(trained, tmp_path):
    project = clone(trained, tmp_path / "project")
    checkpoint_of_other_weights(trained / MODEL, project / MODEL, width=8)
    mismatch = (
        f"{MODEL}: the weights do not fit the architecture in its metadata (shape mismatch "
        f"inc.block.0.weight: checkpoint (8, 1, 3, 3) vs model (4, 1, 3, 3), "
    )
    assert_infer_refused(project, snakemake_infer(project), mismatch)
    log = (project / "logs/synth_em/unet_modern/infer.log").read_text()
    assert "(was the file written for another architecture?)" in log


def test_weights_of_another_depth_are_refused_by_predict(trained, tmp_path):
    bad = tmp_path / "deeper.pt"
    checkpoint_of_other_weights(trained / MODEL, bad, depth=3)
    proc = predict(trained, bad, str(tmp_path / "out"))
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"error: {bad}: the weights do not fit the architecture in its metadata (unexpected "
        f"downs.2.conv.block.0.weight, "
    )
    assert last.endswith("(was the file written for another architecture?)")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
