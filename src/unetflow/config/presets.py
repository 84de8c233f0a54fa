"""Presets: resolution over the base sections, and where each resolved value comes from."""

from __future__ import annotations

import copy
from typing import Any

from unetflow.config.errors import ParamsError


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `override` merged in; nested dicts merge, other values replace."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def resolve(params: dict[str, Any], preset: str | None = None) -> dict[str, Any]:
    """The configuration a preset selects: `presets[preset]` merged over the base sections."""
    preset = params["preset"] if preset is None else preset
    if preset not in params["presets"]:
        raise ParamsError(
            f"preset: '{preset}' is not defined; choose one of {sorted(params['presets'])}"
        )
    resolved = deep_merge(params, params["presets"][preset])
    resolved["preset"] = preset
    return resolved


def leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{dotted key: value}` of every non-dict value under `tree` (an empty dict is a leaf)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(leaves(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def provenance(params: dict[str, Any], preset: str) -> dict[str, tuple[Any, str, Any]]:
    """Every resolved leaf as `{dotted key: (value, source, base value)}`: source is `base`, or
    `presets.<preset>` where the preset sets it (the base value is then None if the base has
    no such key)."""
    base = leaves({k: v for k, v in params.items() if k != "presets"})
    overlay = leaves(params["presets"][preset])
    resolved = leaves({k: v for k, v in resolve(params, preset).items() if k != "presets"})
    source = f"presets.{preset}"
    return {
        key: (value, source, base.get(key)) if key in overlay else (value, "base", value)
        for key, value in resolved.items()
    }


def shadowed(params: dict[str, Any], preset: str) -> dict[str, tuple[Any, Any]]:
    """`{dotted key: (base value, preset value)}` where the preset replaces a base value."""
    return {
        key: (base, value)
        for key, (value, source, base) in provenance(params, preset).items()
        if source != "base" and base is not None and base != value
    }


def describe(
    params: dict[str, Any], preset: str, datasets: list[str], models: list[str]
) -> list[str]:
    """`key: value  # source` lines of the resolved configuration of `datasets` x `models`:
    the shared sections, then each dataset's and model's entry; the source is `base` or the
    preset, with the base value it replaces."""
    for names, defs in ((datasets, "dataset_defs"), (models, "model_defs")):
        unknown = [name for name in names if name not in params[defs]]
        if unknown:
            known = sorted(params[defs])
            raise ParamsError(f"{defs}: {unknown} not defined; expected some of {known}")
    wanted = [f"dataset_defs.{d}." for d in datasets] + [f"model_defs.{m}." for m in models]
    lines = []
    for key, (value, source, base) in provenance(params, preset).items():
        if key.startswith(("dataset_defs.", "model_defs.")) and not key.startswith(tuple(wanted)):
            continue
        if source != "base":
            source += " (no base value)" if base is None else f" (base: {base!r})"
        lines.append(f"{key}: {value!r}  # {source}")
    return lines
