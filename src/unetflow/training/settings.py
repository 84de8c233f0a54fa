"""The settings of a train job, as the config layer (`unetflow.config`) checked them.

Every job has run settings (the `train` and `infer` sections: device, AMP, threads, ...); a
U-Net job has its recipe too (`model_defs.<model>.train`: loss, optimizer, schedule, ...).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from unetflow.inference.infer import infer_settings

# `train` keys that change only how fast a run goes, not what it computes: left out of the
# resume fingerprint, so a run may resume with other values.
SPEED_ONLY_KEYS = ("workers", "threads", "checkpoint_every")


@dataclass(frozen=True)
class RunSettings:
    """How a train job runs, whatever the model: the `train` and `infer` sections."""

    device: str
    amp: str
    channels_last: bool
    compile: bool
    cudnn_benchmark: bool
    workers: int
    threads: int
    checkpoint_every: int
    infer: dict[str, Any]
    threshold: float


@dataclass(frozen=True)
class Settings(RunSettings):
    """A U-Net's run settings and its recipe (`model_defs.<model>.train`)."""

    loss: str
    pos_weight: str
    optimizer: str
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    schedule: str
    plateau_factor: float
    plateau_patience: int
    min_lr: float
    poly_power: float
    batch_size: int
    epochs: int
    steps: int
    select: str
    early_stop: int
    flips: bool
    weight_map: bool


def _run_fields(train_cfg: dict, infer_cfg: dict) -> dict[str, Any]:
    """The fields of `RunSettings` from the `train` and `infer` sections (the `train` keys
    are exactly its first fields)."""
    threshold = float(infer_cfg["threshold"])
    return {**train_cfg, "infer": infer_settings(infer_cfg), "threshold": threshold}


def recipe_settings(model_cfg: dict, train_cfg: dict, infer_cfg: dict) -> Settings:
    """A U-Net's settings: its checked recipe with the run settings."""
    recipe = {**model_cfg["train"]}
    recipe["steps"] = recipe.pop("steps_per_epoch")
    return Settings(**_run_fields(train_cfg, infer_cfg), **recipe)


def settings_for(model_cfg: dict, train_cfg: dict, infer_cfg: dict) -> RunSettings:
    """The mean-mask baseline's run settings, or a U-Net's settings with its recipe."""
    if model_cfg["kind"] == "mean_mask":
        return RunSettings(**_run_fields(train_cfg, infer_cfg))
    return recipe_settings(model_cfg, train_cfg, infer_cfg)


@contextlib.contextmanager
def torch_settings(s: RunSettings, device: torch.device) -> Iterator[None]:
    """Thread count and cuDNN autotuning for the run; the previous values come back after."""
    threads, benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    if s.threads > 0:
        torch.set_num_threads(s.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = s.cudnn_benchmark
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = benchmark
