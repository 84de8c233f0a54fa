"""A throw-away copy of the project for tests that run the real engines."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from unetflow.config import deep_merge
from unetflow.data.download import sha256_file

ROOT = Path(__file__).resolve().parents[1]

# What a clean clone holds that the engines need; data, results and caches stay behind.
PROJECT_FILES = ["Snakefile", "dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"]
PROJECT_DIRS = ["workflow", "scripts", "profiles", "data/manifests", "src"]
# Left out of the copied folders: caches and build metadata.
IGNORED = ("__pycache__", "*.egg-info")


# The model_defs entry of a small same-padding U-Net that unit tests save as a model.pt.
UNET_CFG = {
    "kind": "unet",
    "padding": "same",
    "width": 4,
    "depth": 2,
    "norm": "none",
    "up": "transposed",
    "dropout": 0.0,
    "init": "he",
    "out_channels": 2,
}

# Run settings of the tiny projects (base keys: presets overlay only dataset_defs and model_defs).
TINY_RUN = {"train": {"workers": 0, "threads": 1}, "infer": {"batch_size": 16}}
# The tiny preset of params.yaml (a smoke run a user can start too).
TINY_PRESET = yaml.safe_load((ROOT / "params.yaml").read_text())["presets"]["tiny"]
# Synthetic EM small enough for the same (sources cannot be changed by a preset).
TINY_SYNTH_EM = {"type": "synthetic", "n_train": 12, "n_test": 4, "size": 128}
TINY_SYNTH_EM_SPLIT = {"train": [0, 6], "val": [6, 9], "test": [9, 12]}
TINY_SYNTH_CXR = {"type": "synthetic", "n_images": 22, "n_unmasked": 2, "size": 128}


SHENZHEN = yaml.safe_load((ROOT / "params.yaml").read_text())["dataset_defs"]["shenzhen"]


def cxr_definition(size: int, score_size: int, normalise: str, split: dict | None = None) -> dict:
    """A chest X-ray dataset definition as the config layer hands it to preprocess and augment:
    Shenzhen's, at `size` px scored at `score_size`, normalised by `normalise`."""
    preprocess = {**SHENZHEN["preprocess"], "size": size, "score_size": score_size}
    return {
        **SHENZHEN,
        "preprocess": {**preprocess, "normalise": normalise},
        "split": dict(split or SHENZHEN["split"]),
    }


def complete_preset(overlay: dict, values: dict) -> dict:
    """`overlay` as a preset of `values` (a params dict): every dataset and model listed."""
    listing = {defs: dict.fromkeys(values[defs], {}) for defs in ("dataset_defs", "model_defs")}
    return deep_merge(listing, overlay)


def copy_project(
    dest: Path, *, git: bool = False, tiny: bool = False, base: dict | None = None, **params: object
) -> Path:
    """Copy the project to `dest`, override top-level params, optionally as a git + DVC repo.

    `tiny` selects params.yaml's `tiny` preset, adds `TINY_RUN`, and shrinks synth_em and
    synth_cxr, for end-to-end tests; `base` is merged over the base keys after that.
    """
    if tiny:
        params.setdefault("preset", "tiny")
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, dest / name)
    for name in PROJECT_DIRS:
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns(*IGNORED))
    if params or tiny or base:
        values = yaml.safe_load((dest / "params.yaml").read_text())
        if tiny:
            values = deep_merge(values, TINY_RUN)
            tiny_preset = values["presets"]["tiny"]
            # The same but for one augmentation setting, to switch presets in a test.
            values["presets"]["tiny_b"] = deep_merge(
                tiny_preset, {"dataset_defs": {"synth_em": {"augment": {"copies": 2}}}}
            )
            values["dataset_defs"]["synth_em"]["source"] = TINY_SYNTH_EM
            values["dataset_defs"]["synth_em"]["split"] = TINY_SYNTH_EM_SPLIT
            values["dataset_defs"]["synth_cxr"]["source"] = TINY_SYNTH_CXR
        values = deep_merge(values, base or {})
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


def tool_env(project: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment for engine subprocesses: this venv first on PATH, and `project`'s own
    src/ first on PYTHONPATH, so that the code a stage runs is the code its deps track."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if project is not None and (Path(project) / "src").is_dir():
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(Path(project).resolve() / "src"), env.get("PYTHONPATH")])
        )
    env.update(extra)
    return env


def run(
    cmd: list[str], cwd: Path, *, check: bool = True, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run a command in `cwd`; on failure the error shows its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(cwd, **env), capture_output=True, text=True)
    if check and proc.returncode != 0:
        output = f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{output}")
    return proc


def tree_digest(folder: Path, ignore: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under `folder` whose name is not in `ignore`, by relative path."""
    return {
        str(f.relative_to(folder)): sha256_file(f)
        for f in sorted(folder.rglob("*"))
        if f.is_file() and f.name not in ignore
    }


# Each engine's bookkeeping in output folders: Snakemake's marker in directory outputs, and the
# .gitignore DVC writes beside file outputs (results/scores/<dataset>/ holds those of evaluate).
ENGINES_OWN = (".snakemake_timestamp", ".gitignore")


def digest(project: Path, out: str) -> dict[str, str]:
    """sha256 of an output file, or of every file under an output folder (but ENGINES_OWN)."""
    path = project / out
    if path.is_dir():
        return tree_digest(path, ENGINES_OWN)
    return {out: sha256_file(path)} if path.is_file() else {}


def rewrite_by_dvc(project: Path, stages: dict[str, list[str]], **env: str) -> dict[str, list[str]]:
    """On a project Snakemake ran and `unetflow sync` handed to DVC, force DVC's own command of
    each stage (in one `dvc repro --force --single-item` call); per stage, those of its listed
    outputs whose bytes changed: none where both engines' commands write the same."""
    before = {out: digest(project, out) for outs in stages.values() for out in outs}
    empty = [out for out, files in before.items() if not files]
    if empty:
        raise AssertionError(f"nothing at {empty} to compare")
    run(["dvc", "repro", "--force", "--single-item", *stages], project, **env)
    return {
        stage: [out for out in outs if digest(project, out) != before[out]]
        for stage, outs in stages.items()
    }


# The tiny Snakemake run that test_rerun edits and test_slurm compares the cluster with: synth_em
# and synth_cxr x unet_modern and baseline_mean, one torch thread per job, in a git + DVC repo
# whose params.yaml selects synth_em only (the selection comes from --config).
SHARED_SELECTION = "datasets=[synth_em,synth_cxr]"
SHARED_ENV = {"OMP_NUM_THREADS": "1"}


def _tiny_two_datasets(folder: Path) -> None:
    copy_project(folder, git=True, tiny=True)
    run(["snakemake", "--cores", "2", "--config", SHARED_SELECTION], folder, **SHARED_ENV)


def built_once(
    factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None] = _tiny_two_datasets
) -> tuple[Path, float]:
    """`build(folder)` run once per test session by whichever pytest-xdist worker asks first,
    while the others wait for it; the folder and the seconds the build took. Read it, or copy it
    (shutil.copytree keeps the mtimes Snakemake compares) before changing anything."""
    root = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the workers' common folder
    folder, seconds = root / name, root / f"{name}.seconds"
    with (root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not seconds.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            start = time.monotonic()
            build(folder)
            seconds.write_text(f"{time.monotonic() - start}\n")
    return folder, float(seconds.read_text())
