"""Killed runs: a training killed midway resumes, through either engine, to the weights of an
uninterrupted run; an inference killed midway leaves nothing that evaluate takes as complete.

The engine is started in its own process group and the whole group (engine and stage script)
is killed with SIGKILL, as a power loss or the OOM killer would, at a moment found by polling
the files the stage writes: the first resume checkpoint of train, the first mask in infer's
hidden partial folder. The data stages run once, by DVC; every test works in a copy of that
project (Snakemake takes the DVC-made data as up to date: no record of its own, older inputs).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import psutil
import pytest
import torch
import yaml

from project import ROOT, TINY_PRESET, complete_preset, copy_project, run, tool_env
from unetflow.config import deep_merge
from unetflow.io.outputs import PARTIAL_MARK

pytestmark = pytest.mark.e2e

DATASET, MODEL = "synth_em", "unet_modern"
RESULT = f"results/{DATASET}/{MODEL}"
LAST = f"{RESULT}/checkpoints/last.pt"
EPOCHS = 4
# The tiny preset with a few more epochs, so that a kill after the first checkpoint lands
# mid-run, and test-time augmentation, so that infer (and validation) takes about a second.
PRESET = deep_merge(
    TINY_PRESET, {"model_defs": {MODEL: {"train": {"epochs": EPOCHS, "steps_per_epoch": 4}}}}
)
TTA = {"infer": {"tta": True}}
# One torch thread per stage process: the 2 cores are shared (with the reference run, too), and
# OpenMP threads that wait for a busy core slow a stage down several times.
ENV = {"OMP_NUM_THREADS": "1"}
TIMEOUT_S = 300  # for a stage to reach the point of the kill; it takes seconds on 2 cores
SMK_TRAIN = ["snakemake", "--cores", "2", "--until", "train"]
DVC_TRAIN = ["dvc", "repro", "train"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A git + DVC project whose data stages DVC has run, to be copied by each test."""
    values = yaml.safe_load((ROOT / "params.yaml").read_text())
    project = copy_project(
        tmp_path_factory.mktemp("interrupt") / "prepared",
        git=True,
        tiny=True,
        base=TTA,
        datasets=[DATASET],
        models=[MODEL],
        preset="interrupt",
        presets={**values["presets"], "interrupt": complete_preset(PRESET, values)},
    )
    run(["dvc", "repro", "augment"], project, **ENV)
    return project


def clone(prepared: Path, dest: Path) -> Path:
    """A copy of the prepared project (times kept, so both engines see the data as current)."""
    shutil.copytree(prepared, dest, symlinks=True)
    return dest


class Background:
    """A command running beside the tests; :meth:`done` waits for it and checks its status."""

    def __init__(self, cmd: list[str], project: Path) -> None:
        self.cmd, self.project = cmd, project
        self.log = project.parent / f"{project.name}.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=project, env=tool_env(project, **ENV), stdout=out, stderr=subprocess.STDOUT
            )

    def done(self) -> Path:
        """The project, once the command has succeeded."""
        if self.proc.wait(timeout=TIMEOUT_S) != 0:
            output = self.log.read_text()[-4000:]
            raise AssertionError(f"{' '.join(self.cmd)} exited {self.proc.returncode}\n{output}")
        return self.project


@pytest.fixture(scope="module")
def reference(prepared, tmp_path_factory) -> Iterator[Background]:
    """The same project trained without interruption, started at once and run beside the
    first test (2 cores: the killed run and this one each use one)."""
    training = Background(DVC_TRAIN, clone(prepared, tmp_path_factory.mktemp("reference") / "p"))
    yield training
    training.proc.kill()
    training.proc.wait()


def project_processes(project: Path) -> list[psutil.Process]:
    """Live (not zombie) processes working in `project`."""
    found = []
    for proc in psutil.process_iter(["cwd", "status"]):
        cwd = proc.info["cwd"]
        if cwd and Path(cwd).is_relative_to(project) and proc.info["status"] != "zombie":
            found.append(proc)
    return found


class Killed(NamedTuple):
    """A run killed by :func:`kill_when`."""

    returncode: int
    output: str
    pid: int


def kill_when(cmd: list[str], project: Path, ready: Callable[[], bool], what: str) -> Killed:
    """Start `cmd` in its own process group, SIGKILL the group once `ready()`."""
    log = project.parent / f"{project.name}-killed.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=project,
            env=tool_env(project, **ENV),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ready():
            if proc.poll() is not None:
                raise AssertionError(
                    f"{' '.join(cmd)} exited {proc.returncode} before {what}\n"
                    f"{log.read_text()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {TIMEOUT_S} s\n{log.read_text()[-4000:]}")
            time.sleep(0.01)
    finally:
        with contextlib.suppress(ProcessLookupError):  # none left when the engine exited first
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while project_processes(project) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not project_processes(project), "a process of the killed run survived"
    return Killed(proc.returncode, log.read_text(), proc.pid)


def checkpoint_epoch(project: Path) -> int:
    """The epoch after which the resume checkpoint was written."""
    return int(torch.load(project / LAST, weights_only=True)["epoch"])


def kill_training(cmd: list[str], project: Path) -> tuple[int, int]:
    """Kill `cmd` after train wrote its first resume checkpoint; the epoch it holds and the
    engine's process id."""
    killed = kill_when(cmd, project, (project / LAST).is_file, "a resume checkpoint")
    assert killed.returncode == -signal.SIGKILL
    assert not (project / RESULT / "model.pt").exists(), "the kill came after training ended"
    epoch = checkpoint_epoch(project)
    assert 1 <= epoch < EPOCHS
    return epoch, killed.pid


def resumed_message(epoch: int) -> str:
    return f"train {DATASET}/{MODEL}: resuming from {LAST} after epoch {epoch} of {EPOCHS}"


def assert_same_training(project: Path, reference: Path) -> None:
    """Bit-identical weights and learning curves (but the timing one), no checkpoint left."""
    weights = [
        torch.load(p / RESULT / "model.pt", weights_only=True)["state_dict"]
        for p in (project, reference)
    ]
    assert weights[0].keys() == weights[1].keys()
    for key, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][key]), f"{key} differs from the uninterrupted run"
    curves = Path(RESULT, "dvclive/plots/metrics")
    names = sorted(
        str(p.relative_to(reference / curves)) for p in (reference / curves).rglob("*.tsv")
    )
    assert names == sorted(
        str(p.relative_to(project / curves)) for p in (project / curves).rglob("*.tsv")
    )
    for name in names:
        if name != "img_per_s.tsv":
            assert (project / curves / name).read_text() == (reference / curves / name).read_text()
    assert not (project / RESULT / "checkpoints").exists()


def test_snakemake_resumes_a_killed_training_after_unlock(prepared, reference, tmp_path):
    project = clone(prepared, tmp_path / "project")
    epoch, _ = kill_training(SMK_TRAIN, project)
    assert list((project / ".snakemake" / "locks").glob("*.lock")), "Snakemake's lock is gone"

    # What the user sees when running the same command again: the lock of the killed run.
    refused = run(SMK_TRAIN, project, check=False, **ENV)
    assert refused.returncode == 1
    output = refused.stdout + refused.stderr
    assert "LockException:\nError: Directory cannot be locked." in output
    assert (
        "If you are sure that no other instances of snakemake are running on this directory, "
        "the remaining lock was likely caused by a kill signal or a power loss. It can be "
        "removed with the --unlock argument." in output
    )
    assert checkpoint_epoch(project) == epoch, "the refused run touched the checkpoint"

    # What the user does: unlock, then the same command again.
    run(["snakemake", "--unlock"], project, **ENV)
    run(SMK_TRAIN, project, **ENV)
    log = (project / f"logs/{DATASET}/{MODEL}/train.log").read_text()
    assert resumed_message(epoch) in log
    assert f"epoch {epoch}/{EPOCHS}:" not in log  # the saved epochs are not trained again
    assert f"epoch {EPOCHS}/{EPOCHS}:" in log
    assert_same_training(project, reference.done())


def test_dvc_resumes_a_killed_training(prepared, reference, tmp_path):
    project = clone(prepared, tmp_path / "project")
    epoch, pid = kill_training(DVC_TRAIN, project)
    assert (project / ".dvc" / "tmp" / "rwlock").read_text().count('"pid"') > 0

    # DVC removes the dead process from its lock by itself: the same command resumes.
    again = run(DVC_TRAIN, project, **ENV)
    output = again.stdout + again.stderr
    stale = re.findall(
        r"WARNING: Process '\S+ repro train' with \(Pid (\d+)\), in RWLock-file '([^']+)' "
        r"had been killed\. Auto removed it from the lock file\.",
        output,
    )
    assert {int(pid) for pid, _ in stale} == {pid}, output
    assert f"{RESULT}/model.pt" in {path for _, path in stale}
    assert f"Running stage 'train@{DATASET}-{MODEL}'" in output
    assert resumed_message(epoch) in output
    assert f"epoch {epoch}/{EPOCHS}:" not in output
    assert_same_training(project, reference.done())


def test_killed_inference_leaves_nothing_evaluate_accepts(reference, tmp_path):
    project = clone(reference.done(), tmp_path / "project")
    results = project / RESULT
    partial = f".predictions{PARTIAL_MARK}*"

    def writing() -> bool:
        return any(any(p.glob("masks/*.png")) for p in results.glob(partial))

    killed = kill_when(["dvc", "repro", "infer"], project, writing, "a predicted mask")
    assert killed.returncode == -signal.SIGKILL
    assert f"Running stage 'infer@{DATASET}-{MODEL}'" in killed.output
    assert not (results / "predictions").exists()
    assert len(list(results.glob(partial))) == 1  # the killed run's work, hidden

    split = pd.read_csv(project / f"data/processed/{DATASET}/split.csv", dtype={"id": str})
    first = split.loc[split["split"] == "val", "id"].iloc[0]
    evaluate = run(
        [
            "python",
            "scripts/evaluate.py",
            "--params=params.yaml",
            "--preset=interrupt",
            f"--dataset={DATASET}",
            f"--model={MODEL}",
            f"--checkpoint={RESULT}/model.pt",
            f"--processed=data/processed/{DATASET}",
            f"--predictions={RESULT}/predictions",
            f"--live={RESULT}/dvclive",
            f"--metrics={RESULT}/metrics.json",
            f"--per-image={RESULT}/per_image.csv",
            f"--figures={RESULT}/figures",
            f"--subgroups={RESULT}/subgroups.csv",
            f"--shifts={RESULT}/shifts.csv",
            f"--scores=results/scores/{DATASET}/{MODEL}.csv",
            f"--row=results/rows/{DATASET}/{MODEL}.json",
        ],
        project,
        check=False,
        **ENV,
    )
    assert evaluate.returncode == 1 and "Traceback" not in evaluate.stderr
    assert evaluate.stderr.splitlines()[-1] == (
        f"error: {RESULT}/predictions/masks/{first}.png: not found; "
        "expected the predicted mask written by the infer stage"
    )
    assert not (results / "metrics.json").exists()

    rerun = run(["dvc", "repro", "evaluate"], project, **ENV)
    assert f"Running stage 'infer@{DATASET}-{MODEL}'" in rerun.stdout
    assert f"Running stage 'evaluate@{DATASET}-{MODEL}'" in rerun.stdout
    assert not list(results.glob(partial)), "the killed run's partial folder was left behind"
    index = pd.read_csv(results / "predictions" / "index.csv", dtype={"id": str})
    expected = split.loc[split["split"].isin(["val", "test", "predict"]), "id"]
    assert sorted(index["id"]) == sorted(expected)
    assert len(list((results / "predictions" / "masks").glob("*.png"))) == len(expected)
    assert (results / "metrics.json").is_file()
