"""augment stage: a seeded, materialised set of augmented training pairs per dataset."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from unetflow.data.augment import augment_dataset
from unetflow.pipeline.stage import job_params, run_stage, stage_parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments and write the augmented copies of every training image."""
    parser = stage_parser(__doc__)
    parser.add_argument("--preset", required=True, help="a name under presets")
    parser.add_argument("--processed", type=Path, required=True, help="data/processed/<dataset>")
    parser.add_argument("--out", type=Path, required=True, help="data/augmented/<dataset>")
    args = parser.parse_args(argv)
    params = job_params(args.params, "augment", preset=args.preset, dataset=args.dataset)
    dataset = params["dataset_defs"][args.dataset]
    augment_dataset(
        args.processed,
        args.out,
        dataset["augment"],
        example_pairs=params["augment"]["example_pairs"],
        seed=params["seed"],
        workers=params["augment"]["workers"],
    )


if __name__ == "__main__":
    run_stage(main)
