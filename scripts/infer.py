"""infer stage: overlap-tile predictions (probabilities and masks) for the val, test and
unlabeled images of a dataset, with a trained model.pt; for EM also the ISBI submission TIFF."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from unetflow.inference.infer import infer_dataset
from unetflow.pipeline.stage import job_params, run_stage, stage_parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments and predict every val/test/predict image."""
    parser = stage_parser(__doc__)
    parser.add_argument("--preset", required=True, help="a name under presets")
    parser.add_argument("--checkpoint", type=Path, required=True, help="results/<d>/<m>/model.pt")
    parser.add_argument("--processed", type=Path, required=True, help="data/processed/<dataset>")
    parser.add_argument("--out", type=Path, required=True, help="results/<d>/<m>/predictions")
    args = parser.parse_args(argv)
    params = job_params(args.params, "infer", preset=args.preset, dataset=args.dataset)
    infer_dataset(
        checkpoint=args.checkpoint,
        processed=args.processed,
        out=args.out,
        infer_cfg=params["infer"],
        device=params["train"]["device"],
        amp=params["train"]["amp"],
    )


if __name__ == "__main__":
    run_stage(main)
