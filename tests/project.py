"""A throw-away copy of the project for tests that run the real engines."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

# What a clean clone holds that the engines need; data, results and caches stay behind.
PROJECT_FILES = ["Snakefile", "dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"]
PROJECT_DIRS = ["workflow", "scripts", "profiles", "data/manifests"]


def copy_project(dest: Path, *, git: bool = False, **params: object) -> Path:
    """Copy the project to `dest`, override top-level params, optionally as a git + DVC repo."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, dest / name)
    for name in PROJECT_DIRS:
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    if params:
        values = yaml.safe_load((dest / "params.yaml").read_text())
        values.update(params)
        (dest / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    if git:
        run(["git", "init", "-q"], dest)
        run(["git", "config", "user.email", "test@unetflow"], dest)
        run(["git", "config", "user.name", "unetflow tests"], dest)
        run(["dvc", "init", "-q"], dest)
        run(["dvc", "config", "core.analytics", "false"], dest)
        run(["git", "add", "-A"], dest)
        run(["git", "commit", "-qm", "project"], dest)
    else:
        (dest / ".dvc").mkdir()
        (dest / ".dvc" / "config").write_text("[core]\n    no_scm = true\n    analytics = false\n")
    return dest


def tool_env(**extra: str) -> dict[str, str]:
    """The environment for engine subprocesses: this venv first on PATH, no TTY progress."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run(
    cmd: list[str], cwd: Path, *, check: bool = True, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run a command in `cwd`; on failure the error shows its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(**env), capture_output=True, text=True)
    if check and proc.returncode != 0:
        output = f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{output}")
    return proc
