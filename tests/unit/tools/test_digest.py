"""tools/digest.py: wall-clock fields are left out, every other change shows."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from digest import file_digest
from unetflow.model.checkpoint import save_model
from unetflow.model.unet import UNet


def test_json_csv_and_markdown_ignore_timing_only(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"dice": 0.9, "train": {"seconds": 1.0, "images_per_s": 3.0}}))
    before = file_digest(path)
    path.write_text(json.dumps({"dice": 0.9, "train": {"seconds": 2.5, "images_per_s": 1.0}}))
    assert file_digest(path) == before
    path.write_text(json.dumps({"dice": 0.8, "train": {"seconds": 2.5, "images_per_s": 1.0}}))
    assert file_digest(path) != before

    table = tmp_path / "summary.csv"
    table.write_text("model,dice,train_seconds\na,0.9,12.0\n")
    before = file_digest(table)
    table.write_text("model,dice,train_seconds\na,0.9,13.5\n")
    assert file_digest(table) == before
    table.write_text("model,dice,train_seconds\na,0.91,13.5\n")
    assert file_digest(table) != before

    md = tmp_path / "summary.md"
    md.write_text("| model | dice | train_seconds |\n|---|---|---|\n| a | 0.9 | 12.0 |\n")
    before = file_digest(md)
    md.write_text("| model | dice | train_seconds |\n|---|---|---|\n| a | 0.9 | 99.0 |\n")
    assert file_digest(md) == before
    md.write_text("| model | dice | train_seconds |\n|---|---|---|\n| a | 0.8 | 99.0 |\n")
    assert file_digest(md) != before


def test_checkpoint_digest_is_its_weights_and_metadata_without_timing(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = UNet(in_channels=1, out_channels=1, width=2, depth=1)
    path = tmp_path / "model.pt"
    save_model(path, model, {"train": {"seconds": 1.0, "epochs": 2}})
    before = file_digest(path)
    save_model(path, model, {"train": {"seconds": 9.0, "epochs": 2}})
    assert file_digest(path) == before
    save_model(path, model, {"train": {"seconds": 9.0, "epochs": 3}})
    assert file_digest(path) != before
    with torch.no_grad():
        next(model.parameters()).add_(1e-6)
    save_model(path, model, {"train": {"seconds": 9.0, "epochs": 2}})
    assert file_digest(path) != before
