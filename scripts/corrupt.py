"""corrupt stage: a noisy copy of a processed dataset for the annotation-noise study, its
training masks corrupted by one noise family at one level with one seed (validation and test
masks untouched, every corrupted mask recorded with its Dice against the clean one), and its
augmented training pairs, as the augment stage makes them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from unetflow.data.corrupt import noisy_dataset
from unetflow.pipeline.stage import job_params, run_stage, stage_parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, corrupt the training masks and augment the noisy copy."""
    parser = stage_parser(__doc__)
    parser.add_argument("--preset", required=True, help="a name under presets")
    parser.add_argument("--family", required=True, help="a key of dataset_defs.<d>.noise")
    parser.add_argument("--level", type=int, required=True, help="1-based level of the family")
    parser.add_argument("--seed", type=int, required=True, help="the corruption's seed")
    parser.add_argument("--processed", type=Path, required=True, help="data/processed/<dataset>")
    parser.add_argument("--out", type=Path, required=True, help="the noisy processed copy")
    parser.add_argument("--augmented", type=Path, required=True, help="its augmented pairs")
    args = parser.parse_args(argv)
    params = job_params(
        args.params, "corrupt", preset=args.preset, dataset=args.dataset, family=args.family
    )
    noisy_dataset(
        dataset=params["dataset_defs"][args.dataset],
        family=args.family,
        level=args.level,
        seed=args.seed,
        augment=params["augment"],
        processed=args.processed,
        out=args.out,
        augmented=args.augmented,
    )


if __name__ == "__main__":
    run_stage(main)
