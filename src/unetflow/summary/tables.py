"""summary.md's Markdown tables: one cell format (– for missing, fixed decimals) for all."""

from __future__ import annotations

import math
from typing import Any


def with_n(value: float | None, n: int) -> str:
    """A Table 3 cell: the mean with its image count, or – (0) for an empty group."""
    return f"{_cell(value)} ({n})"


#: Decimals of float cells in summary.md (default 4): distances in pixels and seconds need fewer.
DECIMALS = {
    "test_hd95": 2,
    "test_assd": 2,
    "train_seconds": 1,
    "hd95": 2,
    "assd": 2,
    "Δ hd95": 2,
    "Δ assd": 2,
}


def markdown_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    """A GitHub-flavoured Markdown table; None is –, floats get :data:`DECIMALS` (default 4)."""
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        cells = [_cell(row.get(column), DECIMALS.get(column, 4)) for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    if not rows:
        lines.append("| " + " | ".join("–" for _ in columns) + " |")
    return "\n".join(lines)


def _cell(value: Any, decimals: int = 4) -> str:
    """One Markdown cell: – for missing, `decimals` decimals (3 significant digits below
    0.001, so 0.000353 stays readable) for floats, thousands separators for integers."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.3g}" if 0 < abs(value) < 1e-3 else f"{value:.{decimals}f}"
    return str(value).replace("|", "\\|")
