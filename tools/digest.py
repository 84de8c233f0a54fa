"""Digest every output of a pipeline run, to show that a code change leaves the results alone.

    python tools/digest.py data results > digest.txt

Prints one line per file: its sha256 and its path. Wall-clock measurements are the only
thing two runs of the same code on the same machine do not share, so they are left out:
JSON and CSV keys and columns named in ``TIMING`` are dropped before hashing, so is a
Markdown table's column of that name, a ``model.pt`` is hashed as its weights plus its
metadata without them, and the files that are nothing but timing (``WALL_CLOCK_FILES``: the
DVCLive throughput curve and the learning-curves figure that draws it) are listed as
``skipped``. Everything else is hashed byte for byte. Compare two digests with ``diff``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from pathlib import Path

TIMING = {"seconds", "images_per_s", "img_per_s", "megapixels_per_s", "train_seconds"}
WALL_CLOCK_FILES = {"img_per_s.tsv", "learning_curves.png"}


def _without_timing(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def _json_bytes(path: Path) -> bytes:
    return json.dumps(_without_timing(json.loads(path.read_text())), sort_keys=True).encode()


def _csv_bytes(path: Path) -> bytes:
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    return json.dumps([_without_timing(row) for row in rows]).encode()


def _markdown_bytes(path: Path) -> bytes:
    """The text with the cells of every table column named in TIMING blanked."""
    lines, hidden = [], set()
    for line in path.read_text().splitlines():
        cells = line.split("|")
        if line.startswith("|"):
            names = [c.strip() for c in cells]
            hidden = {i for i, name in enumerate(names) if name in TIMING} or hidden
            cells = ["" if i in hidden else c for i, c in enumerate(cells)]
        else:
            hidden = set()
        lines.append("|".join(cells))
    return "\n".join(lines).encode()


def _checkpoint_bytes(path: Path) -> bytes:
    from unetflow.model.checkpoint import read_checkpoint

    payload = read_checkpoint(path)
    digest = hashlib.sha256()
    for name, tensor in sorted(payload.pop("state_dict", {}).items()):
        digest.update(name.encode())
        digest.update(tensor.cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps(_without_timing(payload), sort_keys=True, default=str).encode())
    return digest.digest()


def file_digest(path: Path) -> str:
    """sha256 of ``path``, wall-clock fields left out (see the module docstring)."""
    if path.suffix == ".json":
        data = _json_bytes(path)
    elif path.suffix == ".csv":
        data = _csv_bytes(path)
    elif path.suffix == ".md":
        data = _markdown_bytes(path)
    elif path.suffix == ".pt":
        data = _checkpoint_bytes(path)
    else:
        data = path.read_bytes()
    return hashlib.sha256(data).hexdigest()


def main(roots: list[str]) -> None:
    """Print the digest of every file under ``roots``, sorted by path."""
    for root in roots:
        for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
            if path.name == ".gitignore" or "checkpoints" in path.parts:
                continue
            print("skipped" if path.name in WALL_CLOCK_FILES else file_digest(path), path)


if __name__ == "__main__":
    main(sys.argv[1:] or ["data", "results"])
