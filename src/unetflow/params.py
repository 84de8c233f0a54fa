"""params.yaml: loading, validation against the shared schema, and preset resolution.

Snakemake validates its config with `check_params` (through `engines.check_config` in
common.smk): the shared schema, then the checks a schema cannot express. The scripts call
`load_params`, so DVC users are validated too, with the same messages.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path("workflow") / "schemas" / "params.schema.yaml"


class ParamsError(ValueError):
    """params.yaml is invalid; the message names the key and what was expected."""


def schema_for(params_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON schema that sits in the project beside `params_path`."""
    path = Path(params_path).resolve().parent / SCHEMA_PATH
    return yaml.safe_load(path.read_text())


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


def check_params(
    params: dict[str, Any], schema: dict[str, Any], source: str = "params.yaml"
) -> None:
    """Validate against the schema, then what it cannot say; raise ParamsError naming the keys."""
    errors = schema_errors(params, schema)
    if not errors:
        errors += _cross_errors(params)
    if not errors:
        for name, preset in params["presets"].items():
            own = _preset_errors(params, name, preset)
            if not own:  # then the preset merged over the base must pass every check too
                merged = deep_merge(params, preset)
                within = schema_errors(merged, schema) or _cross_errors(merged)
                own = [f"presets.{name} -> {message}" for message in within]
            errors += own
    if errors:
        raise ParamsError(f"{source} is invalid:\n  " + "\n  ".join(errors))


def _preset_errors(params: dict[str, Any], name: str, preset: dict[str, Any]) -> list[str]:
    """A preset lists exactly the defined datasets and models, and keeps sources and kinds.

    Every job tracks its own preset entry (dvc.yaml); DVC fails on a tracked key that is
    missing, so the entries must all be there, `{}` where the preset changes nothing."""
    errors = []
    for defs in ("dataset_defs", "model_defs"):
        listed, defined = preset[defs], params[defs]
        missing = sorted(entry for entry in defined if entry not in listed)
        if missing:
            errors.append(
                f"presets.{name}.{defs}: {missing} missing; every preset lists every entry of "
                f"{defs} ({{}} for no change), so that each job can track its own"
            )
        errors += [
            f"presets.{name}.{defs}.{entry}: not defined under {defs} ({sorted(defined)})"
            for entry in listed
            if entry not in defined
        ]
    for dataset, override in preset["dataset_defs"].items():
        errors += [
            f"presets.{name}.dataset_defs.{dataset}.{key}: a preset may not change {what}"
            for key, what in (("source", "where data comes from"), ("kind", "a dataset's kind"))
            if key in override
        ]
    return errors


def _cross_errors(params: dict[str, Any]) -> list[str]:
    errors = []
    for key, defs in (("datasets", "dataset_defs"), ("models", "model_defs")):
        for name in params[key]:
            if name not in params[defs]:
                known = sorted(params[defs])
                errors.append(f"{key}: '{name}' is not defined under {defs} ({known})")
    if params["preset"] not in params["presets"]:
        errors.append(f"preset: '{params['preset']}' is not one of {sorted(params['presets'])}")
    for name, spec in params["dataset_defs"].items():
        split = spec["split"]
        if spec["kind"] == "em":
            for part, (start, stop) in split.items():
                if stop <= start:
                    errors.append(f"dataset_defs.{name}.split.{part}: [{start}, {stop}] is empty")
        elif abs(sum(split.values()) - 1.0) > 1e-6:
            shown = " + ".join(f"{part} {value:g}" for part, value in split.items())
            errors.append(
                f"dataset_defs.{name}.split: {shown} = {sum(split.values()):g}; "
                "expected the fractions to sum to 1"
            )
        errors += _augment_errors(name, spec["augment"])
        source = spec["source"]
        if source["type"] == "synthetic":
            needed = (
                ("n_train", "n_test", "size")
                if spec["kind"] == "em"
                else ("n_images", "n_unmasked", "size")
            )
            errors += [
                f"dataset_defs.{name}.source.{key}: required for a synthetic {spec['kind']} dataset"
                for key in needed
                if key not in source
            ]
    return errors


def _augment_errors(name: str, augment: dict[str, Any]) -> list[str]:
    """The augment stage's own constraints: the shift comes out of the mirror padding, and
    the gamma and contrast ranges run from low to high."""
    key = f"dataset_defs.{name}.augment"
    errors = []
    if augment["shift_px"] > augment["pad_px"]:
        errors.append(
            f"{key}.shift_px: {augment['shift_px']} > pad_px {augment['pad_px']}; expected "
            "shift_px <= pad_px (the shift is taken from the mirror padding)"
        )
    for part in ("gamma", "contrast"):
        low, high = augment[part]
        if low > high:
            errors.append(f"{key}.{part}: [{low:g}, {high:g}]; expected [low, high], low <= high")
    return errors


def load_params(path: str | os.PathLike[str] = "params.yaml") -> dict[str, Any]:
    """Read and validate params.yaml; errors name the file and the key."""
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ParamsError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({exc})") from exc
    check_params(params, schema_for(path), source=str(path))
    return params
