"""The published numbers our results are printed beside, as data (references.yaml, read
once), and the comparison rows of summary.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Reference:
    """One published number: `low`..`high` (equal for a single value) of `metric` (a key of
    metrics.json's test section, or a metric we do not compute such as warping_error)."""

    kind: str  # dataset kind it compares with: "em" or "cxr"
    dataset: str  # the dataset it was measured on (our name for it)
    name: str
    metric: str
    low: float
    high: float
    test_set: str  # what the reference was measured on, and how ours differs
    source: str

    @property
    def value(self) -> str:
        """The number as printed: one value or a low–high range."""
        if self.low == self.high:
            return f"{self.low:g}"
        return f"{self.low:g}–{self.high:g}"


REFERENCES_FILE = Path(__file__).with_name("references.yaml")


def load_references(path: Path = REFERENCES_FILE) -> tuple[Reference, ...]:
    """The references of `path`, in its order."""
    entries = yaml.safe_load(path.read_text(encoding="utf-8"))["references"]
    return tuple(Reference(**entry) for entry in entries)


REFERENCES = load_references()
COMPARISON_COLUMNS = (
    "dataset",
    "model",
    "metric",
    "ours",
    "reference",
    "published",
    "test set differs",
    "source",
)


def comparison_rows(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each run beside every reference of its dataset kind (ours empty where not computed)."""
    rows = []
    for run in summary:
        for ref in REFERENCES:
            if ref.kind != run["kind"]:
                continue
            rows.append(
                {
                    "dataset": run["dataset"],
                    "model": run["model"],
                    "metric": ref.metric,
                    "ours": run.get(f"test_{ref.metric}"),
                    "reference": ref.name,
                    "published": ref.value,
                    "test set differs": _differs(run["dataset"], ref),
                    "source": ref.source,
                }
            )
    return rows


def _differs(dataset: str, ref: Reference) -> str:
    """The "test set differs" mark: always yes here, with how."""
    if dataset == ref.dataset:
        return f"yes: {ref.test_set}"
    return f"yes: ours on {dataset}, not {ref.dataset} (reference: {ref.test_set.split(';')[0]})"
