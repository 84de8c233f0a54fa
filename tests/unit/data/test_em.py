"""Preprocessing of EM stacks: layouts, normalisation, split, labels and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from unetflow.data.em import preprocess_em
from unetflow.data.weightmaps import border_weight_map
from unetflow.io.images import read_float_tiff, read_gray, write_png
from unetflow.io.processed import DataError, read_split

N, N_TEST, SIZE = 10, 4, 64
CFG = {"kind": "em", "preprocess": {"label_threshold": 128}, "split": {}}
SPLIT = {"train": [0, 6], "val": [6, 8], "test": [8, 10]}


def fabricate(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train images (uint8), {0, 255} labels and unlabeled test images of a small EM stack."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(N, SIZE, SIZE), dtype=np.uint8)
    labels = np.where(rng.random((N, SIZE, SIZE)) < 0.75, 255, 0).astype(np.uint8)
    tests = rng.integers(0, 256, size=(N_TEST, SIZE, SIZE), dtype=np.uint8)
    return images, labels, tests


def write_png_raw(root: Path, images: np.ndarray, labels: np.ndarray, tests: np.ndarray) -> Path:
    for sub in ("train/images", "train/labels", "test/images"):
        (root / sub).mkdir(parents=True)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        write_png(root / "train" / "images" / f"{i:02d}.png", image)
        write_png(root / "train" / "labels" / f"{i:02d}.png", label)
    for i, image in enumerate(tests):
        write_png(root / "test" / "images" / f"{i:02d}.png", image)
    return root


def write_tiff_raw(root: Path, images: np.ndarray, labels: np.ndarray, tests: np.ndarray) -> Path:
    root.mkdir(parents=True)
    for name, stack in (("train-volume", images), ("train-labels", labels), ("test-volume", tests)):
        tifffile.imwrite(root / f"{name}.tif", stack, photometric="minisblack")
    return root


def cfg(split: dict | None = None) -> dict:
    return {**CFG, "split": dict(SPLIT if split is None else split)}


@pytest.fixture
def stack() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return fabricate()


@pytest.fixture
def png_raw(tmp_path: Path, stack) -> Path:
    return write_png_raw(tmp_path / "raw", *stack)


def test_png_layout_outputs(png_raw: Path, tmp_path: Path, stack) -> None:
    images, labels, tests = stack
    out = tmp_path / "processed"
    preprocess_em(png_raw, out, cfg())

    table = read_split(out)
    assert list(table.columns) == ["id", "split", "source", "index", "height", "width"]
    assert list(table["id"]) == [f"slice_{i:02d}" for i in range(N)] + [
        f"testslice_{i:02d}" for i in range(N_TEST)
    ]
    assert list(table["split"]) == ["train"] * 6 + ["val"] * 2 + ["test"] * 2 + ["predict"] * 4
    assert table.loc[0, "source"] == "train/images/00.png"
    assert table.loc[N, "source"] == "test/images/00.png"
    assert list(table["index"]) == list(range(N)) + list(range(N_TEST))
    assert (table["height"] == SIZE).all() and (table["width"] == SIZE).all()

    # normalisation statistics come from the train slices only, in [0, 1] units
    train = images[:6].astype(np.float64) / 255.0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["mean"] == pytest.approx(train.mean(), rel=1e-9)
    assert stats["std"] == pytest.approx(train.std(), rel=1e-9)
    everything = images.astype(np.float64) / 255.0
    assert abs(everything[6:].mean() - train.mean()) > 1e-4  # so the check above can fail
    assert stats["computed_on"] == "train"
    assert stats["labels"] == {"0": "membrane", "1": "cell"}
    assert stats["counts"] == {"train": 6, "val": 2, "test": 2, "predict": 4}
    assert stats["left_out"] == 0

    for i in range(N):
        image = read_float_tiff(out / "images" / f"slice_{i:02d}.tif")
        assert image.dtype == np.float32
        expected = (images[i] / 255.0 - stats["mean"]) / stats["std"]
        np.testing.assert_allclose(image, expected, rtol=1e-5, atol=1e-5)
        mask = read_gray(out / "masks" / f"slice_{i:02d}.png")
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, (labels[i] == 255).astype(np.uint8))
    z = np.stack([read_float_tiff(out / "images" / f"slice_{i:02d}.tif") for i in range(6)])
    assert z.mean() == pytest.approx(0.0, abs=1e-5) and z.std() == pytest.approx(1.0, abs=1e-5)

    test_image = read_float_tiff(out / "images" / "testslice_03.tif")
    np.testing.assert_allclose(
        test_image, (tests[3] / 255.0 - stats["mean"]) / stats["std"], rtol=1e-5, atol=1e-5
    )
    assert not (out / "masks" / "testslice_03.png").exists()


def test_tiff_stacks_give_identical_outputs(png_raw: Path, tmp_path: Path, stack) -> None:
    tiff_raw = write_tiff_raw(tmp_path / "raw_tiff", *stack)
    preprocess_em(png_raw, tmp_path / "from_png", cfg())
    preprocess_em(tiff_raw, tmp_path / "from_tiff", cfg())
    a, b = tmp_path / "from_png", tmp_path / "from_tiff"

    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        if rel.suffix in (".tif", ".png"):
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    stats_a = json.loads((a / "stats.json").read_text())
    stats_b = json.loads((b / "stats.json").read_text())
    assert (stats_a.pop("layout"), stats_b.pop("layout")) == ("png", "tiff")
    assert stats_a == stats_b

    split_a, split_b = read_split(a), read_split(b)
    assert split_b.loc[3, "source"] == "train-volume.tif#3"
    assert split_b.loc[N + 2, "source"] == "test-volume.tif#2"
    cols = ["id", "split", "index", "height", "width"]
    pd.testing.assert_frame_equal(split_a[cols], split_b[cols])


def test_slices_in_no_range_are_left_out(png_raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "processed"
    preprocess_em(png_raw, out, cfg({"train": [2, 5], "test": [7, 9]}))
    table = read_split(out)
    labelled = table[table["split"] != "predict"]
    assert list(labelled["id"]) == ["slice_02", "slice_03", "slice_04", "slice_07", "slice_08"]
    assert list(labelled["split"]) == ["train"] * 3 + ["test"] * 2
    stats = json.loads((out / "stats.json").read_text())
    assert stats["left_out"] == 5
    assert stats["counts"] == {"train": 3, "test": 2, "predict": N_TEST}
    assert not (out / "images" / "slice_05.tif").exists()


def test_zero_one_labels_equal_zero_255_labels(tmp_path: Path, stack) -> None:
    images, labels, tests = stack
    write_png_raw(tmp_path / "a", images, labels, tests)
    write_png_raw(tmp_path / "b", images, (labels // 255).astype(np.uint8), tests)
    preprocess_em(tmp_path / "a", tmp_path / "pa", cfg())
    preprocess_em(tmp_path / "b", tmp_path / "pb", cfg())
    for i in range(N):
        name = f"masks/slice_{i:02d}.png"
        np.testing.assert_array_equal(
            read_gray(tmp_path / "pa" / name), read_gray(tmp_path / "pb" / name)
        )


def test_all_cell_label_is_accepted(tmp_path: Path, stack) -> None:
    images, labels, tests = stack
    labels[4] = 255
    raw = write_png_raw(tmp_path / "raw", images, labels, tests)
    preprocess_em(raw, tmp_path / "out", cfg())
    assert (read_gray(tmp_path / "out" / "masks" / "slice_04.png") == 1).all()


def assert_nothing_published(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def break_unreadable(raw: Path) -> str:
    (raw / "train" / "images" / "03.png").write_bytes(b"not a png at all")
    return "03.png"


def break_size(raw: Path) -> str:
    write_png(raw / "train" / "labels" / "02.png", np.zeros((32, 32), np.uint8))
    return "labels/02.png"


def break_binary(raw: Path) -> str:
    label = np.zeros((SIZE, SIZE), np.uint8)
    label[:10] = 128
    label[10:20] = 255
    write_png(raw / "train" / "labels" / "05.png", label)
    return "labels/05.png"


def break_missing_label(raw: Path) -> str:
    (raw / "train" / "labels" / "04.png").unlink()
    return "images/04.png"


def break_no_images(raw: Path) -> str:
    for path in (raw / "train" / "images").iterdir():
        path.unlink()
    return "train/images"


@pytest.mark.parametrize(
    ("breaker", "phrase"),
    [
        (break_unreadable, "cannot read"),
        (break_size, "does not match"),
        (break_binary, "[0, 128, 255]"),
        (break_missing_label, "missing label"),
        (break_no_images, "no images found"),
    ],
)
def test_bad_png_raw_names_the_file(png_raw: Path, tmp_path: Path, breaker, phrase) -> None:
    name = breaker(png_raw)
    out = tmp_path / "processed"
    with pytest.raises(DataError) as info:
        preprocess_em(png_raw, out, cfg())
    assert name in str(info.value)
    assert phrase in str(info.value)
    assert_nothing_published(out)


def test_mismatched_page_counts(tmp_path: Path, stack) -> None:
    images, labels, tests = stack
    raw = write_tiff_raw(tmp_path / "raw", images, labels[:-1], tests)
    out = tmp_path / "processed"
    with pytest.raises(DataError, match=r"train-labels\.tif: 9 pages but train-volume\.tif has 10"):
        preprocess_em(raw, out, cfg())
    assert_nothing_published(out)


def test_empty_raw_folder(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    with pytest.raises(DataError, match="no images found"):
        preprocess_em(tmp_path / "raw", tmp_path / "out", cfg())
    assert_nothing_published(tmp_path / "out")


@pytest.mark.parametrize(
    ("split", "pattern"),
    [
        ({"train": [0, 11]}, r"split\.train: .* stack of 10 labelled slices"),
        ({"train": [0, 5], "val": [4, 7]}, r"split\.train .* split\.val .* overlap.* 10 labelled"),
        ({"train": [3, 3], "val": [4, 7]}, r"split\.train: range \[3, 3\] is empty.*10 labelled"),
    ],
)
def test_bad_split_names_the_key(png_raw: Path, tmp_path: Path, split, pattern) -> None:
    out = tmp_path / "processed"
    with pytest.raises(DataError, match=pattern):
        preprocess_em(png_raw, out, cfg(split))
    assert_nothing_published(out)


def test_error_keeps_previous_output(png_raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "processed"
    preprocess_em(png_raw, out, cfg())
    before = (out / "split.csv").read_bytes()
    break_binary(png_raw)
    with pytest.raises(DataError):
        preprocess_em(png_raw, out, cfg())
    assert (out / "split.csv").read_bytes() == before


def test_read_split_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"split\.csv: not found"):
        read_split(tmp_path)
    (tmp_path / "split.csv").write_text("name,part\na,train\n")
    with pytest.raises(DataError, match=r"split\.csv: missing column"):
        read_split(tmp_path)
    (tmp_path / "split.csv").write_text("id,split\nNA,train\nnull,val\n")
    assert list(read_split(tmp_path)["id"]) == ["NA", "null"]


def test_folds_are_contiguous_blocks_of_the_labelled_slices(png_raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "processed"
    preprocess_em(png_raw, out, {**cfg(), "folds": 5})
    folds = pd.read_csv(out / "folds.csv", dtype={"id": str})
    assert list(folds["id"]) == [f"slice_{i:02d}" for i in range(10)]
    assert list(folds["fold"]) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    with pytest.raises(DataError, match="10 labelled images cannot make folds: 11 folds"):
        preprocess_em(png_raw, tmp_path / "eleven", {**cfg(), "folds": 11})
    assert not (tmp_path / "eleven").exists()


def test_weight_maps_for_every_labelled_slice(png_raw: Path, tmp_path: Path, stack) -> None:
    out = tmp_path / "processed"
    weight_cfg = {"w0": 10.0, "sigma": 5.0, "where": "background"}
    preprocess_em(png_raw, out, {**cfg(), "preprocess": {"weight_map": weight_cfg}})
    written = sorted(p.name for p in (out / "weights").iterdir())
    assert written == [f"slice_{i:02d}.tif" for i in range(10)]  # each trains in some fold
    mask = read_gray(out / "masks" / "slice_03.png")
    expected = border_weight_map(mask, **weight_cfg)
    np.testing.assert_allclose(read_float_tiff(out / "weights" / "slice_03.tif"), expected)
    assert read_gray(out / "weight_map.png").shape == (420, 900)
    plain = tmp_path / "plain"
    preprocess_em(png_raw, plain, cfg())
    assert not (plain / "weights").exists() and not (plain / "weight_map.png").exists()
