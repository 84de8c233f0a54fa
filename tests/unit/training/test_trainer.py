"""Training: real steps on a tiny synth_em set, determinism, kill + resume, NaN guard, logging.

Every run uses a 4-channel, depth-2 U-Net on 32 px tiles of 64 px images, so a run takes
about a second; the data (8 labelled slices, 1 augmented copy each) are made once per module.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from project import ROOT
from unetflow.data.augment import augment_dataset
from unetflow.data.em import preprocess_em
from unetflow.data.synthetic import generate_synth_em
from unetflow.evaluation.metrics import dice, iou
from unetflow.io.images import ImageError, read_float_tiff, read_gray, write_float_tiff
from unetflow.model.checkpoint import load_model
from unetflow.model.unet import MeanMask, UNet
from unetflow.training.losses import loss_value, soft_dice_loss
from unetflow.training.trainer import (
    LiveLog,
    LrSchedule,
    TileBatches,
    TrainingError,
    _Pairs,
    _settings,
    dataset_allows_flips,
    train,
)

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


@pytest.fixture(scope="module")
def em(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """synth_em at 64 px: slices 0-4 train, 5-6 val, 7 test; one augmented copy per slice."""
    root = tmp_path_factory.mktemp("synth_em")
    (root / "raw").mkdir()
    generate_synth_em(root / "raw", n_train=8, n_test=1, size=64, seed=1)
    split = {"train": [0, 5], "val": [5, 7], "test": [7, 8]}
    preprocess_em(root / "raw", root / "processed", {"split": split, "preprocess": {}})
    augment_dataset(root / "processed", root / "augmented", AUGMENT, example_pairs=1, seed=1)
    return {"processed": root / "processed", "augmented": root / "augmented"}


def model_cfg(**recipe: Any) -> dict[str, Any]:
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


def run_kwargs(em: dict[str, Path], out: Path, *, seed: int = 3, workers: int = 0, **recipe):
    """Keyword arguments of train() for a run writing into `out`."""
    return {
        "dataset": "synth_em",
        "dataset_cfg": {"kind": "em", "preprocess": {}},
        "processed": em["processed"],
        "augmented": em["augmented"],
        "model_name": "tiny",
        "model_cfg": model_cfg(**recipe),
        "train_cfg": {**RUN, "workers": workers, "checkpoint_every": 1},
        "infer_cfg": INFER,
        "seed": seed,
        "model_out": out / "model.pt",
        "live_dir": out / "dvclive",
        "checkpoint_dir": out / "checkpoints",
    }


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def tsv(live: Path, name: str) -> list[list[str]]:
    text = (live / "plots" / "metrics" / f"{name}.tsv").read_text()
    return [line.split("\t") for line in text.splitlines()]


def test_training_lowers_loss_and_writes_best_model(em, tmp_path, capsys):
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
    assert meta["normalisation"] == {"mean": stats["mean"], "std": stats["std"]}
    assert meta["tile"] == 32 and meta["model"]["out_channels"] == 2
    assert meta["model"]["width"] == 4 and meta["dataset"]["kind"] == "em"
    assert meta["train"]["epochs"] == 3 and meta["train"]["device"] == "cpu"
    assert isinstance(model, UNet) and not model.training

    # the saved weights reproduce the best epoch's validation dice exactly
    from unetflow.inference.infer import predict_probability

    val_dice = []
    for sid in ("slice_05", "slice_06"):
        image = read_float_tiff(em["processed"] / "images" / f"{sid}.tif")
        truth = read_gray(em["processed"] / "masks" / f"{sid}.png")
        kwargs = {k: v for k, v in INFER.items() if k != "threshold"}
        prob = predict_probability(model, image, tile=32, device="cpu", **kwargs)
        val_dice.append(dice(prob > 0.5, truth))
    assert np.mean(val_dice) == pytest.approx(dices[best], abs=1e-12)
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed.startswith("train synth_em/tiny: 3 epochs, best val dice")
    assert "img/s" in printed and printed.endswith("device cpu")


def test_same_seed_same_weights_whatever_the_workers(em, tmp_path):
    short = {"epochs": 2, "steps_per_epoch": 2}
    train(**run_kwargs(em, tmp_path / "a", **short))
    train(**run_kwargs(em, tmp_path / "b", workers=2, **short))
    train(**run_kwargs(em, tmp_path / "c", seed=4, **short))
    assert same_weights(tmp_path / "a" / "model.pt", tmp_path / "b" / "model.pt")
    assert not same_weights(tmp_path / "a" / "model.pt", tmp_path / "c" / "model.pt")
    assert tsv(tmp_path / "a" / "dvclive", "train/loss") == tsv(
        tmp_path / "b" / "dvclive", "train/loss"
    )


RUNNER = """
import json, sys
from pathlib import Path
from unetflow.training.trainer import train
kwargs = json.loads(Path(sys.argv[1]).read_text())
for key in ("processed", "augmented", "model_out", "live_dir", "checkpoint_dir"):
    kwargs[key] = Path(kwargs[key])
train(**kwargs)
"""


def test_killed_run_resumes_to_the_uninterrupted_weights(em, tmp_path, capsys):
    # valid padding (mirror-padded tiles) and dropout: resume must restore the torch RNG too
    recipe = {"padding": "valid", "tile": 60, "dropout": 0.3, "optimizer": "sgd"}
    recipe.update(momentum=0.9, nesterov=True, schedule="plateau", plateau_patience=1)
    full = tmp_path / "full"
    train(**run_kwargs(em, full, **recipe))

    out = tmp_path / "killed"
    kwargs = run_kwargs(em, out, **recipe)
    (tmp_path / "kwargs.json").write_text(json.dumps(kwargs, default=str))
    (tmp_path / "runner.py").write_text(RUNNER)
    last = out / "checkpoints" / "last.pt"
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "kwargs.json")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert last.exists() and not (out / "model.pt").exists()
    killed_after = torch.load(last, weights_only=True)["epoch"]
    assert killed_after in (1, 2)

    summary = train(**kwargs)
    assert f"after epoch {killed_after} of 3" in capsys.readouterr().out
    assert summary["resumed_after_epoch"] == killed_after
    assert same_weights(full / "model.pt", out / "model.pt")
    for name in ("train/loss", "val/loss", "val/dice", "val/iou", "lr"):
        assert tsv(out / "dvclive", name) == tsv(full / "dvclive", name), name
    assert [r[0] for r in tsv(out / "dvclive", "img_per_s")] == ["step", "0", "1", "2"]
    assert not (out / "checkpoints").exists()


def test_checkpoint_of_other_settings_is_not_resumed(em, tmp_path, capsys):
    one = {"epochs": 1, "steps_per_epoch": 1}
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    torch.save({"format": 1, "fingerprint": "other", "epoch": 5}, out / "checkpoints" / "last.pt")
    summary = train(**run_kwargs(em, out, **one))
    assert "fingerprint differs" in capsys.readouterr().out
    assert summary["resumed_after_epoch"] is None and summary["epochs"] == 1
    train(**run_kwargs(em, tmp_path / "fresh", **one))
    assert same_weights(out / "model.pt", tmp_path / "fresh" / "model.pt")


def test_non_finite_loss_names_the_step_and_writes_no_model(em, tmp_path):
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


def test_poisoned_image_is_named(em, tmp_path):
    processed = tmp_path / "processed"
    import shutil

    shutil.copytree(em["processed"], processed)
    image = read_float_tiff(processed / "images" / "slice_02.tif")
    image[3, 4] = np.inf
    write_float_tiff(processed / "images" / "slice_02.tif", image)
    kwargs = {**run_kwargs(em, tmp_path / "run"), "processed": processed}
    with pytest.raises(ImageError, match=r"slice_02\.tif: contains NaN or inf"):
        train(**kwargs)
    assert not (tmp_path / "run" / "model.pt").exists()


def test_bce_with_auto_pos_weight_has_one_output_channel(em, tmp_path):
    out = tmp_path / "run"
    one = {"epochs": 1, "steps_per_epoch": 1}
    summary = train(**run_kwargs(em, out, loss="bce", pos_weight="auto", **one))
    masks = [read_gray(p) for p in sorted((em["processed"] / "masks").glob("slice_0[0-4].png"))]
    masks += [read_gray(p) for p in sorted((em["augmented"] / "masks").glob("*.png"))]
    assert len(masks) == summary["train_images"] == 10
    fg = sum(int(m.sum()) for m in masks)
    assert summary["pos_weight"] == pytest.approx((64 * 64 * 10 - fg) / fg, rel=1e-6)
    _, meta = load_model(out / "model.pt")
    assert meta["model"]["out_channels"] == 1


def test_weight_maps_are_used_only_when_every_pair_has_one(em, tmp_path):
    import shutil

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


def test_early_stop_when_validation_stops_improving(em, tmp_path):
    # lr 0, no batch norm, no dropout: the weights never change, so epoch 1 stays the best
    out = tmp_path / "run"
    recipe = {"lr": 0.0, "min_lr": 0.0, "norm": "none", "dropout": 0.0, "early_stop": 2}
    summary = train(**run_kwargs(em, out, **{**recipe, "epochs": 5, "steps_per_epoch": 1}))
    assert summary["epochs"] == 3 and summary["stopped_early"] and summary["best_epoch"] == 1
    assert len(tsv(out / "dvclive", "val/dice")) == 1 + 3


def test_mean_mask_baseline(em, tmp_path):
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


# ----------------------------------------------------------------------------- pieces


def test_batches_align_targets_with_inputs_under_flips_and_padding():
    rng = np.random.default_rng(0)
    # image == mask, so the centred crop of each input tile must equal its target
    masks = [(rng.random((20, 26)) > 0.5).astype(np.uint8), (rng.random((9, 7)) > 0.5)]
    masks = [m.astype(np.uint8) for m in masks]
    pairs = _Pairs(["a", "b"], [m.astype(np.float32) for m in masks], masks, [None, None])
    tile, out = 44, 12  # a valid-padding model's margin of 16 px; image b smaller than `out`
    batches = TileBatches(
        pairs,
        tile=tile,
        out=out,
        batch_size=8,
        steps=3,
        first_epoch=1,
        epochs=3,
        seed=5,
        flips=True,
        weights=False,
    )
    assert len(batches) == 6
    seen = set()
    for k in range(len(batches)):
        batch = batches[k]
        assert batch["image"].shape == (8, 1, tile, tile) and batch["mask"].shape == (8, out, out)
        centre = batch["image"][:, 0, 16:28, 16:28]
        assert torch.equal(centre, batch["mask"].float())
        seen.update(batch["image"][:, 0].flatten(1).sum(1).tolist())
    again = TileBatches(
        pairs,
        tile=tile,
        out=out,
        batch_size=8,
        steps=3,
        first_epoch=0,
        epochs=3,
        seed=5,
        flips=True,
        weights=False,
    )
    assert torch.equal(again[3]["image"], batches[0]["image"])  # epoch 1 step 0 either way
    assert not torch.equal(again[4]["image"], again[3]["image"])
    assert len(seen) > 10


def test_losses():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 5, 5)
    target = (torch.rand(2, 5, 5) > 0.5).to(torch.uint8)
    ce = F.cross_entropy(logits, target.long())
    assert loss_value("ce", logits, target) == pytest.approx(ce.item())
    weight = torch.full((2, 5, 5), 3.0)
    assert loss_value("ce", logits, target, weight) == pytest.approx(3 * ce.item())
    one = logits[:, 1:] - logits[:, :1]
    bce = F.binary_cross_entropy_with_logits(
        one[:, 0], target.float(), pos_weight=torch.tensor(2.0)
    )
    assert loss_value("bce", one, target, pos_weight=torch.tensor(2.0)) == pytest.approx(bce.item())
    prob = torch.softmax(logits, 1)[:, 1]
    both = ce + soft_dice_loss(prob, target.float())
    assert loss_value("dice_ce", logits, target) == pytest.approx(both.item())
    perfect = torch.where(target.bool(), 20.0, -20.0)[:, None]
    assert loss_value("dice", perfect, target) == pytest.approx(0.0, abs=1e-6)
    assert soft_dice_loss(torch.zeros(1, 4, 4), torch.ones(1, 4, 4)) == pytest.approx(1 - 1 / 17)


def test_schedules():
    def lrs(schedule: str, values: list[float] | None = None, **extra) -> list[float]:
        recipe = {**RECIPE, "lr": 1.0, "min_lr": 0.01, "epochs": 4, "schedule": schedule, **extra}
        s = _settings({"train": recipe}, RUN, INFER)
        sched, out = LrSchedule(s, maximise=True), []
        for epoch in range(len(values or [0] * 4)):
            out.append(sched.lr(epoch))
            sched.observe(values[epoch] if values else 0.0)
        return out

    assert lrs("constant") == [1.0] * 4
    assert lrs("cosine") == pytest.approx(
        [1.0, 0.01 + 0.99 * (1 + math.sqrt(0.5)) / 2, 0.505, 0.01 + 0.99 * (1 - math.sqrt(0.5)) / 2]
    )
    assert lrs("poly", poly_power=1.0) == pytest.approx([1.0, 0.75, 0.5, 0.25])
    got = lrs(
        "plateau", [0.5, 0.6, 0.6, 0.6, 0.7, 0.1, 0.1], plateau_patience=2, plateau_factor=0.1
    )
    assert got == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1])


@pytest.mark.parametrize("use_dvclive", [True, False])
def test_live_log_layout(tmp_path, use_dvclive):
    """The built-in writer writes byte for byte what DVCLive writes (checked when installed)."""
    if use_dvclive:
        pytest.importorskip("dvclive")
    rows = [
        {"train/loss": 0.5, "val/dice": 0.25, "lr": 0.001, "img_per_s": 12.5},
        {"train/loss": 0.125, "val/dice": float("nan"), "lr": 1e-05, "img_per_s": 3.0},
    ]
    live = LiveLog(tmp_path / "live", use_dvclive=use_dvclive)
    assert live.backend == ("dvclive" if use_dvclive else "builtin")
    for step, row in enumerate(rows):
        live.log(step, row)
    live.end()
    files = sorted(str(p.relative_to(tmp_path / "live")) for p in (tmp_path / "live").rglob("*.*"))
    assert files == [
        "metrics.json",
        "plots/metrics/img_per_s.tsv",
        "plots/metrics/lr.tsv",
        "plots/metrics/train/loss.tsv",
        "plots/metrics/val/dice.tsv",
    ]
    assert (tmp_path / "live" / "plots/metrics/train/loss.tsv").read_text() == (
        f"step\tloss{os.linesep}0\t0.5{os.linesep}1\t0.125{os.linesep}"
    )
    assert (tmp_path / "live" / "plots/metrics/val/dice.tsv").read_text().splitlines()[-1] == (
        "1\tnan"
    )
    assert (tmp_path / "live" / "metrics.json").read_text() == json.dumps(
        {
            "train": {"loss": 0.125},
            "val": {"dice": "nan"},
            "lr": 1e-05,
            "img_per_s": 3.0,
            "step": 1,
        },
        indent=4,
    ) + "\n"


def test_metrics_conventions():
    a = np.array([[1, 1, 0, 0]], bool)
    b = np.array([[1, 0, 1, 0]], bool)
    assert dice(a, b) == pytest.approx(0.5) and iou(a, b) == pytest.approx(1 / 3)
    empty = np.zeros((2, 2), bool)
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0
    assert dice(empty, ~empty) == 0.0 and iou(~empty, empty) == 0.0
    with pytest.raises(ValueError, match="differs from truth shape"):
        dice(a, empty)


def test_chest_x_rays_are_not_flipped_in_training():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    defs = params["dataset_defs"]
    assert [dataset_allows_flips(defs[name]) for name in ("isbi2012", "synth_em")] == [True, True]
    assert [dataset_allows_flips(defs[name]) for name in ("shenzhen", "synth_cxr")] == [False] * 2


def test_paper_geometry_step_with_border_weight_maps(tmp_path):
    """One SGD step of the paper's setup: valid convolutions, a 572 px tile with a 388 px
    output, batch 1, weighted cross-entropy over the border weight maps of preprocess."""
    (tmp_path / "raw").mkdir()
    generate_synth_em(tmp_path / "raw", n_train=4, n_test=1, size=64, seed=2)
    weight_cfg = {"w0": 10.0, "sigma": 5.0, "where": "all"}
    split = {"train": [0, 2], "val": [2, 3], "test": [3, 4]}
    dataset_cfg = {"kind": "em", "preprocess": {"weight_map": weight_cfg}, "split": split}
    preprocess_em(tmp_path / "raw", tmp_path / "processed", dataset_cfg)
    recipe = {**RECIPE, "loss": "ce", "optimizer": "sgd", "momentum": 0.99, "lr": 0.001}
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
