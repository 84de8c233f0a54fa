"""replicates stage: one training seed of one model over every selected cross-validation fold
(params' `folds`), each fold trained, predicted and scored like a fixed-split run; the test
scores go to the compare stage.

Re-running a killed job resumes the fold it stopped in from its checkpoint in --checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from unetflow.comparison.replicates import run_replicates
from unetflow.pipeline.stage import add_selection, job_params, run_stage, stage_parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments and run the seed's replicates."""
    parser = stage_parser(__doc__)
    parser.add_argument("--preset", required=True, help="a name under presets")
    parser.add_argument("--model", required=True, help="a name under model_defs")
    parser.add_argument("--seed", type=int, required=True, help="the training seed")
    parser.add_argument("--processed", type=Path, required=True, help="data/processed/<dataset>")
    parser.add_argument("--augmented", type=Path, required=True, help="data/augmented/<dataset>")
    parser.add_argument("--out", type=Path, required=True, help="the seed's folder of fold runs")
    parser.add_argument("--scores", type=Path, required=True, help="its folder of test scores")
    parser.add_argument("--checkpoints", type=Path, required=True, help="resume checkpoints")
    add_selection(parser, "folds")
    args = parser.parse_args(argv)
    params = job_params(
        args.params, "replicates", preset=args.preset, dataset=args.dataset, model=args.model
    )
    run_replicates(
        dataset=args.dataset,
        model=args.model,
        seed=args.seed,
        folds=params["folds"] if args.folds is None else args.folds,
        params=params,
        processed=args.processed,
        augmented=args.augmented,
        runs=args.out,
        scores=args.scores,
        checkpoints=args.checkpoints,
    )


if __name__ == "__main__":
    run_stage(main)
