"""Glue between the two engines: Snakemake's config checks, and deps read from dvc.yaml.

Param and code dependencies are declared once, in dvc.yaml. Snakemake rules ask
`tracked_params_for` for the same keys, with their values, and `code_deps` for the same
source files, so both engines re-run a stage on the same changes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from unetflow.config import ParamsError, check_params, load_yaml, schema_for
from unetflow.pipeline.stage import NUMBER_LISTS, dvc_stages, lookup, tracked_keys

# Keys that may be set on the command line (`--config` / `-S`); everything else lives in
# params.yaml so that the scripts, which read params.yaml, see what the engine sees.
COMMAND_LINE_KEYS = (
    *("preset", "datasets", "models", "folds", "seeds"),
    *("noise_datasets", "noise_families", "noise_levels", "noise_seeds"),
)


def check_config(config: dict[str, Any], params_path: str | os.PathLike[str]) -> None:
    """Validate Snakemake's config and refuse overrides the stage scripts would not see.
    Numbers of `--config folds=[0,1] seeds=[1,2]`, which Snakemake hands over as strings,
    become integers (in `config`), as params.yaml's are."""
    for key in NUMBER_LISTS:
        values = config.get(key)
        if isinstance(values, list):
            config[key] = [int(v) if isinstance(v, str) and v.isdigit() else v for v in values]
    on_disk = load_yaml(Path(params_path).read_text())
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


def code_deps(dvc_yaml: str, stage: str) -> list[str]:
    """The unetflow source files a dvc.yaml stage depends on (its `deps` under src/)."""
    return [dep for dep in dvc_stages(dvc_yaml)[stage]["deps"] if dep.startswith("src/")]


def tracked_params_for(
    dvc_yaml: str, stage: str, config: dict[str, Any], wildcards: Any
) -> dict[str, Any]:
    """`{key: value}` of the params a stage tracks in dvc.yaml, for one Snakemake job."""
    item = {name: str(value) for name, value in dict(wildcards).items()}
    return {key: lookup(config, key) for key in tracked_keys(dvc_yaml, stage, config, item)}
