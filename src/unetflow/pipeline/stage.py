"""Plumbing shared by the stage scripts: arguments, user errors, and the params of one job.

A stage job gets the params its dvc.yaml stage tracks (`tracked_keys`), as resolved for its
preset: `job_params` returns those keys and nothing else, so a key whose change would not
re-run the stage is not there to read. Snakemake's rules track the same keys (`contract`).

This module imports no stage logic: it is part of every stage's code deps.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any, NoReturn

from unetflow.config import (
    ParamsError,
    check_params,
    leaves,
    load_params,
    load_yaml,
    resolve,
    schema_for,
    shadowed,
)
from unetflow.io.logs import configure_logging

log = logging.getLogger(__name__)

# Errors that are the user's to fix: printed as one clear line, without a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ParamsError, FileNotFoundError)
# Those of heavier modules are looked up only once loaded (an exception of a class implies its
# module is loaded), so that a params error never imports pandas, skimage or torch.
LAZY_ERRORS = (
    ("unetflow.data.elastic", "InstallError"),
    ("unetflow.data.download", "DownloadError"),
    ("unetflow.io.images", "ImageError"),
    ("unetflow.io.processed", "DataError"),
    ("unetflow.model.checkpoint", "CheckpointError"),
    ("unetflow.model.device", "DeviceError"),
    ("unetflow.inference.tiling", "InferenceError"),
    ("unetflow.training.errors", "TrainingError"),
    ("unetflow.evaluation.rows", "ReportError"),
    ("unetflow.explain.explain", "ExplainError"),
    ("unetflow.pipeline.sync", "SyncError"),
)
_PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")
# Selection keys that hold numbers: Snakemake's --config hands them over as strings.
NUMBER_LISTS = ("folds", "seeds", "noise_levels", "noise_seeds")


def user_errors() -> tuple[type[BaseException], ...]:
    """USER_ERRORS plus the error types of the heavier modules already loaded."""
    loaded = [getattr(sys.modules[m], name) for m, name in LAZY_ERRORS if m in sys.modules]
    return USER_ERRORS + tuple(loaded)


def run_stage(main: Callable[[Sequence[str] | None], Any]) -> None:
    """Run a stage's main with logging configured; a user error becomes `error: <message>`
    and exit status 1."""
    configure_logging()
    try:
        main(None)
    except user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one `error:` line and exit status 1, like every
    other user error (argparse prints its usage and exits 2)."""

    def error(self, message: str) -> NoReturn:
        """Print `error: <prog>: <message> (see <prog> --help)` and exit 1."""
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(1)


def stage_parser(description: str | None) -> argparse.ArgumentParser:
    """An argument parser with the options every stage takes: --params and --dataset."""
    parser = OneLineParser(description=description)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params.yaml")
    parser.add_argument("--dataset", required=True, help="a name under dataset_defs")
    return parser


def add_selection(parser: argparse.ArgumentParser, *keys: str) -> None:
    """--<key> for selection keys of params (datasets, models, folds, seeds): Snakemake passes
    its --config selection, which params.yaml does not hold; DVC's commands leave them out (a
    list cannot be put in a dvc.yaml command), and the script reads params.yaml's."""
    for key in keys:
        numbers = key in NUMBER_LISTS  # empty when none are selected
        parser.add_argument(
            f"--{key}",
            nargs="*" if numbers else "+",
            type=int if numbers else str,
            help="the selection (default: params.yaml's)",
        )


def with_selection(
    params: dict[str, Any], args: argparse.Namespace, params_path: Path, *keys: str
) -> dict[str, Any]:
    """`params` with the selection `keys` given on the command line (add_selection), checked
    as params.yaml is."""
    chosen = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    if not chosen:
        return params
    params = {**params, **chosen}
    source = f"{params_path} with --" + "/--".join(chosen)
    check_params(params, schema_for(params_path), source=source)
    return params


@cache
def dvc_stages(dvc_yaml: str) -> dict[str, Any]:
    """The `stages` of a dvc.yaml, as written (placeholders unfilled)."""
    return load_yaml(Path(dvc_yaml).read_text())["stages"]


def lookup(params: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted key such as `dataset_defs.isbi2012.split`."""
    value: Any = params
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ParamsError(f"params.yaml: key '{dotted}' (tracked in dvc.yaml) is missing")
        value = value[part]
    return value


def tracked_keys(
    dvc_yaml: str | os.PathLike[str], stage: str, params: dict[str, Any], item: dict[str, str]
) -> list[str]:
    """The params keys a dvc.yaml stage tracks, with `${item.*}` and `${key}` filled in."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("item."):
            return item[name.removeprefix("item.")]
        return str(lookup(params, name))

    keys = dvc_stages(str(dvc_yaml))[stage].get("params", [])
    return [_PLACEHOLDER.sub(fill, key) for key in keys]


def job_params(
    params_path: str | os.PathLike[str],
    stage: str,
    *,
    preset: str | None = None,
    **item: str,
) -> dict[str, Any]:
    """The params one job of `stage` reads: validated params.yaml, resolved for `preset`,
    cut down to the keys its dvc.yaml stage tracks (the preset's slices only select, they
    are not handed on). `item` holds the job's `dataset` and `model`."""
    params = load_params(params_path)
    for key, defs in (("dataset", "dataset_defs"), ("model", "model_defs")):
        if key in item and item[key] not in params[defs]:
            raise ParamsError(
                f"{params_path}: {key} '{item[key]}' is not defined under {defs} "
                f"({sorted(params[defs])})"
            )
    resolved = resolve(params, preset)
    dvc_yaml = Path(params_path).resolve().parent / "dvc.yaml"
    view: dict[str, Any] = {}
    for key in tracked_keys(dvc_yaml, stage, resolved, item):
        if not key.startswith("presets."):
            _set(view, key, lookup(resolved, key))
    _note_shadowed(params, resolved["preset"], view)
    return view


def _note_shadowed(params: dict[str, Any], preset: str, view: dict[str, Any]) -> None:
    """Say in the job's log which of the job's base values its preset replaces, so
    that an edit of a shadowed base key (`dvc exp run -S model_defs...`) is not a silent no-op."""
    read = leaves(view)
    for key, (base, value) in shadowed(params, preset).items():
        if key in read:
            log.info(
                "note: %s = %r from presets.%s; the base value %r is not used (to change it, "
                "edit presets.%s.%s)",
                *(key, value, preset, base, preset, key),
            )


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value
