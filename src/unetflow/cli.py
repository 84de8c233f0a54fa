"""Command-line plumbing shared by the stage scripts."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from unetflow.params import ParamsError, load_params, resolve
from unetflow.sources import DownloadError

# Errors that are the user's to fix: printed as one clear line, without a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ParamsError,
    DownloadError,
    FileNotFoundError,
)
# Those of heavier modules are looked up only once loaded (an exception of a class implies its
# module is loaded), so that a params error or a download never imports pandas, skimage or torch.
LAZY_ERRORS = (
    ("unetflow.images", "ImageError"),
    ("unetflow.datasets", "DataError"),
    ("unetflow.checkpoints", "CheckpointError"),
    ("unetflow.inference", "InferenceError"),
    ("unetflow.training", "TrainingError"),
    ("unetflow.reports", "ReportError"),
    ("unetflow.explain", "ExplainError"),
)


def user_errors() -> tuple[type[BaseException], ...]:
    """USER_ERRORS plus the error types of the heavier modules already loaded."""
    loaded = [getattr(sys.modules[m], name) for m, name in LAZY_ERRORS if m in sys.modules]
    return USER_ERRORS + tuple(loaded)


def stage_parser(description: str | None) -> argparse.ArgumentParser:
    """An argument parser with the options every stage takes: --params and --dataset."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params.yaml")
    parser.add_argument("--dataset", required=True, help="a name under dataset_defs")
    return parser


def dataset_config(params_path: Path, dataset: str, preset: str | None) -> tuple[dict, dict]:
    """(resolved params, resolved dataset_defs entry) for a stage, validated."""
    params = resolve(load_params(params_path), preset)
    if dataset not in params["dataset_defs"]:
        raise ParamsError(
            f"{params_path}: dataset '{dataset}' is not defined under dataset_defs "
            f"({sorted(params['dataset_defs'])})"
        )
    return params, params["dataset_defs"][dataset]


def model_config(params: dict, model: str, params_path: Path) -> dict:
    """The resolved model_defs entry of `model`, or a ParamsError naming it."""
    if model not in params["model_defs"]:
        raise ParamsError(
            f"{params_path}: model '{model}' is not defined under model_defs "
            f"({sorted(params['model_defs'])})"
        )
    return params["model_defs"][model]


def run_stage(main: Callable[[Sequence[str] | None], Any]) -> None:
    """Run a stage's main; a user error becomes `error: <message>` and exit status 1."""
    try:
        main(None)
    except user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def main(argv: Sequence[str] | None = None) -> None:
    """The `unetflow` console command; user errors print one line and exit with status 1."""
    parser = argparse.ArgumentParser(
        prog="unetflow", description="unetflow: a reproducible U-Net workflow."
    )
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
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def _predict(args: argparse.Namespace) -> None:
    """`unetflow predict`: torch is imported here only, so `unetflow --help` stays fast."""
    from unetflow.inference import predict_files

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
