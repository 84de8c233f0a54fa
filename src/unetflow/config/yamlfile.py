"""YAML as every job reads it: params.yaml, its schema and dvc.yaml are parsed at the start of
each stage job and each Snakemake call, so libyaml's C parser does it where PyYAML has one
(10x faster); a file it refuses is parsed again by the Python parser, whose error shows the line."""

from __future__ import annotations

from typing import Any

import yaml

_FAST = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str) -> Any:
    """`text` parsed as YAML with safe types only; yaml.YAMLError where it is not valid."""
    try:
        return yaml.load(text, Loader=_FAST)
    except yaml.YAMLError:
        return yaml.safe_load(text)  # raises again, with the offending line quoted
