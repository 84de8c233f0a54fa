"""The resume checkpoint of a U-Net run: ``<checkpoint_dir>/last.pt``.

Every ``checkpoint_every`` epochs ``last.pt`` is written atomically with the weights,
optimizer, schedule, scaler, best weights, logged history and torch RNG states, and a
fingerprint of the configuration (without the keys that only change speed: workers, threads,
checkpoint_every), the seed and the data files with their sizes. A new run with the same
fingerprint continues after the saved epoch, having re-logged the history into a fresh
DVCLive folder; on CPU its final weights equal an uninterrupted run's. A checkpoint that does
not match is ignored, with a warning, and the run starts fresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from unetflow.model.checkpoint import CheckpointError, atomic_torch_save, read_checkpoint
from unetflow.training.schedules import LrSchedule

log = logging.getLogger(__name__)

LAST = "last.pt"
CHECKPOINT_FORMAT = 2  # 2: the schedule is its torch scheduler's state_dict


def _no_best() -> dict[str, Any]:
    return {"value": None, "epoch": -1, "state_dict": None, "metrics": {}}


@dataclass
class Progress:
    """How far a run has come, across resumes: what the checkpoint keeps besides the weights,
    optimizer, schedule and RNG states."""

    epochs: int = 0  # epochs done; a resumed run goes on with this (0-based) epoch
    history: list[dict[str, Any]] = field(default_factory=list)  # {step, metrics} per epoch
    best: dict[str, Any] = field(default_factory=_no_best)  # value, epoch, state_dict, metrics
    since_best: int = 0
    seconds: float = 0.0  # spent by the runs before this one
    images: int = 0  # trained on, by this run and the ones before
    resumed_after: int | None = None
    stopped_early: bool = False


def fingerprint(configs: dict[str, Any], seed: int, files: list[tuple[str, int]]) -> str:
    """sha256 of the configs, the seed and the data files with their sizes."""
    blob = json.dumps(
        {"configs": configs, "seed": seed, "files": sorted(files)}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def cpu_copy(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A detached CPU copy of a state dict (the best weights must not follow training)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def read_resume(path: Path, expected: str, model_state: dict[str, Tensor]) -> dict | None:
    """The resume checkpoint at `path` when it exists and matches; None (and why) otherwise.

    A match needs the same fingerprint and weights that fit the model (the model code may
    have changed since the checkpoint was written).
    """
    if not path.is_file():
        return None
    try:
        state = read_checkpoint(path)
    except CheckpointError as exc:
        log.warning("train: ignoring %s: %s; starting fresh", path, exc)
        return None
    if state.get("format") != CHECKPOINT_FORMAT or state.get("fingerprint") != expected:
        log.warning(
            "train: %s was written for other settings or data (fingerprint differs); "
            "starting fresh",
            path,
        )
        return None
    saved = state.get("model")
    if not isinstance(saved, dict) or {k: tuple(v.shape) for k, v in saved.items()} != {
        k: tuple(v.shape) for k, v in model_state.items()
    }:
        log.warning("train: %s holds weights of another architecture; starting fresh", path)
        return None
    return state


def restore(
    state: dict[str, Any],
    *,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    schedule: LrSchedule,
    device: torch.device,
) -> Progress:
    """Load a matching checkpoint's weights, optimizer, scaler, schedule and torch RNG states;
    its progress."""
    net.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    schedule.load_state_dict(state["schedule"])
    progress = Progress(
        epochs=int(state["epoch"]),
        history=list(state["history"]),
        best=dict(state["best"]),
        since_best=int(state["since_best"]),
        seconds=float(state["seconds"]),
        images=int(state["images"]),
        resumed_after=int(state["epoch"]),
    )
    torch.set_rng_state(state["rng"]["torch"])
    if device.type == "cuda" and state["rng"]["cuda"]:
        torch.cuda.set_rng_state_all(list(state["rng"]["cuda"]))
    return progress


def write_resume(
    path: Path,
    *,
    fingerprint: str,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    schedule: LrSchedule,
    progress: Progress,
    started: float,
    device: torch.device,
) -> None:
    """Write what `restore` reads back, after `progress.epochs` epochs, atomically (a kill
    leaves the previous checkpoint or this one); `started` is this run's perf_counter start."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "fingerprint": fingerprint,
        "epoch": progress.epochs,
        "model": cpu_copy(net.state_dict()),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "schedule": schedule.state_dict(),
        "best": progress.best,
        "since_best": progress.since_best,
        "history": progress.history,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        },
        "seconds": progress.seconds + time.perf_counter() - started,
        "images": progress.images,
    }
    atomic_torch_save(state, path)
