"""The wall time and peak memory of every Snakemake job, as a Markdown table for the docs.

    python tools/benchmarks.py [benchmarks] > table.md

Snakemake writes one TSV per job under ``benchmarks/`` (the rules' ``benchmark:`` files:
``benchmarks/<dataset>/<stage>.tsv``, ``benchmarks/<dataset>/<model>/<stage>.tsv`` and
``benchmarks/summarize.tsv``), a header and one row per repeat, with the wall time in
seconds (``s``) and the peak resident memory in MB (``max_rss``, ``NA`` when the job ended
before Snakemake's first sample). The table has one row per job, named ``<stage>
<dataset>/<model>``, in pipeline order: the mean wall time over repeats and the largest
peak. Only Snakemake writes these files: DVC has no equivalent, so nothing that both engines
must produce alike depends on them.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

STAGES = [
    "download",
    "preprocess",
    "augment",
    "train",
    "infer",
    "evaluate",
    "explain",
    "compare",
    "summarize",
]


def _number(value: str | None) -> float:
    """A benchmark cell as a float; NaN for Snakemake's NA (or a missing cell)."""
    try:
        return float(value) if value not in (None, "", "NA") else math.nan
    except ValueError:
        return math.nan


def read_benchmark(path: Path) -> tuple[float, float]:
    """Mean wall time (s) and largest peak RSS (MB, NaN when never sampled) of one TSV."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows or "s" not in rows[0]:
        raise ValueError(f"{path}: not a Snakemake benchmark file (no 's' column)")
    walls = [_number(row["s"]) for row in rows]
    peaks = [p for p in (_number(row.get("max_rss")) for row in rows) if not math.isnan(p)]
    return sum(walls) / len(walls), max(peaks, default=math.nan)


def job_name(path: Path, root: Path) -> str:
    """`train synth_em/unet_modern` for <root>/synth_em/unet_modern/train.tsv."""
    where = "/".join(path.relative_to(root).parent.parts)
    return f"{path.stem} {where}" if where else path.stem


def _order(path: Path, root: Path) -> tuple[bool, str, int, str]:
    """Per dataset, the stages in pipeline order; jobs over every dataset (summarize) last."""
    parts = path.relative_to(root).parts
    stage = STAGES.index(path.stem) if path.stem in STAGES else len(STAGES)
    return (len(parts) == 1, parts[0] if len(parts) > 1 else "", stage, str(path))


def table(root: Path) -> str:
    """The Markdown table of every benchmark file under `root`, in pipeline order per dataset."""
    files = sorted(root.rglob("*.tsv"), key=lambda p: _order(p, root))
    if not files:
        raise FileNotFoundError(f"no benchmark files under {root}")
    lines = ["| job | wall s | max RSS MB |", "|---|---:|---:|"]
    for path in files:
        wall, peak = read_benchmark(path)
        rss = "–" if math.isnan(peak) else f"{peak:.0f}"
        lines.append(f"| {job_name(path, root)} | {wall:.1f} | {rss} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else "benchmarks")
    try:
        sys.stdout.write(table(root))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
