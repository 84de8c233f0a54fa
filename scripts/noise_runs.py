"""noise_runs stage: one model trained with one seed on one noisy dataset of the annotation-noise
study (the corrupt stage's copy), predicted and scored on the clean test masks.

Re-running a killed job resumes its training from the checkpoint in --work."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from unetflow.noise.runs import run_noisy
from unetflow.pipeline.stage import job_params, run_stage, stage_parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments and run the model on the noisy dataset."""
    parser = stage_parser(__doc__)
    parser.add_argument("--preset", required=True, help="a name under presets")
    parser.add_argument("--model", required=True, help="a name under model_defs")
    parser.add_argument("--seed", type=int, required=True, help="the training seed")
    parser.add_argument("--processed", type=Path, required=True, help="the noisy processed copy")
    parser.add_argument("--augmented", type=Path, required=True, help="its augmented pairs")
    parser.add_argument("--out", type=Path, required=True, help="the run's folder")
    parser.add_argument("--scores", type=Path, required=True, help="its test scores (CSV)")
    parser.add_argument("--work", type=Path, required=True, help="predictions, checkpoints")
    args = parser.parse_args(argv)
    params = job_params(
        args.params, "noise_runs", preset=args.preset, dataset=args.dataset, model=args.model
    )
    run_noisy(
        dataset=args.dataset,
        model=args.model,
        seed=args.seed,
        params=params,
        processed=args.processed,
        augmented=args.augmented,
        run=args.out,
        scores=args.scores,
        work=args.work,
    )


if __name__ == "__main__":
    run_stage(main)
