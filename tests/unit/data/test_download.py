"""The data-source layer: manifests, verified fetches (folder and HTTP mirrors, public URLs),
faults (corruption, missing files, 5xx, truncation, no network), the folder source and
the dispatch of download_dataset."""

from __future__ import annotations

import csv
import hashlib
import shutil
import socket
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from skimage import io as skio

from unetflow.data.download import (
    DownloadError,
    ManifestEntry,
    copy_folder,
    download_dataset,
    fetch_manifest,
    read_manifest,
    sha256_file,
)

MANIFESTS = Path(__file__).resolve().parents[3] / "data" / "manifests"
RAW_BASE = "https://raw.githubusercontent.com"
DOWNLOAD_CFG = {"timeout_s": 5, "retries": 2, "backoff_s": 0.01}
# A few files of each real dataset keep the HTTP tests fast.
SUBSETS = {
    "isbi2012": ["test/images/07.png", "train/images/00.png", "train/labels/29.png"],
    "shenzhen": [
        "CXR_png/CHNCXR_0025_0.png",
        "CXR_png/CHNCXR_0662_1.png",
        "masks/CHNCXR_0662_1_mask.png",
        "shenzhen_metadata.csv",
    ],
}
FAST = {"timeout_s": 5.0, "retries": 2, "backoff_s": 0.01}


def write_manifest(path: Path, entries: list[ManifestEntry]) -> Path:
    """Write entries as a manifest TSV."""
    rows = "".join(f"{e.path}\t{e.sha256}\t{e.url}\n" for e in entries)
    path.write_text(f"# test manifest\npath\tsha256\turl\n{rows}", encoding="utf-8")
    return path


def subset(dataset: str) -> list[ManifestEntry]:
    """The committed manifest's entries for the SUBSETS files of `dataset`."""
    wanted = set(SUBSETS[dataset])
    entries = [e for e in read_manifest(MANIFESTS / f"{dataset}.tsv") if e.path in wanted]
    assert len(entries) == len(wanted)
    return entries


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_nothing_published(out: Path) -> None:
    """Neither `out` nor a partial sibling folder is left behind."""
    assert not out.exists()
    if out.parent.exists():
        leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
        assert leftovers == []


def assert_verified(out: Path, entries: list[ManifestEntry]) -> None:
    """`out` holds exactly the entries, each with its sha256, and a matching SHA256SUMS."""
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted([e.path for e in entries] + ["SHA256SUMS"])
    for entry in entries:
        assert sha256_file(out / entry.path) == entry.sha256, entry.path
    expected = "".join(f"{e.sha256}  {e.path}\n" for e in sorted(entries, key=lambda e: e.path))
    assert (out / "SHA256SUMS").read_text() == expected


def mtimes(folder: Path) -> dict[str, int]:
    """mtime (ns) of a folder and of everything in it."""
    stamps = {".": folder.stat().st_mtime_ns}
    stamps.update({str(p): p.stat().st_mtime_ns for p in folder.rglob("*")})
    return stamps


# --- manifests -------------------------------------------------------------------------


@pytest.mark.parametrize(("dataset", "count"), [("isbi2012", 90), ("shenzhen", 1229)])
def test_manifest_matches_mirror_sums_and_provenance(mirror: Path, dataset: str, count: int):
    entries = read_manifest(MANIFESTS / f"{dataset}.tsv")
    assert len(entries) == count
    paths = [e.path for e in entries]
    assert paths == sorted(paths)
    sums = {}
    for line in (mirror / dataset / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split("  ", 1)
        sums[rel] = digest
    assert {e.path: e.sha256 for e in entries} == sums
    with open(mirror / dataset / "PROVENANCE.tsv", newline="") as handle:
        urls = {
            row["local_path"]: (
                f"{RAW_BASE}/{row['source_repo']}/{row['source_commit']}/{row['source_path']}"
            )
            for row in csv.DictReader(handle, delimiter="\t")
        }
    assert {e.path: e.url for e in entries} == urls


def test_manifest_urls_are_pinned_to_commits():
    isbi = {e.path: e.url for e in read_manifest(MANIFESTS / "isbi2012.tsv")}
    assert isbi["train/images/07.png"] == (
        f"{RAW_BASE}/zhixuhao/unet/b45af4d458437d8281cc218a07fd4380818ece4a"
        "/data/membrane/train/image/7.png"
    )
    shenzhen = {e.path: e.url for e in read_manifest(MANIFESTS / "shenzhen.tsv")}
    assert shenzhen["masks/CHNCXR_0001_0_mask.png"].endswith(
        "/234c65ba9f3cd7e4c9f84b476745ff928694470f/data/masks/CHNCXR_0001_0.png"
    )
    assert sum(p.startswith("CXR_png/") for p in shenzhen) == 662
    assert sum(p.startswith("masks/") for p in shenzhen) == 566


@pytest.mark.parametrize("dataset", ["synth_em", "synth_cxr"])
def test_synthetic_manifests_list_nothing(dataset: str):
    manifest = MANIFESTS / f"{dataset}.tsv"
    assert read_manifest(manifest) == []
    text = manifest.read_text()
    assert "generated by unetflow.data.synthetic, nothing is downloaded" in text
    assert text.splitlines()[-1] == "path\tsha256\turl"


GOOD = "a" * 64


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (f"/etc/passwd\t{GOOD}\thttps://x/y", "absolute path"),
        (f"train/../../x.png\t{GOOD}\thttps://x/y", "'..'"),
        (f"SHA256SUMS\t{GOOD}\thttps://x/y", "written by unetflow"),
        ("a.png\tabc123\thttps://x/y", "64 lowercase hex"),
        (f"a.png\t{GOOD}", "expected 3 tab-separated fields"),
        (f"a.png\t{GOOD}\tftp://x/y", "http:// or https://"),
        (f"a.png\t{GOOD}\thttps://x/y\na.png\t{GOOD}\thttps://x/z", "already listed on line 3"),
    ],
)
def test_read_manifest_rejects_bad_rows(tmp_path: Path, row: str, message: str):
    manifest = tmp_path / "bad.tsv"
    manifest.write_text(f"# comment\npath\tsha256\turl\n{row}\n")
    with pytest.raises(DownloadError, match="line") as info:
        read_manifest(manifest)
    assert str(manifest) in str(info.value)
    assert message in str(info.value)


def test_read_manifest_needs_its_header(tmp_path: Path):
    manifest = tmp_path / "noheader.tsv"
    manifest.write_text(f"# comment\na.png\t{GOOD}\thttps://x/y\n")
    with pytest.raises(DownloadError, match=r"noheader\.tsv, line 2: expected the tab-separated"):
        read_manifest(manifest)
    with pytest.raises(DownloadError, match="cannot read manifest"):
        read_manifest(tmp_path / "absent.tsv")


def test_sha256_file(tmp_path: Path):
    (tmp_path / "abc").write_bytes(b"abc")
    assert sha256_file(tmp_path / "abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


# --- fetching from a mirror folder -----------------------------------------------------


def test_full_isbi2012_from_mirror_folder_then_noop(mirror: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("UNETFLOW_MIRROR", str(mirror))
    out = tmp_path / "raw" / "isbi2012"
    cfg = {"kind": "em", "source": {"type": "manifest"}}
    download_dataset("isbi2012", cfg, DOWNLOAD_CFG, MANIFESTS / "isbi2012.tsv", out, seed=1)
    assert_verified(out, read_manifest(MANIFESTS / "isbi2012.tsv"))
    assert (out / "SHA256SUMS").read_bytes() == (mirror / "isbi2012" / "SHA256SUMS").read_bytes()
    before = mtimes(out)
    # A second run needs no source at all: the mirror now points nowhere.
    monkeypatch.setenv("UNETFLOW_MIRROR", str(tmp_path / "no-such-mirror"))
    download_dataset("isbi2012", cfg, DOWNLOAD_CFG, MANIFESTS / "isbi2012.tsv", out, seed=1)
    assert mtimes(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["isbi2012"]


def test_file_missing_from_mirror_folder(mirror: Path, tmp_path: Path):
    entries = subset("isbi2012")
    partial = tmp_path / "mirror"
    for entry in entries[:-1]:
        (partial / "isbi2012" / entry.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(mirror / "isbi2012" / entry.path, partial / "isbi2012" / entry.path)
    manifest = write_manifest(tmp_path / "m.tsv", entries)
    out = tmp_path / "raw" / "isbi2012"
    with pytest.raises(DownloadError) as info:
        fetch_manifest("isbi2012", manifest, out, mirror=str(partial), **FAST)
    message = str(info.value)
    assert f"{entries[-1].path} is missing from the mirror" in message
    assert str(partial / "isbi2012" / entries[-1].path) in message
    assert_nothing_published(out)


def test_mirror_folder_missing(tmp_path: Path):
    manifest = write_manifest(tmp_path / "m.tsv", subset("isbi2012"))
    out = tmp_path / "raw" / "isbi2012"
    with pytest.raises(DownloadError, match=r"mirror folder .*nowhere does not exist"):
        fetch_manifest("isbi2012", manifest, out, mirror=str(tmp_path / "nowhere"), **FAST)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DownloadError, match=r"has no isbi2012/ folder"):
        fetch_manifest("isbi2012", manifest, out, mirror=str(tmp_path / "empty"), **FAST)
    with pytest.raises(DownloadError, match=r"expected a folder or an http\(s\):// URL"):
        fetch_manifest("isbi2012", manifest, out, mirror="ftp://host/datasets", **FAST)
    assert_nothing_published(out)


def test_corrupted_file_in_mirror_folder(mirror: Path, tmp_path: Path):
    entries = subset("isbi2012")
    copy = tmp_path / "mirror"
    shutil.copytree(mirror / "isbi2012" / "train", copy / "isbi2012" / "train")
    shutil.copytree(mirror / "isbi2012" / "test", copy / "isbi2012" / "test")
    bad = copy / "isbi2012" / entries[1].path
    bad.write_bytes(bad.read_bytes() + b"\0")
    manifest = write_manifest(tmp_path / "m.tsv", entries)
    out = tmp_path / "raw" / "isbi2012"
    with pytest.raises(DownloadError) as info:
        fetch_manifest("isbi2012", manifest, out, mirror=str(copy), **FAST)
    message = str(info.value)
    assert f"checksum mismatch for {entries[1].path}" in message
    assert f"expected sha256 {entries[1].sha256}, got {sha256_file(bad)}" in message
    assert_nothing_published(out)


def test_empty_manifest_cannot_be_fetched(tmp_path: Path):
    with pytest.raises(DownloadError, match="lists no files"):
        fetch_manifest(
            "synth_em", MANIFESTS / "synth_em.tsv", tmp_path / "out", mirror=None, **FAST
        )
    assert_nothing_published(tmp_path / "out")


# --- fetching over HTTP ----------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["isbi2012", "shenzhen"])
def test_http_mirror_from_environment(mirror, http_server, tmp_path, monkeypatch, dataset):
    server = http_server(mirror)
    monkeypatch.setenv("UNETFLOW_MIRROR", server.url + "/")
    entries = subset(dataset)
    manifest = write_manifest(tmp_path / "m.tsv", entries)
    out = tmp_path / "raw" / dataset
    cfg = {"kind": "em", "source": {"type": "manifest"}}
    download_dataset(dataset, cfg, DOWNLOAD_CFG, manifest, out, seed=0)
    assert_verified(out, entries)
    assert sorted(server.requests) == sorted(f"/{dataset}/{e.path}" for e in entries)


def serve_at_source_paths(mirror: Path, root: Path, entries: list[ManifestEntry]) -> None:
    """Lay the mirror's files out under `root` as raw.githubusercontent.com serves them."""
    for entry in entries:
        url_path = urllib.parse.urlsplit(entry.url).path
        target = root / url_path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(mirror / "isbi2012" / entry.path, target)


def rewrite_urls(entries: list[ManifestEntry], base: str) -> list[ManifestEntry]:
    """The entries with raw.githubusercontent.com replaced by `base`."""
    return [ManifestEntry(e.path, e.sha256, e.url.replace(RAW_BASE, base)) for e in entries]


def test_manifest_urls_without_mirror(mirror, http_server, tmp_path):
    entries = subset("isbi2012")
    serve_at_source_paths(mirror, tmp_path / "www", entries)
    server = http_server(tmp_path / "www")
    manifest = write_manifest(tmp_path / "m.tsv", rewrite_urls(entries, server.url))
    out = tmp_path / "raw" / "isbi2012"
    fetch_manifest("isbi2012", manifest, out, mirror=None, **FAST)
    assert_verified(out, entries)
    assert "/zhixuhao/unet/b45af4d458437d8281cc218a07fd4380818ece4a/data/membrane/test/7.png" in (
        server.requests
    )
    # A damaged copy is repaired by fetching only the damaged file again.
    (out / entries[0].path).write_bytes(b"damaged")
    fetch_manifest("isbi2012", manifest, out, mirror=None, **FAST)
    assert_verified(out, entries)
    assert len(server.requests) == len(entries) + 1


def test_corrupted_download_is_rejected(mirror, http_server, tmp_path):
    server = http_server(mirror)
    entries = subset("isbi2012")
    target = f"/isbi2012/{entries[2].path}"
    server.inject(target, "corrupt")
    manifest = write_manifest(tmp_path / "m.tsv", entries)
    out = tmp_path / "raw" / "isbi2012"
    with pytest.raises(DownloadError) as info:
        fetch_manifest("isbi2012", manifest, out, mirror=server.url, **FAST)
    data = bytearray((mirror / "isbi2012" / entries[2].path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    actual = hashlib.sha256(data).hexdigest()
    message = str(info.value)
    assert f"checksum mismatch for {entries[2].path}" in message
    assert f"expected sha256 {entries[2].sha256}, got {actual}" in message
    assert server.count(target) == 1
    assert_nothing_published(out)


def test_404_is_not_retried(mirror, http_server, tmp_path):
    server = http_server(mirror)
    entries = subset("isbi2012")
    target = f"/isbi2012/{entries[1].path}"
    server.inject(target, "404")
    manifest = write_manifest(tmp_path / "m.tsv", entries)
    out = tmp_path / "raw" / "isbi2012"
    with pytest.raises(DownloadError) as info:
        fetch_manifest("isbi2012", manifest, out, mirror=server.url, **FAST)
    message = str(info.value)
    assert f"cannot fetch {entries[1].path}" in message
    assert f"HTTP 404 Not Found for {server.url}{target}" in message
    assert server.count(target) == 1
    assert_nothing_published(out)


@pytest.mark.parametrize("fault", ["500", "truncate"])
def test_transient_failure_is_retried(mirror, http_server, tmp_path, fault):
    server = http_server(mirror)
    entries = subset("isbi2012")
    target = f"/isbi2012/{entries[0].path}"
    server.inject(target, fault, fault)
    manifest = write_manifest(tmp_path / "m.tsv", entries)
    out = tmp_path / "raw" / "isbi2012"
    fetch_manifest("isbi2012", manifest, out, mirror=server.url, **FAST)
    assert_verified(out, entries)
    assert server.count(target) == 3


@pytest.mark.parametrize(("fault", "reason"), [("500", "HTTP 500"), ("truncate", "truncated")])
def test_persistent_failure_gives_up(mirror, http_server, tmp_path, fault, reason):
    server = http_server(mirror)
    entries = subset("isbi2012")
    target = f"/isbi2012/{entries[0].path}"
    server.inject(target, *[fault] * 3)
    manifest = write_manifest(tmp_path / "m.tsv", entries)
    out = tmp_path / "raw" / "isbi2012"
    with pytest.raises(DownloadError) as info:
        fetch_manifest("isbi2012", manifest, out, mirror=server.url, **FAST)
    message = str(info.value)
    assert f"the mirror UNETFLOW_MIRROR={server.url} kept failing" in message
    assert reason in message
    assert "3 attempt(s)" in message
    assert server.count(target) == 3
    assert_nothing_published(out)


def test_unreachable_network_says_how_to_use_a_mirror(tmp_path, monkeypatch):
    monkeypatch.delenv("UNETFLOW_MIRROR", raising=False)
    base = f"http://127.0.0.1:{closed_port()}"
    entries = rewrite_urls(subset("isbi2012"), base)
    manifest = write_manifest(tmp_path / "m.tsv", entries)
    out = tmp_path / "raw" / "isbi2012"
    cfg = {"kind": "em", "source": {"type": "manifest"}}
    with pytest.raises(DownloadError) as info:
        download_dataset("isbi2012", cfg, {**DOWNLOAD_CFG, "retries": 1}, manifest, out, 0)
    message = str(info.value)
    assert message.startswith(f"isbi2012: {base.removeprefix('http://')} could not be reached")
    assert entries[0].url in message
    assert "2 attempt(s)" in message
    assert "export UNETFLOW_MIRROR=/path/to/datasets" in message
    assert f"isbi2012/{entries[0].path}" in message
    assert isinstance(info.value.__cause__, DownloadError)
    assert_nothing_published(out)


def test_unreachable_http_mirror(tmp_path):
    mirror_url = f"http://127.0.0.1:{closed_port()}"
    manifest = write_manifest(tmp_path / "m.tsv", subset("isbi2012"))
    out = tmp_path / "raw" / "isbi2012"
    with pytest.raises(DownloadError, match=r"the mirror UNETFLOW_MIRROR=.* could not be reached"):
        fetch_manifest("isbi2012", manifest, out, mirror=mirror_url, **FAST)
    assert_nothing_published(out)


# --- the folder source -----------------------------------------------------------------


@pytest.fixture(scope="module")
def full_size_cxr(tmp_path_factory) -> Path:
    """A full-resolution (2942x2516, not square) RGBA chest X-ray stand-in, written once."""
    height, width = 2516, 2942
    y, x = np.mgrid[0:height, 0:width]
    grey = ((x * 200 // width + y * 55 // height) % 256).astype(np.uint8)
    rgba = np.stack([grey, grey, grey, np.full_like(grey, 255)], axis=-1)
    path = tmp_path_factory.mktemp("cxr") / "full.png"
    skio.imsave(path, rgba, check_contrast=False)
    return path


def nlm_folder(root: Path, full_size_cxr: Path, mask_dir: str) -> dict[str, Path]:
    """A small NLM Shenzhen-style folder plus Kaggle masks; returns expected out path -> source."""
    rng = np.random.default_rng(7)
    files = {
        "CXR_png/CHNCXR_0001_0.png": root / "CXR_png" / "CHNCXR_0001_0.png",
        "CXR_png/CHNCXR_0002_1.png": root / "CXR_png" / "CHNCXR_0002_1.png",
        "ClinicalReadings/CHNCXR_0001_0.txt": root / "ClinicalReadings" / "CHNCXR_0001_0.txt",
        "ClinicalReadings/CHNCXR_0002_1.txt": root / "ClinicalReadings" / "CHNCXR_0002_1.txt",
        "masks/CHNCXR_0001_0_mask.png": root / mask_dir / "CHNCXR_0001_0_mask.png",
    }
    for src in files.values():
        src.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(full_size_cxr, files["CXR_png/CHNCXR_0001_0.png"])
    rgb = rng.integers(0, 256, size=(300, 280, 3), dtype=np.uint8)
    skio.imsave(files["CXR_png/CHNCXR_0002_1.png"], rgb, check_contrast=False)
    files["ClinicalReadings/CHNCXR_0001_0.txt"].write_text("male 45yrs\nnormal\n")
    files["ClinicalReadings/CHNCXR_0002_1.txt"].write_text("female 32yrs\nPTB in the left\n")
    mask = np.zeros((2516, 2942), dtype=np.uint8)
    mask[400:2000, 300:1300] = 255
    skio.imsave(files["masks/CHNCXR_0001_0_mask.png"], mask, check_contrast=False)
    (root / ".DS_Store").write_bytes(b"finder junk")
    return files


@pytest.mark.parametrize("mask_dir", ["mask/mask", "mask"])
def test_folder_source_copies_as_is(tmp_path, full_size_cxr, mask_dir):
    files = nlm_folder(tmp_path / "nlm", full_size_cxr, mask_dir)
    out = tmp_path / "raw" / "shenzhen"
    cfg = {"kind": "cxr", "source": {"type": "folder", "path": str(tmp_path / "nlm")}}
    download_dataset("shenzhen", cfg, DOWNLOAD_CFG, MANIFESTS / "shenzhen.tsv", out, seed=0)
    copied = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert copied == sorted([*files, "SHA256SUMS"])
    for rel, src in files.items():
        assert (out / rel).read_bytes() == src.read_bytes(), rel
    assert skio.imread(out / "CXR_png" / "CHNCXR_0001_0.png").shape == (2516, 2942, 4)
    assert skio.imread(out / "CXR_png" / "CHNCXR_0002_1.png").shape == (300, 280, 3)
    sums = dict(
        reversed(line.split("  ", 1)) for line in (out / "SHA256SUMS").read_text().splitlines()
    )
    assert sums == {rel: sha256_file(src) for rel, src in files.items()}
    before = mtimes(out)
    copy_folder("shenzhen", tmp_path / "nlm", out)
    assert mtimes(out) == before
    # A changed source is copied again.
    files["ClinicalReadings/CHNCXR_0001_0.txt"].write_text("male 46yrs\nnormal\n")
    copy_folder("shenzhen", tmp_path / "nlm", out)
    assert (out / "ClinicalReadings" / "CHNCXR_0001_0.txt").read_text() == "male 46yrs\nnormal\n"


def test_folder_source_errors(tmp_path):
    out = tmp_path / "raw" / "shenzhen"
    with pytest.raises(DownloadError, match=r"source folder .*absent does not exist"):
        copy_folder("shenzhen", tmp_path / "absent", out)
    (tmp_path / "wrong" / "docs").mkdir(parents=True)
    (tmp_path / "wrong" / "docs" / "readme.txt").write_text("not a dataset")
    with pytest.raises(DownloadError, match=r"holds none of the expected files.*CXR_png/\*\.png"):
        copy_folder("shenzhen", tmp_path / "wrong", out)
    clash = tmp_path / "clash"
    for sub in ("CXR_png/a.png", "mask/a_mask.png", "masks/a_mask.png"):
        (clash / sub).parent.mkdir(parents=True, exist_ok=True)
        (clash / sub).write_bytes(b"x")
    with pytest.raises(DownloadError, match=r"would be copied to masks/a_mask\.png"):
        copy_folder("shenzhen", clash, out)
    assert_nothing_published(out)


# --- dispatch --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "source", "expected"),
    [
        ("em", {"n_train": 2, "n_test": 1, "size": 64}, "train/images"),
        ("cxr", {"n_images": 3, "n_unmasked": 1, "size": 64}, "CXR_png"),
    ],
)
def test_synthetic_source_is_generated_and_recorded(tmp_path, kind, source, expected):
    pytest.importorskip("unetflow.data.synthetic")
    cfg = {"kind": kind, "source": {"type": "synthetic", **source}}
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        download_dataset(
            f"synth_{kind}", cfg, DOWNLOAD_CFG, MANIFESTS / f"synth_{kind}.tsv", out, 5
        )
        assert (out / expected).is_dir()
        sums = (out / "SHA256SUMS").read_text()
        listed = sorted(line.split("  ", 1)[1] for line in sums.splitlines())
        on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
        assert listed == [p for p in on_disk if p != "SHA256SUMS"]
        for line in sums.splitlines():
            digest, rel = line.split("  ", 1)
            assert sha256_file(out / rel) == digest
        runs.append(sums)
    assert runs[0] == runs[1]  # same seed, same bytes
