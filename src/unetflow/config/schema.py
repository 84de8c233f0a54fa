"""The JSON schema of params.yaml (workflow/schemas/params.schema.yaml) and its violations."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from unetflow.config.yamlfile import load_yaml

SCHEMA_PATH = Path("workflow") / "schemas" / "params.schema.yaml"


def schema_for(params_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON schema that sits in the project beside `params_path`."""
    path = Path(params_path).resolve().parent / SCHEMA_PATH
    return load_yaml(path.read_text())


def _key(path: Any) -> str:
    parts = [str(p) if re.fullmatch(r"[A-Za-z0-9_]+", str(p)) else repr(str(p)) for p in path]
    return ".".join(parts) or "(top level)"


def schema_errors(params: Any, schema: dict[str, Any]) -> list[str]:
    """Every schema violation as `key: message`, deepest first."""
    import jsonschema  # here, so that resolve() works where only torch and yaml are installed

    validator = jsonschema.validators.validator_for(schema)(schema)
    messages = []
    for error in sorted(validator.iter_errors(params), key=lambda e: -len(e.absolute_path)):
        leaves = [error]
        while leaves and any(leaf.context for leaf in leaves):
            leaves = [sub for leaf in leaves for sub in (leaf.context or [leaf])]
        for leaf in leaves:
            messages.append(f"{_key(leaf.absolute_path)}: {leaf.message}")
    return list(dict.fromkeys(messages))
