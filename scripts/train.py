"""train stage: fit one model variant on one dataset; writes model.pt and DVCLive curves.

Runs on CUDA when present (train.device: auto), else on the CPU. Re-running an interrupted
stage resumes from the last checkpoint in --checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from unetflow.pipeline.stage import job_params, run_stage, stage_parser
from unetflow.training.trainer import job_config, train


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments and train."""
    parser = stage_parser(__doc__)
    parser.add_argument("--preset", required=True, help="a name under presets")
    parser.add_argument("--model", required=True, help="a name under model_defs")
    parser.add_argument("--processed", type=Path, required=True, help="data/processed/<dataset>")
    parser.add_argument("--augmented", type=Path, required=True, help="data/augmented/<dataset>")
    parser.add_argument("--model-out", type=Path, required=True, help="results/<d>/<m>/model.pt")
    parser.add_argument("--live", type=Path, required=True, help="DVCLive folder")
    parser.add_argument("--checkpoints", type=Path, required=True, help="resume checkpoints")
    args = parser.parse_args(argv)
    params = job_params(
        args.params, "train", preset=args.preset, dataset=args.dataset, model=args.model
    )
    train(
        **job_config(params, args.dataset, args.model),
        processed=args.processed,
        augmented=args.augmented,
        seed=params["seed"],
        model_out=args.model_out,
        live_dir=args.live,
        checkpoint_dir=args.checkpoints,
    )


if __name__ == "__main__":
    run_stage(main)
