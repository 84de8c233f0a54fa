"""preprocess stage: normalised images, binary masks and split.csv in data/processed/<dataset>/."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from unetflow.data.cxr import preprocess_cxr
from unetflow.data.em import preprocess_em
from unetflow.pipeline.stage import job_params, run_stage, stage_parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments and preprocess the dataset by its kind."""
    parser = stage_parser(__doc__)
    parser.add_argument("--preset", required=True, help="a name under presets")
    parser.add_argument("--raw", type=Path, required=True, help="data/raw/<dataset>")
    parser.add_argument("--out", type=Path, required=True, help="data/processed/<dataset>")
    args = parser.parse_args(argv)
    params = job_params(args.params, "preprocess", preset=args.preset, dataset=args.dataset)
    dataset = params["dataset_defs"][args.dataset]
    # the schema allows only these two kinds, checked when params.yaml is loaded
    if dataset["kind"] == "cxr":  # a seeded split, unlike EM's fixed slice ranges
        preprocess_cxr(args.raw, args.out, dataset, seed=params["seed"])
    else:
        preprocess_em(args.raw, args.out, dataset)


if __name__ == "__main__":
    run_stage(main)
