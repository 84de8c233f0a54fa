"""Glue between the two engines: Snakemake's config checks and params read from dvc.yaml.

Param dependencies are declared once, in dvc.yaml. Snakemake rules ask `tracked_params_for`
for the same keys, with their values, so both engines rerun a stage on the same changes.
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from unetflow.params import ParamsError, check_params, schema_for

# Keys that may be set on the command line (`--config` / `-S`); everything else lives in
# params.yaml so that the scripts, which read params.yaml, see what the engine sees.
COMMAND_LINE_KEYS = ("preset", "datasets", "models")

_PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")


def check_config(config: dict[str, Any], params_path: str | os.PathLike[str]) -> None:
    """Validate Snakemake's config and refuse overrides the stage scripts would not see."""
    on_disk = yaml.safe_load(Path(params_path).read_text())
    changed = sorted(
        key
        for key in set(config) | set(on_disk)
        if key not in COMMAND_LINE_KEYS and config.get(key) != on_disk.get(key)
    )
    if changed:
        raise ParamsError(
            f"--config may set only {', '.join(COMMAND_LINE_KEYS)}; change {', '.join(changed)} "
            f"in {params_path} instead (the stage scripts read it from there)"
        )
    overridden = [key for key in COMMAND_LINE_KEYS if config.get(key) != on_disk.get(key)]
    source = f"{params_path} with --config {', '.join(overridden)}" if overridden else params_path
    check_params(config, schema_for(params_path), source=str(source))


@cache
def _dvc_stages(dvc_yaml: str) -> dict[str, Any]:
    return yaml.safe_load(Path(dvc_yaml).read_text())["stages"]


def lookup(config: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted key such as `dataset_defs.isbi2012.split`."""
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ParamsError(f"params.yaml: key '{dotted}' (tracked in dvc.yaml) is missing")
        value = value[part]
    return value


def tracked_keys(
    dvc_yaml: str, stage: str, config: dict[str, Any], item: dict[str, str]
) -> list[str]:
    """The params keys a dvc.yaml stage tracks, with `${item.*}` and `${key}` filled in."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("item."):
            return item[name.removeprefix("item.")]
        return str(lookup(config, name))

    return [_PLACEHOLDER.sub(fill, key) for key in _dvc_stages(dvc_yaml)[stage].get("params", [])]


def tracked_params_for(
    dvc_yaml: str, stage: str, config: dict[str, Any], wildcards: Any
) -> dict[str, Any]:
    """`{key: value}` of the params a stage tracks in dvc.yaml, for one Snakemake job."""
    item = {name: str(value) for name, value in dict(wildcards).items()}
    return {key: lookup(config, key) for key in tracked_keys(dvc_yaml, stage, config, item)}
