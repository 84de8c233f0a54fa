"""The jobs each engine would run, in one comparable form, for the parity test.

`snakemake_jobs` builds Snakemake's DAG through its API in a subprocess (Snakemake changes the
working directory and global logging); `dvc_jobs` expands dvc.yaml through `dvc.repo.Repo`.
Each returns `{"<stage>@<wildcard values joined by ->": {"cmd", "deps", "outs", "params"}}`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

LOG_REDIRECT = " > {log} 2>&1"


def dvc_jobs(project: Path) -> dict[str, dict[str, Any]]:
    """Every expanded DVC stage with its command, path deps, outs and tracked param keys."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    jobs = {}
    with Repo(str(project)) as repo:
        for stage in repo.index.stages:
            params = sorted(
                key for dep in stage.deps if isinstance(dep, ParamsDependency) for key in dep.params
            )
            jobs[stage.name] = {
                "cmd": stage.cmd,
                "deps": sorted(
                    str(dep.def_path) for dep in stage.deps if not isinstance(dep, ParamsDependency)
                ),
                "outs": sorted(str(out.def_path) for out in stage.outs),
                "params": params,
            }
    return jobs


def snakemake_jobs(
    project: Path, config: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Every Snakemake job of a --forceall run, with its command minus the log redirect."""
    out = subprocess.run(
        [sys.executable, __file__, str(project), json.dumps(config or {})],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"snakemake DAG failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.splitlines()[-1])


def _snakemake_main(project: Path, config: dict[str, Any]) -> None:
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        ResourceSettings,
    )

    jobs = {}
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(config=config),
            snakefile=project / "Snakefile",
            workdir=project,
        )
        workflow_api.dag(DAGSettings(forceall=True))
        workflow = workflow_api._workflow
        workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True)
        workflow._build_dag()
        for job in workflow.dag.jobs:
            if job.rule.name == "all":
                continue
            values = "-".join(str(v) for v in job.wildcards)
            name = f"{job.rule.name}@{values}" if values else job.rule.name
            log = " ".join(str(f) for f in job.log)
            cmd = job.shellcmd
            suffix = LOG_REDIRECT.replace("{log}", log)
            jobs[name] = {
                "cmd": cmd.removesuffix(suffix) if cmd.endswith(suffix) else cmd,
                "deps": sorted(str(f) for f in job.input),
                "outs": sorted(str(f) for f in job.output),
                "params": sorted(job.params.get("tracked", {})),
            }
    print(json.dumps(jobs))


if __name__ == "__main__":
    _snakemake_main(Path(sys.argv[1]).resolve(), json.loads(sys.argv[2]))


def planned_jobs(project: Path, *args: str) -> set[str]:
    """The jobs `snakemake -n` plans, named as DVC names its stages (`train@synth_em-unet_modern`);
    the target rule `all` left out."""
    from project import run

    out = run(["snakemake", "--dry-run", *args], project)
    jobs = set()
    for block in re.split(r"\n\s*\n", out.stdout + out.stderr):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if rule is None or rule[1] == "all":
            continue
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        values = [part.split("=", 1)[1] for part in wildcards[1].split(", ")] if wildcards else []
        jobs.add(f"{rule[1]}@{'-'.join(values)}" if values else rule[1])
    return jobs


def dvc_changed(project: Path) -> set[str]:
    """The stages `dvc status` lists as changed."""
    from project import run

    return set(json.loads(run(["dvc", "status", "--json"], project).stdout or "{}"))
