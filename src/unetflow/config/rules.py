"""Every rule params.yaml must meet, checked once before any job runs: the schema, then the
rules across keys that a schema cannot say."""

from __future__ import annotations

from typing import Any

from unetflow.config.errors import ParamsError
from unetflow.config.geometry import output_size
from unetflow.config.presets import deep_merge
from unetflow.config.schema import schema_errors


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
    """A preset lists exactly the defined datasets and models, and keeps sources and kinds
    (the explain stage tracks the base kinds only).

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
    fixed = {
        "dataset_defs": (("source", "where data comes from"), ("kind", "a dataset's kind")),
        "model_defs": (("kind", "a model's kind"),),
    }
    for defs, keys in fixed.items():
        for entry, override in preset[defs].items():
            base = params[defs].get(entry, {})
            errors += [
                f"presets.{name}.{defs}.{entry}.{key}: a preset may not change {what}"
                for key, what in keys
                if key in (override or {}) and override[key] != base.get(key)
            ]
    return errors


def _cross_errors(params: dict[str, Any]) -> list[str]:
    errors = []
    for key, defs in (("datasets", "dataset_defs"), ("models", "model_defs")):
        for name in params[key]:
            if name not in params[defs]:
                known = sorted(params[defs])
                errors.append(f"{key}: '{name}' is not defined under {defs} ({known})")
    errors += _replicate_errors(params) + _noise_study_errors(params)
    if params["preset"] not in params["presets"]:
        errors.append(f"preset: '{params['preset']}' is not one of {sorted(params['presets'])}")
    for name, model in params["model_defs"].items():
        errors += _model_errors(name, model)
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
        errors += _intensity_errors(name, spec)
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


def _model_errors(name: str, model: dict[str, Any]) -> list[str]:
    """A U-Net's tile must fit its depth and padding (every max-pool sees an even size; `image`
    is checked against the images when training starts), and Nesterov momentum needs a
    momentum."""
    if model["kind"] != "unet":
        return []
    errors = []
    if model["tile"] == "image":
        if model["padding"] != "same":
            errors.append(
                f"model_defs.{name}.tile: 'image' (the whole processed image as the tile) "
                "needs padding: same; a valid-padding U-Net needs a number such as 572"
            )
    else:
        try:
            output_size(model["tile"], model["depth"], model["padding"])
        except ValueError as exc:
            errors.append(f"model_defs.{name}.tile: {exc}")
    train = model["train"]
    if train["optimizer"] == "sgd" and train["nesterov"] and train["momentum"] <= 0:
        errors.append(f"model_defs.{name}.train.nesterov: true needs momentum > 0")
    return errors


def _intensity_errors(name: str, spec: dict[str, Any]) -> list[str]:
    """Normalisation choices and acquisition shifts are for chest X-rays, whose preprocessing
    writes the [0, 1] images they act on; their ranges run from low to high."""
    key = f"dataset_defs.{name}"
    errors = []
    if spec["kind"] != "cxr":
        for part, where in (("normalise", "preprocess"), ("window_pct", "preprocess")):
            if part in spec["preprocess"]:
                errors.append(f"{key}.{where}.{part}: only for kind cxr (EM sets use train_zscore)")
        if "acquisition" in spec["augment"]:
            errors.append(f"{key}.augment.acquisition: only for kind cxr")
    window = spec["preprocess"].get("window_pct")
    if window is not None and not window[0] < window[1]:
        errors.append(f"{key}.preprocess.window_pct: {window}; expected [low, high], low < high")
    for part, (low, high) in _ranges(spec["augment"].get("acquisition") or {}):
        if low > high:
            errors.append(
                f"{key}.augment.acquisition.{part}: [{low:g}, {high:g}]; expected low <= high"
            )
    return errors


def _ranges(acquisition: dict[str, Any]) -> list[tuple[str, list[float]]]:
    return [(k, v) for k, v in acquisition.items() if isinstance(v, list)]


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


def _replicate_errors(params: dict[str, Any]) -> list[str]:
    """Folds and seeds come together, and each fold exists in every selected dataset."""
    folds, seeds = params["folds"], params["seeds"]
    if bool(folds) != bool(seeds):
        return ["folds, seeds: give both (each fold x seed is a run) or neither"]
    errors = []
    for name in params["datasets"]:
        k = params["dataset_defs"].get(name, {}).get("folds")
        bad = [f for f in folds if k is not None and f >= k]
        if bad:
            errors.append(f"folds: {bad} not folds of {name} (dataset_defs.{name}.folds = {k})")
    return errors


def _noise_study_errors(params: dict[str, Any]) -> list[str]:
    """A study on noise_datasets (selected datasets) needs families, levels and seeds, and
    each of its datasets defines each family with each level. Without noise_datasets the
    others are not used (so a command line can switch the study off with that key alone)."""
    if not params["noise_datasets"]:
        return []
    empty = [key for key in ("noise_families", "noise_levels", "noise_seeds") if not params[key]]
    if empty:
        return [f"{', '.join(empty)}: empty; the study on noise_datasets needs each"]
    errors = [
        f"noise_datasets: '{name}' is not among the selected datasets {params['datasets']}"
        for name in params["noise_datasets"]
        if name not in params["datasets"]
    ]
    for name in params["noise_datasets"]:
        noise = params["dataset_defs"].get(name, {}).get("noise")
        for family in params["noise_families"]:
            levels = (noise or {}).get(family)
            levels = levels["levels"] if isinstance(levels, dict) else levels
            if levels is None:
                errors.append(
                    f"noise_families: '{family}' is not defined under dataset_defs.{name}.noise"
                )
                continue
            bad = [level for level in params["noise_levels"] if level > len(levels)]
            if bad:
                errors.append(
                    f"noise_levels: {bad} beyond the {len(levels)} levels of "
                    f"dataset_defs.{name}.noise.{family}"
                )
    return errors
