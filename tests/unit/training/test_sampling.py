"""The seeded training batches: targets aligned with inputs under flips and padding, the same
batch for the same (epoch, step) whatever the first epoch, no flips for chest X-rays; the
images of the split or of a cross-validation fold."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from project import ROOT
from unetflow.io.processed import DataError, read_split
from unetflow.training.sampling import (
    Pairs,
    TileBatches,
    dataset_allows_flips,
    load_data,
    mirror_pad,
)


def test_batches_align_targets_with_inputs_under_flips_and_padding():
    rng = np.random.default_rng(0)
    # image == mask, so the centred crop of each input tile must equal its target
    masks = [(rng.random((20, 26)) > 0.5).astype(np.uint8), (rng.random((9, 7)) > 0.5)]
    masks = [m.astype(np.uint8) for m in masks]
    pairs = Pairs(["a", "b"], [m.astype(np.float32) for m in masks], masks, [None, None])
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


def test_weight_crops_follow_their_targets():
    rng = np.random.default_rng(1)
    mask = (rng.random((16, 16)) > 0.5).astype(np.uint8)
    pairs = Pairs(["a"], [mask.astype(np.float32)], [mask], [mask.astype(np.float32) * 3])
    batches = TileBatches(
        pairs,
        tile=12,
        out=8,
        batch_size=4,
        steps=1,
        first_epoch=0,
        epochs=1,
        seed=2,
        flips=True,
        weights=True,
    )
    batch = batches[0]
    assert batch["weight"].dtype == torch.float32 and batch["weight"].shape == (4, 8, 8)
    assert torch.equal(batch["weight"], batch["mask"].float() * 3)


def test_mirror_pad_reflects_and_leaves_unpadded_arrays_alone():
    a = np.arange(6).reshape(2, 3)
    assert mirror_pad(a, ((0, 0), (0, 0))) is a
    assert mirror_pad(a, ((0, 0), (2, 0))).tolist() == [[2, 1, 0, 1, 2], [5, 4, 3, 4, 5]]


def test_chest_x_rays_are_not_flipped_in_training():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    defs = params["dataset_defs"]
    assert [dataset_allows_flips(defs[name]) for name in ("isbi2012", "synth_em")] == [True, True]
    assert [dataset_allows_flips(defs[name]) for name in ("shenzhen", "synth_cxr")] == [False] * 2


def test_train_reads_its_own_images_and_copies_of_the_split_or_of_a_fold(em):
    """Augment copies every labelled slice; train takes the copies of its own train slices:
    split.csv's (slices 0-4) by default, a fold's with `fold` (fold 0 tests slices 0-1 and
    validates on 2-3), so that no test image or its copy is trained on."""
    slices = [f"slice_{i:02d}" for i in range(8)]
    index = pd.read_csv(em["augmented"] / "index.csv", dtype=str)
    assert sorted(index["source_id"]) == slices
    for fold, train, val in [(None, slices[:5], slices[5:7]), (0, slices[4:], slices[2:4])]:
        data = load_data(em["processed"], em["augmented"], fold=fold)
        assert data.train.ids == train + [f"{s}_aug00" for s in train]
        assert data.val.ids == val


def test_a_fold_without_folds_csv_names_the_file(em, tmp_path):
    processed = tmp_path / "processed"
    shutil.copytree(em["processed"], processed)
    (processed / "folds.csv").unlink()
    with pytest.raises(DataError, match=r"folds\.csv: not found; expected the cross-validation"):
        read_split(processed, 1)
