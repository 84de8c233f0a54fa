"""`unetflow sync`: hand a finished run from one engine to the other, so that it has nothing to do.

Both engines write the same outputs with the same commands; each keeps its own record of
what is up to date (DVC: dvc.lock and its cache; Snakemake: file times and .snakemake/).

- ``--to dvc`` after ``snakemake``: checks that Snakemake has nothing left to do for the
  selection it ran, writes that selection (``--config preset=… datasets=[…] models=[…]``,
  as given to Snakemake) into params.yaml, where DVC reads it, and records the outputs with
  ``dvc commit --no-relink``, which leaves the files (and so Snakemake's view of their
  times) as they are.
- ``--to snakemake`` after ``dvc repro`` / ``dvc checkout`` / ``dvc pull``: checks that DVC
  has nothing to do and stamps the outputs for Snakemake with ``snakemake --touch``.

Each direction ends by checking that the other engine has nothing to do.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from unetflow.config import ParamsError
from unetflow.io.outputs import write_text_atomic
from unetflow.pipeline.contract import COMMAND_LINE_KEYS

NOTHING_TO_DO = "Nothing to be done"


class SyncError(RuntimeError):
    """The hand-over cannot be made; the message says what to do first."""


def parse_config(pairs: list[str]) -> dict[str, Any]:
    """Snakemake's `--config KEY=VALUE` pairs (YAML values), limited to the selection keys."""
    selection = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in COMMAND_LINE_KEYS:
            keys = ", ".join(COMMAND_LINE_KEYS)
            raise ParamsError(f"--config {pair}: expected KEY=VALUE with KEY one of {keys}")
        selection[key] = yaml.safe_load(value)
    return selection


def set_selection(params_path: Path, selection: dict[str, Any]) -> bool:
    """Write `selection` into params.yaml's top-level keys, keeping every other line (and
    comment) as it is; False when it already holds that selection."""
    text = params_path.read_text()
    current = yaml.safe_load(text)
    if all(current.get(key) == value for key, value in selection.items()):
        return False
    for key, value in selection.items():
        # the key's line, then its block: indented lines, `- item` lines and blank lines
        block = re.compile(rf"^{key}:[^\n]*\n(?:(?:[ \t]+[^\n]*|- [^\n]*|[ \t]*)\n)*", re.M)
        found = list(block.finditer(text))
        if len(found) != 1:
            raise ParamsError(f"{params_path}: cannot find the top-level key '{key}' to set")
        match = found[0]
        if isinstance(value, list):
            dash = "- " if re.search(r"^- ", match.group(0), re.M) else "  - "  # the file's style
            written = f"{key}:\n" + "".join(f"{dash}{item}\n" for item in value)
        else:
            written = f"{key}: {value}\n"
        tail = re.search(r"\n(?:[ \t]*\n)*$", match.group(0))
        blank = match.group(0)[tail.start() + 1 :] if tail else ""
        text = text[: match.start()] + written + blank + text[match.end() :]
    if yaml.safe_load(text) != {**current, **selection}:
        raise ParamsError(f"{params_path}: could not set {sorted(selection)} in place")
    write_text_atomic(params_path, text)
    return True


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SyncError(f"{name} not found on PATH; install the workflow engines first")
    return path


def _run(cmd: list[str], cwd: Path) -> str:
    """Run an engine command; its output, or a SyncError with its last lines."""
    proc = subprocess.run(
        [_tool(cmd[0]), *cmd[1:]], cwd=cwd, capture_output=True, text=True, check=False
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise SyncError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{tail}")
    return output


def snakemake_pending(project: Path, config: list[str]) -> list[str]:
    """The jobs Snakemake would still run (`rule: count`), [] when it has nothing to do."""
    args = ["--config", *config] if config else []
    output = _run(["snakemake", "--dry-run", "--quiet", "rules", *args], project)
    if NOTHING_TO_DO in output:
        return []
    rows = re.findall(r"^(\w+)\s+(\d+)$", output, re.M)
    jobs = [f"{rule}: {count}" for rule, count in rows if rule not in ("all", "total")]
    return jobs or ["jobs that `snakemake -n` lists"]  # never "nothing" unless it says so


def dvc_pending(project: Path) -> list[str]:
    """The DVC stages whose record differs from the workspace, [] when all are up to date."""
    return sorted(json.loads(_run(["dvc", "status", "--json"], project) or "{}"))


def to_dvc(project: Path, config: list[str]) -> str:
    """After a Snakemake run with `--config <config>`: make DVC record exactly that run."""
    params_path = project / "params.yaml"
    selection = parse_config(config)
    pending = snakemake_pending(project, config)
    if pending:
        raise SyncError(
            "Snakemake has not finished this selection (it would run "
            f"{', '.join(pending)}); run snakemake with the same --config first"
        )
    changed = set_selection(params_path, selection)
    _run(["dvc", "commit", "--force", "--no-relink"], project)
    left = dvc_pending(project)
    if left:
        raise SyncError(f"dvc status still lists {', '.join(left)} after dvc commit")
    pending = snakemake_pending(project, [])
    if pending:
        raise SyncError(f"Snakemake would still run {', '.join(pending)} after the sync")
    where = f"; {params_path.name} now selects {selection}" if changed else ""
    return f"DVC recorded the Snakemake run{where}: dvc status and snakemake -n are clean"


def to_snakemake(project: Path) -> str:
    """After `dvc repro` (or checkout/pull): make Snakemake see DVC's outputs as up to date."""
    left = dvc_pending(project)
    if left:
        raise SyncError(
            f"DVC has not finished ({', '.join(left)} changed); run dvc repro, or dvc checkout, "
            "first"
        )
    _run(["snakemake", "--touch", "--cores", "1"], project)
    pending = snakemake_pending(project, [])
    if pending:
        raise SyncError(f"Snakemake would still run {', '.join(pending)} after the sync")
    return "Snakemake adopted DVC's outputs: snakemake -n and dvc status are clean"
