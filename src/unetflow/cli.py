"""The `unetflow` console command."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from unetflow.config import ParamsError, describe, load_params
from unetflow.pipeline.stage import OneLineParser, run_stage


def main(argv: Sequence[str] | None = None) -> None:
    """The `unetflow` console command; user errors print one line and exit with status 1."""
    parser = OneLineParser(prog="unetflow", description="unetflow: a reproducible U-Net workflow.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    predict = commands.add_parser(
        "predict",
        help="apply a trained model to PNG/TIFF images",
        description=(
            "Apply a trained model (model.pt) to PNG/TIFF images of any size (grey, RGB, RGBA, "
            "palette). Writes OUTPUT/masks/<name>.png (0/255) and "
            "OUTPUT/probabilities/<name>.tif (float32 foreground probability) at each input's "
            "size, named like the inputs."
        ),
    )
    predict.add_argument("--model", type=Path, required=True, help="a model.pt checkpoint")
    predict.add_argument(
        "--input", nargs="+", required=True, help="image files and/or folders of images"
    )
    predict.add_argument("--output", type=Path, required=True, help="output folder")
    predict.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    predict.add_argument("--tta", action="store_true", help="average the 8 flips/rotations")
    predict.add_argument("--threshold", type=float, default=0.5, help="mask threshold")
    predict.add_argument("--overlap", type=float, default=0.25, help="tile overlap fraction")
    predict.add_argument("--blend", choices=["mean", "gaussian"], default="gaussian")
    predict.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    predict.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    predict.set_defaults(handler=_predict)
    sync = commands.add_parser(
        "sync",
        help="hand a finished run from one engine to the other",
        description=(
            "After `snakemake [--config ...]`: `unetflow sync --to dvc [--config ...]` (the same "
            "--config) writes the selection into params.yaml and records the run in dvc.lock. "
            "After `dvc repro`, `dvc checkout` or `dvc pull`: `unetflow sync --to snakemake`. "
            "Either way the other engine then has nothing to do. Run in the project folder."
        ),
    )
    sync.add_argument("--to", choices=["dvc", "snakemake"], required=True, help="engine to update")
    sync.add_argument(
        "--config",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="the selection Snakemake ran with (preset, datasets, models); --to dvc only",
    )
    sync.set_defaults(handler=_sync)
    config = commands.add_parser(
        "config",
        help="show the resolved configuration of a job",
        description=(
            "`unetflow config show`: every value a job of the given dataset and model reads, "
            "resolved for the preset, each marked `base` or with the preset that sets it (and the "
            "base value it replaces). Defaults: params.yaml's preset, datasets and models."
        ),
    )
    config.add_argument("action", choices=["show"])
    config.add_argument("--params", type=Path, default=Path("params.yaml"))
    config.add_argument("--preset", help="a name under presets")
    config.add_argument("--dataset", nargs="+", help="names under dataset_defs")
    config.add_argument("--model", nargs="+", help="names under model_defs")
    config.set_defaults(handler=_config)
    args = parser.parse_args(argv)
    if args.command == "sync" and args.to == "snakemake" and args.config:
        sync.error("--config goes with --to dvc: DVC's selection is params.yaml's")
    run_stage(lambda _argv: args.handler(args))


def _config(args: argparse.Namespace) -> None:
    """`unetflow config show`: the resolved configuration, each value with its source."""
    params = load_params(args.params)
    preset = args.preset or params["preset"]
    if preset not in params["presets"]:
        raise ParamsError(f"--preset {preset}: not one of {sorted(params['presets'])}")
    datasets, models = args.dataset or params["datasets"], args.model or params["models"]
    lines = describe(params, preset, datasets, models)
    print(f"# {args.params}, preset {preset}, datasets {datasets}, models {models}")
    print("\n".join(lines))


def _sync(args: argparse.Namespace) -> None:
    """`unetflow sync`: one command each way between Snakemake and DVC."""
    from unetflow.pipeline.sync import to_dvc, to_snakemake

    project = Path.cwd()
    print(to_dvc(project, args.config) if args.to == "dvc" else to_snakemake(project))


def _predict(args: argparse.Namespace) -> None:
    """`unetflow predict`: torch is imported here only, so `unetflow --help` stays fast."""
    from unetflow.inference.predict import predict_files

    summary = predict_files(
        model_path=args.model,
        inputs=args.input,
        output=args.output,
        device=args.device,
        tta=args.tta,
        threshold=args.threshold,
        overlap=args.overlap,
        blend=args.blend,
        batch_size=args.batch_size,
        amp=args.amp,
    )
    print(
        f"predicted {summary['images']} image(s) in {summary['seconds']:.1f} s: "
        f"{args.output / 'masks'}, {args.output / 'probabilities'}"
    )
