"""noise_scores stage: a model's fixed-split test predictions scored against the test masks
corrupted by every selected noise family at every selected level (seeded by noise.test_seed,
used only here), for the noise stage's question of which comparisons noisy test labels flip."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from unetflow.config import load_params
from unetflow.noise.scores import score_noisy_tests
from unetflow.pipeline.stage import (
    add_selection,
    job_params,
    run_stage,
    stage_parser,
    with_selection,
)

SELECTION = ("noise_families", "noise_levels")


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments and score the predictions against the noisy test masks."""
    parser = stage_parser(__doc__)
    parser.add_argument("--preset", required=True, help="a name under presets")
    parser.add_argument("--processed", type=Path, required=True, help="data/processed/<dataset>")
    parser.add_argument("--predictions", type=Path, required=True, help="the run's predictions")
    parser.add_argument("--out", type=Path, required=True, help="the table to write (CSV)")
    add_selection(parser, *SELECTION)
    args = parser.parse_args(argv)
    chosen = with_selection(load_params(args.params), args, args.params, *SELECTION)
    params = job_params(args.params, "noise_scores", preset=args.preset, dataset=args.dataset)
    spec = params["dataset_defs"][args.dataset]
    score_noisy_tests(
        kind=spec["kind"],
        families=chosen["noise_families"],
        levels=chosen["noise_levels"],
        noise=spec["noise"],
        seed=params["noise"]["test_seed"],
        processed=args.processed,
        predictions=args.predictions,
        out=args.out,
    )


if __name__ == "__main__":
    run_stage(main)
