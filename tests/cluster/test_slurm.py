"""profiles/slurm against a real SLURM (tests/cluster/conftest.py): every stage of the tiny
preset on synth_em and synth_cxr goes through sbatch, train and infer ask for a GPU, the small
jobs stay local, the outputs equal a local run's, and the cluster takes at most twice as long.
A train job cancelled with scancel resumes from its checkpoint to the uninterrupted weights.

The profile is the shipped one with this cluster's site settings (partition, memory, CPUs, the
status command for a SLURM without accounting), written beside it as profiles/slurm-test.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
import yaml

from benchmarks import table
from digest import WALL_CLOCK_FILES, file_digest
from project import (
    ROOT,
    SHARED_ENV,
    SHARED_SELECTION,
    TINY_PRESET,
    built_once,
    complete_preset,
    copy_project,
    run,
    tool_env,
)
from slurm_cluster import NODE, PARTITION, PLUGIN, Cluster
from unetflow.config import deep_merge
from unetflow.data.download import sha256_file

pytestmark = pytest.mark.e2e

DATASETS = ["synth_em", "synth_cxr"]
MODELS = ["unet_modern", "baseline_mean"]
# One torch thread per stage: the node's 2 CPUs are its 2 job slots, as --cores 2 locally.
ENV = {"OMP_NUM_THREADS": "1"}
LOCAL_RULES = {"download": 2, "summarize": 1, "compare": 2}
CLUSTER_RULES = {"preprocess": 2, "augment": 2, "train": 4, "infer": 4, "evaluate": 4, "explain": 4}
GPU_RULES = {"train", "infer", "explain"}  # explain's rule asks for the GPU the others get here
GROUP_MODEL = "rule_model_evaluate_explain_infer_train"  # profiles/slurm's group of model stages
# What a site changes in profiles/slurm: its partition, memory and CPUs per job; this SLURM
# has no accounting, so job states come from squeue. The threads stay: Snakemake exports a
# job's threads as OMP_NUM_THREADS, and infer's floats depend on torch's thread count, so a
# cluster run equals a local one only with the same threads (capped by the node's CPUs, as
# --cores caps them locally).
SITE = {
    "slurm-status-command": "squeue",
    "default-resources": {"slurm_partition": PARTITION, "mem_mb": 500, "cpus_per_task": 1},
    "set-resources": {rule: {"mem_mb": 1000, "cpus_per_task": 1} for rule in ("train", "infer")},
}


def site_profile(project: Path) -> Path:
    """profiles/slurm with SITE merged in, as `project`/profiles/slurm-test; its folder."""
    shipped = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    folder = project / "profiles" / "slurm-test"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(deep_merge(shipped, SITE)))
    return folder


def slurm_env(cluster: Cluster, project: Path) -> dict[str, str]:
    """The project's src and the executor plugin on PYTHONPATH, SLURM_CONF to the cluster."""
    return {
        **ENV,
        "PYTHONPATH": f"{project / 'src'}:{PLUGIN}",
        "SLURM_CONF": cluster.env["SLURM_CONF"],
    }


def jobs_of(cluster: Cluster, project: Path) -> list[dict[str, str]]:
    """SLURM's record of every job run in `project` (kept for MinJobAge after it ends)."""
    records = []
    for line in cluster.command(["scontrol", "show", "job", "-o"]).splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if fields.get("WorkDir") == str(project):
            records.append(fields)
    return records


class Runs(NamedTuple):
    local: Path
    cluster: Path
    local_s: float
    cluster_s: float
    output: str


@pytest.fixture(scope="module")
def runs(slurm, tmp_path_factory) -> Runs:
    """The same tiny project run locally with --cores 2 (read only: test_rerun copies it), then
    through SLURM."""
    root = tmp_path_factory.mktemp("slurm-runs")
    local, local_s = built_once(tmp_path_factory, "tiny_two_datasets")  # shared with test_rerun
    assert f"datasets=[{','.join(DATASETS)}]" == SHARED_SELECTION and SHARED_ENV == ENV
    assert yaml.safe_load((local / "params.yaml").read_text())["models"] == MODELS
    cluster = copy_project(root / "cluster", tiny=True, datasets=DATASETS, models=MODELS)
    profile = site_profile(cluster)
    start = time.monotonic()
    out = run(
        # --verbose prints the sbatch calls; the kept job logs show each job step's srun call
        [
            "snakemake",
            "--workflow-profile",
            str(profile),
            "--verbose",
            "--slurm-keep-successful-logs",
        ],
        cluster,
        **slurm_env(slurm, cluster),
    )
    cluster_s = time.monotonic() - start
    print(f"\ntiny pipeline: local {local_s:.1f} s, SLURM {cluster_s:.1f} s")
    return Runs(local, cluster, local_s, cluster_s, out.stdout + out.stderr)


def submitted(output: str) -> dict[str, str]:
    """Each job in an sbatch call of Snakemake's verbose output (`train@synth_em-unet_modern`),
    with the call's comment (`rule_<group name>_<its rules>` for a group job)."""
    jobs = {}
    for call in re.findall(r"^sbatch call: (sbatch .*)$", output, re.M):
        comment = re.search(r"--comment (\S+)", call)[1]
        for rule, wildcards in re.findall(r"'(\w+):([\w=,]*)'", call.split("--target-jobs")[1]):
            values = "-".join(v.split("=")[1] for v in wildcards.split(","))
            jobs[f"{rule}@{values}"] = comment
    return jobs


def test_cluster_jobs_go_through_sbatch_and_small_jobs_stay_local(runs, slurm):
    jobs = submitted(runs.output)
    assert Counter(name.split("@")[0] for name in jobs) == CLUSTER_RULES
    assert {jobs[f"preprocess@{d}"] for d in DATASETS} == {"rule_data_augment_preprocess"}
    assert jobs[f"explain@{DATASETS[0]}-{MODELS[0]}"] == GROUP_MODEL
    local = Counter(re.findall(r"^localrule (\w+):", runs.output, re.M))
    assert local == {**LOCAL_RULES, "all": 1}
    # SLURM's own records: one job per dataset and per dataset x model, the latter with a GPU.
    records = jobs_of(slurm, runs.cluster)
    assert {r["JobState"] for r in records} == {"COMPLETED"}
    assert Counter(r["Comment"] for r in records) == {
        "rule_data_augment_preprocess": len(DATASETS),
        GROUP_MODEL: len(DATASETS) * len(MODELS),
    }
    for record in records:
        gpu = record.get("TresPerJob") == "gres:gpu:1"
        assert gpu == (record["Comment"] == GROUP_MODEL), record
    # Within a job, each stage is a job step of its own: train, infer (and explain) ask for it.
    steps = re.findall(
        r"The call for this job is: srun (.*?) /.*--target-jobs '(\w+):",
        "".join(log.read_text() for log in (runs.cluster / ".snakemake/slurm_logs").rglob("*.log")),
    )
    assert Counter(rule for _, rule in steps) == CLUSTER_RULES
    assert all(("--gpus=1" in options) == (rule in GPU_RULES) for options, rule in steps)
    train = next(
        c for c in runs.output.splitlines() if c.startswith("sbatch call:") and "'train:" in c
    )
    print(f"\nsbatch call of a train job: {train}")


def output_digests(project: Path) -> tuple[dict[str, str], dict[str, str]]:
    """sha256 of every output file (raw bytes), and tools/digest.py's digest without timing."""
    raw, timeless = {}, {}
    for top in ("data", "results", "metrics.json"):
        base = project / top
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in files:
            name = str(path.relative_to(project))
            raw[name] = sha256_file(path)
            timeless[name] = "skipped" if path.name in WALL_CLOCK_FILES else file_digest(path)
    return raw, timeless


# The files whose bytes hold wall-clock measurements (training seconds, images per second):
# tools/digest.py compares them without those fields, or skips them (the throughput curve and
# the figure that draws it). Every other output must be byte-identical.
TIMED = re.compile(
    r"(/model\.pt|/dvclive/metrics\.json|/img_per_s\.tsv|/learning_curves\.png"
    r"|^results/rows/.*\.json|^results/summary\.(csv|md))$"
)


def test_outputs_equal_a_local_run(runs):
    local_raw, local_timeless = output_digests(runs.local)
    cluster_raw, cluster_timeless = output_digests(runs.cluster)
    assert sorted(local_raw) == sorted(cluster_raw)
    assert cluster_timeless == local_timeless
    differ = sorted(name for name in local_raw if local_raw[name] != cluster_raw[name])
    print("\nfiles that differ only in timing fields:\n  " + "\n  ".join(differ))
    assert all(TIMED.search(name) for name in differ), differ


def test_cluster_takes_at_most_twice_the_local_time(runs):
    assert runs.cluster_s <= 2 * runs.local_s, (runs.local_s, runs.cluster_s)


def test_every_job_leaves_a_benchmark_for_the_docs_table(runs):
    for project in (runs.local, runs.cluster):
        rows = table(project / "benchmarks").splitlines()[2:]
        assert len(rows) == sum(LOCAL_RULES.values()) + sum(CLUSTER_RULES.values())
        assert rows[0].startswith("| download synth_cxr |")
        assert rows[-1].startswith("| summarize |")


DATASET, MODEL = "synth_em", "unet_modern"
RESULT = f"results/{DATASET}/{MODEL}"
LAST = f"{RESULT}/checkpoints/last.pt"
EPOCHS = 6
# As tests/reliability/test_interruptions.py: a few more epochs, so that a cancel after the
# first checkpoint lands mid-run, and test-time augmentation, so that validation takes a second.
INTERRUPT = deep_merge(
    TINY_PRESET, {"model_defs": {MODEL: {"train": {"epochs": EPOCHS, "steps_per_epoch": 4}}}}
)
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path]:
    """A project whose data stages ran locally, and a copy trained without interruption."""
    values = yaml.safe_load((ROOT / "params.yaml").read_text())
    root = tmp_path_factory.mktemp("scancel")
    project = copy_project(
        root / "prepared",
        tiny=True,
        base={"infer": {"tta": True}},
        datasets=[DATASET],
        models=[MODEL],
        preset="interrupt",
        presets={**values["presets"], "interrupt": complete_preset(INTERRUPT, values)},
    )
    run(["snakemake", "--cores", "2", "--until", "augment"], project, **ENV)
    reference = shutil.copytree(project, root / "reference", symlinks=True)
    run(["snakemake", "--cores", "2", "--until", "train"], reference, **ENV)
    return project, reference


def cancel_when_checkpointed(cluster: Cluster, cmd: list[str], project: Path) -> int:
    """Start `cmd`; scancel its train job once it wrote a resume checkpoint; the epoch saved."""
    log = project.parent / "cancelled.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=project,
            env=tool_env(project, **slurm_env(cluster, project)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + TIMEOUT_S
    while not (project / LAST).is_file():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
        time.sleep(0.05)
    (job,) = [r for r in jobs_of(cluster, project) if r["Comment"].startswith("rule_model")]
    assert job["JobState"] == "RUNNING"
    cluster.command(["scancel", job["JobId"]])
    assert proc.wait(timeout=TIMEOUT_S) == 1
    # Snakemake shows the failed job's log, where slurmstepd says why it ended
    assert f"*** JOB {job['JobId']} ON {NODE} CANCELLED AT" in log.read_text()
    assert not (project / RESULT / "model.pt").exists(), "the cancel came after training ended"
    return int(torch.load(project / LAST, weights_only=True)["epoch"])


def test_a_cancelled_train_job_resumes_to_the_uninterrupted_weights(slurm, prepared, tmp_path):
    project = shutil.copytree(prepared[0], tmp_path / "project", symlinks=True)
    cmd = ["snakemake", "--workflow-profile", str(site_profile(project)), "--until", "train"]
    epoch = cancel_when_checkpointed(slurm, cmd, project)
    assert 1 <= epoch < EPOCHS

    run(cmd, project, **slurm_env(slurm, project))  # the same command again
    log = (project / f"logs/{DATASET}/{MODEL}/train.log").read_text()
    assert f"resuming from {LAST} after epoch {epoch} of {EPOCHS}" in log
    assert f"epoch {epoch}/{EPOCHS}:" not in log and f"epoch {EPOCHS}/{EPOCHS}:" in log
    states = [
        r["JobState"] for r in jobs_of(slurm, project) if r["Comment"].startswith("rule_model")
    ]
    assert states == ["CANCELLED", "COMPLETED"]
    weights = [
        torch.load(p / RESULT / "model.pt", weights_only=True)["state_dict"]
        for p in (project, prepared[1])
    ]
    assert weights[0].keys() == weights[1].keys()
    for key, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][key]), f"{key} differs from the uninterrupted run"
    assert not (project / RESULT / "checkpoints").exists()
