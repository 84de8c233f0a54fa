"""Shared fixtures of the training tests: a tiny synth_em set, a tiny U-Net's train() arguments,
the settings they use, readers of the outputs and logging as a stage job has it.

Every run uses a 4-channel, depth-2 U-Net on 32 px tiles of 64 px images, so a run takes
about a second; the data (8 labelled slices, 1 augmented copy each) are made once per session.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from project import ROOT
from unetflow.data.augment import augment_dataset
from unetflow.data.em import preprocess_em
from unetflow.data.synthetic import generate_synth_em
from unetflow.io.logs import LOGGER, configure_logging
from unetflow.training.settings import Settings, recipe_settings

AUGMENT = {
    "copies": 1,
    "pad_px": 8,
    "elastic_grid": 3,
    "elastic_sigma_px": 2.0,
    "rotation_deg": 180.0,
    "shift_px": 4,
    "flip": True,
    "gamma": [0.9, 1.1],
    "brightness": 0.05,
    "contrast": [0.9, 1.1],
    "noise_std": 0.01,
}
# Complete sections, as the config layer hands them to a stage: params.yaml's, then changed.
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
INFER = {**PARAMS["infer"], "blend": "gaussian", "tta": False, "batch_size": 4}
RECIPE = {
    **PARAMS["model_defs"]["unet_modern"]["train"],
    "loss": "dice_ce",
    "optimizer": "adam",
    "lr": 0.01,
    "weight_decay": 0.0,
    "schedule": "cosine",
    "min_lr": 0.0001,
    "batch_size": 4,
    "epochs": 3,
    "steps_per_epoch": 3,
    "select": "dice",
    "early_stop": 0,
    "flips": True,
    "weight_map": True,
}
RUN = {**PARAMS["train"], "device": "cpu", "amp": "none", "channels_last": False, "threads": 1}


@pytest.fixture(scope="session")
def em(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """synth_em at 64 px: slices 0-4 train, 5-6 val, 7 test, and 4 folds of 2 slices; one
    augmented copy per labelled slice."""
    root = tmp_path_factory.mktemp("synth_em")
    (root / "raw").mkdir()
    generate_synth_em(root / "raw", n_train=8, n_test=1, size=64, seed=1)
    split = {"train": [0, 5], "val": [5, 7], "test": [7, 8]}
    cfg = {"split": split, "folds": 4, "preprocess": {}}
    preprocess_em(root / "raw", root / "processed", cfg)
    augment_dataset(root / "processed", root / "augmented", AUGMENT, example_pairs=1, seed=1)
    return {"processed": root / "processed", "augmented": root / "augmented"}


@pytest.fixture
def infer_cfg() -> dict[str, Any]:
    """The `infer` section of the tests' runs (validation predicts with it)."""
    return dict(INFER)


@pytest.fixture
def recipe() -> dict[str, Any]:
    """The tests' U-Net recipe (`model_defs.<model>.train`), complete."""
    return dict(RECIPE)


def _model_cfg(**recipe: Any) -> dict[str, Any]:
    return {
        "kind": "unet",
        "padding": recipe.pop("padding", "same"),
        "width": 4,
        "depth": 2,
        "norm": recipe.pop("norm", "batch"),
        "up": "transposed",
        "dropout": recipe.pop("dropout", 0.1),
        "init": "he",
        "tile": recipe.pop("tile", 32),
        "train": {**RECIPE, **recipe},
    }


def _run_kwargs(
    em: dict[str, Path], out: Path, *, seed: int = 3, workers: int = 0, **recipe: Any
) -> dict[str, Any]:
    """Keyword arguments of train() for a run writing into `out`; `recipe` overrides the
    recipe, or the model's padding, norm, dropout and tile."""
    return {
        "dataset": "synth_em",
        "dataset_cfg": {"kind": "em", "preprocess": {}},
        "processed": em["processed"],
        "augmented": em["augmented"],
        "model_name": "tiny",
        "model_cfg": _model_cfg(**recipe),
        "train_cfg": {**RUN, "workers": workers, "checkpoint_every": 1},
        "infer_cfg": INFER,
        "seed": seed,
        "model_out": out / "model.pt",
        "live_dir": out / "dvclive",
        "checkpoint_dir": out / "checkpoints",
    }


@pytest.fixture
def run_kwargs() -> Callable[..., dict[str, Any]]:
    """`run_kwargs(em, out, *, seed=3, workers=0, **recipe)`: train()'s keyword arguments."""
    return _run_kwargs


@pytest.fixture
def unet_settings() -> Callable[..., Settings]:
    """`unet_settings(**recipe)`: the Settings of the tests' recipe with `recipe` changed."""
    return lambda **changes: recipe_settings({"train": {**RECIPE, **changes}}, RUN, INFER)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture
def same_weights() -> Callable[[Path, Path], bool]:
    """`same_weights(a, b)`: whether two model.pt files hold exactly the same weights."""

    def same(a: Path, b: Path) -> bool:
        wa, wb = _weights(a), _weights(b)
        return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)

    return same


@pytest.fixture
def tsv() -> Callable[[Path, str], list[list[str]]]:
    """`tsv(live_dir, name)`: the rows (header first) of a DVCLive metric's .tsv."""

    def rows(live: Path, name: str) -> list[list[str]]:
        text = (live / "plots" / "metrics" / f"{name}.tsv").read_text()
        return [line.split("\t") for line in text.splitlines()]

    return rows


@pytest.fixture
def logs() -> Iterator[None]:
    """Logging as run_stage configures it (info to stdout, `warning: ...` to stderr), undone
    after the test."""
    logger = logging.getLogger(LOGGER)
    saved = list(logger.handlers), logger.level, logger.propagate
    configure_logging()
    yield
    logger.handlers = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]
