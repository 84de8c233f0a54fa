"""summarize stage: results/summary.csv and results/summary.md, one row per dataset x model
(the rows the evaluate stage wrote) and our numbers beside the published references, and
metrics.json, the headline of every run that DVC shows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from unetflow.comparison.report import read_comparison
from unetflow.config import load_params
from unetflow.evaluation.rows import read_row, row_path
from unetflow.pipeline.stage import OneLineParser, add_selection, run_stage, with_selection
from unetflow.summary.summarize import summarize


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments and summarise every run of the selected datasets x models."""
    parser = OneLineParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params.yaml")
    parser.add_argument("--rows", type=Path, required=True, help="results/rows")
    parser.add_argument(
        "--comparisons", type=Path, required=True, help="results/comparison (<dataset>.json)"
    )
    parser.add_argument("--csv", type=Path, required=True, help="summary.csv to write")
    parser.add_argument("--md", type=Path, required=True, help="summary.md to write")
    parser.add_argument("--metrics", type=Path, required=True, help="metrics.json to write")
    add_selection(parser, "datasets", "models")
    args = parser.parse_args(argv)
    params = with_selection(load_params(args.params), args, args.params, "datasets", "models")
    runs = [(d, m) for d in params["datasets"] for m in params["models"]]
    rows = [read_row(row_path(args.rows, dataset, model)) for dataset, model in runs]
    comparisons = {d: read_comparison(args.comparisons, d) for d in params["datasets"]}
    summarize(rows, args.csv, args.md, args.metrics, comparisons)
    print(f"summarize: {len(rows)} runs -> {args.csv}, {args.md}, {args.metrics}")


if __name__ == "__main__":
    run_stage(main)
