"""The GPU run of the full preset, one device call at a time (docs/gpu.md).

    PYTHONUNBUFFERED=1 python3 tools/gpu/run.py --out "$OUT"

Every call runs this same command with the next `.gpu/call<k>` of tools/gpu/prepare.py carried.
It unpacks the parts it finds into `--work` (git-ignored, never carried, so it stays on the
machine while it is warm), installs the packages once (wheels into `<work>/site`, elasticdeform
built from source), and runs the data stages and the preflight of every dataset whose files are
all there. Once every part is in, it runs the real workflow: Snakemake, several training jobs
on the one GPU at once, the recipes the preflight passed. Standard library only: it runs before
anything is installed.

What comes back, in `--out` (at most 4 files, rewritten whenever a job ends, so that a run cut
at its limit still returns its tables): `results.tar.gz` (metrics, per-image and summary tables,
DVCLive curves, preflight reports, every log), `figures.tar` (the PNGs, if they fit 16 MiB),
`status.json` and `run.log`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20
FILE_LIMIT = 16 * MIB  # what one file brought back may weigh
# Small text outputs worth bringing back; models, checkpoints and predictions stay behind.
TEXT_SUFFIXES = {".json", ".csv", ".md", ".tsv", ".txt", ".log", ".yaml"}
SKIP_PARTS = {"checkpoints", "probabilities", "masks"}
DEFAULT_MODELS = ("unet_paper", "unet_delft", "unet_andersen", "unet_modern", "baseline_mean")

_t0 = time.monotonic()
_log_file: io.TextIOBase | None = None


def say(message: str) -> None:
    """Print a progress line with the seconds since start, and keep it in run.log."""
    line = f"[{time.monotonic() - _t0:6.1f}s] {message}"
    print(line, flush=True)
    if _log_file is not None:
        _log_file.write(line + "\n")
        _log_file.flush()


# ---------------------------------------------------------------- the parts of the calls


def read_plans(calls_root: Path) -> dict:
    """The plan of the carried call folders (`call<k>/plan.json`); they must agree."""
    plans = {}
    for path in sorted(calls_root.glob("call*/plan.json")):
        plans[path.parent.name] = json.loads(path.read_text())
    if not plans:
        raise SystemExit(
            f"error: no {calls_root}/call*/plan.json here: carry a .gpu/call<k> folder "
            "made by tools/gpu/prepare.py (docs/gpu.md)"
        )
    ids = {plan["plan_id"] for plan in plans.values()}
    if len(ids) != 1:
        raise SystemExit(f"error: call folders of different plans {sorted(ids)}: {list(plans)}")
    return next(iter(plans.values()))


def unpack(calls_root: Path, work: Path) -> tuple[dict, list[str]]:
    """Unpack each carried part not unpacked yet; return the plan and the calls still missing.

    A part of another plan than the one `work` holds starts `work` afresh.
    """
    plan = read_plans(calls_root)
    stamp = work / "plan_id"
    if stamp.exists() and stamp.read_text().strip() != plan["plan_id"]:
        say(f"{work} holds another plan ({stamp.read_text().strip()}): starting afresh")
        shutil.rmtree(work)
    (work / "unpacked").mkdir(parents=True, exist_ok=True)
    stamp.write_text(plan["plan_id"] + "\n")
    for part in sorted(calls_root.glob("call*/part.tar")):
        marker = work / "unpacked" / part.parent.name
        if marker.exists():
            continue
        with tarfile.open(part) as tar:
            safe_extract(tar, work)
        marker.touch()
        say(f"unpacked {part.parent.name} ({part.stat().st_size / MIB:.1f} MiB)")
    names = [call["name"] for call in plan["calls"]]
    missing = [name for name in names if not (work / "unpacked" / name).exists()]
    return plan, missing


def safe_extract(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract regular files and folders that stay inside `dest`; refuse anything else."""
    for member in tar.getmembers():
        parts = Path(member.name).parts
        if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
            raise SystemExit(f"error: {tar.name}: refusing member {member.name!r}")
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
    else:  # Python < 3.11.4: the members were checked above
        tar.extractall(dest)  # noqa: S202


def install(work: Path, packages: Sequence[str]) -> bool:
    """Install the carried wheels and build elasticdeform into `work`/site once all of
    `packages` (file names) are unpacked; return whether they are installed."""
    site, pkgs = work / "site", work / "pkgs"
    done = site / ".installed"
    if done.exists():
        return True
    absent = [name for name in packages if not (pkgs / name).is_file()]
    if absent:
        say(f"{len(absent)} of {len(packages)} packages still to come: installing later")
        return False
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
    pip += ["--no-cache-dir", "--upgrade", "--target", str(site)]
    wheels = sorted(str(p) for p in pkgs.glob("*.whl"))
    sdists = sorted(str(p) for p in pkgs.glob("*.tar.gz"))
    started = time.monotonic()
    steps = [("installing the wheels", [*pip, "--no-compile", *wheels])]
    if sdists:
        steps.append(("building elasticdeform", [*pip, "--no-build-isolation", *sdists]))
    imports = "import snakemake, jsonschema, elasticdeform"
    steps.append(("importing them", [sys.executable, "-c", imports]))
    for what, cmd in steps:
        if subprocess.run(cmd, env=environment(work)).returncode:
            raise SystemExit(f"error: {what} into {site} failed (above); the packages: {pkgs}")
    done.touch()
    say(
        f"installed {len(wheels)} wheels and {len(sdists)} source archives in "
        f"{time.monotonic() - started:.0f} s"
    )
    return True


def environment(work: Path) -> dict[str, str]:
    """The environment of every command: the installed packages, unetflow's source, the data
    mirror, and a `python` that is this interpreter (the rules call `python`)."""
    bin_dir = work / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "python"
    if not shim.exists():  # a script, not a link: a link to a venv's python leaves the venv
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        shim.chmod(0o755)
    env = dict(os.environ)
    paths = [str(work / "site"), str(REPO / "src")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PATH"] = os.pathsep.join([str(bin_dir), str(work / "site" / "bin"), env["PATH"]])
    env["UNETFLOW_MIRROR"] = str(work / "mirror")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def dataset_complete(work: Path, dataset: str) -> bool:
    """Whether every file data/manifests/<dataset>.tsv lists is in the unpacked mirror."""
    manifest = REPO / "data" / "manifests" / f"{dataset}.tsv"
    if not manifest.exists():
        raise SystemExit(f"error: {manifest} does not exist: is {dataset!r} a dataset?")
    rows = [line.split("\t") for line in manifest.read_text().splitlines()]
    paths = [row[0] for row in rows if row[0] and not row[0].startswith("#") and len(row) == 3]
    return all((work / "mirror" / dataset / rel).is_file() for rel in paths[1:])


# ---------------------------------------------------------------- the preflight's verdicts


def read_preflight(path: Path) -> list[dict]:
    """The recipes of a preflight.json (`{"recipes": [{dataset, model, ok, ...}]}`)."""
    try:
        recipes = json.loads(path.read_text())["recipes"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: no readable 'recipes' list ({exc})") from exc
    for i, row in enumerate(recipes):
        if not isinstance(row, dict) or not {"dataset", "model", "ok"} <= set(row):
            raise ValueError(f"{path}: recipes[{i}] lacks dataset, model or ok: {row!r}")
    return recipes


def runnable(
    datasets: Sequence[str], models: Sequence[str], recipes: Iterable[dict]
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The dataset x model pairs to run, and `{"dataset/model": why}` of those left out.

    A recipe the preflight found not ok is left out; a pair it did not probe (the mean-mask
    baseline, or no preflight) runs.
    """
    verdicts = {(r["dataset"], r["model"]): r for r in recipes}
    keep, skipped = [], {}
    for dataset in datasets:
        for model in models:
            row = verdicts.get((dataset, model))
            if row is not None and not row["ok"]:
                why = row.get("verdict") or row.get("reason") or "not ok"
                skipped[f"{dataset}/{model}"] = f"preflight: {why}"
            else:
                keep.append((dataset, model))
    return keep, skipped


def targets(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """Snakemake targets of `pairs`: each one's metrics and explanations."""
    out = []
    for dataset, model in pairs:
        out += [f"results/{dataset}/{model}/metrics.json", f"results/{dataset}/{model}/explain"]
    return out


# ---------------------------------------------------------------- what comes back


def collect(root: Path, extra: Iterable[Path] = ()) -> tuple[list[Path], list[Path]]:
    """(small text files, PNG figures) of a run under `root`, models and predictions left out.

    Looks in results/, logs/, data/processed/*/ (stats.json, split.csv), data/augmented/*/
    (examples.png) and the folders `extra`; the workflow's own metrics.json too.
    """
    texts: list[Path] = []
    figures: list[Path] = []
    places = [root / "results", root / "logs", *extra]
    for place in places:
        if not place.is_dir():
            continue
        for path in sorted(place.rglob("*")):
            if not path.is_file() or SKIP_PARTS & set(path.relative_to(place).parts):
                continue
            if path.suffix in TEXT_SUFFIXES:
                texts.append(path)
            elif path.suffix == ".png":
                figures.append(path)
    for stage in ("processed", "augmented"):
        for folder in sorted((root / "data" / stage).glob("*")):
            texts += [p for p in (folder / "stats.json", folder / "split.csv") if p.is_file()]
            figures += sorted(folder.glob("*.png"))
    if (root / "metrics.json").is_file():
        texts.append(root / "metrics.json")
    return texts, figures


def signature(paths: Iterable[Path]) -> tuple:
    """What changes when a file of `paths` is added, removed or rewritten."""
    sig = []
    for path in paths:
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        sig.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(sig)


def write_archive(dest: Path, files: Sequence[Path], root: Path, *, gzip: bool) -> int:
    """Write `files` (named relative to `root`) into `dest` atomically; return its size.

    Files are added in order until the archive would pass FILE_LIMIT; the rest are left out.
    """
    tmp = dest.with_name(f".{dest.name}.tmp")
    total = 0
    with tarfile.open(tmp, "w:gz" if gzip else "w") as tar:
        for path in files:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            total += size + 1024
            if total > FILE_LIMIT * (3 if gzip else 1) - MIB:  # text packs ~3x at least
                break
            name = str(path.relative_to(root)) if path.is_relative_to(root) else path.name
            tar.add(path, arcname=name, recursive=False)
    if tmp.stat().st_size > FILE_LIMIT:
        tmp.unlink()
        return 0
    os.replace(tmp, dest)
    return dest.stat().st_size


class Archiver:
    """Rewrites results.tar.gz and figures.tar in `out` when a job's outputs appear, and every
    `log_every_s` seconds while only logs grow."""

    def __init__(
        self, root: Path, out: Path, extra: Sequence[Path], log_every_s: float = 30.0
    ) -> None:
        self.root, self.out, self.extra, self.log_every_s = root, out, list(extra), log_every_s
        self.last_outputs: tuple = ()
        self.last_all: tuple = ()
        self.last_time = 0.0

    def refresh(self, *, force: bool = False) -> bool:
        """Archive again if a job's outputs changed, logs changed a while ago, or `force`."""
        texts, figures = collect(self.root, self.extra)
        outputs = signature([p for p in texts + figures if p.suffix != ".log"])
        everything = signature(texts + figures)
        new_outputs = outputs != self.last_outputs
        stale_logs = everything != self.last_all and (
            time.monotonic() - self.last_time > self.log_every_s
        )
        if not (force or new_outputs or stale_logs):
            return False
        self.last_outputs, self.last_all, self.last_time = outputs, everything, time.monotonic()
        size = write_archive(self.out / "results.tar.gz", texts, self.root, gzip=True)
        fig = 0
        if figures:
            fig = write_archive(self.out / "figures.tar", figures, self.root, gzip=False)
        if new_outputs or force:
            say(
                f"archived {len(texts)} files ({size / 1e6:.2f} MB) and {len(figures)} figures "
                f"({fig / 1e6:.1f} MB)"
            )
        return True


# ---------------------------------------------------------------- running


class Deadline(Exception):
    """The call's time is nearly up."""


class Jobs:
    """Commands running side by side (each in its own process group), watched together: every
    5 s the archive is refreshed and Snakemake's progress printed; at the deadline all stop."""

    def __init__(self, env: dict[str, str], archiver: Archiver, deadline: float) -> None:
        self.env, self.archiver, self.deadline = env, archiver, deadline
        self.running: dict[str, tuple[subprocess.Popen, Path]] = {}
        self.progress: dict[str, str] = {}

    def start(self, name: str, cmd: list[str], log: Path) -> None:
        """Start `cmd` in the repository with its output appended to `log`."""
        say(f"{name}: $ {' '.join(cmd)}  (log: {log.name})")
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as handle:
            proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running[name] = (proc, log)

    def wait(self, *names: str) -> dict[str, int]:
        """Wait for the named commands, archiving as they go; return their exit codes."""
        codes: dict[str, int] = {}
        while True:
            for name in names:
                proc, log = self.running[name]
                if name not in codes and proc.poll() is not None:
                    codes[name] = proc.returncode
                    say(f"{name}: exit {proc.returncode}")
            for name, (_, log) in self.running.items():
                now = steps_done(log)
                if now and now != self.progress.get(name):
                    self.progress[name] = now
                    say(f"{name}: {now}")
            self.archiver.refresh()
            if len(codes) == len(names):
                for name in names:
                    del self.running[name]
                return codes
            if time.monotonic() > self.deadline:
                self.stop()
                raise Deadline
            time.sleep(2)

    def stop(self) -> None:
        """Stop everything running: SIGTERM to each process group, SIGKILL after 20 s."""
        if not self.running:
            return
        say(f"stopping {', '.join(self.running)}, keeping what finished")
        for proc, _ in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, _ in self.running.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.running.clear()


def steps_done(log: Path) -> str:
    """The last `N of M steps (P%) done` line of a Snakemake log, or ''."""
    try:
        text = log.read_text(errors="replace")[-20000:]
    except FileNotFoundError:
        return ""
    found = re.findall(r"\d+ of \d+ steps \(\d+%\) done", text)
    return found[-1] if found else ""


def snakemake(args: argparse.Namespace, *targets_: str) -> list[str]:
    """The Snakemake command for `targets_`, with the run's selection and GPU slots."""
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(args.cores)]
    cmd += ["--scheduler", "greedy", "--keep-going", "--resources", f"gpu={args.gpu_slots}"]
    rules = ("train", "infer", "explain")
    cmd += ["--set-threads", *(f"{rule}={args.job_threads}" for rule in rules)]
    cmd += ["--config", f"preset={args.preset}", f"datasets=[{','.join(args.datasets)}]"]
    cmd += [f"models=[{','.join(args.models)}]", "--", *targets_]
    return cmd


def unets(models: Sequence[str]) -> list[str]:
    """The selected models of kind unet in params.yaml (the ones the preflight probes)."""
    import yaml  # present on the GPU machine; imported here so the rest needs nothing

    defs = yaml.safe_load((REPO / "params.yaml").read_text())["model_defs"]
    return [m for m in models if defs.get(m, {}).get("kind") == "unet"]


def data_and_preflight(args: argparse.Namespace, work: Path, jobs: Jobs) -> list[str]:
    """For each dataset whose files are all here and not staged yet: its data stages, then its
    preflight (on the GPU) beside its augment stage (on the CPUs). Return those staged now."""
    staged = []
    logs = work / "logs"
    for dataset in args.datasets:
        done = work / "stages" / dataset
        if done.exists() or not dataset_complete(work, dataset):
            continue
        name = f"data-{dataset}"
        jobs.start(name, snakemake(args, f"data/processed/{dataset}"), logs / f"{name}.log")
        if jobs.wait(name)[name]:
            raise SystemExit(f"error: preprocessing {dataset} failed (logs/{dataset}/)")
        models = unets(args.models)
        probe = f"preflight-{dataset}"
        if args.preflight and models and (REPO / "tools" / "preflight.py").exists():
            cmd = [sys.executable, "tools/preflight.py", "--params", "params.yaml"]
            cmd += ["--preset", args.preset, "--datasets", dataset, "--models", *models]
            cmd += ["--processed-root", "data/processed"]
            cmd += ["--out", str(work / "preflight" / dataset), *args.preflight_args.split()]
            jobs.start(probe, cmd, logs / f"{probe}.log")
        else:
            probe = ""
            if args.preflight:
                say("no tools/preflight.py or no U-Net selected: every recipe runs unprobed")
        jobs.start(name, snakemake(args, f"data/augmented/{dataset}"), logs / f"{name}.log")
        codes = jobs.wait(name, *([probe] if probe else []))
        if codes[name]:
            raise SystemExit(f"error: the augment stage of {dataset} failed (logs/{dataset}/)")
        done.parent.mkdir(parents=True, exist_ok=True)
        done.touch()
        staged.append(dataset)
    return staged


def verdicts(work: Path, datasets: Sequence[str]) -> list[dict]:
    """Every recipe of the preflights that ran; one that did not write its report is named."""
    recipes: list[dict] = []
    for dataset in datasets:
        path = work / "preflight" / dataset / "preflight.json"
        if not path.exists():
            say(f"no preflight report for {dataset}: its recipes run unprobed")
            continue
        try:
            recipes += read_preflight(path)
        except ValueError as exc:
            say(f"warning: {exc}: its recipes run unprobed")
    return recipes


def set_compile(params: Path) -> None:
    """Turn on `train.compile` in this machine's copy of params.yaml (no recipe changes)."""
    text = params.read_text()
    if re.search(r"(?m)^train:\n(?:  .*\n)*?  compile: true\b", text):
        return
    new, count = re.subn(r"(?m)^(train:\n(?:  .*\n)*?  compile: )false\b", r"\1true", text)
    if count != 1:
        raise SystemExit(f"error: {params}: no 'compile: false' under 'train:' to switch on")
    params.write_text(new)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="what comes back ($OUT)")
    parser.add_argument("--calls-root", type=Path, default=REPO / ".gpu")
    parser.add_argument("--work", type=Path, default=REPO / ".gpu" / "work")
    parser.add_argument("--preset", default="full")
    parser.add_argument("--datasets", nargs="+", default=["isbi2012", "shenzhen"])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--deadline-s", type=float, default=560, help="stop and pack by then")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--gpu-slots", type=int, default=10, help="jobs at once on the GPU")
    parser.add_argument("--job-threads", type=int, default=1, help="threads of train/infer")
    parser.add_argument("--no-preflight", dest="preflight", action="store_false")
    parser.add_argument("--preflight-args", default="", help="e.g. '--single 40 --batched 10'")
    parser.add_argument("--compile", action="store_true", help="train.compile on, here only")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Unpack, install, run what the data present allows; report into --out."""
    global _log_file
    args = parse(argv)
    out, work = args.out.resolve(), args.work.resolve()
    out.mkdir(parents=True, exist_ok=True)
    _log_file = open(out / "run.log", "a", encoding="utf-8")  # noqa: SIM115
    deadline = _t0 + args.deadline_s
    status: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "phase": "unpack"}

    def report(**fields: object) -> None:
        status.update(fields, elapsed_s=round(time.monotonic() - _t0, 1))
        (out / "status.json").write_text(json.dumps(status, indent=2) + "\n")

    plan, missing = unpack(args.calls_root, work)
    report(plan_id=plan["plan_id"], missing_calls=missing, phase="install")
    installed = install(work, plan.get("packages", []))
    if not missing and not installed:
        raise SystemExit(f"error: every call is unpacked but {work / 'pkgs'} lacks packages")
    env = environment(work)
    if args.compile:
        set_compile(REPO / "params.yaml")
    archiver = Archiver(REPO, out, [work / "preflight", work / "logs"])
    jobs = Jobs(env, archiver, deadline)
    pairs = [(d, m) for d in args.datasets for m in args.models]
    try:
        if missing:
            report(phase="data")
            if installed:
                data_and_preflight(args, work, jobs)
            say(f"waiting for {', '.join(missing)}: call again at once with it carried")
            report(phase="waiting", next_call=missing[0])
            archiver.refresh(force=True)
            return 0
        # The last call: train the datasets staged by earlier calls while the rest is staged.
        report(phase="train")
        ready = [d for d in args.datasets if (work / "stages" / d).exists()]
        started = [train(args, work, jobs, ready, status)] if ready else []
        rest = data_and_preflight(args, work, jobs)
        if rest:
            started.append(train(args, work, jobs, rest, status))
        codes = jobs.wait(*started)
        rows = [REPO / "results" / "rows" / d / f"{m}.json" for d, m in pairs]
        if all(row.exists() for row in rows):
            jobs.start(
                "summary", snakemake(args, "results/summary.md"), work / "logs" / "summary.log"
            )
            codes.update(jobs.wait("summary"))
        else:
            say("no summary: not every dataset x model finished (their rows are in the archive)")
        rc = max(codes.values(), default=0)
        report(phase="done", exit_codes=codes)
    except Deadline:
        report(phase="cut at the deadline")
        rc = 0
    finally:
        jobs.stop()  # they run in sessions of their own, which the call's end would not stop
    done = [f"{d}/{m}" for d, m in pairs if (REPO / "results" / d / m / "metrics.json").exists()]
    report(finished_runs=done)
    say(f"finished runs: {len(done)} of {len(pairs)}: {', '.join(done)}")
    archiver.refresh(force=True)
    return rc


def train(
    args: argparse.Namespace, work: Path, jobs: Jobs, datasets: Sequence[str], status: dict
) -> str:
    """Start Snakemake on the runs of `datasets` the preflight passed; return the job's name."""
    keep, skipped = runnable(datasets, args.models, verdicts(work, datasets))
    for pair, why in skipped.items():
        say(f"left out {pair}: {why}")
    status.setdefault("left_out", {}).update(skipped)
    status.setdefault("runs", []).extend(f"{d}/{m}" for d, m in keep)
    name = f"train-{'-'.join(datasets)}"
    jobs.start(name, snakemake(args, *targets(keep)), work / "logs" / f"{name}.log")
    return name


if __name__ == "__main__":
    sys.exit(main())
