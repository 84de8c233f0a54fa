"""Prepare the GPU run of the full preset (docs/gpu.md): packages and data, split into calls.

    python tools/gpu/prepare.py                      # for the GPU machine (Python 3.12)
    python tools/gpu/prepare.py --python-version 3.11 --out .gpu-rehearsal   # the rehearsal

The GPU machine has Python 3.12 with torch, numpy, pandas, scipy, scikit-image, ... but no
Snakemake, jsonschema or elasticdeform, and no network; each call of it takes at most 64 MiB
of files (the working tree and the carried paths together). This writes, into `--out` (a
git-ignored folder):

- `wheels/`: manylinux wheels of what the run imports and the machine lacks (Snakemake and its
  missing dependencies, jsonschema's, ...; never DVC), at the versions requirements.lock pins,
  and elasticdeform's source archive, to be built there against its numpy 2;
- `call1/`, `call2/`, ...: one folder per device call, each holding `part.tar` (the packages
  first, then the manifest files of each dataset from the mirror, `UNETFLOW_MIRROR`) and
  `plan.json`; each fits the call's budget beside the working tree;
- `plan.json`, and the plan printed: which call carries what, and the sizes.

Every call runs the same command, `python3 tools/gpu/run.py --out "$OUT"` (tools/gpu/run.py).
"""

from __future__ import annotations

import argparse
import email.parser
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20
# tarfile writes 512-byte blocks and pads the archive to a record of 20 blocks.
BLOCK = 512
RECORD = 20 * BLOCK

# What the run imports beyond the standard library: unetflow's core (pyproject.toml's
# dependencies), the stages' extras (elasticdeform, scikit-learn, threadpoolctl) and the engine.
# DVC and DVCLive are left out: the train stage writes DVCLive's files itself without dvclive.
ROOTS = (
    "snakemake",
    "jsonschema",
    "numpy",
    "pandas",
    "pyyaml",
    "scikit-image",
    "scipy",
    "tifffile",
    "matplotlib",
    "tqdm",
    "torch",
    "scikit-learn",
    "threadpoolctl",
    "elasticdeform",
)
# Dependencies never imported by the run: PuLP (16 MiB of solver binaries) serves only
# Snakemake's ilp scheduler; run.py passes --scheduler greedy. Leaving it out saves a call.
LEAVE_OUT = {"pulp": "only Snakemake's ilp scheduler imports it; run.py uses greedy"}
# Built there from source: its wheels are built against numpy 1.x (requirements.lock).
SDISTS = frozenset({"elasticdeform"})

# The Python packages of the GPU machine's image ('cuda'), as /work/.library/device/KINDS.md
# listed them on 2026-11-17. A package named here is not carried.
_GPU_PACKAGES = """
    absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
    botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
    coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython
    diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
    frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
    hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib
    jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator
    lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
    mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx
    ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
    nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand
    nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13
    nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
    opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging
    pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf
    psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest
    pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
    pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core
    scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools
    shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
    tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz
    torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers
    treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug
    wheel wrapt xarray xxhash yarl zipp
    """
GPU_HAS = frozenset(_GPU_PACKAGES.split())
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)


def norm(name: str) -> str:
    """A distribution name as PEP 503 compares it (`PyYAML`, `pyyaml` and `py_yaml` alike)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """`{name: version}` of a pip-freeze lock file (`#` comments and `--` options skipped)."""
    pins: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        if "==" not in line:
            raise SystemExit(f"error: {path}, line {lineno}: expected NAME==VERSION, got {line!r}")
        name, version = line.split("==", 1)
        pins[norm(name)] = version.strip()
    return pins


def target_environment(python_version: str) -> dict[str, str]:
    """The marker environment of CPython `python_version` on x86-64 Linux."""
    full = python_version if python_version.count(".") >= 2 else f"{python_version}.0"
    return {
        "python_version": ".".join(python_version.split(".")[:2]),
        "python_full_version": full,
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "implementation_version": full,
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "extra": "",
    }


def wheel_name(path: Path) -> str:
    """The normalised distribution name of a wheel or source archive file."""
    stem = path.name.removesuffix(".whl").removesuffix(".tar.gz").removesuffix(".zip")
    return norm(stem.split("-", 1)[0])


def wheel_requires(wheel: Path, python_version: str) -> list[Requirement]:
    """The Requires-Dist of `wheel` that apply on `python_version` without extras."""
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        if len(names) != 1:
            raise SystemExit(f"error: {wheel}: expected one *.dist-info/METADATA, got {names}")
        metadata = email.parser.Parser().parsestr(archive.read(names[0]).decode("utf-8"))
    env = target_environment(python_version)
    wanted = []
    for line in metadata.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is None or Marker(str(req.marker)).evaluate(env):
            wanted.append(req)
    return wanted


Fetch = Callable[[list[str]], list[Path]]


@dataclass
class Resolution:
    """What to carry: wheels and source archives by name, and what was not pinned by the lock."""

    files: dict[str, Path] = field(default_factory=dict)
    unpinned: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)


def resolve(
    roots: Iterable[str],
    have: frozenset[str],
    pins: dict[str, str],
    fetch: Fetch,
    fetch_sdist: Fetch,
    python_version: str,
    leave_out: Iterable[str] = (),
    sdists: frozenset[str] = SDISTS,
) -> Resolution:
    """Walk the dependencies of `roots`, skipping what the machine `have`s (and its deps).

    Names in `leave_out` are skipped with their dependencies (listed in `left_out`).
    `fetch` downloads the wheels of a list of requirement strings (`name==version`) and returns
    their paths; `fetch_sdist` does the same for source archives (the names in `sdists`). A
    dependency is pinned by `pins` (the lock) where the lock has it, else by its Requires-Dist
    specifier.
    """
    res = Resolution()
    specs: dict[str, str] = {}
    queue = [norm(r) for r in roots]
    seen: set[str] = set()
    while queue:
        level: list[str] = []
        for name in queue:
            if name in seen:
                continue
            seen.add(name)
            if name in have:
                res.present.append(name)
            elif name in leave_out:
                res.left_out.append(name)
            else:
                level.append(name)
        queue = []
        if not level:
            break
        reqs = []
        for name in level:
            if name in pins:
                reqs.append(f"{name}=={pins[name]}")
            else:
                res.unpinned.append(name)
                reqs.append(f"{name}{specs.get(name, '')}")
        got = fetch([r for r, n in zip(reqs, level, strict=True) if n not in sdists])
        got += fetch_sdist([r for r, n in zip(reqs, level, strict=True) if n in sdists])
        by_name: dict[str, Path] = {}
        for path in got:
            if wheel_name(path) in by_name:
                raise SystemExit(
                    f"error: two files of {wheel_name(path)}: {by_name[wheel_name(path)]} and "
                    f"{path}; remove the stale one"
                )
            by_name[wheel_name(path)] = path
        for name in level:
            if name not in by_name:
                raise SystemExit(f"error: no wheel or source archive of {name} was downloaded")
            res.files[name] = by_name[name]
            if name in sdists:
                continue  # built there with --no-deps: its deps (numpy) are there
            for req in wheel_requires(by_name[name], python_version):
                dep = norm(req.name)
                specs.setdefault(dep, str(req.specifier))
                queue.append(dep)
    res.present.sort()
    return res


def pip_download(dest: Path, python_version: str, *, sdist: bool = False) -> Fetch:
    """A Fetch that runs `pip download --no-deps` into `dest` for `python_version`.

    A pure-Python package published only as a source archive (connection_pool) is built into
    a `py3-none-any` wheel here; one that would build a platform wheel is refused.
    """

    def run(cmd: list[str]) -> bool:
        return subprocess.run(cmd, capture_output=True, text=True).returncode == 0

    def fetch(reqs: list[str]) -> list[Path]:
        if not reqs:
            return []
        dest.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest)]
        if sdist:
            cmd += ["--no-binary", ":all:", "--no-build-isolation"]  # metadata: numpy here
        else:
            cmd += ["--only-binary=:all:", "--python-version", python_version]
            cmd += ["--implementation", "cp"]
            for platform in PLATFORMS:
                cmd += ["--platform", platform]
        print(f"prepare: pip download {' '.join(reqs)}", flush=True)
        if not run([*cmd, *reqs]):
            for req in reqs:
                if run([*cmd, req]):
                    continue
                if sdist:
                    raise SystemExit(f"error: pip download --no-binary :all: {req} failed")
                build_pure_wheel(req, dest)
        wanted = {norm(Requirement(r).name) for r in reqs}
        return [p for p in dest.iterdir() if wheel_name(p) in wanted]

    return fetch


def build_pure_wheel(req: str, dest: Path) -> None:
    """Build `req`, published without a wheel, into a py3-none-any wheel in `dest`."""
    print(f"prepare: {req} has no wheel for the target: building a pure-Python one", flush=True)
    tmp = dest / ".build"
    shutil.rmtree(tmp, ignore_errors=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp), req],
        capture_output=True,
        text=True,
    )
    built = list(tmp.glob("*.whl")) if done.returncode == 0 else []
    if len(built) != 1 or not built[0].name.endswith("-none-any.whl"):
        raise SystemExit(
            f"error: {req}: no wheel for the target and no pure-Python wheel built here "
            f"({[p.name for p in built]}; {done.stderr.strip()[-300:]})"
        )
    shutil.move(str(built[0]), dest / built[0].name)
    shutil.rmtree(tmp)


@dataclass(frozen=True)
class Item:
    """One file of a call's part.tar: its name in the archive, where it is here, its size."""

    arcname: str
    source: Path
    size: int


def tar_member_size(size: int, name: str = "") -> int:
    """Bytes one regular file of `size` bytes named `name` takes in a GNU tar archive: its
    header, a long-name header and the name when it passes 100 bytes, and the padded data."""
    encoded = len(name.encode())
    long_name = BLOCK + -(-(encoded + 1) // BLOCK) * BLOCK if encoded > 100 else 0
    return long_name + BLOCK + -(-size // BLOCK) * BLOCK


def tar_size(members: Iterable[int | tuple[int, str]]) -> int:
    """Bytes of an uncompressed GNU tar of these files (sizes, or (size, name) pairs), with its
    two end blocks, in whole records."""
    raw = 2 * BLOCK
    for member in members:
        size, name = member if isinstance(member, tuple) else (member, "")
        raw += tar_member_size(size, name)
    return -(-raw // RECORD) * RECORD


def plan_calls(items: Sequence[Item], budget: int) -> list[list[Item]]:
    """Split `items`, in order, into calls whose part.tar each stays within `budget` bytes."""
    calls: list[list[Item]] = [[]]
    for item in items:
        if tar_size([(item.size, item.arcname)]) > budget:
            raise SystemExit(
                f"error: {item.source} ({item.size / MIB:.1f} MiB) does not fit one call's "
                f"budget of {budget / MIB:.1f} MiB"
            )
        if tar_size([(i.size, i.arcname) for i in [*calls[-1], item]]) > budget:
            calls.append([])
        calls[-1].append(item)
    return calls


def dataset_items(mirror: Path, dataset: str, manifest: Path) -> list[Item]:
    """The manifest's files of `dataset` in the mirror folder, as `mirror/<dataset>/<path>`."""
    from unetflow.data.download import read_manifest

    items = []
    for entry in read_manifest(manifest):
        source = mirror / dataset / entry.path
        if not source.is_file():
            raise SystemExit(
                f"error: {manifest} lists {entry.path}, missing from the mirror: {source}"
            )
        items.append(Item(f"mirror/{dataset}/{entry.path}", source, source.stat().st_size))
    return items


def tree_size(repo: Path) -> int:
    """Bytes of what a device call sends besides carry: tracked and untracked-unignored files."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    total = 0
    for name in {n for n in listed if n}:
        path = repo / os.fsdecode(name)
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


def write_calls(out: Path, calls: list[list[Item]], meta: dict) -> dict:
    """Write `out`/call<k>/part.tar and plan.json for every call; return the plan."""
    for old in out.glob("call*"):
        shutil.rmtree(old)
    digest = hashlib.sha256()
    for k, items in enumerate(calls, start=1):
        digest.update(f"call{k}\0".encode())
        for item in items:
            digest.update(f"{item.arcname}\0{item.size}\0".encode())
    plan = {
        **meta,
        "plan_id": digest.hexdigest()[:16],
        "calls": [
            {
                "name": f"call{k}",
                "members": len(items),
                "bytes": tar_size((i.size, i.arcname) for i in items),
                "contents": summarize_items(items),
            }
            for k, items in enumerate(calls, start=1)
        ],
    }
    for k, items in enumerate(calls, start=1):
        folder = out / f"call{k}"
        folder.mkdir(parents=True)
        with tarfile.open(folder / "part.tar", "w", format=tarfile.GNU_FORMAT) as tar:
            for item in items:
                info = tar.gettarinfo(str(item.source), arcname=item.arcname)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with open(item.source, "rb") as handle:
                    tar.addfile(info, handle)
        actual = (folder / "part.tar").stat().st_size
        if actual != plan["calls"][k - 1]["bytes"]:
            raise SystemExit(f"error: {folder / 'part.tar'}: {actual} bytes, planned otherwise")
        (folder / "plan.json").write_text(json.dumps({**plan, "index": k}, indent=2) + "\n")
    (out / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    return plan


def summarize_items(items: Sequence[Item]) -> dict[str, int]:
    """`{group: files}` of a call: `packages` and each dataset (`mirror/<dataset>/...`)."""
    groups: dict[str, int] = {}
    for item in items:
        parts = item.arcname.split("/")
        key = parts[1] if parts[0] == "mirror" else "packages"
        groups[key] = groups.get(key, 0) + 1
    return groups


def print_plan(plan: dict, out: Path) -> None:
    """The plan as a person reads it: per call, the carry list, the sizes, the command."""
    tree = plan["tree_bytes"]
    print(
        f"\nplan {plan['plan_id']}: {len(plan['calls'])} calls for Python "
        f"{plan['python_version']}; working tree {tree / MIB:.1f} MiB, "
        f"limit per call {plan['call_bytes'] / MIB:.0f} MiB"
    )
    rel = out.relative_to(REPO) if out.is_relative_to(REPO) else out
    for call in plan["calls"]:
        total = tree + call["bytes"]
        what = ", ".join(f"{k} {v} files" for k, v in call["contents"].items())
        print(
            f"  {call['name']}: carry [{str(rel / call['name'])!r}]  part {call['bytes'] / MIB:.1f}"
            f" MiB + tree = {total / MIB:.1f} MiB ({what})"
        )
    print('  every call: PYTHONUNBUFFERED=1 python3 tools/gpu/run.py --out "$OUT"')
    print(f"  packages: {', '.join(plan['packages'])}")
    print(f"  needed and already there: {', '.join(plan['present'])}")
    for name, why in plan["left_out"].items():
        print(f"  left out: {name} ({why})")
    if plan["unpinned"]:
        print(f"  not in requirements.lock (newest allowed taken): {', '.join(plan['unpinned'])}")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python-version", default="3.12", help="the target's Python (3.12)")
    parser.add_argument("--out", type=Path, default=REPO / ".gpu", help="git-ignored folder")
    parser.add_argument("--datasets", nargs="*", default=["isbi2012", "shenzhen"])
    parser.add_argument("--mirror", default=os.environ.get("UNETFLOW_MIRROR"), help="folder")
    parser.add_argument("--lock", type=Path, default=REPO / "requirements.lock")
    parser.add_argument("--margin-mib", type=float, default=2.0, help="left free in each call")
    parser.add_argument("--call-mib", type=float, default=64.0, help="a call's limit (64)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Download the packages, split packages and data into calls, write and print the plan."""
    args = parse(argv)
    out = args.out.resolve()
    if args.datasets and not args.mirror:
        raise SystemExit("error: set UNETFLOW_MIRROR (or --mirror) to the datasets folder")
    wheels = out / "wheels" / f"py{args.python_version}"
    pins = read_lock(args.lock)
    res = resolve(
        ROOTS,
        GPU_HAS,
        pins,
        pip_download(wheels, args.python_version),
        pip_download(wheels, args.python_version, sdist=True),
        args.python_version,
        LEAVE_OUT,
    )
    items = [
        Item(f"pkgs/{p.name}", p, p.stat().st_size)
        for _, p in sorted(res.files.items(), key=lambda kv: kv[1].name)
    ]
    for dataset in args.datasets:
        manifest = REPO / "data" / "manifests" / f"{dataset}.tsv"
        items += dataset_items(Path(args.mirror), dataset, manifest)
    tree = tree_size(REPO)
    budget = int(args.call_mib * MIB) - tree - int(args.margin_mib * MIB)
    meta = {
        "python_version": args.python_version,
        "datasets": list(args.datasets),
        "packages": sorted(p.name for p in res.files.values()),
        "unpinned": res.unpinned,
        "left_out": {name: LEAVE_OUT[name] for name in res.left_out},
        "present": res.present,
        "tree_bytes": tree,
        "call_bytes": int(args.call_mib * MIB),
        "budget_bytes": budget,
    }
    plan = write_calls(out, plan_calls(items, budget), meta)
    print_plan(plan, out)


if __name__ == "__main__":
    main()
