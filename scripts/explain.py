"""explain stage: occlusion sensitivity, block feature maps and the bottleneck latent space
of one dataset x model (chest X-ray U-Nets; other runs get a summary.json saying why)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from unetflow.explain.scope import skip_reason, skipped_summary
from unetflow.pipeline.stage import job_params, run_stage, stage_parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments and explain the run."""
    parser = stage_parser(__doc__)
    parser.add_argument("--model", required=True, help="a name under model_defs")
    parser.add_argument("--checkpoint", type=Path, required=True, help="the run's model.pt")
    parser.add_argument("--processed", type=Path, required=True, help="data/processed/<dataset>")
    parser.add_argument("--per-image", type=Path, required=True, help="evaluate's per_image.csv")
    parser.add_argument("--out", type=Path, required=True, help="the explain folder to write")
    args = parser.parse_args(argv)
    params = job_params(args.params, "explain", dataset=args.dataset, model=args.model)
    kinds = (params["dataset_defs"][args.dataset]["kind"], params["model_defs"][args.model]["kind"])
    reason = skip_reason(*kinds)
    started = time.perf_counter()
    if reason:  # without importing torch: most runs of a selection are not CXR U-Nets
        summary = skipped_summary(args.dataset, args.model, reason, args.out)
    else:
        from unetflow.explain.explain import explain_run

        summary = explain_run(
            dataset=args.dataset,
            model_name=args.model,
            checkpoint=args.checkpoint,
            processed=args.processed,
            per_image=args.per_image,
            out=args.out,
            cfg=params["explain"],
            seed=int(params["seed"]),
        )
    seconds = time.perf_counter() - started
    if not summary["applicable"]:  # from params.yaml, or from the checkpoint when they differ
        print(f"explain {args.dataset}/{args.model}: not applicable ({summary['reason']})")
        return
    print(
        f"explain {args.dataset}/{args.model}: {len(summary['explained'])} image(s) "
        f"occluded, {summary['images']} in the latent space, clusters "
        f"{summary['cluster_sizes']}, {seconds:.1f} s -> {args.out}"
    )


if __name__ == "__main__":
    run_stage(main)
