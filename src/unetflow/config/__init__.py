"""The config layer: params.yaml loaded, checked against the schema and every cross-key rule,
and resolved for a preset with the source of each value.

Snakemake checks its config with `check_params` (through `engines.check_config` in common.smk)
while it reads the workflow; every stage script calls `load_params` on entry (through
`stage.job_params`), so DVC users get the same messages before any output is written. Stages
hold no checks or defaults of their own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from unetflow.config.errors import ParamsError
from unetflow.config.presets import deep_merge, describe, leaves, provenance, resolve, shadowed
from unetflow.config.rules import check_params
from unetflow.config.schema import schema_errors, schema_for
from unetflow.config.yamlfile import load_yaml

__all__ = [
    "ParamsError",
    "check_params",
    "deep_merge",
    "describe",
    "leaves",
    "load_params",
    "load_yaml",
    "provenance",
    "resolve",
    "schema_errors",
    "schema_for",
    "shadowed",
]


def load_params(path: str | os.PathLike[str] = "params.yaml") -> dict[str, Any]:
    """Read and validate params.yaml; errors name the file and the key."""
    path = Path(path)
    try:
        params = load_yaml(path.read_text())
    except FileNotFoundError as exc:
        raise ParamsError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({exc})") from exc
    check_params(params, schema_for(path), source=str(path))
    return params
