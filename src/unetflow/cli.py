"""Command-line plumbing shared by the stage scripts."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from unetflow.images import ImageError
from unetflow.params import ParamsError, load_params, resolve

# Errors that are the user's to fix: printed as one clear line, without a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ParamsError, ImageError, FileNotFoundError)


def user_errors() -> tuple[type[BaseException], ...]:
    """USER_ERRORS plus the error types of modules that may not be importable everywhere."""
    extra: list[type[BaseException]] = []
    try:
        from unetflow.sources import DownloadError

        extra.append(DownloadError)
    except ImportError:
        pass
    try:
        from unetflow.datasets import DataError

        extra.append(DataError)
    except ImportError:
        pass
    return USER_ERRORS + tuple(extra)


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


def run_stage(main: Callable[[Sequence[str] | None], Any]) -> None:
    """Run a stage's main; a user error becomes `error: <message>` and exit status 1."""
    try:
        main(None)
    except user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
