"""tools/gpu: the calls' split by size, the wheels carried, the preflight filter, the archive
rewritten as jobs finish, and the run's deadline. Real files in tmp folders throughout."""

from __future__ import annotations

import json
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from gpu import prepare, run


def make_wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    """A minimal wheel file: just its METADATA with these Requires-Dist lines."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {req}" for req in requires]
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}-{version}.dist-info/METADATA", "\n".join(lines) + "\n")
    return path


def files_of(sizes: dict[str, int], folder: Path) -> list[prepare.Item]:
    """Real files of these sizes, as the items of a plan."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for name, size in sizes.items():
        path = folder / name
        path.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
        items.append(prepare.Item(f"mirror/ds/{name}", path, size))
    return items


def test_calls_keep_order_and_stay_within_the_budget(tmp_path: Path) -> None:
    items = files_of({"a": 3000, "b": 5000, "c": 700, "d": 10_000, "e": 1}, tmp_path / "src")
    budget = prepare.tar_size([3000, 5000, 700])  # a, b and c fit exactly; d does not join them
    calls = prepare.plan_calls(items, budget)
    assert [[i.source.name for i in call] for call in calls] == [["a", "b", "c"], ["d", "e"]]

    plan = prepare.write_calls(tmp_path / "out", calls, {"python_version": "3.12"})
    for k, call in enumerate(plan["calls"], start=1):
        part = tmp_path / "out" / f"call{k}" / "part.tar"
        assert part.stat().st_size == call["bytes"] <= budget  # the estimate is exact
        assert json.loads((part.parent / "plan.json").read_text())["index"] == k
    with tarfile.open(tmp_path / "out" / "call2" / "part.tar") as tar:
        assert tar.getnames() == ["mirror/ds/d", "mirror/ds/e"]
    assert plan["calls"][1]["contents"] == {"ds": 2}


def test_long_names_are_counted_exactly(tmp_path: Path) -> None:
    name = "pkgs/" + "x" * 120 + ".whl"  # a manylinux wheel's name can pass tar's 100 bytes
    source = tmp_path / "w.whl"
    source.write_bytes(b"w" * 10)
    items = [prepare.Item(name, source, 10)] + files_of({"a": 9000}, tmp_path / "src")
    budget = prepare.tar_size([(10, name), (9000, "mirror/ds/a")])
    assert prepare.tar_member_size(10, name) == 4 * prepare.BLOCK  # 2 headers, name, data
    calls = prepare.plan_calls(items, budget)
    plan = prepare.write_calls(tmp_path / "out", calls, {})  # checks the size it planned
    assert len(plan["calls"]) == 1


def test_a_file_larger_than_a_call_is_refused_by_name(tmp_path: Path) -> None:
    items = files_of({"big.png": 20_000}, tmp_path)
    with pytest.raises(SystemExit, match="big.png"):
        prepare.plan_calls(items, 10_000)


def test_wheels_are_those_the_machine_lacks_at_the_lock_versions(tmp_path: Path) -> None:
    index = tmp_path / "index"
    make_wheel(
        index, "engine", "9.1", ["helper>=1", "present-pkg", "old-only; python_version<'3.12'"]
    )
    make_wheel(index, "helper", "2.0", ["solver", "docs-tool; extra == 'docs'"])
    make_wheel(index, "old_only", "1.0", [])
    make_wheel(index, "solver", "3.0", [])
    (index / "deform-0.5.1.tar.gz").write_bytes(b"sdist")
    got = tmp_path / "got"
    asked: list[list[str]] = []

    def fetch(reqs: list[str]) -> list[Path]:
        """Copy the requested files out of the index, as pip download would."""
        asked.append(reqs)
        got.mkdir(exist_ok=True)
        out = []
        for req in reqs:
            name = prepare.norm(req.split("=")[0].split(">")[0])
            for path in index.iterdir():
                if prepare.wheel_name(path) == name:
                    out.append(Path(got / path.name))
                    out[-1].write_bytes(path.read_bytes())
        return out

    res = prepare.resolve(
        ["engine", "deform"],
        frozenset({"present-pkg"}),
        {"engine": "9.1", "helper": "2.0", "deform": "0.5.1"},
        fetch,
        fetch,
        "3.12",
        leave_out=["solver"],
        sdists=frozenset({"deform"}),
    )
    assert sorted(res.files) == ["deform", "engine", "helper"]
    assert res.present == ["present-pkg"]
    assert res.left_out == ["solver"]
    assert asked[:2] == [["engine==9.1"], ["deform==0.5.1"]]  # pinned by the lock
    assert "old-only" not in res.files  # its marker is false on 3.12

    res311 = prepare.resolve(
        ["engine"], frozenset({"present-pkg"}), {"engine": "9.1"}, fetch, fetch, "3.11"
    )
    assert sorted(res311.files) == ["engine", "helper", "old-only", "solver"]
    assert sorted(res311.unpinned) == ["helper", "old-only", "solver"]


def test_the_lock_is_read_with_normalised_names(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("# pinned\n--no-binary elasticdeform\nPyYAML==6.0.4\ntorch==2.13.0+cpu\n")
    assert prepare.read_lock(lock) == {"pyyaml": "6.0.4", "torch": "2.13.0+cpu"}
    lock.write_text("numpy>=2\n")
    with pytest.raises(SystemExit, match=r"requirements.lock, line 1"):
        prepare.read_lock(lock)


def test_parts_are_unpacked_once_and_the_missing_calls_named(tmp_path: Path) -> None:
    items = files_of({"a": 6000, "b": 6000}, tmp_path / "src")
    calls = prepare.plan_calls(items, prepare.tar_size([6000]))
    carried = tmp_path / "carried"
    prepare.write_calls(carried, calls, {})
    later = (carried / "call2").rename(tmp_path / "later")  # only call1 carried so far
    work = tmp_path / "work"
    plan, missing = run.unpack(carried, work)
    assert missing == ["call2"] and (work / "mirror" / "ds" / "a").stat().st_size == 6000
    later.rename(carried / "call2")
    plan, missing = run.unpack(carried, work)
    assert missing == [] and (work / "mirror" / "ds" / "b").exists()

    prepare.write_calls(carried, prepare.plan_calls(items[:1], 10**6), {})  # a new plan
    _, missing = run.unpack(carried, work)
    assert missing == [] and not (work / "mirror" / "ds" / "b").exists()  # started afresh


def test_the_preflight_leaves_out_what_is_not_ok(tmp_path: Path) -> None:
    report = tmp_path / "preflight.json"
    recipes = [
        {"dataset": "isbi2012", "model": "unet_delft", "ok": False, "verdict": "diverged"},
        {"dataset": "isbi2012", "model": "unet_paper", "ok": True},
        {"dataset": "shenzhen", "model": "unet_delft", "ok": True},
    ]
    report.write_text(json.dumps({"recipes": recipes}))
    keep, skipped = run.runnable(
        ["isbi2012", "shenzhen"],
        ["unet_paper", "unet_delft", "baseline_mean"],
        run.read_preflight(report),
    )
    assert skipped == {"isbi2012/unet_delft": "preflight: diverged"}
    assert ("isbi2012", "baseline_mean") in keep and ("shenzhen", "unet_paper") in keep
    assert len(keep) == 5
    assert run.targets([("shenzhen", "unet_delft")]) == [
        "results/shenzhen/unet_delft/metrics.json",
        "results/shenzhen/unet_delft/explain",
    ]
    report.write_text(json.dumps({"recipes": [{"dataset": "x"}]}))
    with pytest.raises(ValueError, match="preflight.json: recipes\\[0\\]"):
        run.read_preflight(report)


def write(path: Path, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_archive_follows_each_finished_job(tmp_path: Path) -> None:
    root, out = tmp_path / "repo", tmp_path / "out"
    out.mkdir()
    run_dir = root / "results" / "isbi2012" / "unet_paper"
    write(run_dir / "metrics.json", "{}")
    write(run_dir / "per_image.csv", "id,dice\n")
    write(run_dir / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv", "step\tloss\n")
    write(run_dir / "model.pt")
    write(run_dir / "checkpoints" / "last.json")
    write(run_dir / "predictions" / "probabilities" / "a.tif")
    write(run_dir / "predictions" / "index.csv")
    write(run_dir / "figures" / "best.png")
    write(root / "logs" / "isbi2012" / "unet_paper" / "train.log")
    write(root / "data" / "processed" / "isbi2012" / "stats.json")
    write(root / "data" / "processed" / "isbi2012" / "images" / "0.tif")
    write(tmp_path / "preflight" / "isbi2012" / "preflight.json")
    archiver = run.Archiver(root, out, [tmp_path / "preflight"])
    assert archiver.refresh()
    with tarfile.open(out / "results.tar.gz") as tar:
        names = set(tar.getnames())
    assert names == {
        "results/isbi2012/unet_paper/metrics.json",
        "results/isbi2012/unet_paper/per_image.csv",
        "results/isbi2012/unet_paper/dvclive/plots/metrics/train/loss.tsv",
        "results/isbi2012/unet_paper/predictions/index.csv",
        "logs/isbi2012/unet_paper/train.log",
        "data/processed/isbi2012/stats.json",
        "preflight.json",  # outside the repository: by its name
    }
    with tarfile.open(out / "figures.tar") as tar:
        assert tar.getnames() == ["results/isbi2012/unet_paper/figures/best.png"]
    assert not archiver.refresh()  # nothing changed, nothing rewritten
    write(root / "logs" / "isbi2012" / "unet_paper" / "train.log", "epoch 2")
    assert not archiver.refresh()  # a growing log waits for log_every_s
    archiver.log_every_s = 0
    assert archiver.refresh()

    write(root / "results" / "shenzhen" / "unet_paper" / "metrics.json", "{}")  # the next job
    assert archiver.refresh()
    with tarfile.open(out / "results.tar.gz") as tar:
        assert "results/shenzhen/unet_paper/metrics.json" in tar.getnames()
    assert sorted(p.name for p in out.iterdir()) == ["figures.tar", "results.tar.gz"]


def test_the_deadline_stops_the_jobs_and_keeps_the_archive(tmp_path: Path) -> None:
    root, out = tmp_path / "repo", tmp_path / "out"
    out.mkdir()
    write(root / "results" / "d" / "m" / "metrics.json", "{}")
    jobs = run.Jobs({"PATH": "/usr/bin:/bin"}, run.Archiver(root, out, []), time.monotonic())
    started = time.monotonic()
    jobs.start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "s.log")
    with pytest.raises(run.Deadline):
        jobs.wait("sleeper")
    assert time.monotonic() - started < 10 and not jobs.running
    assert (out / "results.tar.gz").exists()


def test_compile_is_switched_on_in_the_train_block_only(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(
        "train:\n  amp: bf16\n  compile: false\n  workers: 2\nother:\n  compile: false\n"
    )
    run.set_compile(params)
    assert params.read_text() == (
        "train:\n  amp: bf16\n  compile: true\n  workers: 2\nother:\n  compile: false\n"
    )
    run.set_compile(params)  # already on: unchanged
    assert params.read_text().count("compile: true") == 1
    params.write_text("train:\n  amp: bf16\n")
    with pytest.raises(SystemExit, match="params.yaml"):
        run.set_compile(params)
