"""evaluate stage: per-image and aggregated metrics (metrics.json, per_image.csv) and figures
for the val and test predictions of one dataset x model, the shift test of chest X-ray models
(shifts.csv), the run's row of the summary, and the test scores the compare stage reads."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from unetflow.evaluation.evaluate import evaluate, summary_row
from unetflow.evaluation.rows import write_row
from unetflow.evaluation.shifts import ShiftModel
from unetflow.pipeline.stage import job_params, run_stage, stage_parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments and evaluate."""
    parser = stage_parser(__doc__)
    parser.add_argument("--preset", required=True, help="the preset the run was made with")
    parser.add_argument("--model", required=True, help="a name under model_defs")
    parser.add_argument("--checkpoint", type=Path, required=True, help="the run's model.pt")
    parser.add_argument("--processed", type=Path, required=True, help="data/processed/<dataset>")
    parser.add_argument("--predictions", type=Path, required=True, help="infer's predictions/")
    parser.add_argument("--live", type=Path, required=True, help="the training's DVCLive folder")
    parser.add_argument("--metrics", type=Path, required=True, help="metrics.json to write")
    parser.add_argument("--per-image", type=Path, required=True, help="per_image.csv to write")
    parser.add_argument("--scores", type=Path, required=True, help="test scores for compare")
    parser.add_argument("--figures", type=Path, required=True, help="figures folder to write")
    parser.add_argument("--subgroups", type=Path, required=True, help="subgroups.csv to write")
    parser.add_argument("--shifts", type=Path, required=True, help="shifts.csv to write")
    parser.add_argument("--row", type=Path, required=True, help="the summary row to write")
    args = parser.parse_args(argv)
    params = job_params(
        args.params,
        "evaluate",
        preset=args.preset,
        dataset=args.dataset,
        model=args.model,
    )
    dataset = params["dataset_defs"][args.dataset]
    summary = evaluate(
        dataset=args.dataset,
        kind=dataset["kind"],
        processed=args.processed,
        predictions=args.predictions,
        out_metrics=args.metrics,
        out_per_image=args.per_image,
        out_figures=args.figures,
        live_dir=args.live,
        out_subgroups=args.subgroups,
        out_shifts=args.shifts,
        shift_model=ShiftModel(
            args.checkpoint, params["infer"], params["train"]["device"], params["train"]["amp"]
        ),
        out_scores=args.scores,
    )
    for split in ("val", "test"):
        if split in summary:
            means = {k: v for k, v in summary[split].items() if not k.endswith("_std")}
            scores = ", ".join(f"{k} {v:.4f}" for k, v in means.items())
            print(f"evaluate {args.dataset} {split} (n={summary[f'n_{split}']}): {scores}")
    row = summary_row(
        args.metrics,
        args.checkpoint,
        dataset=args.dataset,
        model=args.model,
        kind=dataset["kind"],
        preset=params["preset"],
        subgroups=args.subgroups,
    )
    write_row(args.row, row)


if __name__ == "__main__":
    run_stage(main)
