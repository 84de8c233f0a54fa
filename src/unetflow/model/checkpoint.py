"""The model.pt format: weights plus everything needed to rebuild and apply the model.

A checkpoint is a plain dict of primitives and tensors, so it loads with
``torch.load(..., weights_only=True)`` (no pickled code is ever executed):

- ``format``: 1
- ``state_dict``: the weights (contiguous CPU tensors)
- ``model``: the resolved ``model_defs`` entry plus ``out_channels`` (and ``name``)
- ``dataset``: ``{"name", "kind", "preprocess"}``, to prepare new images like the training data
- ``normalisation``: how images were normalised for the model, the record of
  :mod:`unetflow.data.intensity` (``{"method": "train_zscore", "mean", "std"}`` or
  ``{"method": "image_window", "window_pct"}``; without ``method``: a train z-score)
- ``tile``: the input tile size of training and inference
- ``train``: the training summary (epochs run, best metric, seconds, device, ...)
- ``mean_mask_shape``: ``[H, W]``, for the mean-mask baseline only
"""

from __future__ import annotations

import numbers
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unetflow.io.outputs import atomic_file
from unetflow.model.unet import MeanMask, build_model

FORMAT = 1
REQUIRED_KEYS = ("format", "state_dict", "model", "normalisation", "tile")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what was expected."""


def save_model(path: str | os.PathLike[str], model: nn.Module, meta: dict[str, Any]) -> None:
    """Write `model`'s weights and `meta` to `path` atomically (temp file, then os.replace).

    `meta` holds the keys of the module docstring other than ``format`` and ``state_dict``;
    only primitives (dict, list, str, int, float, bool, None) and tensors may appear in it.
    """
    path = Path(path)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    payload = {**plain(meta, "meta"), "format": FORMAT, "state_dict": state}
    atomic_torch_save(payload, path)


def plain(value: Any, key: str) -> Any:
    """`value` as the plain types weights_only loading accepts (dict, list, str, int, float,
    bool, None, tensor): str/number subclasses, numpy scalars, paths and tuples are converted,
    anything else is a CheckpointError naming `key`."""
    if value is None or isinstance(value, bool | torch.Tensor):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, dict):
        return {str(k): plain(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str | os.PathLike):
        return str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise CheckpointError(
        f"{key}: {type(value).__name__} cannot go into a checkpoint; expected plain data"
    )


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save `obj` to `path` atomically."""
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


def read_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> dict:
    """torch.load with ``weights_only=True``; a failure is a CheckpointError naming `path`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; expected a model checkpoint (.pt)")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: cannot read: not a torch checkpoint (zip archive)")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused: not a plain weights file (it holds pickled code or objects that "
            f"weights_only loading does not allow: {_unpickler_reason(exc)})"
        ) from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read as a torch checkpoint ({exc})") from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(payload).__name__}")
    return payload


def _unpickler_reason(exc: Exception) -> str:
    """The line of torch's long weights_only message that says what was refused (never its
    advice to retry with weights_only=False)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip().split(". ")[0]
    for line in lines:
        if "GLOBAL" in line:  # a blocked module: "... unsupported GLOBAL posix.system whose ..."
            return line.rstrip(".")
    reasons = [line for line in lines if "weights_only" not in line]
    return reasons[0] if reasons else type(exc).__name__


def load_model(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved at `path` on `device` in eval mode; return it and its metadata.

    The metadata is the checkpoint without ``state_dict``. Weights that do not fit the
    architecture the metadata describes raise a CheckpointError listing the mismatches.
    """
    path = Path(path)
    payload = read_checkpoint(path, "cpu")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(
            f"{path}: missing key(s) {missing}; expected a model.pt written by unetflow training"
        )
    if payload["format"] != FORMAT:
        raise CheckpointError(
            f"{path}: format {payload['format']!r} is not supported; expected {FORMAT}"
        )
    state = payload["state_dict"]
    meta = {key: value for key, value in payload.items() if key != "state_dict"}
    model = _rebuild(path, meta)
    _check_fit(path, model, state)
    model.load_state_dict(state)
    return model.to(device).eval(), meta


def _rebuild(path: Path, meta: dict[str, Any]) -> nn.Module:
    """An untrained model of the architecture `meta` describes."""
    cfg = meta["model"]
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: 'model' must be a dict (a model_defs entry)")
    kind = cfg.get("kind")
    if kind == "mean_mask":
        shape = meta.get("mean_mask_shape")
        if not (isinstance(shape, list | tuple) and len(shape) == 2):
            raise CheckpointError(f"{path}: mean_mask model without 'mean_mask_shape' [H, W]")
        return MeanMask(torch.zeros(int(shape[0]), int(shape[1])))
    if "out_channels" not in cfg:
        raise CheckpointError(f"{path}: 'model' has no 'out_channels'")
    try:
        return build_model(cfg, int(cfg["out_channels"]))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot build the model it describes ({exc})") from exc


def _check_fit(path: Path, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Raise a CheckpointError naming missing, unexpected and mis-shaped weights."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: 'state_dict' must be a dict of tensors")
    expected = model.state_dict()
    problems = []
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    shapes = [
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if key in state and tuple(state[key].shape) != tuple(expected[key].shape)
    ]
    if missing:
        problems.append(f"missing {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected {_some(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch {_some(shapes)}")
    if problems:
        raise CheckpointError(
            f"{path}: the weights do not fit the architecture in its metadata "
            f"({'; '.join(problems)}); the checkpoint has {len(state)} tensors, the model "
            f"expects {len(expected)} (was the file written for another architecture?)"
        )


def _some(items: list[str], limit: int = 5) -> str:
    """The first `limit` items and how many more there are."""
    shown = ", ".join(items[:limit])
    more = len(items) - limit
    return f"{shown} (+{more} more)" if more > 0 else shown
