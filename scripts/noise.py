"""noise stage: the annotation-noise study of one dataset. Every selected model trained on
training masks corrupted by each family at each level (mean and SD over the seeds) against the
Dice of those labels, with the clean run as the reference, and the fixed-split models compared
on noisy test masks: noise.json (DVC metrics), noise.md and noise.png."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from unetflow.config import load_params
from unetflow.io.outputs import write_report
from unetflow.noise.report import noise_markdown
from unetflow.noise.study import noise_study
from unetflow.pipeline.stage import (
    add_selection,
    job_params,
    run_stage,
    stage_parser,
    with_selection,
)
from unetflow.plots import noise_figure

SELECTION = ("models", "noise_families", "noise_levels", "noise_seeds")


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments and write the study's report."""
    parser = stage_parser(__doc__)
    parser.add_argument("--preset", required=True, help="a name under presets")
    parser.add_argument("--noisy", type=Path, required=True, help="data/noisy/<dataset>")
    parser.add_argument("--results", type=Path, required=True, help="results/noise/<dataset>")
    parser.add_argument("--scores", type=Path, required=True, help="results/scores/<dataset>")
    parser.add_argument("--json", type=Path, required=True, help="noise.json to write")
    parser.add_argument("--md", type=Path, required=True, help="noise.md to write")
    parser.add_argument("--figure", type=Path, required=True, help="noise.png to write")
    add_selection(parser, *SELECTION)
    args = parser.parse_args(argv)
    chosen = with_selection(load_params(args.params), args, args.params, *SELECTION)
    params = job_params(args.params, "noise", preset=args.preset, dataset=args.dataset)
    spec = params["dataset_defs"][args.dataset]
    study = noise_study(
        dataset=args.dataset,
        kind=spec["kind"],
        models=chosen["models"],
        families=chosen["noise_families"],
        levels=chosen["noise_levels"],
        seeds=chosen["noise_seeds"],
        noise=spec["noise"],
        noisy=args.noisy,
        results=args.results,
        clean_scores=args.scores,
        seed=params["seed"],
        n_boot=params["compare"]["n_boot"],
    )
    write_report(
        study,
        noise_markdown(study),
        noise_figure(study),
        json_path=args.json,
        md_path=args.md,
        figure_path=args.figure,
    )
    print(f"noise {args.dataset}: {len(study['models'])} models -> {args.json}, {args.md}")


if __name__ == "__main__":
    run_stage(main)
