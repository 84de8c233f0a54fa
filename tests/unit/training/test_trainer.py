"""Training end to end on a tiny synth_em set: real steps, determinism, the NaN guard, the
choice of the best weights, pos_weight, weight maps, early stopping, the mean-mask baseline
and the paper's geometry. Resume is in test_resume.py."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from unetflow.data.em import preprocess_em
from unetflow.data.synthetic import generate_synth_em
from unetflow.evaluation.metrics import dice, iou
from unetflow.inference.tiling import predict_probability
from unetflow.io.images import ImageError, read_float_tiff, read_gray, write_float_tiff
from unetflow.model.checkpoint import load_model
from unetflow.model.unet import MeanMask, UNet
from unetflow.training.errors import TrainingError
from unetflow.training.trainer import train


def test_training_lowers_loss_and_writes_best_model(
    em, tmp_path, capsys, logs, run_kwargs, tsv, infer_cfg
):
    out = tmp_path / "run"
    summary = train(**run_kwargs(em, out))

    loss = [float(v) for _, v in tsv(out / "dvclive", "train/loss")[1:]]
    assert len(loss) == 3
    assert loss[-1] < 0.8 * loss[0]
    assert [row[0] for row in tsv(out / "dvclive", "lr")] == ["step", "0", "1", "2"]
    lrs = [float(v) for _, v in tsv(out / "dvclive", "lr")[1:]]
    assert lrs[0] == pytest.approx(0.01) and lrs[0] > lrs[1] > lrs[2] > 0.0001  # cosine
    for name in ("val/loss", "val/dice", "val/iou", "img_per_s"):
        assert len(tsv(out / "dvclive", name)) == 4
    latest = json.loads((out / "dvclive" / "metrics.json").read_text())
    assert latest["step"] == 2
    assert latest["train"]["loss"] == pytest.approx(loss[-1])
    assert not (out / "checkpoints").exists()

    # model.pt: best weights by val dice, the model config, the normalisation of the data
    dices = [float(v) for _, v in tsv(out / "dvclive", "val/dice")[1:]]
    best = int(np.argmax(dices))
    assert summary["best_epoch"] == best + 1
    assert summary["val_dice"] == pytest.approx(dices[best]) == summary["best_value"]
    model, meta = load_model(out / "model.pt")
    stats = json.loads((em["processed"] / "stats.json").read_text())
    assert meta["normalisation"] == {
        "method": "train_zscore",
        "mean": stats["mean"],
        "std": stats["std"],
    }
    assert meta["tile"] == 32 and meta["model"]["out_channels"] == 2
    assert meta["model"]["width"] == 4 and meta["dataset"]["kind"] == "em"
    assert meta["train"]["epochs"] == 3 and meta["train"]["device"] == "cpu"
    assert isinstance(model, UNet) and not model.training

    # the saved weights reproduce the best epoch's validation dice exactly
    val_dice = []
    for sid in ("slice_05", "slice_06"):
        image = read_float_tiff(em["processed"] / "images" / f"{sid}.tif")
        truth = read_gray(em["processed"] / "masks" / f"{sid}.png")
        kwargs = {k: v for k, v in infer_cfg.items() if k != "threshold"}
        prob = predict_probability(model, image, tile=32, device="cpu", **kwargs)
        val_dice.append(dice(prob > 0.5, truth))
    assert np.mean(val_dice) == pytest.approx(dices[best], abs=1e-12)

    # one progress line per epoch, then the summary line, on stdout
    printed = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[1] for line in printed[:3]] == [f" epoch {e}/3" for e in (1, 2, 3)]
    assert printed[0].startswith("train synth_em/tiny: epoch 1/3: train/loss ")
    assert printed[-1].startswith("train synth_em/tiny: 3 epochs, best val dice")
    assert "img/s" in printed[-1] and printed[-1].endswith("device cpu")


def test_same_seed_same_weights_whatever_the_workers(em, tmp_path, run_kwargs, same_weights, tsv):
    short = {"epochs": 2, "steps_per_epoch": 2}
    train(**run_kwargs(em, tmp_path / "a", **short))
    train(**run_kwargs(em, tmp_path / "b", workers=2, **short))
    train(**run_kwargs(em, tmp_path / "c", seed=4, **short))
    assert same_weights(tmp_path / "a" / "model.pt", tmp_path / "b" / "model.pt")
    assert not same_weights(tmp_path / "a" / "model.pt", tmp_path / "c" / "model.pt")
    assert tsv(tmp_path / "a" / "dvclive", "train/loss") == tsv(
        tmp_path / "b" / "dvclive", "train/loss"
    )


def test_non_finite_loss_names_the_step_and_writes_no_model(em, tmp_path, run_kwargs):
    out = tmp_path / "run"
    recipe = {
        "optimizer": "sgd",
        "lr": 1e30,
        "momentum": 0.0,
        "norm": "none",
        "schedule": "constant",
    }
    with pytest.raises(
        TrainingError, match=r"non-finite loss \((nan|inf)\) at step (\d+) "
    ) as info:
        train(**run_kwargs(em, out, **recipe))
    step = int(info.value.args[0].split(" at step ")[1].split()[0])
    assert step >= 2  # the first step computes a finite loss, then the update explodes
    assert f"(epoch {(step - 1) // 3 + 1}, iteration {(step - 1) % 3 + 1})" in str(info.value)
    assert not (out / "model.pt").exists()


def test_poisoned_image_is_named(em, tmp_path, run_kwargs):
    processed = tmp_path / "processed"
    shutil.copytree(em["processed"], processed)
    image = read_float_tiff(processed / "images" / "slice_02.tif")
    image[3, 4] = np.inf
    write_float_tiff(processed / "images" / "slice_02.tif", image)
    kwargs = {**run_kwargs(em, tmp_path / "run"), "processed": processed}
    with pytest.raises(ImageError, match=r"slice_02\.tif: contains NaN or inf"):
        train(**kwargs)
    assert not (tmp_path / "run" / "model.pt").exists()


def test_bce_with_auto_pos_weight_has_one_output_channel(em, tmp_path, run_kwargs):
    out = tmp_path / "run"
    one = {"epochs": 1, "steps_per_epoch": 1}
    summary = train(**run_kwargs(em, out, loss="bce", pos_weight="auto", **one))
    masks = [read_gray(p) for p in sorted((em["processed"] / "masks").glob("slice_0[0-4].png"))]
    # the copies of the train slices (augment copies every labelled slice)
    masks += [read_gray(p) for p in sorted((em["augmented"] / "masks").glob("slice_0[0-4]_*.png"))]
    assert len(masks) == summary["train_images"] == 10
    fg = sum(int(m.sum()) for m in masks)
    assert summary["pos_weight"] == pytest.approx((64 * 64 * 10 - fg) / fg, rel=1e-6)
    _, meta = load_model(out / "model.pt")
    assert meta["model"]["out_channels"] == 1


def test_weight_maps_are_used_only_when_every_pair_has_one(em, tmp_path, run_kwargs):
    processed = tmp_path / "processed"
    shutil.copytree(em["processed"], processed)
    (processed / "weights").mkdir()
    for i in range(5):
        write_float_tiff(processed / "weights" / f"slice_{i:02d}.tif", np.ones((64, 64)))
    kwargs = {**run_kwargs(em, tmp_path / "run", epochs=1, steps_per_epoch=1, loss="ce")}
    summary = train(**{**kwargs, "processed": processed, "augmented": None})
    assert summary["weight_maps"] and summary["train_images"] == 5
    off = run_kwargs(em, tmp_path / "off", epochs=1, steps_per_epoch=1, loss="ce", weight_map=False)
    unweighted = train(**{**off, "processed": processed, "augmented": None})
    assert not unweighted["weight_maps"]  # the recipe says no (unet_modern, unet_delft, ...)
    with pytest.raises(TrainingError, match=r"augmented/weights/slice_00_aug00\.tif: missing"):
        train(**{**kwargs, "processed": processed})  # the augmented copies have none


def test_early_stop_when_validation_stops_improving(em, tmp_path, capsys, logs, run_kwargs, tsv):
    # lr 0, no batch norm, no dropout: the weights never change, so epoch 1 stays the best
    out = tmp_path / "run"
    recipe = {"lr": 0.0, "min_lr": 0.0, "norm": "none", "dropout": 0.0, "early_stop": 2}
    summary = train(**run_kwargs(em, out, **{**recipe, "epochs": 5, "steps_per_epoch": 1}))
    assert summary["epochs"] == 3 and summary["stopped_early"] and summary["best_epoch"] == 1
    assert len(tsv(out / "dvclive", "val/dice")) == 1 + 3
    assert "train synth_em/tiny: early stop after epoch 3: no better val dice since epoch 1\n" in (
        capsys.readouterr().out
    )


def test_mean_mask_baseline(em, tmp_path, run_kwargs, tsv):
    out = tmp_path / "run"
    kwargs = run_kwargs(em, out)
    kwargs["model_cfg"] = {"kind": "mean_mask"}
    summary = train(**kwargs)

    model, meta = load_model(out / "model.pt")
    assert isinstance(model, MeanMask) and meta["mean_mask_shape"] == [64, 64]
    masks = [read_gray(em["processed"] / "masks" / f"slice_{i:02d}.png") for i in range(5)]
    expected = np.mean(masks, axis=0)
    assert np.allclose(model.mean_mask.numpy(), expected, atol=1e-6)
    truth = [read_gray(em["processed"] / "masks" / f"slice_{i:02d}.png") for i in (5, 6)]
    pred = expected > 0.5
    assert summary["val_dice"] == pytest.approx(np.mean([dice(pred, t) for t in truth]))
    assert summary["val_iou"] == pytest.approx(np.mean([iou(pred, t) for t in truth]))
    assert summary["epochs"] == 0
    assert [r[0] for r in tsv(out / "dvclive", "val/dice")] == ["step", "0"]


def test_metrics_conventions():
    a = np.array([[1, 1, 0, 0]], bool)
    b = np.array([[1, 0, 1, 0]], bool)
    assert dice(a, b) == pytest.approx(0.5) and iou(a, b) == pytest.approx(1 / 3)
    empty = np.zeros((2, 2), bool)
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0
    assert dice(empty, ~empty) == 0.0 and iou(~empty, empty) == 0.0
    with pytest.raises(ValueError, match="differs from truth shape"):
        dice(a, empty)


def test_paper_geometry_step_with_border_weight_maps(tmp_path, run_kwargs, recipe):
    """One SGD step of the paper's setup: valid convolutions, a 572 px tile with a 388 px
    output, batch 1, weighted cross-entropy over the border weight maps of preprocess."""
    (tmp_path / "raw").mkdir()
    generate_synth_em(tmp_path / "raw", n_train=4, n_test=1, size=64, seed=2)
    weight_cfg = {"w0": 10.0, "sigma": 5.0, "where": "all"}
    split = {"train": [0, 2], "val": [2, 3], "test": [3, 4]}
    dataset_cfg = {"kind": "em", "preprocess": {"weight_map": weight_cfg}, "split": split}
    preprocess_em(tmp_path / "raw", tmp_path / "processed", dataset_cfg)
    recipe.update(loss="ce", optimizer="sgd", momentum=0.99, lr=0.001)
    recipe.update(batch_size=1, epochs=1, steps_per_epoch=1, weight_map=True)
    model = {"kind": "unet", "padding": "valid", "width": 2, "depth": 4, "norm": "none"}
    model.update(up="transposed", dropout=0.5, init="he", tile=572, train=recipe)
    out = tmp_path / "run"
    summary = train(
        **{
            **run_kwargs({"processed": tmp_path / "processed", "augmented": None}, out),
            "dataset_cfg": dataset_cfg,
            "model_cfg": model,
            "augmented": None,
        }
    )
    assert summary["weight_maps"] and math.isfinite(summary["val_loss"])
    net, meta = load_model(out / "model.pt")
    assert meta["tile"] == 572 and net.output_size(572) == 388


def test_tile_image_trains_on_whole_processed_images(em, tmp_path, run_kwargs) -> None:
    out = tmp_path / "whole"
    train(**run_kwargs(em, out, tile="image", epochs=1, steps_per_epoch=2))
    _, meta = load_model(out / "model.pt")
    assert meta["tile"] == 64  # the processed slices' side: inference uses the same tile


def test_tile_image_that_the_network_cannot_take_names_the_key(em, tmp_path, run_kwargs) -> None:
    kwargs = run_kwargs(em, tmp_path / "deep", tile="image", epochs=1, steps_per_epoch=1)
    kwargs["model_cfg"]["depth"] = 7  # 64 px halves to 0.5 px at level 7
    with pytest.raises(TrainingError, match=r"model_defs\.tiny\.tile: image means a 64 px tile"):
        train(**kwargs)
    assert not (tmp_path / "deep" / "model.pt").exists()
