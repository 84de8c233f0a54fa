"""model.pt: round trip, weights_only refusal of pickled code, architecture mismatch, atomicity."""

from __future__ import annotations

import pathlib
from pathlib import Path

import numpy as np
import pytest
import torch

from unetflow.model.checkpoint import CheckpointError, load_model, save_model
from unetflow.model.unet import MeanMask, UNet

ARCH = {"kind": "unet", "padding": "same", "width": 4, "depth": 2, "norm": "batch"}
ARCH.update(up="transposed", dropout=0.0, init="he", tile=32)


def meta_for(model_cfg: dict, out_channels: int = 2) -> dict:
    return {
        "model": {**model_cfg, "out_channels": out_channels},
        "dataset": {"name": "synth_em", "kind": "em", "preprocess": {}},
        "normalisation": {"mean": 0.5, "std": 0.25},
        "tile": 32,
        "train": {"epochs": 3, "best_value": np.float64(0.9), "device": "cpu"},
    }


def unet(**changes) -> UNet:
    cfg = {k: v for k, v in {**ARCH, **changes}.items() if k not in ("kind", "tile")}
    return UNet(out_channels=2, **cfg)


def test_round_trip(tmp_path):
    torch.manual_seed(0)
    model = unet()
    model.train()
    with torch.no_grad():  # batch-norm statistics are saved too
        model(torch.randn(2, 1, 32, 32))
    path = tmp_path / "model.pt"
    save_model(path, model, meta_for(ARCH))

    loaded, meta = load_model(path)
    assert isinstance(loaded, UNet) and not loaded.training
    original = model.state_dict()
    assert loaded.state_dict().keys() == original.keys()
    assert all(torch.equal(loaded.state_dict()[k], original[k]) for k in original)
    assert meta["format"] == 1 and "state_dict" not in meta
    assert meta["normalisation"] == {"mean": 0.5, "std": 0.25}
    assert meta["train"]["best_value"] == 0.9 and type(meta["train"]["best_value"]) is float
    x = torch.randn(1, 1, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left


def test_mean_mask_round_trip(tmp_path):
    mean = torch.linspace(0, 1, 12).reshape(3, 4)
    path = tmp_path / "model.pt"
    save_model(
        path, MeanMask(mean), {**meta_for({"kind": "mean_mask"}, 1), "mean_mask_shape": [3, 4]}
    )
    loaded, _ = load_model(path)
    assert isinstance(loaded, MeanMask) and torch.equal(loaded.mean_mask, mean)


class Payload:
    """Unpickling this would touch `marker`: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_pickled_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    payload = {**meta_for(ARCH), "format": 1, "state_dict": unet().state_dict()}
    payload["train"] = Payload(marker)
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused: not a plain weights file"):
        load_model(path)
    assert not marker.exists()


def test_other_architecture_is_a_clear_mismatch(tmp_path):
    path = tmp_path / "model.pt"
    save_model(path, unet(width=8), meta_for(ARCH))  # metadata says width 4
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message and "do not fit the architecture" in message
    assert "shape mismatch inc.block.0.weight: checkpoint (8, 1, 3, 3) vs model (4, 1, 3, 3)" in (
        message
    )

    save_model(path, unet(depth=3), meta_for(ARCH))  # one level deeper than the metadata
    with pytest.raises(CheckpointError, match=r"unexpected downs\.2\.conv\.block\.0\.weight"):
        load_model(path)
    save_model(path, unet(norm="none"), meta_for(ARCH))
    with pytest.raises(CheckpointError, match=r"missing inc\.block\.1\.weight"):
        load_model(path)


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"nothing\.pt: not found"):
        load_model(tmp_path / "nothing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a zip archive" * 10)
    with pytest.raises(CheckpointError, match=r"garbage\.pt: cannot read"):
        load_model(garbage)
    old = tmp_path / "old.pt"
    torch.save({"format": 1, "state_dict": {}}, old)
    with pytest.raises(CheckpointError, match=r"old\.pt: missing key\(s\) \['model'"):
        load_model(old)
    future = tmp_path / "future.pt"
    torch.save({**meta_for(ARCH), "train": {}, "format": 2, "state_dict": {}}, future)
    with pytest.raises(CheckpointError, match=r"future\.pt: format 2 is not supported"):
        load_model(future)


def test_save_replaces_atomically_and_rejects_objects(tmp_path):
    path = tmp_path / "model.pt"
    save_model(path, unet(), meta_for(ARCH))
    before = path.read_bytes()
    bad = {**meta_for(ARCH), "extra": object()}
    with pytest.raises(CheckpointError, match=r"meta\.extra: object cannot go into a checkpoint"):
        save_model(path, unet(), bad)
    assert path.read_bytes() == before
    torch.manual_seed(1)
    save_model(path, unet(), {**meta_for(ARCH), "where": tmp_path})  # a Path becomes a str
    _, meta = load_model(path)
    assert meta["where"] == str(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
