"""Atomic stage outputs: a folder or file appears at its final path only once it is complete."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PARTIAL_MARK = ".partial-"


@contextmanager
def staged_dir(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty folder beside `final`; publish it there only if the block succeeds.

    Work happens in a hidden sibling folder, so a crash or an error never leaves
    anything at `final` that a later stage could take as complete. On success an
    existing `final` is replaced by two renames; on error the partial folder is removed.
    Partial folders left by a killed process are cleaned on the next call.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}{PARTIAL_MARK}*"):
        shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}{PARTIAL_MARK}", dir=final.parent))
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}{PARTIAL_MARK}old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    work.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_file(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `final`, with its suffix (writers pick the format from
    it); rename it over `final` only if the block succeeds, else remove it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{final.stem}.", suffix=f".partial{final.suffix}", dir=final.parent
    )
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` (UTF-8, newlines as given) to `path` atomically."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


def write_report(
    data: dict[str, Any],
    markdown: str,
    figure: Figure,
    *,
    json_path: str | os.PathLike[str],
    md_path: str | os.PathLike[str],
    figure_path: str | os.PathLike[str],
) -> None:
    """Write a report stage's three outputs, each atomically: `data` as JSON, `markdown`, and
    `figure` as a PNG at 100 dpi. The JSON is strict (DVC metrics must parse): data with a
    NaN raises ValueError before anything is written."""
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    write_text_atomic(json_path, text)
    write_text_atomic(md_path, markdown)
    with atomic_file(figure_path) as tmp:
        figure.savefig(tmp, dpi=100)
