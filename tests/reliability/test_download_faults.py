"""Download faults met through the engines: a damaged mirror, a failing or stalling server.

Each test runs the real download stage of isbi2012 (90 files, the smallest real dataset)
through Snakemake or DVC, with UNETFLOW_MIRROR pointing at a loopback HTTP server (or a
folder) that breaks one thing. The run must fail with a message naming the file or URL,
publish nothing under data/raw/, run no later stage, and succeed once the fault is gone.
The faulty file comes after 30 others in the manifest, so a half-filled folder would show.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from project import ENGINES_OWN, copy_project, run
from unetflow.data.download import read_manifest, sha256_file

pytestmark = pytest.mark.e2e  # every test here runs Snakemake or DVC

DATASET = "isbi2012"
VICTIM = "train/images/00.png"
# download.retries 1: two attempts; a 1 s timeout against a server that stalls for 3 s.
DOWNLOAD = {"timeout_s": 1, "retries": 1, "backoff_s": 0.05}
STALL_S = 3.0


def flipped_sha256(file: Path) -> str:
    """The sha256 of `file` with its middle byte flipped, as the "corrupt" fault serves it."""
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    return hashlib.sha256(bytes(data)).hexdigest()


def expected_sha256(project: Path, rel: str) -> str:
    """The manifest's sha256 of `rel`."""
    entries = read_manifest(project / "data" / "manifests" / f"{DATASET}.tsv")
    return next(entry.sha256 for entry in entries if entry.path == rel)


def snakemake(project: Path, until: str, mirror: str) -> subprocess.CompletedProcess[str]:
    """`snakemake --cores 1 --until <until> --config datasets=[isbi2012]` against `mirror`."""
    cmd = ["snakemake", "--cores", "1", "--until", until, "--config", f"datasets=[{DATASET}]"]
    return run(cmd, project, check=False, UNETFLOW_MIRROR=mirror)


def assert_nothing_published(project: Path) -> None:
    """No data/raw/<dataset>, no hidden partial folder beside it, no later stage's output."""
    raw = project / "data" / "raw"
    assert not (raw / DATASET).exists()
    assert not raw.exists() or sorted(p.name for p in raw.iterdir()) == []
    assert not (project / "data" / "processed").exists()


def assert_downloaded(project: Path) -> None:
    """data/raw/<dataset> holds exactly the manifest's files, each with its sha256, and
    nothing is left beside it (but the engines' own markers)."""
    out = project / "data" / "raw" / DATASET
    entries = read_manifest(project / "data" / "manifests" / f"{DATASET}.tsv")
    files = sorted(
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and p.name not in ENGINES_OWN
    )
    assert files == sorted([entry.path for entry in entries] + ["SHA256SUMS"])
    mismatched = [entry.path for entry in entries if sha256_file(out / entry.path) != entry.sha256]
    assert mismatched == []
    assert sorted(p.name for p in out.parent.iterdir() if p.name not in ENGINES_OWN) == [DATASET]


def assert_failed_in_download(proc: subprocess.CompletedProcess[str], project: Path) -> str:
    """The Snakemake run failed in the download job, before preprocess; returns its output."""
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "localrule download:" in output and "Error in rule download:" in output
    assert "localrule preprocess:" not in output
    assert_nothing_published(project)
    return output


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "p", datasets=[DATASET], download=DOWNLOAD)


def http_cases(url: str, size: int, expected: str, flipped: str) -> dict[str, tuple]:
    """fault -> (how many times it is served, the message the user must get)."""
    where = f"{url}/{DATASET}/{VICTIM}"
    mirror = f"the mirror UNETFLOW_MIRROR={url}"
    return {
        "corrupt": (
            1,
            f"error: {DATASET}: checksum mismatch for {VICTIM} (from {where}): "
            f"expected sha256 {expected}, got {flipped}",
        ),
        "truncate": (
            2,
            f"error: {DATASET}: {mirror} kept failing: could not fetch {where} "
            f"(truncated body ({size // 2} of {size} bytes); 2 attempt(s))",
        ),
        "404": (
            1,
            f"error: {DATASET}: cannot fetch {VICTIM} from {mirror}: "
            f"HTTP 404 Not Found for {where}",
        ),
        "500": (
            2,
            f"error: {DATASET}: {mirror} kept failing: could not fetch {where} "
            f"(HTTP 500 Internal Server Error; 2 attempt(s))",
        ),
        "stall": (
            2,
            f"error: {DATASET}: {mirror} could not be reached: could not fetch {where} "
            f"(timed out: nothing received for download.timeout_s = 1 s; 2 attempt(s))",
        ),
    }


@pytest.mark.parametrize("fault", ["corrupt", "truncate", "404", "500", "stall"])
def test_http_fault_fails_cleanly_then_recovers(project, mirror, http_server, fault):
    server = http_server(mirror)
    server.stall_s = STALL_S
    source = mirror / DATASET / VICTIM
    served, message = http_cases(
        server.url,
        source.stat().st_size,
        expected_sha256(project, VICTIM),
        flipped_sha256(source),
    )[fault]
    path = f"/{DATASET}/{VICTIM}"
    server.inject(path, *[fault] * served)

    output = assert_failed_in_download(snakemake(project, "preprocess", server.url), project)
    assert message in output
    log = (project / "logs" / DATASET / "download.log").read_text()
    assert message in log
    # the stage's own records reach its log: each retry of a transient failure
    assert ("retry 1/1 in" in log) == (served == 2), log
    # every queued fault was met: 404 and checksum mismatches are not retried, the rest are
    assert server.count(path) == served and server.faults[path] == []

    assert snakemake(project, "download", server.url).returncode == 0
    assert_downloaded(project)
    assert server.count(path) == served + 1
    log = (project / "logs" / DATASET / "download.log").read_text()
    assert f"{DATASET}: 90 files verified into data/raw/{DATASET} from {server.url}" in log


def test_corrupted_file_in_mirror_folder_fails_cleanly_then_recovers(project, mirror, tmp_path):
    folder = tmp_path / "mirror"
    shutil.copytree(mirror / DATASET, folder / DATASET)
    victim = folder / DATASET / VICTIM
    good = victim.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    victim.write_bytes(bytes(bad))

    output = assert_failed_in_download(snakemake(project, "preprocess", str(folder)), project)
    message = (
        f"error: {DATASET}: checksum mismatch for {VICTIM} (from {victim}): expected sha256 "
        f"{expected_sha256(project, VICTIM)}, got {sha256_file(victim)}"
    )
    assert message in output

    victim.write_bytes(good)
    assert snakemake(project, "download", str(folder)).returncode == 0
    assert_downloaded(project)


def test_dvc_corrupt_download_fails_cleanly_then_recovers(tmp_path, mirror, http_server):
    project = copy_project(tmp_path / "p", git=True, datasets=[DATASET], download=DOWNLOAD)
    stages = run(["dvc", "stage", "list", "--name-only"], project).stdout.split()
    assert f"download@{DATASET}" in stages and f"preprocess@{DATASET}" in stages
    server = http_server(mirror)
    path = f"/{DATASET}/{VICTIM}"
    server.inject(path, "corrupt")

    failed = run(
        ["dvc", "repro", f"preprocess@{DATASET}"], project, check=False, UNETFLOW_MIRROR=server.url
    )
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    message = (
        f"error: {DATASET}: checksum mismatch for {VICTIM} (from {server.url}{path}): "
        f"expected sha256 {expected_sha256(project, VICTIM)}, "
        f"got {flipped_sha256(mirror / DATASET / VICTIM)}"
    )
    assert message in output
    assert f"ERROR: failed to reproduce 'download@{DATASET}'" in output
    assert f"Running stage 'preprocess@{DATASET}'" not in output
    assert_nothing_published(project)
    assert not (project / "dvc.lock").exists()

    ok = run(["dvc", "repro", f"download@{DATASET}"], project, UNETFLOW_MIRROR=server.url)
    assert f"Running stage 'download@{DATASET}'" in ok.stdout
    assert_downloaded(project)
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert list(lock) == [f"download@{DATASET}"]
