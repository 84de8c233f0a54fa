"""Wall time of a no-op `snakemake -n` and `dvc status` on a project where every job is done.

Copies the project (without data, results or caches) to a temporary git + DVC repo, selects
every dataset and model of params.yaml (or --datasets/--models), puts a placeholder at every
output, records them in both engines (`dvc commit --no-relink`, `snakemake --touch`), and
times each no-op check. Placeholders are enough: neither check reads the outputs' contents
beyond hashing them.

    python tools/noop_timing.py [--repeats 5] [--copies 15] [--folds 0 1 2 --seeds 1 2]
                                [--strip code params]

`--strip` removes, from the copy's dvc.yaml only, the code deps (scripts/, src/) or the params
lists of every stage: what DVC's no-op spends on each (the copy no longer keeps the re-run
contract; it is a measurement, not a layout).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COPIED = ["Snakefile", "dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", "workflow",
          "scripts", "profiles", "data/manifests", "src"]  # fmt: skip


def sh(cmd: list[str], cwd: Path) -> str:
    """Run `cmd` in `cwd`; its output, or exit with it on failure."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout + proc.stderr


def strip_stages(dvc_yaml: str, strip: list[str]) -> str:
    """dvc.yaml without the code deps ("code": `- scripts/...`, `- src/...` lines) and/or the
    `params:` lists ("params") of its stages."""
    kept, in_params = [], False
    for line in dvc_yaml.splitlines():
        if "code" in strip and re.match(r"\s+- (scripts|src)/", line):
            continue
        if "params" in strip:
            if re.fullmatch(r"    params:\s*", line):
                in_params = True
                continue
            if in_params and line.startswith("      "):
                continue
            in_params = False
        kept.append(line)
    return "\n".join(kept) + "\n"


def make_project(
    dest: Path,
    datasets: list[str] | None,
    models: list[str] | None,
    copies: int = 0,
    replicates: tuple[list[int], list[int]] = ([], []),
    strip: list[str] | None = None,
) -> int:
    """The copy with every output in place and recorded; returns the number of DVC stages.
    `copies` adds that many copies of unet_modern (`unet_modern_copy<i>`), for a larger DAG;
    `replicates` selects (folds, seeds) of the compare stage; `strip` (see strip_stages)."""
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    if strip:
        (dest / "dvc.yaml").write_text(strip_stages((dest / "dvc.yaml").read_text(), strip))
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for i in range(copies):
        params["model_defs"][f"unet_modern_copy{i}"] = params["model_defs"]["unet_modern"]
        for preset in params["presets"].values():
            preset["model_defs"][f"unet_modern_copy{i}"] = {}
    params["datasets"] = datasets or list(params["dataset_defs"])
    params["models"] = models or list(params["model_defs"])
    params["folds"], params["seeds"] = replicates
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        sh(cmd, dest)
    from dvc.repo import Repo

    with Repo(str(dest)) as repo:
        stages = list(repo.index.stages)
        for stage in stages:
            for out in stage.outs:
                path = dest / str(out.def_path)
                if path.suffix:  # a file output (model.pt, metrics.json, ...)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(f"{out.def_path}\n")
                else:  # a folder output
                    path.mkdir(parents=True, exist_ok=True)
                    (path / "placeholder.txt").write_text(f"{out.def_path}\n")
    sh(["dvc", "commit", "--force", "--no-relink"], dest)
    sh(["snakemake", "--touch", "--cores", "1"], dest)
    return len(stages)


def timed(cmd: list[str], cwd: Path, repeats: int, expect: str) -> list[float]:
    """Wall seconds of `repeats` runs of `cmd`, each checked to print `expect`."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        output = sh(cmd, cwd)
        seconds.append(time.perf_counter() - started)
        if expect not in output:
            sys.exit(f"{' '.join(cmd)} was not a no-op:\n{output[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--datasets", nargs="+", help="default: every dataset_defs entry")
    parser.add_argument("--models", nargs="+", help="default: every model_defs entry")
    parser.add_argument("--copies", type=int, default=0, help="extra copies of unet_modern")
    parser.add_argument("--folds", nargs="*", type=int, default=[], help="replicates' folds")
    parser.add_argument("--seeds", nargs="*", type=int, default=[], help="replicates' seeds")
    parser.add_argument(
        "--strip", nargs="+", choices=["code", "params"], default=[],
        help="drop these deps from every stage of the copy (a measurement of their cost)",
    )  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="noop-") as tmp:
        project = Path(tmp) / "p"
        replicates = (args.folds, args.seeds)
        stages = make_project(
            project, args.datasets, args.models, args.copies, replicates, args.strip
        )
        checks = {
            "snakemake -n": (["snakemake", "-n"], "Nothing to be done"),
            "dvc status": (["dvc", "status"], "Data and pipelines are up to date"),
        }
        print(f"{stages} jobs, every output in place; median (min-max) of {args.repeats} runs:")
        for name, (cmd, expect) in checks.items():
            seconds = timed(cmd, project, args.repeats, expect)
            print(
                f"  {name}: {statistics.median(seconds):.2f} s "
                f"({min(seconds):.2f}-{max(seconds):.2f})"
            )


if __name__ == "__main__":
    main()
