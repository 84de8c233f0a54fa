"""download stage: fetch one dataset into data/raw/<dataset>/, verified by sha256.

Real datasets come from their public URLs or from $UNETFLOW_MIRROR; synthetic ones are generated.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from unetflow.data.download import download_dataset
from unetflow.pipeline.stage import job_params, run_stage, stage_parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments and download (or generate) the dataset."""
    parser = stage_parser(__doc__)
    parser.add_argument("--manifest", type=Path, required=True, help="the dataset's manifest")
    parser.add_argument("--out", type=Path, required=True, help="data/raw/<dataset>")
    args = parser.parse_args(argv)
    params = job_params(args.params, "download", dataset=args.dataset)
    download_dataset(
        args.dataset,
        params["dataset_defs"][args.dataset],
        params["download"],
        args.manifest,
        args.out,
        seed=params["seed"],
    )


if __name__ == "__main__":
    run_stage(main)
