"""compare stage: every selected model of one dataset on the same test images, with 95 % BCa
bootstrap CIs, paired Wilcoxon tests with Holm's correction, effect sizes, win/tie/loss counts
and (three or more models) Friedman's test and the stability of the ranking:
comparison.json (DVC metrics), comparison.md and comparison.png. Over the replicates
(folds x seeds) when they are selected, else over the runs of the fixed split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from unetflow.comparison.compare import compare
from unetflow.comparison.report import comparison_markdown
from unetflow.comparison.runs import COMPARED, load_scores
from unetflow.config import load_params
from unetflow.io.outputs import write_report
from unetflow.pipeline.stage import add_selection, run_stage, stage_parser, with_selection
from unetflow.plots import comparison_figure

SELECTION = ("models", "folds", "seeds")


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments and compare."""
    parser = stage_parser(__doc__)
    parser.add_argument("--scores", type=Path, required=True, help="results/scores/<dataset>")
    parser.add_argument("--json", type=Path, required=True, help="comparison.json to write")
    parser.add_argument("--md", type=Path, required=True, help="comparison.md to write")
    parser.add_argument("--figure", type=Path, required=True, help="comparison.png to write")
    add_selection(parser, *SELECTION)
    args = parser.parse_args(argv)
    params = with_selection(load_params(args.params), args, args.params, *SELECTION)
    kind = params["dataset_defs"][args.dataset]["kind"]
    scores = load_scores(
        args.scores,
        params["models"],
        params["folds"],
        params["seeds"],
        params["seed"],
        COMPARED[kind],
    )
    result = compare(scores, COMPARED[kind], params["seed"], params["compare"]["n_boot"])
    write_report(
        result,
        comparison_markdown(result),
        comparison_figure(result),
        json_path=args.json,
        md_path=args.md,
        figure_path=args.figure,
    )
    print(f"compare {args.dataset}: {len(result['variants'])} variants -> {args.json}, {args.md}")


if __name__ == "__main__":
    run_stage(main)
