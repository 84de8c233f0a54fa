"""Annotation noise: geometry of each family on hand-made masks, EM cell rules, seeding,
records, the corrupted dataset copy and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from skimage.measure import label

from unetflow.data.corrupt import (
    FAMILIES,
    corrupt_dataset,
    corrupt_mask,
    corrupt_masks,
    noisy_dataset,
    scaled_level,
)
from unetflow.data.weightmaps import border_weight_map
from unetflow.io.images import read_float_tiff, read_gray, write_float_tiff, write_png
from unetflow.io.processed import DataError

SIZE = 64
WEIGHT_MAP = {"w0": 10.0, "sigma": 5.0, "where": "all"}
SEVERE = {"boundary": 3.0, "bias": 3, "omission": 0.5, "warp": 4.0}


def disc(radius: float, centre: tuple[int, int] = (32, 32), size: int = SIZE) -> np.ndarray:
    """The pixels within `radius` of `centre` (the EDT definition of a dilated point)."""
    yy, xx = np.mgrid[:size, :size]
    return (np.hypot(yy - centre[0], xx - centre[1]) <= radius).astype(np.uint8)


def lungs(shift: int = 0) -> np.ndarray:
    """Two separate discs, the two lungs of a chest X-ray."""
    return disc(10, (32 + shift, 16)) | disc(11, (32, 47 - shift))


def cell_grid(cell: int = 6, n: int = 8) -> np.ndarray:
    """n x n square cells separated by membranes alternately 1 and 2 pixels wide."""
    widths = [1 + i % 2 for i in range(n - 1)]
    size = n * cell + sum(widths)
    mask = np.ones((size, size), dtype=np.uint8)
    start = cell
    for width in widths:
        mask[start : start + width, :] = 0
        mask[:, start : start + width] = 0
        start += width + cell
    return mask


def cells(mask: np.ndarray) -> np.ndarray:
    return label(mask, connectivity=1)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize("kind", ["cxr", "em"])
@pytest.mark.parametrize("k", [3, -3])
def test_bias_moves_a_disc_boundary_by_k(kind, k):
    out, record = corrupt_mask(disc(10), kind, "bias", k, rng())
    radius = 10 + k  # the boundary moves by k to within half a pixel (pixel-centre distances)
    assert (out >= disc(radius - 0.5)).all() and (out <= disc(radius + 0.5)).all()
    assert abs(int(out.sum()) - np.pi * radius**2) < 0.06 * np.pi * radius**2
    assert record == {"family": "bias", "level": k, "objects": 1}


def test_erosion_keeps_em_cells_but_drops_lungs():
    em, _ = corrupt_mask(disc(5), "em", "bias", -20, rng())
    cxr, _ = corrupt_mask(disc(5), "cxr", "bias", -20, rng())
    assert em.sum() == 1 and em[32, 32] == 1  # the deepest pixel
    assert cxr.sum() == 0


@pytest.mark.parametrize("kind", ["cxr", "em"])
@pytest.mark.parametrize("family", ["boundary", "bias", "omission", "warp"])
def test_level_zero_is_the_identity(kind, family):
    mask = lungs() if kind == "cxr" else cell_grid()
    out, record = corrupt_mask(mask, kind, family, 0, rng(5))
    np.testing.assert_array_equal(out, mask)
    assert record["family"] == family and record["level"] == 0


def test_omission_of_lungs():
    mask = lungs()
    kept, record = corrupt_mask(mask, "cxr", "omission", 0.0, rng())
    np.testing.assert_array_equal(kept, mask)
    gone, record = corrupt_mask(mask, "cxr", "omission", 1.0, rng())
    assert gone.sum() == 0 and record["objects"] == 2 and record["dropped"] == 2


def test_omission_of_membranes():
    mask = cell_grid()
    assert cells(mask).max() == 64
    kept, _ = corrupt_mask(mask, "em", "omission", 0.0, rng())
    np.testing.assert_array_equal(kept, mask)
    merged, record = corrupt_mask(mask, "em", "omission", 1.0, rng())
    assert cells(merged).max() == 1 and merged.all()  # no membrane separates cells any more
    assert record["segments"] == record["dropped"] == 2 * 8 * 7
    half, record = corrupt_mask(mask, "em", "omission", 0.5, rng(1))
    assert 1 < cells(half).max() < 64 and 0 < record["dropped"] < record["segments"]
    assert (half >= mask).all()  # membranes are removed, never added


@pytest.mark.parametrize("family", ["boundary", "bias"])
def test_em_cells_never_merge_nor_vanish(family):
    mask = cell_grid()
    before = cells(mask)
    levels = [1.0, 2.0, 4.0] if family == "boundary" else [1, 2, 4, -2]
    for seed in range(4):
        for level in levels:
            out, _ = corrupt_mask(mask, "em", family, level, rng(seed))
            after = cells(out)
            for piece in range(1, after.max() + 1):
                overlap = np.unique(before[after == piece])
                assert len(overlap[overlap > 0]) == 1, (seed, level, piece)
            assert set(np.unique(before[out > 0])) - {0} == set(range(1, 65))  # none vanished
            if family == "bias" and level > 0:
                assert (out >= mask).all() and out.sum() > mask.sum()


@pytest.mark.parametrize("kind", ["cxr", "em"])
@pytest.mark.parametrize("family", ["boundary", "bias", "omission", "warp"])
def test_masks_stay_binary_uint8(kind, family):
    mask = lungs() if kind == "cxr" else cell_grid()
    out, record = corrupt_mask(mask.astype(bool), kind, family, SEVERE[family], rng(2))
    assert out.dtype == np.uint8 and out.shape == mask.shape
    assert set(np.unique(out)) <= {0, 1}
    assert not np.array_equal(out, mask)
    json.dumps(record)  # serialisable


@pytest.mark.parametrize(("family", "level"), [("boundary", 2.0), ("omission", 0.5), ("warp", 3)])
def test_seeded(family, level):
    mask = cell_grid()
    first = corrupt_mask(mask, "em", family, level, rng(7))
    again = corrupt_mask(mask, "em", family, level, rng(7))
    other = corrupt_mask(mask, "em", family, level, rng(8))
    np.testing.assert_array_equal(first[0], again[0])
    assert first[1] == again[1]
    assert not np.array_equal(first[0], other[0])


def test_boundary_records_one_radius_per_object():
    out, record = corrupt_mask(lungs(), "cxr", "boundary", 3.0, rng(3))
    assert record["family"] == "boundary" and record["level"] == 3.0
    assert record["objects"] == 2 and len(record["radii"]) == 2
    assert all(isinstance(r, int) for r in record["radii"])
    zero = corrupt_mask(lungs(), "cxr", "boundary", 0.0, rng(3))[1]
    assert zero["radii"] == [0, 0]


def make_processed(root: Path, masks: dict[str, tuple[str, np.ndarray]], weights: bool) -> Path:
    """A processed folder: split.csv, images/, masks/, a stats file, weights/ of train."""
    for sub in ("images", "masks", "weights"):
        (root / sub).mkdir(parents=True)
    gen = rng(0)
    for sid, (split, mask) in masks.items():
        write_float_tiff(root / "images" / f"{sid}.tif", gen.normal(size=mask.shape))
        write_png(root / "masks" / f"{sid}.png", mask)
        if weights and split == "train":
            write_float_tiff(root / "weights" / f"{sid}.tif", border_weight_map(mask), level=1)
    rows = [{"id": sid, "split": split} for sid, (split, _) in masks.items()]
    pd.DataFrame(rows).to_csv(root / "split.csv", index=False)
    (root / "stats.json").write_text('{"mean": 0.0}\n')
    return root


def cxr_set(root: Path) -> Path:
    splits = ["train", "train", "val", "train", "test", "train"]
    masks = {f"img{i}": (split, lungs(i)) for i, split in enumerate(splits)}
    return make_processed(root, masks, weights=False)


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_corrupt_dataset_changes_train_masks_only(tmp_path):
    processed = cxr_set(tmp_path / "processed")
    table = corrupt_dataset(processed, tmp_path / "out", kind="cxr", family="bias", level=4, seed=1)
    before, after = files(processed), files(tmp_path / "out")
    train = {"img0", "img1", "img3", "img5"}
    assert set(after) == set(before) | {"corruption.csv", "corruption.json"}
    for name, data in before.items():
        changed = name.startswith("masks/") and Path(name).stem in train
        assert (after[name] != data) == changed, name
    assert sorted(table["id"]) == sorted(train) and (table["family"] == "bias").all()
    assert table["dice"].between(0, 1).all() and (table["dice"] < 1).all()
    written = pd.read_csv(tmp_path / "out" / "corruption.csv")
    assert list(written.columns) == ["id", "family", "level", "dice", "detail"]
    assert json.loads(written["detail"][0])["family"] == "bias"
    summary = json.loads((tmp_path / "out" / "corruption.json").read_text())
    assert summary["n_train"] == 4 and summary["min_dice"] <= summary["mean_dice"] < 1
    assert {"family", "level", "seed"} <= set(summary)


def test_corrupt_dataset_is_reproducible_and_independent_of_order(tmp_path):
    processed = cxr_set(tmp_path / "processed")
    args = {"kind": "cxr", "family": "boundary", "level": 3.0, "seed": 4}
    corrupt_dataset(processed, tmp_path / "a", **args)
    corrupt_dataset(processed, tmp_path / "b", **args)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    split = pd.read_csv(processed / "split.csv")
    split = split[split["id"] != "img0"].iloc[::-1]
    split.to_csv(processed / "split.csv", index=False)
    corrupt_dataset(processed, tmp_path / "c", **args)
    for sid in ("img1", "img3", "img5"):
        name = f"masks/{sid}.png"
        assert files(tmp_path / "c")[name] == files(tmp_path / "a")[name]


def test_corrupt_dataset_recomputes_em_weight_maps(tmp_path):
    masks = {
        "s0": ("train", cell_grid()),
        "s1": ("train", cell_grid(5)),
        "s2": ("val", cell_grid()),
    }
    processed = make_processed(tmp_path / "em", masks, weights=True)
    corrupt_dataset(
        processed,
        tmp_path / "out",
        kind="em",
        family="bias",
        level=2,
        seed=0,
        weight_map=WEIGHT_MAP,
    )
    for sid in ("s0", "s1"):
        noisy = read_gray(tmp_path / "out" / "masks" / f"{sid}.png")
        weights = read_float_tiff(tmp_path / "out" / "weights" / f"{sid}.tif")
        old = read_float_tiff(processed / "weights" / f"{sid}.tif")
        np.testing.assert_allclose(weights, border_weight_map(noisy, **WEIGHT_MAP), atol=1e-6)
        assert not np.allclose(weights, old)
    assert files(tmp_path / "out")["masks/s2.png"] == files(processed)["masks/s2.png"]
    with pytest.raises(DataError, match=r"weights/s0.tif: .*expected weight_map"):
        corrupt_dataset(processed, tmp_path / "x", kind="em", family="bias", level=2, seed=0)


def test_mixed_corrupts_a_fraction(tmp_path):
    processed = cxr_set(tmp_path / "processed")
    table = corrupt_dataset(
        processed,
        tmp_path / "out",
        kind="cxr",
        family="mixed",
        level=0.5,
        seed=2,
        mixed={"bias": 3, "omission": 1.0},
    )
    corrupted = table[table["family"] != "none"]
    assert len(corrupted) == 2 and set(corrupted["family"]) <= {"bias", "omission"}
    assert (corrupted["dice"] < 1).all() and (
        table.loc[table["family"] == "none", "dice"] == 1
    ).all()
    before, after = files(processed), files(tmp_path / "out")
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {f"masks/{sid}.png" for sid in corrupted["id"]}
    summary = json.loads((tmp_path / "out" / "corruption.json").read_text())
    assert summary["n_corrupted"] == 2 and summary["mixed"] == {"bias": 3, "omission": 1.0}
    with pytest.raises(ValueError, match="mixed: families none; expected a non-empty mapping"):
        corrupt_dataset(processed, tmp_path / "d", kind="cxr", family="mixed", level=1.0, seed=2)


def test_corrupt_masks_is_how_the_dataset_copy_corrupts(tmp_path):
    """The noisy evaluation's test masks go through the same code as the training masks."""
    processed = cxr_set(tmp_path / "processed")
    mixed = {"bias": 3, "omission": 1.0}
    args = {"kind": "cxr", "family": "mixed", "level": 0.5, "seed": 3, "mixed": mixed}
    table = corrupt_dataset(processed, tmp_path / "out", **args)
    train = {sid: read_gray(processed / "masks" / f"{sid}.png") for sid in table["id"]}
    noisy = corrupt_masks(train, **args)
    for sid, (mask, record) in noisy.items():
        assert np.array_equal(mask, read_gray(tmp_path / "out" / "masks" / f"{sid}.png")), sid
        assert record["family"] == table.set_index("id").loc[sid, "family"]


@pytest.mark.parametrize(
    ("family", "value", "expected"),
    [
        ("boundary", 6, (0.75, None)),
        ("warp", 20, (2.5, None)),
        ("bias", -12, (-2, None)),
        ("omission", 0.3, (0.3, None)),
        ("mixed", 0.5, (0.5, {"boundary": 0.75, "bias": 1, "omission": 0.3, "warp": 1.25})),
    ],
)
def test_levels_in_512_px_units_scale_to_the_mask(family, value, expected):
    noise = {"mixed": {"families": {"boundary": 6, "bias": 8, "omission": 0.3, "warp": 10}}}
    assert scaled_level(family, value, 64, noise) == expected


def test_the_corrupt_stage_scales_its_level_and_augments_the_copy(tmp_path):
    processed = cxr_set(tmp_path / "processed")
    augment = {
        "copies": 1,
        "pad_px": 8,
        "elastic_grid": 3,
        "elastic_sigma_px": 2.0,
        "rotation_deg": 5.0,
        "shift_px": 2,
        "flip": False,
        "gamma": [0.9, 1.1],
        "brightness": 0.0,
        "contrast": [1.0, 1.0],
        "noise_std": 0.0,
    }
    dataset = {
        "kind": "cxr",
        "preprocess": {},
        "augment": augment,
        "noise": {"bias": [-8, 16], "boundary": [4], "omission": [0.5], "warp": [4]},
    }
    out, augmented = tmp_path / "noisy", tmp_path / "augmented"
    noisy_dataset(
        dataset=dataset,
        family="bias",
        level=2,
        seed=5,
        processed=processed,
        out=out,
        augmented=augmented,
        augment={"example_pairs": 1, "workers": 1},
    )
    summary = json.loads((out / "corruption.json").read_text())
    assert summary["level"] == 2 and summary["seed"] == 5  # 16 px of 512 at 64 px
    index = pd.read_csv(augmented / "index.csv", dtype={"id": str})
    assert len(index) == 6  # every labelled image, one copy each
    dilated = read_gray(augmented / "masks" / f"{index['id'][0]}.png")
    assert dilated.max() == 1


def test_bad_input_is_named(tmp_path):
    mask = lungs()
    with pytest.raises(ValueError, match="family: unknown 'blur'"):
        corrupt_mask(mask, "cxr", "blur", 1.0, rng())
    with pytest.raises(ValueError, match=r"omission level: 1.5; expected a probability"):
        corrupt_mask(mask, "cxr", "omission", 1.5, rng())
    with pytest.raises(ValueError, match="boundary level: -1.0; expected sigma >= 0"):
        corrupt_mask(mask, "cxr", "boundary", -1.0, rng())
    with pytest.raises(ValueError, match="bias level: 1.5; expected a signed integer"):
        corrupt_mask(mask, "cxr", "bias", 1.5, rng())
    with pytest.raises(ValueError, match=r"kind: unknown 'ct'"):
        corrupt_mask(mask, "ct", "bias", 1, rng())
    with pytest.raises(ValueError, match=r"mask: found values \[0, 2\]; expected \{0, 1\}"):
        corrupt_mask(mask * 2, "cxr", "bias", 1, rng())
    with pytest.raises(ValueError, match="'mixed' corrupts a dataset"):
        corrupt_mask(mask, "cxr", "mixed", 0.5, rng())
    assert set(FAMILIES) == {"boundary", "bias", "omission", "warp", "mixed"}


def test_bad_dataset_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="nowhere: not a folder"):
        corrupt_dataset(missing, tmp_path / "out", kind="cxr", family="bias", level=1, seed=0)
    processed = cxr_set(tmp_path / "processed")
    write_png(processed / "masks" / "img3.png", lungs() * 2)
    with pytest.raises(DataError, match=r"img3.png: found values \[0, 2\]"):
        corrupt_dataset(processed, tmp_path / "out", kind="cxr", family="bias", level=1, seed=0)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="mixed level: 2; expected a probability"):
        corrupt_dataset(processed, tmp_path / "out", kind="cxr", family="mixed", level=2, seed=0)
    with pytest.raises(ValueError, match=r"mixed: families \['blur'\]"):
        corrupt_dataset(
            processed,
            tmp_path / "out",
            kind="cxr",
            family="mixed",
            level=0.5,
            seed=0,
            mixed={"blur": 1.0},
        )
