"""Where raw datasets come from: verified downloads, local folders and synthetic generation.

Every real dataset has a committed manifest (relative path, sha256, public URL). Files are
fetched from those URLs or from a mirror named by ``UNETFLOW_MIRROR`` (a folder or an http(s)
URL holding ``<dataset>/<path>``), and each one is checked against its sha256 whichever way it
arrives. Output folders are assembled with :func:`unetflow.io.outputs.staged_dir`, so a failed
download never leaves anything at ``out`` that a later stage could take as complete.

The HTTP layer is urllib, not pooch (checked against pooch 1.9): pooch retries every
``requests`` error, 404 and a checksum mismatch included (here a 404 or a mismatch fails at
once), waits a fixed 1, 2, ... 10 s between tries (not ``download.backoff_s`` doubling), sets
its progress bar's total to each file's size (here one bar counts the whole dataset and takes
a failed try's bytes back) and reads no folder mirror; its failures surface as requests'
exceptions, not as the messages here that name download.timeout_s, a truncated body's byte
counts, the 5xx status or the mirror that could not be reached.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from unetflow import __version__
from unetflow.io.outputs import staged_dir
from unetflow.io.progress import progress

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("path", "sha256", "url")
SUMS_NAME = "SHA256SUMS"
MIRROR_ENV = "UNETFLOW_MIRROR"
CHUNK = 1 << 16
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
# Layouts copy_folder accepts: at least one file must match one of these (relative, posix).
FOLDER_LAYOUTS = {
    "chest X-rays": "CXR_png/*.png",
    "EM slices": "train/images/*.png",
    "EM stack": "train-volume.tif",
}
# Kaggle's Stirenko masks unpack as mask/mask/*.png or mask/*.png; the layout wants masks/.
KAGGLE_MASK_DIRS = (("mask", "mask"), ("mask",))
_SHA256 = re.compile(r"[0-9a-f]{64}")


class DownloadError(RuntimeError):
    """A dataset could not be fetched or verified; the message says what and where."""


@dataclass(frozen=True)
class ManifestEntry:
    """One file of a dataset: where it goes, what it hashes to, where it is published."""

    path: str
    sha256: str
    url: str


def _check_relative(rel: str) -> str | None:
    """Why `rel` is not a safe relative posix path inside a dataset folder, or None if it is."""
    if not rel:
        return "empty path"
    if "\\" in rel:
        return "backslash in path"
    if rel.startswith("/") or re.match(r"[A-Za-z]:", rel):
        return "absolute path"
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "path with an empty, '.' or '..' component"
    if rel == SUMS_NAME:
        return f"{SUMS_NAME} is written by unetflow itself"
    return None


def read_manifest(path: Path) -> list[ManifestEntry]:
    """Read a manifest TSV (`path`, `sha256`, `url`; `#` lines are comments).

    A manifest with only comments and the column header is valid and lists nothing (the
    synthetic datasets). Bad rows raise DownloadError naming the file and line.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DownloadError(f"{path}: cannot read manifest ({exc.strerror or exc})") from exc
    entries: list[ManifestEntry] = []
    seen: dict[str, int] = {}
    header_seen = False
    for lineno, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("#"):
            continue
        where = f"{path}, line {lineno}"
        fields = line.split("\t")
        if not header_seen:
            if tuple(fields) != MANIFEST_COLUMNS:
                raise DownloadError(
                    f"{where}: expected the tab-separated header "
                    f"{' '.join(MANIFEST_COLUMNS)!r} first, got {line!r}"
                )
            header_seen = True
            continue
        if len(fields) != len(MANIFEST_COLUMNS):
            raise DownloadError(
                f"{where}: expected 3 tab-separated fields (path, sha256, url), "
                f"got {len(fields)}: {line!r}"
            )
        rel, digest, url = fields
        problem = _check_relative(rel)
        if problem:
            raise DownloadError(f"{where}: unsafe path {rel!r} ({problem})")
        if not _SHA256.fullmatch(digest):
            raise DownloadError(f"{where}: sha256 must be 64 lowercase hex digits, got {digest!r}")
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise DownloadError(f"{where}: url must start with http:// or https://, got {url!r}")
        if rel in seen:
            raise DownloadError(f"{where}: {rel!r} is already listed on line {seen[rel]}")
        seen[rel] = lineno
        entries.append(ManifestEntry(rel, digest, url))
    if not header_seen:
        raise DownloadError(f"{path}: no header line {'/'.join(MANIFEST_COLUMNS)} found")
    return entries


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file (:func:`hashlib.file_digest`, which reads it in chunks)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _write_sums(folder: Path, sums: Mapping[str, str]) -> None:
    """Write `folder/SHA256SUMS` in sha256sum format, sorted by path."""
    text = "".join(f"{sums[rel]}  {rel}\n" for rel in sorted(sums))
    (folder / SUMS_NAME).write_text(text, encoding="utf-8")


def _read_sums(folder: Path) -> dict[str, str] | None:
    """Parse `folder/SHA256SUMS`, or None when it is missing or malformed."""
    try:
        text = (folder / SUMS_NAME).read_text(encoding="utf-8")
    except OSError:
        return None
    sums = {}
    for line in text.splitlines():
        digest, sep, rel = line.partition("  ")
        if not sep or not _SHA256.fullmatch(digest):
            return None
        sums[rel] = digest
    return sums


def _verified_files(out: Path, expected: Mapping[str, str]) -> set[str]:
    """The relative paths of `expected` present in `out` with the expected sha256."""
    if not out.is_dir():
        return set()
    return {
        rel
        for rel, digest in expected.items()
        if (out / rel).is_file() and sha256_file(out / rel) == digest
    }


def _copy_stream(src: BinaryIO, dest: Path, bar: Any) -> tuple[str, int]:
    """Copy a byte stream to `dest`, returning its sha256 and size; advances the bar."""
    digest = hashlib.sha256()
    size = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as handle:
        while chunk := src.read(CHUNK):
            handle.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            bar.update(len(chunk))
    return digest.hexdigest(), size


def _copy_file(src: Path, dest: Path, bar: Any) -> str:
    """Copy a local file to `dest` and return its sha256."""
    with open(src, "rb") as handle:
        return _copy_stream(handle, dest, bar)[0]


class _Unreachable(DownloadError):
    """The server could not be reached, or kept failing, after every retry."""

    def __init__(self, message: str, *, answered: bool) -> None:
        super().__init__(message)
        self.answered = answered  # True: the server answered (5xx, truncated), just not well


class _Truncated(Exception):
    """A body shorter than its Content-Length (urllib returns it silently)."""


def _http_fetch(
    url: str, dest: Path, bar: Any, *, timeout_s: float, retries: int, backoff_s: float
) -> str:
    """GET `url` into `dest` and return its sha256, retrying transient failures.

    Connection errors, timeouts (no byte for `timeout_s`), 5xx/408/429 answers and bodies
    shorter than their Content-Length are retried with exponential backoff; any other HTTP
    status (404) is not.
    """
    request = urllib.request.Request(url, headers={"User-Agent": f"unetflow/{__version__}"})
    attempts = retries + 1
    reason = ""
    answered = False
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                length = response.headers.get("Content-Length")
                digest, size = _copy_stream(response, dest, bar)
            if length is not None and length.isdigit() and size != int(length):
                raise _Truncated(f"truncated body ({size} of {length} bytes)")
            return digest
        except urllib.error.HTTPError as exc:
            if exc.code not in RETRY_STATUS:
                raise DownloadError(f"HTTP {exc.code} {exc.reason} for {url}") from exc
            reason, answered = f"HTTP {exc.code} {exc.reason}", True
        except _Truncated as exc:
            reason, answered = str(exc), True
        except (OSError, http.client.HTTPException) as exc:
            inner = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            if isinstance(inner, TimeoutError):
                reason = f"timed out: nothing received for download.timeout_s = {timeout_s:g} s"
            else:
                reason = f"{type(inner).__name__}: {inner}"
            answered = False
        if dest.exists():  # take the failed attempt's bytes back off the progress bar
            bar.update(-dest.stat().st_size)
            dest.unlink()
        if attempt < attempts:
            delay = backoff_s * 2 ** (attempt - 1)
            log.info("%s: %s; retry %d/%d in %.1f s", url, reason, attempt, retries, delay)
            time.sleep(delay)
    raise _Unreachable(
        f"could not fetch {url} ({reason}; {attempts} attempt(s))", answered=answered
    )


def _mirror_hint(dataset: str, example: str) -> str:
    """How to point unetflow at a local copy of the data."""
    return (
        f"To use a local copy instead, set {MIRROR_ENV} to a folder holding "
        f"{dataset}/<path> (e.g. {dataset}/{example}), or to an http(s) URL with the same "
        f"layout:\n    export {MIRROR_ENV}=/path/to/datasets"
    )


def fetch_manifest(
    dataset: str,
    manifest: Path,
    out: Path,
    *,
    mirror: str | None,
    timeout_s: float,
    retries: int,
    backoff_s: float,
) -> None:
    """Fetch every file of `manifest` into `out`, verified by sha256, plus `out/SHA256SUMS`.

    Files come from `<mirror>/<dataset>/<path>` when `mirror` (a folder or an http(s) URL)
    is set, else from each entry's URL. If `out` already holds every file with the right
    hash, nothing is touched; files that already verify there are reused, not fetched.
    """
    manifest, out = Path(manifest), Path(out)
    entries = read_manifest(manifest)
    if not entries:
        raise DownloadError(f"{manifest}: the manifest of {dataset!r} lists no files to fetch")
    expected = {entry.path: entry.sha256 for entry in entries}
    reusable = _verified_files(out, expected)
    if len(reusable) == len(expected) and _read_sums(out) == expected:
        log.info("%s: %s already holds all %d verified files", dataset, out, len(expected))
        return

    mirror_url, mirror_dir = _mirror_location(dataset, manifest, mirror, entries[0].path)
    source = _Source(dataset, mirror, mirror_url, mirror_dir, timeout_s, retries, backoff_s)
    total = source.total_bytes(entries)
    bar = progress(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dataset)
    try:
        with staged_dir(out) as work:
            _fetch_entries(source, entries, out, reusable, work, bar)
            _write_sums(work, expected)
    finally:
        bar.close()
    log.info("%s: %d files verified into %s from %s", dataset, len(entries), out, source.where)


def _mirror_location(
    dataset: str, manifest: Path, mirror: str | None, example: str
) -> tuple[str | None, Path | None]:
    """Read `mirror` as (http(s) URL without its trailing slash, None) or (None, folder);
    (None, None) when it is unset. A folder must exist and hold `<dataset>/`, so a wrong
    setting fails before anything is fetched, with a message that names `example`."""
    if not mirror:
        return None, None
    scheme = urllib.parse.urlsplit(mirror).scheme.lower()
    if scheme in ("http", "https"):
        return mirror.rstrip("/"), None
    if "://" in mirror:
        raise DownloadError(f"{MIRROR_ENV}={mirror}: expected a folder or an http(s):// URL")
    mirror_dir = Path(mirror).expanduser()
    if not mirror_dir.is_dir():
        raise DownloadError(
            f"mirror folder {mirror_dir} does not exist ({MIRROR_ENV}={mirror}); "
            f"it should hold {dataset}/<path> for every file of {manifest}"
        )
    if not (mirror_dir / dataset).is_dir():
        raise DownloadError(
            f"mirror folder {mirror_dir} has no {dataset}/ folder "
            f"({MIRROR_ENV}={mirror}); expected e.g. "
            f"{mirror_dir / dataset / example}"
        )
    return None, mirror_dir


@dataclass(frozen=True)
class _Source:
    """Where the files of a manifest come from when `out` does not hold them already: a
    mirror folder, a mirror URL or, with neither, each entry's own URL."""

    dataset: str
    mirror: str | None  # the UNETFLOW_MIRROR setting as given, for messages
    mirror_url: str | None
    mirror_dir: Path | None
    timeout_s: float
    retries: int
    backoff_s: float

    @property
    def where(self) -> str | Path:
        """The source as the closing log record names it."""
        return self.mirror_url or self.mirror_dir or "the manifest URLs"

    def total_bytes(self, entries: list[ManifestEntry]) -> int | None:
        """The bytes to fetch: unknown over HTTP; a mirror folder tells its sizes up front."""
        if self.mirror_dir is None:
            return None
        sources = [self.mirror_dir / self.dataset / entry.path for entry in entries]
        return sum(path.stat().st_size for path in sources if path.is_file())

    def fetch(self, entry: ManifestEntry, dest: Path, bar: Any) -> tuple[str, str]:
        """Copy or download `entry` to `dest`; return where it came from and its sha256."""
        if self.mirror_dir is not None:
            origin = str(self.mirror_dir / self.dataset / entry.path)
            if not Path(origin).is_file():
                raise DownloadError(
                    f"{self.dataset}: {entry.path} is missing from the mirror: looked for "
                    f"{origin} ({MIRROR_ENV}={self.mirror})"
                )
            return origin, _copy_file(Path(origin), dest, bar)
        if self.mirror_url is not None:
            quoted = urllib.parse.quote(f"{self.dataset}/{entry.path}")
            origin = f"{self.mirror_url}/{quoted}"
        else:
            origin = entry.url
        actual = _fetch_url(
            self.dataset,
            entry,
            origin,
            dest,
            bar,
            mirror=self.mirror,
            timeout_s=self.timeout_s,
            retries=self.retries,
            backoff_s=self.backoff_s,
        )
        return origin, actual


def _fetch_entries(
    source: _Source,
    entries: list[ManifestEntry],
    out: Path,
    reusable: set[str],
    work: Path,
    bar: Any,
) -> None:
    """Bring every entry into the staging folder `work`, copying those that already verify
    in `out` and fetching the rest from `source`, and check each one's sha256."""
    for index, entry in enumerate(entries, start=1):
        dest = work / entry.path
        if entry.path in reusable:
            origin = str(out / entry.path)
            actual = _copy_file(out / entry.path, dest, bar)
        else:
            origin, actual = source.fetch(entry, dest, bar)
        if actual != entry.sha256:
            raise DownloadError(
                f"{source.dataset}: checksum mismatch for {entry.path} (from {origin}): "
                f"expected sha256 {entry.sha256}, got {actual}"
            )
        bar.set_postfix_str(f"{index}/{len(entries)} files", refresh=False)


def _fetch_url(
    dataset: str,
    entry: ManifestEntry,
    url: str,
    dest: Path,
    bar: Any,
    *,
    mirror: str | None,
    timeout_s: float,
    retries: int,
    backoff_s: float,
) -> str:
    """Fetch one entry over HTTP, turning failures into messages that say what to do."""
    try:
        return _http_fetch(
            url, dest, bar, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s
        )
    except _Unreachable as exc:
        what = "kept failing" if exc.answered else "could not be reached"
        if mirror:
            raise DownloadError(
                f"{dataset}: the mirror {MIRROR_ENV}={mirror} {what}: {exc}"
            ) from exc
        host = urllib.parse.urlsplit(url).netloc
        raise DownloadError(
            f"{dataset}: {host} {what}: {exc}. Downloading needs network access to the "
            f"URLs of its manifest.\n{_mirror_hint(dataset, entry.path)}"
        ) from exc
    except DownloadError as exc:
        where = f"the mirror {MIRROR_ENV}={mirror}" if mirror else "its public URL"
        raise DownloadError(f"{dataset}: cannot fetch {entry.path} from {where}: {exc}") from exc


def _folder_files(folder: Path) -> dict[str, Path]:
    """Map each regular file under `folder` to its relative destination path.

    Hidden files and folders are skipped, an existing SHA256SUMS at the top is replaced by
    our own, and Kaggle's `mask/mask/` or `mask/` folder becomes `masks/`.
    """
    files: dict[str, Path] = {}
    for src in sorted(folder.rglob("*")):
        parts = src.relative_to(folder).parts
        if any(part.startswith(".") for part in parts) or not src.is_file():
            continue
        if parts == (SUMS_NAME,):
            continue
        for prefix in KAGGLE_MASK_DIRS:
            if parts[: len(prefix)] == prefix and len(parts) > len(prefix):
                parts = ("masks", *parts[len(prefix) :])
                break
        rel = PurePosixPath(*parts).as_posix()
        if rel in files:
            raise DownloadError(f"{folder}: both {files[rel]} and {src} would be copied to {rel}")
        files[rel] = src
    return files


def copy_folder(dataset: str, folder: Path, out: Path) -> None:
    """Copy a local copy of a dataset (e.g. the NLM originals) into `out` as it is.

    Every regular file keeps its relative path (Kaggle `mask/` becomes `masks/`); nothing is
    converted, since preprocessing does that. `out/SHA256SUMS` records what was copied. A
    second run over an unchanged folder touches nothing.
    """
    folder, out = Path(folder).expanduser(), Path(out)
    if not folder.is_dir():
        raise DownloadError(f"{dataset}: source folder {folder} does not exist")
    files = _folder_files(folder)
    if not any(
        PurePosixPath(rel).match(pattern) for rel in files for pattern in FOLDER_LAYOUTS.values()
    ):
        layouts = ", ".join(f"{pattern} ({what})" for what, pattern in FOLDER_LAYOUTS.items())
        raise DownloadError(
            f"{dataset}: source folder {folder} holds none of the expected files: one of {layouts}"
        )
    recorded = _read_sums(out)
    if recorded is not None and recorded.keys() == files.keys():
        expected = {rel: sha256_file(src) for rel, src in files.items()}
        if recorded == expected and len(_verified_files(out, expected)) == len(expected):
            log.info("%s: %s is already an exact copy of %s", dataset, out, folder)
            return
    total = sum(src.stat().st_size for src in files.values())
    with (
        progress(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dataset) as bar,
        staged_dir(out) as work,
    ):
        sums = {rel: _copy_file(src, work / rel, bar) for rel, src in files.items()}
        _write_sums(work, sums)
    log.info("%s: copied %d files from %s into %s", dataset, len(files), folder, out)


def _sums_of_tree(folder: Path) -> dict[str, str]:
    """sha256 of every regular file under `folder`, keyed by relative posix path."""
    return {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).as_posix() != SUMS_NAME
    }


def download_dataset(
    dataset: str,
    dataset_cfg: dict,
    download_cfg: dict,
    manifest: Path,
    out: Path,
    seed: int,
) -> None:
    """Produce `out` (data/raw/<dataset>/) from the source: a manifest, a folder or synthetic.
    `dataset_cfg` and `download_cfg` are as the config layer checked them."""
    source, out = dataset_cfg["source"], Path(out)
    if source["type"] == "manifest":
        fetch_manifest(
            dataset,
            Path(manifest),
            out,
            mirror=os.environ.get(MIRROR_ENV) or None,
            timeout_s=float(download_cfg["timeout_s"]),
            retries=int(download_cfg["retries"]),
            backoff_s=float(download_cfg["backoff_s"]),
        )
    elif source["type"] == "folder":
        copy_folder(dataset, Path(source["path"]), out)
    else:
        from unetflow.data import synthetic  # lazy: only synthetic datasets need it

        with staged_dir(out) as work:
            if dataset_cfg["kind"] == "em":
                synthetic.generate_synth_em(
                    work,
                    n_train=int(source["n_train"]),
                    n_test=int(source["n_test"]),
                    size=int(source["size"]),
                    seed=seed,
                )
            else:
                synthetic.generate_synth_cxr(
                    work,
                    n_images=int(source["n_images"]),
                    n_unmasked=int(source["n_unmasked"]),
                    size=int(source["size"]),
                    seed=seed,
                )
            _write_sums(work, _sums_of_tree(work))
