"""The synthetic datasets: raw layout of the real ones, sensible content, determinism."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import io as skio

from unetflow.data.synthetic import generate_synth_cxr, generate_synth_em
from unetflow.io.images import read_gray

SIZE = 128


def _em(tmp_path: Path, name: str = "em", **kwargs: int) -> Path:
    args = {"n_train": 10, "n_test": 8, "size": SIZE, "seed": 7} | kwargs
    out = tmp_path / name
    out.mkdir()
    generate_synth_em(out, **args)
    return out


def _cxr(tmp_path: Path, name: str = "cxr", **kwargs: int) -> Path:
    args = {"n_images": 8, "n_unmasked": 2, "size": SIZE, "seed": 7} | kwargs
    out = tmp_path / name
    out.mkdir()
    generate_synth_cxr(out, **args)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


@pytest.fixture(scope="module")
def em(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _em(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def cxr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _cxr(tmp_path_factory.mktemp("synth"))


def test_em_layout_dtypes_and_labels(em: Path):
    names = [f"{i:02d}.png" for i in range(10)]
    assert sorted(p.name for p in (em / "train/images").iterdir()) == names
    assert sorted(p.name for p in (em / "train/labels").iterdir()) == names
    assert sorted(p.name for p in (em / "test/images").iterdir()) == names[:8]
    assert sorted(p.relative_to(em).as_posix() for p in em.iterdir()) == ["test", "train"]
    fractions = []
    for path in sorted(em.rglob("*.png")):
        raw = skio.imread(path)  # stored as 8-bit grey, not RGB
        assert raw.dtype == np.uint8 and raw.shape == (SIZE, SIZE), path
    for name in names:
        label = read_gray(em / "train/labels" / name)
        assert set(np.unique(label).tolist()) == {0, 255}, name
        fractions.append(float(np.mean(label == 0)))
    # ISBI 2012 has about 22% membrane (so has synth_em at 512 px); a 128 px slice shows
    # few cells, so the bounds leave room for that.
    assert 0.12 <= np.mean(fractions) <= 0.32, fractions
    assert min(fractions) >= 0.08 and max(fractions) <= 0.40, fractions


def test_em_names_widen_past_100_slices(tmp_path: Path):
    out = _em(tmp_path, n_train=101, n_test=1, size=64)
    names = sorted(p.name for p in (out / "train/images").iterdir())
    assert names[0] == "000.png" and names[-1] == "100.png" and len(names) == 101
    assert [p.name for p in (out / "test/images").iterdir()] == ["00.png"]


def test_em_membranes_are_darker_than_cells(em: Path):
    for i in range(10):
        image = read_gray(em / f"train/images/{i:02d}.png").astype(float)
        label = read_gray(em / f"train/labels/{i:02d}.png")
        membrane, cell = image[label == 0].mean(), image[label == 255].mean()
        assert membrane < cell - 20, (i, membrane, cell)
        # Cells are not flat: texture and organelles make pixel intensity alone ambiguous.
        assert image[label == 255].std() > 15, i


def test_em_neighbouring_slices_are_correlated(em: Path):
    for sub, n in (("train/images", 10), ("test/images", 8)):
        stack = [read_gray(em / sub / f"{i:02d}.png") for i in range(n)]
        adjacent = np.mean([_corr(stack[i], stack[i + 1]) for i in range(n - 1)])
        distant = _corr(stack[0], stack[-1])
        assert adjacent > 0.4 and adjacent > distant + 0.15, (sub, adjacent, distant)
    labels = [read_gray(em / f"train/labels/{i:02d}.png") for i in range(10)]
    assert _corr(labels[4], labels[5]) > _corr(labels[0], labels[9]) + 0.2
    # The test stack is a different volume, not a copy of the training slices.
    train0, test0 = (read_gray(em / f"{s}/images/00.png") for s in ("train", "test"))
    assert abs(_corr(train0, test0)) < 0.3


def test_em_is_deterministic(tmp_path: Path, em: Path):
    again = _em(tmp_path, "again")
    assert _files(again) == _files(em)
    other = _files(_em(tmp_path, "other", seed=8))
    assert other.keys() == _files(em).keys()
    assert all(other[k] != v for k, v in _files(em).items())


def test_cxr_layout_masks_and_metadata(cxr: Path):
    images = sorted(p.name for p in (cxr / "CXR_png").iterdir())
    assert [re.fullmatch(r"CHNCXR_(\d{4})_[01]\.png", n)[1] for n in images] == [
        f"{i:04d}" for i in range(1, 9)
    ]
    masks = sorted(p.name for p in (cxr / "masks").iterdir())
    assert len(masks) == 8 - 2
    assert {m.replace("_mask.png", ".png") for m in masks} <= set(images)
    for name in images:
        raw = skio.imread(cxr / "CXR_png" / name)
        assert raw.dtype == np.uint8 and raw.shape == (SIZE, SIZE), name
    for name in masks:
        mask = skio.imread(cxr / "masks" / name)
        assert mask.dtype == np.uint8 and mask.shape == (SIZE, SIZE), name
        assert set(np.unique(mask).tolist()) == {0, 255}, name
        # Both lungs in one mask: one lung field on each side of the midline.
        parts, count = ndi.label(mask > 0)
        assert count == 2, name
        centres = sorted(np.mean(np.nonzero(parts == k)[1]) for k in (1, 2))
        assert centres[0] < SIZE / 2 < centres[1], name
        assert 0.12 < np.mean(mask > 0) < 0.4, name

    with open(cxr / "shenzhen_metadata.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["study_id", "sex", "age", "findings"]
    body = rows[1:]
    assert [r[0] for r in body] == images and all(len(r) == 4 for r in body)
    for study_id, sex, age, findings in body:
        assert sex in {"Male", "Female"}
        assert age.isdigit() and 1 <= int(age) <= 89
        normal = study_id.endswith("_0.png")
        assert (findings == "normal") == normal, (study_id, findings)
        assert findings.strip()
    assert {r[0][-5] for r in body} == {"0", "1"}  # both classes present


def test_cxr_lungs_are_darker_than_the_thorax_around_them(cxr: Path):
    for path in sorted((cxr / "masks").iterdir()):
        mask = read_gray(path) > 0
        image = read_gray(cxr / "CXR_png" / path.name.replace("_mask", "")).astype(float)
        ring = ndi.binary_dilation(mask, iterations=6) & ~mask
        assert image[mask].mean() < image[ring].mean() - 20, path.name
        # The mask follows the edge of the lung field: a thin band just inside is darker
        # than the band just outside.
        inner = mask & ~ndi.binary_erosion(mask, iterations=2)
        outer = ndi.binary_dilation(mask, iterations=2) & ~mask
        assert image[inner].mean() < image[outer].mean() - 10, path.name


def test_cxr_is_deterministic(tmp_path: Path, cxr: Path):
    assert _files(_cxr(tmp_path, "again")) == _files(cxr)
    other = _cxr(tmp_path, "other", seed=8)
    for i in range(1, 9):
        (mine,) = (cxr / "CXR_png").glob(f"CHNCXR_{i:04d}_*.png")
        (theirs,) = (other / "CXR_png").glob(f"CHNCXR_{i:04d}_*.png")
        assert not np.array_equal(read_gray(mine), read_gray(theirs)), i
    metadata = "shenzhen_metadata.csv"
    assert (other / metadata).read_bytes() != (cxr / metadata).read_bytes()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_train": 0}, "n_train"),
        ({"n_test": 0}, "n_test"),
        ({"size": 63}, "size"),
        ({"seed": -1}, "seed"),
        ({"n_train": 2.5}, "n_train"),
    ],
)
def test_em_rejects_bad_arguments(tmp_path: Path, kwargs: dict, name: str):
    args = {"n_train": 2, "n_test": 1, "size": 64, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=rf"^{name}: "):
        generate_synth_em(tmp_path, **args)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_images": 0, "n_unmasked": 0}, "n_images"),
        ({"n_unmasked": -1}, "n_unmasked"),
        ({"n_unmasked": 3}, "n_unmasked"),
        ({"size": 32}, "size"),
    ],
)
def test_cxr_rejects_bad_arguments(tmp_path: Path, kwargs: dict, name: str):
    args = {"n_images": 3, "n_unmasked": 1, "size": 64, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=rf"^{name}: "):
        generate_synth_cxr(tmp_path, **args)
    assert not any(tmp_path.iterdir())


def test_output_folder_must_exist_and_be_empty(tmp_path: Path):
    (tmp_path / "stale.png").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"^out: .* must be empty"):
        generate_synth_em(tmp_path, n_train=1, n_test=1, size=64, seed=0)
    with pytest.raises(ValueError, match=r"^out: .* not an existing folder"):
        generate_synth_cxr(tmp_path / "missing", n_images=2, n_unmasked=0, size=64, seed=0)
