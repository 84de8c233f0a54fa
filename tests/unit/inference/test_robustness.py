"""Per-image normalisation and acquisition-shift augmentation, end to end through model.pt:
the record travels with the model, infer and `unetflow predict` apply it, and it pays off on
exposure-shifted images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from project import ROOT
from unetflow.data.augment import augment_dataset
from unetflow.data.cxr import preprocess_cxr
from unetflow.data.synthetic import generate_synth_cxr
from unetflow.evaluation import metrics as m
from unetflow.inference.infer import infer_dataset
from unetflow.inference.predict import predict_files
from unetflow.io.images import read_gray, unit_intensities, write_png
from unetflow.io.processed import read_split
from unetflow.model.checkpoint import load_model
from unetflow.training.trainer import train

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
SHENZHEN = PARAMS["dataset_defs"]["shenzhen"]
INFER = {**PARAMS["infer"], "tta": False}
UNET = PARAMS["model_defs"]["unet_modern"]
RECIPE = {**UNET["train"], "batch_size": 4, "epochs": 6, "steps_per_epoch": 15, "lr": 0.005}
MODEL = {**UNET, "width": 8, "depth": 3, "tile": 64, "train": RECIPE}
RUN = {**PARAMS["train"], "device": "cpu", "amp": "none", "channels_last": False, "threads": 1}
VARIANTS = {  # (preprocess.normalise, acquisition shifts in augment)
    "plain": ("train_zscore", False),
    "robust": ("image_window", True),
}
EXPOSURE = 0.6  # the shift test's darker exposure


def dataset_cfg(normalise: str, acquisition: bool) -> dict:
    augment = {**SHENZHEN["augment"], "copies": 2, "pad_px": 16, "shift_px": 8}
    if not acquisition:
        augment.pop("acquisition")
    preprocess = {**SHENZHEN["preprocess"], "size": 64, "score_size": 128, "normalise": normalise}
    return {**SHENZHEN, "preprocess": preprocess, "augment": augment}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """synth_cxr at 128 px, trained at 64 px once per variant; the test images as PNGs, clean
    and under the darker exposure."""
    root = tmp_path_factory.mktemp("robustness")
    raw = root / "raw"
    raw.mkdir()
    generate_synth_cxr(raw, n_images=40, n_unmasked=0, size=128, seed=11)
    runs: dict[str, dict[str, Path]] = {}
    for name, (normalise, acquisition) in VARIANTS.items():
        cfg, out = dataset_cfg(normalise, acquisition), root / name
        preprocess_cxr(raw, out / "processed", cfg, seed=3)
        augment_dataset(
            out / "processed", out / "augmented", cfg["augment"], example_pairs=0, seed=3
        )
        train(
            dataset="synth_cxr",
            dataset_cfg=cfg,
            processed=out / "processed",
            augmented=out / "augmented",
            model_name="unet_modern",
            model_cfg=MODEL,
            train_cfg=RUN,
            infer_cfg=INFER,
            seed=3,
            model_out=out / "model.pt",
            live_dir=out / "dvclive",
            checkpoint_dir=out / "checkpoints",
        )
        runs[name] = {"processed": out / "processed", "model": out / "model.pt", "root": out}
    table = read_split(runs["plain"]["processed"])
    test = list(table.loc[table["split"] == "test", "id"])
    for folder, factor in (("clean", 1.0), ("dark", EXPOSURE)):
        (root / folder).mkdir()
        for sid in test:
            path = raw / "CXR_png" / f"{sid}.png"
            unit = unit_intensities(read_gray(path), path)
            write_png(root / folder / f"{sid}.png", np.round(unit * factor * 255).astype(np.uint8))
    return {"runs": runs, "root": root, "test": test, "raw": raw}  # type: ignore[return-value]


def predicted_dice(setup: dict, name: str, folder: str) -> float:
    """Mean Dice of `unetflow predict` with the model of variant `name` on the test PNGs of
    `folder`, against the raw masks (128 px, the inputs' own size)."""
    out = setup["root"] / f"predict_{name}_{folder}"
    predict_files(
        model_path=setup["runs"][name]["model"],
        inputs=[setup["root"] / folder],
        output=out,
        device="cpu",
    )
    scores = []
    for sid in setup["test"]:
        truth = read_gray(setup["raw"] / "masks" / f"{sid}_mask.png") >= 128
        scores.append(m.dice(read_gray(out / "masks" / f"{sid}.png") > 0, truth))
    return float(np.mean(scores))


def test_the_normalisation_travels_in_model_pt_and_infer_and_predict_apply_it(runs):
    for name, (normalise, _) in VARIANTS.items():
        run = runs["runs"][name]
        _, meta = load_model(run["model"])
        stats = yaml.safe_load((run["processed"] / "stats.json").read_text())
        assert meta["normalisation"] == stats["normalisation"]
        assert meta["normalisation"]["method"] == normalise
        # predict on the raw PNGs sees what infer saw on the processed images
        infer_dataset(
            checkpoint=run["model"],
            processed=run["processed"],
            out=run["root"] / "infer",
            infer_cfg=INFER,
            device="cpu",
        )
        predict_files(
            model_path=run["model"],
            inputs=[runs["root"] / "clean"],
            output=run["root"] / "p",
            device="cpu",
        )
        for sid in runs["test"]:
            inferred = read_gray(run["root"] / "infer" / "masks" / f"{sid}.png") > 0
            predicted = read_gray(run["root"] / "p" / "masks" / f"{sid}.png") > 0
            assert m.dice(inferred, predicted) > 0.995, (name, sid)


def test_per_image_normalisation_and_shift_augmentation_survive_a_darker_exposure(runs):
    dice = {
        (name, folder): predicted_dice(runs, name, folder)
        for name in VARIANTS
        for folder in ("clean", "dark")
    }
    assert dice["robust", "clean"] > 0.9 and dice["plain", "clean"] > 0.9, dice  # both learned
    assert dice["robust", "dark"] >= dice["plain", "dark"] + 0.05, dice
