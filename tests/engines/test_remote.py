"""A DVC remote on a real S3 server (moto's, on loopback): a finished run pushed, cloned and
pulled comes back byte for byte and both engines see nothing to do; a push that loses the
server half-way says so and the next one completes; a corrupted object is refused when the
remote verifies what it pulls."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from project import copy_project, run, tree_digest
from s3_loopback import CREDENTIALS, S3Loopback

pytestmark = pytest.mark.e2e

DATASET, MODEL = "synth_em", "unet_modern"
MODEL_PT = f"results/{DATASET}/{MODEL}/model.pt"
TRACKED = ("data", "results")
IMAGES = f"data/raw/{DATASET}/test/images"


@pytest.fixture(scope="module")
def s3() -> S3Loopback:
    with S3Loopback() as server:
        yield server


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A git + DVC project after `dvc repro` of the tiny synth_em run, lock committed."""
    project = copy_project(
        tmp_path_factory.mktemp("remote") / "origin",
        git=True,
        tiny=True,
        datasets=[DATASET],
        models=[MODEL],
    )
    run(["dvc", "repro"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "tiny run"], project)
    return project


def with_remote(project: Path, s3: S3Loopback, prefix: str, dest: Path) -> Path:
    """A git clone of `project` (its workspace outputs and cache copied, as after the run) whose
    default remote is s3://bucket/`prefix` on `s3`, verifying what it pulls; committed."""
    run(["git", "clone", "-q", str(project), str(dest)], project.parent)
    for name in (*TRACKED, ".dvc/cache"):
        shutil.copytree(project / name, dest / name, dirs_exist_ok=True)
    url = f"s3://{s3.bucket}/{prefix}"
    run(["dvc", "remote", "add", "-d", "storage", url], dest)
    run(["dvc", "remote", "modify", "storage", "endpointurl", s3.url], dest)
    run(["dvc", "remote", "modify", "storage", "verify", "true"], dest)
    run(["git", "commit", "-qam", "remote"], dest)
    return dest


def fresh_clone(origin: Path, dest: Path) -> Path:
    """A git clone of `origin`: code, params, dvc.lock and remote config, no data."""
    run(["git", "clone", "-q", str(origin), str(dest)], origin.parent)
    return dest


def dvc(project: Path, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    """`dvc *args` in `project` with the S3 server's credentials."""
    return run(["dvc", *args], project, check=check, **CREDENTIALS, **env)


def test_a_pushed_run_pulls_into_a_fresh_clone_with_nothing_to_do(finished, s3, tmp_path):
    origin = with_remote(finished, s3, "roundtrip", tmp_path / "origin")
    dvc(origin, "push")
    assert s3.objects("roundtrip") == dvc_objects(origin)

    clone = fresh_clone(origin, tmp_path / "clone")
    assert not (clone / MODEL_PT).exists()
    dvc(clone, "pull")
    for name in TRACKED:
        assert tree_digest(clone / name) == tree_digest(origin / name), name
    assert "Data and pipelines are up to date" in dvc(clone, "status").stdout

    run(["unetflow", "sync", "--to", "snakemake"], clone)
    plan = run(["snakemake", "-n", "--cores", "1"], clone)
    assert "Nothing to be done" in plan.stdout + plan.stderr

    # the pulled model predicts what the pushed one does
    predict = ["unetflow", "predict", "--model", MODEL_PT, "--input", IMAGES, "--output", "pred"]
    for project in (origin, clone):
        run(predict, project)
    masks = tree_digest(clone / "pred")
    assert len(masks) == 2 * len(list((clone / IMAGES).glob("*.png"))) > 0
    assert masks == tree_digest(origin / "pred")


def test_a_push_that_loses_the_server_fails_clearly_and_the_next_completes(finished, s3, tmp_path):
    origin = with_remote(finished, s3, "interrupted", tmp_path / "origin")
    s3.relay.stop_after(5)  # the count of PUT requests of this push
    try:
        # botocore's retries (5 attempts, backoff) take ~70 s to give up by default: one here
        failed = dvc(origin, "push", "--jobs", "2", check=False, AWS_MAX_ATTEMPTS="1")
    finally:
        s3.relay.on_request = lambda n: None
        s3.relay.start()
    assert s3.relay.requests >= 5, "the push ended before the server was stopped"
    assert failed.returncode != 0 and "Traceback" not in failed.stderr, failed.stderr[-3000:]
    last = failed.stderr.strip().splitlines()[-3]
    assert f'Could not connect to the endpoint URL: "{s3.url}/{s3.bucket}/interrupted/' in last
    partial = s3.objects("interrupted")
    assert 0 < len(partial) < len(dvc_objects(origin)), "the push stopped half-way"

    dvc(origin, "push")
    assert "in sync" in dvc(origin, "status", "--cloud").stdout
    assert s3.objects("interrupted") == dvc_objects(origin)


def dvc_objects(project: Path) -> set[str]:
    """The keys of every data object in the project's DVC cache (files/md5/<2>/<30>[.dir])."""
    cache = project / ".dvc" / "cache"
    return {str(f.relative_to(cache)) for f in (cache / "files").rglob("*") if f.is_file()}


def test_a_corrupted_object_is_refused_only_with_verification(finished, s3, tmp_path):
    origin = with_remote(finished, s3, "corrupted", tmp_path / "origin")
    dvc(origin, "push")
    lock = (origin / "dvc.lock").read_text()
    key = _object_key(lock, MODEL_PT, "corrupted")
    client = s3.client()
    body = bytearray(client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    client.put_object(Bucket=s3.bucket, Key=key, Body=bytes(body))

    verified = fresh_clone(origin, tmp_path / "verified")
    refused = dvc(verified, "pull", check=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert f"Checkout failed for following targets:\n{MODEL_PT}\n" in refused.stderr
    assert not (verified / MODEL_PT).exists()
    assert not (verified / ".dvc" / "cache" / key.removeprefix("corrupted/")).exists()
    # everything else came through
    assert (verified / IMAGES).is_dir()

    trusting = fresh_clone(origin, tmp_path / "trusting")
    run(["dvc", "remote", "modify", "--local", "storage", "verify", "false"], trusting)
    dvc(trusting, "pull")
    assert (trusting / MODEL_PT).read_bytes() == bytes(body)


def _object_key(lock: str, path: str, prefix: str) -> str:
    """The remote key of `path`'s object: <prefix>/files/md5/<2>/<30> from dvc.lock's md5."""
    for stage in yaml.safe_load(lock)["stages"].values():
        for out in stage.get("outs", []):
            if out["path"] == path:
                return f"{prefix}/files/md5/{out['md5'][:2]}/{out['md5'][2:]}"
    raise AssertionError(f"{path} not in dvc.lock")
