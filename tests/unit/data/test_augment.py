"""Augmentation: determinism, alignment of image and mask, parameters, outputs and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from project import cxr_definition
from unetflow.data.augment import augment_arrays, augment_dataset, augment_pair
from unetflow.data.cxr import preprocess_cxr
from unetflow.data.shifts import ACQUISITION_PARAMS
from unetflow.data.synthetic import generate_synth_cxr
from unetflow.io.images import read_float_tiff, read_gray, write_float_tiff, write_png
from unetflow.io.logs import configure_logging
from unetflow.io.processed import DataError

SIZE = 64
FULL = {
    "copies": 3,
    "pad_px": 16,
    "elastic_grid": 3,
    "elastic_sigma_px": 4.0,
    "rotation_deg": 180.0,
    "shift_px": 8,
    "flip": True,
    "gamma": [0.8, 1.25],
    "brightness": 0.1,
    "contrast": [0.85, 1.15],
    "noise_std": 0.02,
}
ZERO = {
    **FULL,
    "elastic_sigma_px": 0.0,
    "rotation_deg": 0.0,
    "shift_px": 0,
    "flip": False,
    "gamma": [1.0, 1.0],
    "brightness": 0.0,
    "contrast": [1.0, 1.0],
    "noise_std": 0.0,
}
NO_GRAY = {**FULL, "gamma": [1.0, 1.0], "brightness": 0.0, "contrast": [1.0, 1.0], "noise_std": 0}


def blobs(seed: int, size: int = SIZE, smooth: float = 3.0) -> np.ndarray:
    """A {0, 1} mask of smooth blobs, like cells separated by membranes."""
    noise = np.random.default_rng(seed).normal(size=(size, size))
    return (ndimage.gaussian_filter(noise, smooth) > 0).astype(np.uint8)


def make_processed(root: Path, n_train: int = 3, n_other: int = 2) -> Path:
    """A processed folder as any preprocess writes it: float32 images, {0, 1} masks, split.csv."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for i in range(n_train + n_other):
        sid = f"slice_{i:02d}"
        mask = blobs(i)
        image = mask * 2.0 - 1.0 + np.random.default_rng(100 + i).normal(0, 0.3, mask.shape)
        write_float_tiff(root / "images" / f"{sid}.tif", image)
        write_png(root / "masks" / f"{sid}.png", mask)
        rows.append({"id": sid, "split": "train" if i < n_train else "val"})
    pd.DataFrame(rows).to_csv(root / "split.csv", index=False)
    return root


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def processed(tmp_path: Path) -> Path:
    return make_processed(tmp_path / "processed")


def test_dataset_outputs(processed: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "augmented"
    configure_logging()  # as the stage does
    result = augment_dataset(processed, out, FULL, example_pairs=2, seed=7)

    # every labelled image (3 train, 2 val): each trains in some cross-validation fold
    assert result["images"] == 15
    assert result["seconds"] > 0
    assert result["images_per_s"] == pytest.approx(15 / result["seconds"])
    assert "augment: 15 images in" in capsys.readouterr().out

    index = pd.read_csv(out / "index.csv")
    assert len(index) == FULL["copies"] * 5
    assert list(index["id"][:4]) == [
        "slice_00_aug00",
        "slice_00_aug01",
        "slice_00_aug02",
        "slice_01_aug00",
    ]
    assert set(index["source_id"]) == {f"slice_{i:02d}" for i in range(5)}
    assert list(index["copy"]) == [0, 1, 2] * 5
    for col in (
        "angle",
        "shift_y",
        "shift_x",
        "flip_ud",
        "flip_lr",
        "gamma",
        "brightness",
        "contrast",
        "noise_std",
    ):
        assert col in index.columns
    assert index["angle"].abs().max() <= 180 and index["angle"].std() > 1
    assert index[["shift_y", "shift_x"]].abs().to_numpy().max() <= 8
    assert index["gamma"].between(0.8, 1.25).all() and index["gamma"].nunique() == 15
    assert index["contrast"].between(0.85, 1.15).all()
    assert index["brightness"].abs().max() <= 0.1

    for aid in index["id"]:
        image = read_float_tiff(out / "images" / f"{aid}.tif")
        mask = read_gray(out / "masks" / f"{aid}.png")
        assert image.dtype == np.float32 and image.shape == (SIZE, SIZE)
        assert mask.dtype == np.uint8 and mask.shape == (SIZE, SIZE)
        assert set(np.unique(mask).tolist()) <= {0, 1}
    assert (out / "images" / "slice_03_aug00.tif").exists()  # val rows train in other folds
    examples = read_gray(out / "examples.png")
    assert examples.shape[0] == round(2 * 2.6 * 80)  # two example rows at 80 dpi


def test_same_seed_same_bytes_other_seed_differs(processed: Path, tmp_path: Path) -> None:
    augment_dataset(processed, tmp_path / "a", FULL, example_pairs=1, seed=7)
    augment_dataset(processed, tmp_path / "b", FULL, example_pairs=1, seed=7)
    augment_dataset(processed, tmp_path / "c", FULL, example_pairs=1, seed=8)
    a, b, c = (file_bytes(tmp_path / name) for name in "abc")
    assert a == b
    assert a.keys() == c.keys()
    for name in a:
        if name.startswith("images/"):
            assert a[name] != c[name], name


def test_copies_do_not_depend_on_other_images(processed: Path, tmp_path: Path) -> None:
    augment_dataset(processed, tmp_path / "all", FULL, example_pairs=0, seed=3)
    split = pd.read_csv(processed / "split.csv")
    split.loc[0, "split"] = "val"  # slice_00 leaves the train set
    split.iloc[::-1].to_csv(processed / "split.csv", index=False)  # and the order changes
    augment_dataset(processed, tmp_path / "some", FULL, example_pairs=0, seed=3)
    for name in ("images/slice_02_aug01.tif", "masks/slice_01_aug02.png"):
        assert (tmp_path / "all" / name).read_bytes() == (tmp_path / "some" / name).read_bytes()


def test_zero_strength_is_identity() -> None:
    mask = blobs(1)
    image = np.random.default_rng(2).normal(size=mask.shape).astype(np.float32)
    out_image, out_mask, params = augment_pair(image, mask, np.random.default_rng(0), ZERO)
    np.testing.assert_allclose(out_image, image, atol=1e-5)
    np.testing.assert_array_equal(out_mask, mask)
    assert params["angle"] == 0 and params["shift_y"] == 0 and params["gamma"] == 1


def test_image_equal_to_mask_stays_aligned() -> None:
    cfg = {**NO_GRAY, "pad_px": 32, "shift_px": 16, "elastic_sigma_px": 10.0}
    for seed in range(4):
        mask = blobs(seed, 128, smooth=5.0)
        out_image, out_mask, _ = augment_pair(
            mask.astype(np.float32), mask, np.random.default_rng(seed), cfg
        )
        assert set(np.unique(out_mask).tolist()) == {0, 1}
        assert (out_mask != mask).mean() > 0.1, "the transform should move the content"
        agreement = ((out_image > 0.5) == out_mask.astype(bool)).mean()
        assert agreement >= 0.99, (seed, agreement)
        # a one-pixel misalignment would fail the bound above
        off_by_one = ((out_image[1:] > 0.5) == out_mask[:-1].astype(bool)).mean()
        assert off_by_one < 0.98, (seed, off_by_one)


def test_rotation_half_turn_is_exact() -> None:
    image = np.random.default_rng(0).normal(size=(SIZE, SIZE)).astype(np.float32)
    mask = blobs(0)
    # the angle is a uniform draw in [-1, 1] times rotation_deg: scale it to exactly ±180
    _, _, params = augment_pair(image, mask, np.random.default_rng(0), {**ZERO, "rotation_deg": 1})
    turned = {**ZERO, "rotation_deg": 180.0 / abs(params["angle"])}
    out_image, out_mask, params = augment_pair(image, mask, np.random.default_rng(0), turned)
    assert abs(params["angle"]) == pytest.approx(180.0)
    np.testing.assert_allclose(out_image, image[::-1, ::-1], atol=1e-4)
    np.testing.assert_array_equal(out_mask, mask[::-1, ::-1])


def test_shift_and_flips_follow_the_recorded_parameters() -> None:
    image = np.random.default_rng(0).normal(size=(SIZE, SIZE)).astype(np.float32)
    mask = blobs(3)
    cfg = {**ZERO, "shift_px": 8, "flip": True}
    seen_flip = seen_shift = False
    for seed in range(8):
        out_image, out_mask, p = augment_pair(image, mask, np.random.default_rng(seed), cfg)
        pad = cfg["pad_px"]
        window = (
            slice(pad + p["shift_y"], pad + p["shift_y"] + SIZE),
            slice(pad + p["shift_x"], pad + p["shift_x"] + SIZE),
        )
        expected_image = np.pad(image, pad, mode="reflect")[window]
        expected_mask = np.pad(mask, pad, mode="reflect")[window]
        if p["flip_ud"]:
            expected_image, expected_mask = expected_image[::-1], expected_mask[::-1]
        if p["flip_lr"]:
            expected_image, expected_mask = expected_image[:, ::-1], expected_mask[:, ::-1]
        np.testing.assert_allclose(out_image, expected_image, atol=1e-5)
        np.testing.assert_array_equal(out_mask, expected_mask)
        seen_flip |= p["flip_ud"] or p["flip_lr"]
        seen_shift |= p["shift_y"] != 0
    assert seen_flip and seen_shift


def test_gray_value_variation() -> None:
    mask = blobs(4)
    image = np.random.default_rng(5).uniform(-2, 3, size=mask.shape).astype(np.float32)
    out, out_mask, p = augment_pair(
        image, mask, np.random.default_rng(1), {**ZERO, "gamma": [0.5, 0.6]}
    )
    assert 0.5 <= p["gamma"] <= 0.6
    assert out.min() == pytest.approx(image.min(), abs=1e-5)  # gamma keeps the min-max range
    assert out.max() == pytest.approx(image.max(), abs=1e-5)
    unit = (image - image.min()) / (image.max() - image.min())
    expected = image.min() + (image.max() - image.min()) * unit ** p["gamma"]
    np.testing.assert_allclose(out, expected, atol=1e-4)
    np.testing.assert_array_equal(out_mask, mask)

    cfg = {**ZERO, "brightness": 0.5, "contrast": [1.5, 1.5]}
    out, _, p = augment_pair(image, mask, np.random.default_rng(2), cfg)
    assert p["contrast"] == 1.5 and 0 < abs(p["brightness"]) <= 0.5
    assert out.std() == pytest.approx(1.5 * image.std(), rel=1e-4)
    assert out.mean() == pytest.approx(image.mean() + p["brightness"] * image.std(), abs=1e-4)

    out, _, _ = augment_pair(image, mask, np.random.default_rng(3), {**ZERO, "noise_std": 0.1})
    assert (out - image).std() == pytest.approx(0.1 * image.std(), rel=0.05)


def test_masks_stay_binary_under_full_strength() -> None:
    mask = blobs(6)
    image = mask.astype(np.float32)
    rng = np.random.default_rng(9)
    for _ in range(5):
        out_image, out_mask, _ = augment_pair(image, mask, rng, FULL)
        assert out_mask.dtype == np.uint8 and out_mask.shape == mask.shape
        assert set(np.unique(out_mask).tolist()) == {0, 1}
        assert out_image.dtype == np.float32 and out_image.shape == image.shape


def test_bad_mask_names_the_file_and_publishes_nothing(processed: Path, tmp_path: Path) -> None:
    write_png(processed / "masks" / "slice_01.png", np.full((SIZE, SIZE), 255, np.uint8))
    out = tmp_path / "augmented"
    with pytest.raises(DataError, match=r"slice_01\.png: found values \[255\]"):
        augment_dataset(processed, out, FULL, example_pairs=1, seed=0)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".augmented")]


def test_weight_map_is_deformed_with_image_and_mask() -> None:
    """The weight map goes through the same resampling as the image: an affine function of
    the image stays that function of the augmented image, and image and mask are unchanged."""
    cfg = {**NO_GRAY, "pad_px": 32, "shift_px": 16, "elastic_sigma_px": 10.0}
    for seed in range(3):
        mask = blobs(seed, 128, smooth=5.0)
        grid = np.zeros((128, 128), dtype=np.float32)
        grid[::8] = grid[:, ::8] = 1.0  # a grid shows any misalignment
        image = grid + mask
        weights = 3.0 * image + 0.5
        rng = np.random.default_rng(seed)
        out_image, out_mask, out_weights, params = augment_arrays(image, mask, weights, rng, cfg)
        plain = augment_pair(image, mask, np.random.default_rng(seed), cfg)
        np.testing.assert_array_equal(out_image, plain[0])
        np.testing.assert_array_equal(out_mask, plain[1])
        assert params == plain[2]
        assert out_weights.dtype == np.float32 and out_weights.min() >= 0
        np.testing.assert_allclose(out_weights, np.clip(3 * out_image + 0.5, 0, None), atol=1e-4)
        assert np.abs(out_weights - weights).mean() > 0.1, "the transform should move the grid"


def test_dataset_weight_maps_travel_with_their_pairs(processed: Path, tmp_path: Path) -> None:
    (processed / "weights").mkdir()
    for i in range(5):  # preprocess writes one for every labelled slice
        mask = read_gray(processed / "masks" / f"slice_{i:02d}.png")
        write_float_tiff(processed / "weights" / f"slice_{i:02d}.tif", 1.0 + 4.0 * mask)
    out = tmp_path / "augmented"
    augment_dataset(processed, out, {**FULL, "copies": 2}, example_pairs=1, seed=7)
    names = sorted(p.name for p in (out / "weights").iterdir())
    assert names == sorted(p.name for p in (out / "images").iterdir())
    for name in names:
        weights = read_float_tiff(out / "weights" / name)
        mask = read_gray(out / "masks" / name.replace(".tif", ".png"))
        inside, outside = weights[mask == 1], weights[mask == 0]
        assert np.median(inside) == pytest.approx(5.0, abs=0.05)  # 1 + 4 on the cells
        assert np.median(outside) == pytest.approx(1.0, abs=0.05)


# --- acquisition shifts (chest X-rays) ------------------------------------------------------

IDENTITY_ACQUISITION = {
    "exposure": [1.0, 1.0],
    "brightness": 0.0,
    "window_pct": 0.0,
    "gamma": [1.0, 1.0],
    "zoom": [1.0, 1.0],
    "aspect": [1.0, 1.0],
    "blur_px": 0.0,
    "noise_std": 0.0,
    "marker_p": 0.0,
}


@pytest.fixture(scope="module")
def cxr_processed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic chest X-ray set preprocessed with per-image normalisation."""
    root = tmp_path_factory.mktemp("cxr")
    (root / "raw").mkdir()
    generate_synth_cxr(root / "raw", n_images=10, n_unmasked=0, size=96, seed=3)
    cfg = cxr_definition(SIZE, SIZE, "image_window")
    preprocess_cxr(root / "raw", root / "processed", cfg, seed=1)
    return root / "processed"


def acquisition_cfg(**acquisition) -> dict:
    return {**ZERO, "copies": 2, "acquisition": {**IDENTITY_ACQUISITION, **acquisition}}


def test_acquisition_shifts_act_on_the_unit_image_before_normalisation(
    cxr_processed: Path, tmp_path: Path
) -> None:
    # a gain without clipping changes nothing after per-image normalisation: the copies are
    # the processed images, which proves both the unit image and the record were used
    out = tmp_path / "aug"
    augment_dataset(
        cxr_processed, out, acquisition_cfg(exposure=[0.5, 0.5]), example_pairs=1, seed=1
    )
    index = pd.read_csv(out / "index.csv")
    assert [c for c in index.columns if c.startswith("acq_")] == [
        f"acq_{name}" for name in ACQUISITION_PARAMS
    ]
    assert (index["acq_exposure"] == 0.5).all() and (index["acq_marker_area"] == 0).all()
    for row in index.itertuples():
        copy = read_float_tiff(out / "images" / f"{row.id}.tif")
        image = read_float_tiff(cxr_processed / "images" / f"{row.source_id}.tif")
        np.testing.assert_allclose(copy, image, atol=1e-4)


def test_acquisition_zoom_moves_the_mask_with_the_image(
    cxr_processed: Path, tmp_path: Path
) -> None:
    out = tmp_path / "aug"
    augment_dataset(cxr_processed, out, acquisition_cfg(zoom=[0.7, 0.7]), example_pairs=1, seed=1)
    index = pd.read_csv(out / "index.csv")
    for row in index.itertuples():
        mask = read_gray(out / "masks" / f"{row.id}.png")
        source = read_gray(cxr_processed / "masks" / f"{row.source_id}.png")
        assert mask.sum() / source.sum() == pytest.approx(0.49, rel=0.06)


def test_acquisition_copies_are_seeded_and_need_a_chest_xray_set(
    cxr_processed: Path, processed: Path, tmp_path: Path
) -> None:
    cfg = {**FULL, "acquisition": {**IDENTITY_ACQUISITION, "gamma": [0.5, 2.0], "noise_std": 0.05}}
    first, again = tmp_path / "first", tmp_path / "again"
    augment_dataset(cxr_processed, first, cfg, example_pairs=1, seed=4)
    augment_dataset(cxr_processed, again, cfg, example_pairs=1, seed=4)
    assert (first / "index.csv").read_bytes() == (again / "index.csv").read_bytes()
    for path in sorted((first / "images").iterdir()):
        assert path.read_bytes() == (again / "images" / path.name).read_bytes()
    with pytest.raises(DataError, match=r"stats.json: no normalisation record"):
        augment_dataset(processed, tmp_path / "em", cfg, example_pairs=1, seed=4)
    assert not (tmp_path / "em").exists()
