"""Preprocessing of chest X-rays: pairing, metadata, stratified split, normalisation, errors."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections import Counter
from fractions import Fraction
from math import ceil, floor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from skimage.transform import resize

from project import copy_project, cxr_definition
from unetflow.config import load_params, resolve
from unetflow.data.cxr import SPLIT_COLUMNS, parse_sex_age, preprocess_cxr, scan_raw
from unetflow.data.intensity import normalise
from unetflow.data.splits import split_fractions, split_sizes, stratified_split
from unetflow.data.synthetic import generate_synth_cxr
from unetflow.io.images import read_float_tiff, read_gray, write_png
from unetflow.io.processed import SCORE_MASKS, UNIT_DIR, DataError, read_split, scoring_mask_path

SPLIT = {"train": 0.6, "val": 0.2, "test": 0.2}
SEED = 2015
SIZE = 64


def cfg(split: dict | None = None, size: int = SIZE, normalise: str = "train_zscore") -> dict:
    return cxr_definition(size, size, normalise, SPLIT if split is None else split)


def assert_stratified(split_of: dict[str, str], strata: dict[str, str], fractions: dict) -> None:
    """Every stratum's count in every split is the floor or ceil of its share."""
    cells = Counter((split_of[sid], strata[sid]) for sid in split_of)
    for stratum, size in Counter(strata.values()).items():
        for name, fraction in fractions.items():
            share = size * Fraction(fraction)
            assert floor(share) <= cells[name, stratum] <= ceil(share), (stratum, name)


def assert_nothing_published(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def expected_image(path: Path, mean: float, std: float) -> np.ndarray:
    scaled = read_gray(path) / 255.0
    if scaled.shape != (SIZE, SIZE):
        scaled = resize(scaled, (SIZE, SIZE), order=1, mode="edge", anti_aliasing=True)
    return (scaled - mean) / std


# --- synth_cxr ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("raw") / "synth_cxr"
    raw.mkdir()
    generate_synth_cxr(raw, n_images=30, n_unmasked=3, size=96, seed=7)
    return raw


@pytest.fixture(scope="module")
def synth_out(tmp_path_factory: pytest.TempPathFactory, synth_raw: Path) -> Path:
    out = tmp_path_factory.mktemp("processed") / "synth_cxr"
    preprocess_cxr(synth_raw, out, cfg(), seed=SEED)
    return out


@pytest.fixture
def raw_copy(tmp_path: Path, synth_raw: Path) -> Path:
    return Path(shutil.copytree(synth_raw, tmp_path / "synth_cxr"))


def test_folds_are_stratified_over_every_masked_image(synth_out: Path) -> None:
    table = read_split(synth_out)
    folds = pd.read_csv(synth_out / "folds.csv", dtype={"id": str})
    assert list(folds["id"]) == list(table["id"]) and sorted(folds["fold"].unique()) == [
        0,
        1,
        2,
        3,
        4,
    ]
    strata = table["sex"] + "_" + table["finding"]
    for stratum in strata.unique():
        per_fold = folds.loc[(strata == stratum).to_numpy(), "fold"].value_counts()
        n = int((strata == stratum).sum())
        assert all(floor(n / 5) <= per_fold.get(f, 0) <= ceil(n / 5) for f in range(5)), stratum
    fold2 = read_split(synth_out, 2)
    assert set(fold2.loc[fold2["split"] == "test", "id"]) == set(
        folds.loc[folds["fold"] == 2, "id"]
    )


def test_synth_outputs(synth_raw: Path, synth_out: Path) -> None:
    table = read_split(synth_out)
    stats = json.loads((synth_out / "stats.json").read_text())
    assert list(table.columns) == SPLIT_COLUMNS
    assert list(table["id"]) == sorted(table["id"])

    images = sorted(p.stem for p in (synth_raw / "CXR_png").iterdir())
    masks = sorted(p.name.removesuffix("_mask.png") for p in (synth_raw / "masks").iterdir())
    unmasked = sorted(set(images) - set(masks))
    assert len(unmasked) == 3 and list(table["id"]) == masks
    assert stats["n_unmasked"] == 3 and stats["unmasked"] == unmasked
    assert stats["n_pairs"] == 27 and stats["metadata"] == "csv"
    assert set(table["split"]) == {"train", "val", "test"}  # no predict rows
    assert table.loc[0, "source"] == f"CXR_png/{masks[0]}.png"
    assert table.loc[0, "mask_source"] == f"masks/{masks[0]}_mask.png"
    assert (table["height"] == 96).all() and (table["width"] == 96).all()
    assert stats["size"] == SIZE and stats["n_resized"] == 27
    assert stats["labels"] == {"0": "background", "1": "lung"}

    # metadata as in the raw CSV, normalised
    with open(synth_raw / "shenzhen_metadata.csv", newline="") as f:
        raw_rows = {r["study_id"][:-4]: r for r in csv.DictReader(f)}
    for row in table.itertuples():
        source = raw_rows[row.id]
        assert row.sex == source["sex"].lower() and row.age == int(source["age"])
        assert row.findings == source["findings"]
        assert row.finding == ("normal" if row.id.endswith("_0") else "abnormal")

    # split: largest-remainder sizes of 27 (16.2 / 5.4 / 5.4) and floor/ceil per stratum
    assert stats["counts"] == {"train": 16, "val": 6, "test": 5} == split_sizes(27, SPLIT)
    strata = dict(zip(table["id"], table["sex"] + "_" + table["finding"], strict=True))
    assert_stratified(dict(zip(table["id"], table["split"], strict=True)), strata, SPLIT)
    by_stratum = Counter(zip(table["split"], table["sex"] + "_" + table["finding"], strict=True))
    assert stats["counts_by_stratum"] == {
        name: {k: n for (s, k), n in sorted(by_stratum.items()) if s == name} for name in SPLIT
    }

    # images: float32 at SIZE, z-scored with the train images' statistics only
    stack = np.stack([read_float_tiff(synth_out / "images" / f"{i}.tif") for i in strata])
    assert stack.dtype == np.float32 and stack.shape == (27, SIZE, SIZE)
    is_train = (table["split"] == "train").to_numpy()
    assert stack[is_train].mean() == pytest.approx(0, abs=1e-5)
    assert stack[is_train].std() == pytest.approx(1, abs=1e-5)
    assert abs(stack[~is_train].mean()) > 1e-3  # so that the check above can fail
    sid = table.loc[table["split"] == "test", "id"].iloc[0]
    np.testing.assert_allclose(
        read_float_tiff(synth_out / "images" / f"{sid}.tif"),
        expected_image(synth_raw / "CXR_png" / f"{sid}.png", stats["mean"], stats["std"]),
        atol=1e-5,
    )

    # masks: uint8 {0, 1} at SIZE, 1 = lung, agreeing with the raw mask shrunk
    for sid in strata:
        mask = read_gray(synth_out / "masks" / f"{sid}.png")
        assert mask.dtype == np.uint8 and mask.shape == (SIZE, SIZE)
        assert set(np.unique(mask)) == {0, 1}
        raw = read_gray(synth_raw / "masks" / f"{sid}_mask.png")
        shrunk = resize(
            raw, (SIZE, SIZE), order=1, mode="edge", anti_aliasing=True, preserve_range=True
        )
        np.testing.assert_array_equal(mask, shrunk >= 128)


def test_train_zscore_images_are_the_unit_images_zscored_bytewise(synth_out: Path) -> None:
    stats = json.loads((synth_out / "stats.json").read_text())
    assert stats["normalisation"] == {
        "method": "train_zscore",
        "mean": stats["mean"],
        "std": stats["std"],
    }
    for sid in read_split(synth_out)["id"]:
        unit = read_float_tiff(synth_out / UNIT_DIR / f"{sid}.tif")
        assert unit.dtype == np.float32 and unit.min() >= 0 and unit.max() <= 1
        old = (unit - stats["mean"]) / stats["std"]  # how preprocess always normalised
        assert read_float_tiff(synth_out / "images" / f"{sid}.tif").tobytes() == old.tobytes()


def test_image_window_normalises_each_image_by_itself(
    synth_raw: Path, synth_out: Path, tmp_path: Path
) -> None:
    out = tmp_path / "processed"
    preprocess_cxr(synth_raw, out, cfg(normalise="image_window"), seed=SEED)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["normalisation"] == {"method": "image_window", "window_pct": [1.0, 99.0]}
    assert stats["mean"] == json.loads((synth_out / "stats.json").read_text())["mean"]
    for name in ("split.csv", "masks"):
        assert tree_bytes(out / name) == tree_bytes(synth_out / name)
    for sid in read_split(out)["id"]:
        unit = read_float_tiff(out / UNIT_DIR / f"{sid}.tif")
        image = read_float_tiff(out / "images" / f"{sid}.tif")
        assert unit.tobytes() == read_float_tiff(synth_out / UNIT_DIR / f"{sid}.tif").tobytes()
        assert image.tobytes() == normalise(unit, stats["normalisation"]).tobytes()
        assert -np.sqrt(3) - 1e-6 <= image.min() and image.max() <= np.sqrt(3) + 1e-6


def tree_bytes(path: Path) -> dict[str, bytes]:
    """Every file under `path` (or `path` itself) by relative name, with its bytes."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*"))}


def test_score_masks_at_score_size(synth_raw: Path, synth_out: Path, tmp_path: Path) -> None:
    assert not (synth_out / SCORE_MASKS).exists()  # score_size = size: scored on masks/
    sid = read_split(synth_out)["id"].iloc[0]
    assert scoring_mask_path(synth_out, sid) == synth_out / "masks" / f"{sid}.png"

    out = tmp_path / "processed"
    settings = cfg()
    settings["preprocess"]["score_size"] = 96
    preprocess_cxr(synth_raw, out, settings, seed=SEED)
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["size"], stats["score_size"], stats["score_masks"]) == (SIZE, 96, True)
    assert (out / "split.csv").read_bytes() == (synth_out / "split.csv").read_bytes()
    assert scoring_mask_path(out, sid) == out / SCORE_MASKS / f"{sid}.png"
    for sid in read_split(out)["id"]:
        raw = read_gray(synth_raw / "masks" / f"{sid}_mask.png")  # already 96 x 96
        np.testing.assert_array_equal(read_gray(out / SCORE_MASKS / f"{sid}.png"), raw >= 128)
        assert read_gray(out / "masks" / f"{sid}.png").shape == (SIZE, SIZE)


def test_deterministic_for_a_seed(synth_raw: Path, synth_out: Path, tmp_path: Path) -> None:
    again, other = tmp_path / "again", tmp_path / "other"
    preprocess_cxr(synth_raw, again, cfg(), seed=SEED)
    preprocess_cxr(synth_raw, other, cfg(), seed=SEED + 1)
    sid = read_split(synth_out)["id"].iloc[0]
    for name in ("split.csv", "stats.json", f"images/{sid}.tif", f"masks/{sid}.png"):
        assert (again / name).read_bytes() == (synth_out / name).read_bytes(), name
    first, second = read_split(synth_out), read_split(other)
    assert list(first["id"]) == list(second["id"])
    assert list(first["split"]) != list(second["split"])
    assert Counter(first["split"]) == Counter(second["split"])


# --- the split on its own ------------------------------------------------------------------


@pytest.mark.parametrize(
    "fractions",
    [SPLIT, {"train": 0.5, "val": 0.25, "test": 0.25}, {"train": 0.7, "val": 0.3, "test": 0.0}],
)
def test_split_sizes_strata_and_order(fractions: dict) -> None:
    rng = np.random.default_rng(0)
    for trial in range(40):
        n = int(rng.integers(1, 80))
        ids = [f"img_{i:03d}" for i in range(n)]
        strata = {sid: f"s{int(rng.integers(0, 1 + trial % 7))}" for sid in ids}
        exact = split_fractions(fractions)
        split_of = stratified_split(ids, [strata[i] for i in ids], exact, seed=trial)
        assert Counter(split_of.values()) == Counter(
            {k: v for k, v in split_sizes(n, exact).items() if v}
        )
        assert_stratified(split_of, strata, fractions)
        order = rng.permutation(n)
        shuffled = stratified_split(
            [ids[i] for i in order], [strata[ids[i]] for i in order], exact, seed=trial
        )
        assert shuffled == split_of


def test_split_sizes_are_largest_remainder() -> None:
    assert split_sizes(566, SPLIT) == {"train": 340, "val": 113, "test": 113}
    assert split_sizes(7, SPLIT) == {"train": 4, "val": 2, "test": 1}  # tie: first listed
    assert split_sizes(10, {"train": 1 / 3, "val": 1 / 3, "test": 1 / 3}) == {
        "train": 4,
        "val": 3,
        "test": 3,
    }


def test_split_depends_on_the_seed() -> None:
    ids = [f"img_{i:03d}" for i in range(60)]
    strata = ["a" if i % 3 else "b" for i in range(60)]
    assert stratified_split(ids, strata, SPLIT, 1) == stratified_split(ids, strata, SPLIT, 1)
    assert stratified_split(ids, strata, SPLIT, 1) != stratified_split(ids, strata, SPLIT, 2)


# --- the real Shenzhen files ----------------------------------------------------------------

SUBSET = [f"CHNCXR_{i:04d}_0" for i in range(1, 15)] + [
    "CHNCXR_0025_0",  # no mask
    "CHNCXR_0036_0",  # no mask
    "CHNCXR_0348_1",  # no mask
    "CHNCXR_0359_1",  # no mask
    "CHNCXR_0361_1",
    "CHNCXR_0365_1",
    "CHNCXR_0368_1",
    "CHNCXR_0370_1",
    "CHNCXR_0380_1",
    "CHNCXR_0381_1",
    "CHNCXR_0389_1",
]


def test_real_subset(mirror: Path, tmp_path: Path) -> None:
    source, raw = mirror / "shenzhen", tmp_path / "shenzhen"
    (raw / "CXR_png").mkdir(parents=True)
    (raw / "masks").mkdir()
    for sid in SUBSET:
        shutil.copy(source / "CXR_png" / f"{sid}.png", raw / "CXR_png")
        if (source / "masks" / f"{sid}_mask.png").exists():
            shutil.copy(source / "masks" / f"{sid}_mask.png", raw / "masks")
    lines = (source / "shenzhen_metadata.csv").read_text().splitlines(keepends=True)
    rows = [line for line in lines[1:] if line.split(".png,")[0] in SUBSET]
    (raw / "shenzhen_metadata.csv").write_text("".join(lines[:1] + rows))

    out = tmp_path / "processed"
    preprocess_cxr(raw, out, cfg(), seed=SEED)
    table = read_split(out).set_index("id")
    stats = json.loads((out / "stats.json").read_text())
    unmasked = ["CHNCXR_0025_0", "CHNCXR_0036_0", "CHNCXR_0348_1", "CHNCXR_0359_1"]
    assert stats["n_unmasked"] == 4 and stats["unmasked"] == unmasked
    assert sorted(table.index) == sorted(set(SUBSET) - set(unmasked))
    assert stats["counts"] == {"train": 13, "val": 4, "test": 4} == split_sizes(21, SPLIT)
    assert stats["n_resized"] == 21 and (table["height"] == 512).all()

    first = table.loc["CHNCXR_0001_0"]
    assert (first["sex"], first["age"], first["finding"], first["findings"]) == (
        "male",
        45,
        "normal",
        "normal",
    )
    tb = table.loc["CHNCXR_0361_1"]
    assert (tb["sex"], tb["age"], tb["finding"]) == ("female", 49, "abnormal")
    assert tb["findings"] == "Bilateral secondary PTB, left encapsulated intrathoracic fluid"
    mask = read_gray(out / "masks" / "CHNCXR_0001_0.png")
    assert mask.shape == (SIZE, SIZE) and 0.1 < mask.mean() < 0.5  # lungs, not background


def test_full_mirror_pairs_and_split(mirror: Path) -> None:
    scan = scan_raw(mirror / "shenzhen")  # file names and metadata only, no pixels
    assert len(scan.cases) == 566 and len(scan.unmasked) == 96
    assert scan.metadata == "csv"
    assert Counter(c.reading.finding for c in scan.cases) == {"normal": 279, "abnormal": 287}
    strata = {c.id: c.stratum for c in scan.cases}
    assert Counter(strata.values()) == {
        "male_abnormal": 202,
        "male_normal": 187,
        "female_normal": 92,
        "female_abnormal": 85,
    }
    fractions = split_fractions(SPLIT)
    split_of = stratified_split(list(strata), list(strata.values()), fractions, SEED)
    assert Counter(split_of.values()) == {"train": 340, "val": 113, "test": 113}
    assert_stratified(split_of, strata, SPLIT)
    reverse = stratified_split(list(strata)[::-1], list(strata.values())[::-1], fractions, SEED)
    assert reverse == split_of


# --- NLM originals: full-size RGBA/palette PNGs and ClinicalReadings ------------------------

NLM_READINGS = {
    "CHNCXR_0001_0": ("male 45yrs\nnormal\n", ("male", 45, "normal", "normal")),
    "CHNCXR_0002_1": (
        "Female 35 yr\n\nPTB in the left upper field\n",
        ("female", 35, "abnormal", "PTB in the left upper field"),
    ),
    "CHNCXR_0003_0": ("male 8month\nnormal", ("male", 0, "normal", "normal")),
    "CHNCXR_0004_1": (
        "female 35yr\nleft PTB\nleft pleurisy\n",
        ("female", 35, "abnormal", "left PTB, left pleurisy"),
    ),
    "CHNCXR_0005_0": ("male 45\n normal \n", ("male", 45, "normal", "normal")),
    "CHNCXR_0006_1": ("Male 61 yrs\nSTB\n", ("male", 61, "abnormal", "STB")),
}
NLM_H, NLM_W = 150, 130


def write_nlm(raw: Path) -> Path:
    """Non-square RGBA, palette and RGB images, 0/255 masks (left half of the width)."""
    for sub in ("CXR_png", "masks", "ClinicalReadings"):
        (raw / sub).mkdir(parents=True)
    rng = np.random.default_rng(3)
    mask = np.zeros((NLM_H, NLM_W), np.uint8)
    mask[: NLM_H // 3, : NLM_W // 2] = 255  # top third, left half
    for i, (sid, (text, _)) in enumerate(NLM_READINGS.items()):
        grey = rng.integers(0, 256, (NLM_H, NLM_W), dtype=np.uint8)
        if i % 3 == 0:
            rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
            Image.fromarray(rgba, "RGBA").save(raw / "CXR_png" / f"{sid}.png")
        elif i % 3 == 1:
            Image.fromarray(grey, "L").convert("P").save(raw / "CXR_png" / f"{sid}.png")
        else:
            Image.fromarray(np.dstack([grey] * 3), "RGB").save(raw / "CXR_png" / f"{sid}.png")
        write_png(raw / "masks" / f"{sid}_mask.png", mask)
        (raw / "ClinicalReadings" / f"{sid}.txt").write_text(text)
    return raw


def test_nlm_layout(tmp_path: Path) -> None:
    raw = write_nlm(tmp_path / "shenzhen")
    assert Image.open(raw / "CXR_png" / "CHNCXR_0002_1.png").mode == "P"
    out = tmp_path / "processed"
    preprocess_cxr(raw, out, cfg(split={"train": 0.5, "val": 0.5, "test": 0.0}), seed=SEED)
    table = read_split(out).set_index("id")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["metadata"] == "ClinicalReadings" and "metadata_note" not in stats
    assert stats["n_resized"] == 6 and stats["counts"] == {"train": 3, "val": 3, "test": 0}
    for sid, (_, expected) in NLM_READINGS.items():
        row = table.loc[sid]
        assert (row["sex"], row["age"], row["finding"], row["findings"]) == expected
        assert (row["height"], row["width"]) == (NLM_H, NLM_W)
        image = read_float_tiff(out / "images" / f"{sid}.tif")
        np.testing.assert_allclose(
            image,
            expected_image(raw / "CXR_png" / f"{sid}.png", stats["mean"], stats["std"]),
            atol=1e-4,
        )
        # stretched, not padded: the mask still covers the top third and left half
        mask = read_gray(out / "masks" / f"{sid}.png")
        assert mask.shape == (SIZE, SIZE)
        assert mask[: SIZE // 3 - 1, : SIZE // 2 - 1].all()
        assert not mask[SIZE // 3 + 1 :].any() and not mask[:, SIZE // 2 + 1 :].any()


def test_csv_wins_over_clinical_readings(tmp_path: Path) -> None:
    raw = write_nlm(tmp_path / "shenzhen")
    with open(raw / "shenzhen_metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["study_id", "sex", "age", "findings"])
        for i, (sid, (_, expected)) in enumerate(NLM_READINGS.items()):
            writer.writerow([f"{sid}.png", "Female", 20 + i, expected[3]])
    scan = scan_raw(raw)
    assert scan.metadata == "csv" and "used shenzhen_metadata.csv" in scan.metadata_note
    assert [c.reading.age for c in scan.cases] == list(range(20, 26))
    assert {c.reading.sex for c in scan.cases} == {"female"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("male 45yrs", ("male", 45)),
        ("Male 45 yrs", ("male", 45)),
        ("female 35yr", ("female", 35)),
        ("male 8month", ("male", 0)),
        ("male 8months", ("male", 0)),
        ("male 8 mon", ("male", 0)),
        ("female 18months", ("female", 1)),
        ("male 45", ("male", 45)),
        ("FEMALE, 3 years", ("female", 3)),
    ],
)
def test_parse_sex_age(text: str, expected: tuple[str, int]) -> None:
    assert parse_sex_age(text) == expected


@pytest.mark.parametrize("text", ["male forty", "unknown 45yrs", "male 45 decades", "45yrs", ""])
def test_parse_sex_age_rejects(text: str) -> None:
    with pytest.raises(DataError, match=r"x\.txt: line 1: .*expected sex and age"):
        parse_sex_age(text, "x.txt: line 1")


# --- errors: each names the file (and line) and publishes nothing ---------------------------


def _csv_lines(raw: Path) -> list[str]:
    return (raw / "shenzhen_metadata.csv").read_text().splitlines()


def _set_csv_line(raw: Path, number: int, text: str) -> None:
    lines = _csv_lines(raw)
    lines[number - 1] = text
    (raw / "shenzhen_metadata.csv").write_text("\n".join(lines) + "\n")


def _masked(raw: Path) -> list[str]:
    return sorted(p.name.removesuffix("_mask.png") for p in (raw / "masks").iterdir())


def break_mask_without_image(raw: Path) -> str:
    sid = _masked(raw)[0]
    (raw / "CXR_png" / f"{sid}.png").unlink()
    return rf"masks/{sid}_mask\.png: mask has no image"


def break_mask_name(raw: Path) -> str:
    shutil.copy(raw / "masks" / f"{_masked(raw)[0]}_mask.png", raw / "masks" / "lungs.png")
    return r"masks/lungs\.png: not a lung mask"


def break_size(raw: Path) -> str:
    sid = _masked(raw)[1]
    write_png(raw / "masks" / f"{sid}_mask.png", np.zeros((80, 96), np.uint8))
    return rf"{sid}_mask\.png: mask size 80x96 does not match image .*{sid}\.png size 96x96"


def break_sex(raw: Path) -> str:
    sid = _csv_lines(raw)[2].split(",")[0]
    _set_csv_line(raw, 3, f"{sid},Mle,40,normal")
    return r"shenzhen_metadata\.csv: line 3: sex 'Mle'; expected Male or Female"


def break_age(raw: Path) -> str:
    line = _csv_lines(raw)[4].split(",")
    _set_csv_line(raw, 5, ",".join([line[0], line[1], "forty", *line[3:]]))
    return r"shenzhen_metadata\.csv: line 5: age 'forty'; expected whole years"


def break_columns(raw: Path) -> str:
    sid = _csv_lines(raw)[3].split(",")[0]
    _set_csv_line(raw, 4, f"{sid},Male,40")
    return r"shenzhen_metadata\.csv: line 4: 3 column\(s\); expected 4"


def break_header(raw: Path) -> str:
    lines = _csv_lines(raw)
    (raw / "shenzhen_metadata.csv").write_text("\n".join(lines[1:]) + "\n")
    return r"shenzhen_metadata\.csv: line 1: header .*; expected study_id,sex,age,findings"


def break_suffix(raw: Path) -> str:
    number, line = next((i, t) for i, t in enumerate(_csv_lines(raw), 1) if "_0.png" in t)
    _set_csv_line(raw, number, line.replace("normal", "left PTB"))
    return rf"shenzhen_metadata\.csv: line {number}: .* ends in _0 \(normal\)"


def break_missing_metadata(raw: Path) -> str:
    sid = _masked(raw)[2]
    lines = [t for t in _csv_lines(raw) if not t.startswith(f"{sid}.png,")]
    (raw / "shenzhen_metadata.csv").write_text("\n".join(lines) + "\n")
    return rf"CXR_png/{sid}\.png: image has no metadata in .*shenzhen_metadata\.csv"


def break_no_metadata(raw: Path) -> str:
    (raw / "shenzhen_metadata.csv").unlink()
    return r"no metadata found; expected shenzhen_metadata\.csv"


@pytest.mark.parametrize(
    "breaker",
    [
        break_mask_without_image,
        break_mask_name,
        break_size,
        break_sex,
        break_age,
        break_columns,
        break_header,
        break_suffix,
        break_missing_metadata,
        break_no_metadata,
    ],
)
def test_bad_raw_names_the_file(raw_copy: Path, tmp_path: Path, breaker) -> None:
    pattern = breaker(raw_copy)
    out = tmp_path / "processed"
    with pytest.raises(DataError, match=pattern):
        preprocess_cxr(raw_copy, out, cfg(), seed=SEED)
    assert_nothing_published(out)


def test_bad_clinical_reading_names_file_and_line(tmp_path: Path) -> None:
    raw = write_nlm(tmp_path / "shenzhen")
    (raw / "ClinicalReadings" / "CHNCXR_0003_0.txt").write_text("\nmale 8 fortnights\nnormal\n")
    out = tmp_path / "processed"
    with pytest.raises(DataError, match=r"CHNCXR_0003_0\.txt: line 2: 'male 8 fortnights'"):
        preprocess_cxr(raw, out, cfg(), seed=SEED)
    assert_nothing_published(out)


def test_error_keeps_previous_output(raw_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "processed"
    preprocess_cxr(raw_copy, out, cfg(), seed=SEED)
    before = (out / "split.csv").read_bytes()
    break_size(raw_copy)
    with pytest.raises(DataError):
        preprocess_cxr(raw_copy, out, cfg(), seed=SEED)
    assert (out / "split.csv").read_bytes() == before


# --- through the stage script ---------------------------------------------------------------


def test_stage_script(synth_raw: Path, synth_out: Path, tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project", seed=SEED)
    size = resolve(load_params(project / "params.yaml"), "quick")["dataset_defs"]["synth_cxr"][
        "preprocess"
    ]["size"]
    command = [sys.executable, "scripts/preprocess.py", "--params", "params.yaml"]
    command += ["--preset", "quick", "--dataset", "synth_cxr", "--raw", str(synth_raw)]
    proc = subprocess.run(
        [*command, "--out", "processed"], cwd=project, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "left out 3 image(s) without a mask" in proc.stderr
    # the job's log says which base value the preset replaces
    assert (
        f"note: dataset_defs.synth_cxr.preprocess.size = {size} from presets.quick; the base "
        "value 512 is not used" in proc.stdout
    )
    # the seed comes from params.yaml: the same split as the direct call with that seed
    out = project / "processed"
    assert (out / "split.csv").read_bytes() == (synth_out / "split.csv").read_bytes()
    assert json.loads((out / "stats.json").read_text())["size"] == size
    sid = read_split(out)["id"].iloc[0]
    assert read_float_tiff(out / "images" / f"{sid}.tif").shape == (size, size)

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["dataset_defs"]["synth_cxr"]["split"]["val"] = 0.3
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run([*command, "--out", "other"], cwd=project, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ")  # from params validation or from preprocessing
    assert "dataset_defs.synth_cxr.split: " in proc.stderr
    assert not (project / "other").exists()
