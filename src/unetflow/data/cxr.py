"""Preprocessing of the chest X-ray datasets (shenzhen, synth_cxr): lung masks and metadata.

Raw input (``data/raw/<dataset>/``) holds ``CXR_png/<id>.png`` and ``masks/<id>_mask.png``
(0 background, 255 lung; intermediate values on the border of resized masks) plus metadata
in one of two forms, detected automatically:

- ``shenzhen_metadata.csv`` (``study_id,sex,age,findings``; the public mirror and synth_cxr);
- ``ClinicalReadings/<id>.txt`` (the NLM originals): the first non-empty line is sex and age
  (``male 45yrs``, ``Female 35 yr``, ``male 8month`` = 0 years, ``male 45``), the remaining
  non-empty lines the finding text, joined with ", ".

When both exist the CSV is used and stats.json says so. Ids ending in ``_0`` must read
``normal`` and ids ending in ``_1`` must not. Images without a mask are left out (the real
set has 96) and listed in stats.json; a mask without an image is an error.

Geometry: every image and mask is resized to ``size`` x ``size`` (``preprocess.size``,
default 512) with bilinear interpolation (anti-aliased when shrinking, edge mode, as
``unetflow predict`` prepares its inputs) **without keeping the aspect ratio**. The Shenzhen
originals are about 3K x 3K but not square (e.g. 2942 x 2516), and the public 512 x 512 copies
are stretched the same way. Predictions are scored against masks at this processed resolution,
or at ``preprocess.score_size`` when that is given and differs (the infer stage maps the
predictions there); ``unetflow predict`` maps its outputs back to each input's own size. The
original height and width are kept in split.csv.

Output (``data/processed/<dataset>/``), the same format as the EM sets so that training and
inference need no CXR-specific code:

- ``unit/<id>.tif``: float32, intensities scaled to [0, 1] by the dtype maximum and resized:
  what acquisition shifts act on (the augment stage's acquisition shifts, evaluate's shift test).
- ``images/<id>.tif``: float32, the ``unit/`` image normalised by ``preprocess.normalise``
  (:mod:`unetflow.data.intensity`): ``train_zscore``, z-scored with the mean and standard
  deviation of the *train* split only, or ``image_window``, each image clipped to its own
  ``preprocess.window_pct`` percentiles and z-scored with its own mean and std.
- ``masks/<id>.png``: uint8 {0, 1}, **1 = lung**: the raw mask, on the 0-255 scale (a {0, 1}
  mask counts as {0, 255}), resized like the image and thresholded at
  ``>= preprocess.label_threshold`` (default 128).
- ``score_masks/<id>.png`` (only when ``score_size`` differs from ``size``): the same masks
  made at ``score_size`` x ``score_size`` from the raw mask, for scoring.
- ``split.csv``: :data:`SPLIT_COLUMNS`, sorted by id; ``source`` and ``mask_source`` are raw
  relative paths, ``height``/``width`` the original size, ``finding`` is ``normal`` or
  ``abnormal`` and ``findings`` the original text. No ``predict`` rows.
- ``stats.json``: the normalisation record (``normalisation``), the train split's mean and std,
  size, label convention, counts per split and per
  split x stratum, the left-out (unmasked) images and the metadata source.

The split is seeded and stratified by sex x finding (:func:`unetflow.data.splits.stratified_split`),
and so are the cross-validation folds of ``folds.csv``
(:func:`unetflow.data.folds.stratified_folds`).
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from unetflow.data.folds import folds_k, stratified_folds, write_folds
from unetflow.data.intensity import normalisation_for, normalise
from unetflow.data.splits import split_fractions, stratified_split
from unetflow.io.images import (
    ImageError,
    read_float_tiff,
    read_gray,
    resize_image,
    unit_intensities,
    write_float_tiff,
    write_png,
)
from unetflow.io.outputs import staged_dir
from unetflow.io.processed import SCORE_MASKS, UNIT_DIR, DataError
from unetflow.io.progress import progress

log = logging.getLogger(__name__)

SPLIT_COLUMNS = [
    "id",
    "split",
    "source",
    "mask_source",
    "height",
    "width",
    "sex",
    "age",
    "finding",
    "findings",
]
LABEL_NAMES = {"0": "background", "1": "lung"}
IMAGE_DIR = "CXR_png"
MASK_DIR = "masks"
MASK_SUFFIX = "_mask.png"
METADATA_CSV = "shenzhen_metadata.csv"
METADATA_COLUMNS = ("study_id", "sex", "age", "findings")
READINGS_DIR = "ClinicalReadings"

_SEXES = {"male": "male", "female": "female"}
_FIRST_LINE = re.compile(
    r"(?:(?P<sex>[a-z]+)[\s,:;]+)?(?P<age>\d+)\s*(?P<unit>[a-z]*)\.?", re.IGNORECASE
)
_YEARS = {"", "y", "yr", "yrs", "year", "years"}
_MONTHS = {"mo", "mos", "mon", "mons", "month", "months"}
_DAYS = {"d", "day", "days", "w", "wk", "wks", "week", "weeks"}
_SUFFIX_FINDING = {"0": "normal", "1": "abnormal"}


@dataclass(frozen=True)
class Reading:
    """The clinical reading of one image, and where it was read (``file:line``)."""

    sex: str  # "male" | "female"
    age: int  # whole years
    finding: str  # "normal" | "abnormal"
    findings: str  # the original finding text
    where: str


@dataclass(frozen=True)
class Case:
    """An image with a mask, its raw relative paths and its reading."""

    id: str
    source: str
    mask_source: str
    reading: Reading

    @property
    def stratum(self) -> str:
        """The split stratum: sex x finding, e.g. ``female_abnormal``."""
        return f"{self.reading.sex}_{self.reading.finding}"


@dataclass(frozen=True)
class Scan:
    """What a raw CXR folder holds: image/mask pairs with readings and the unmasked images."""

    cases: list[Case]  # sorted by id
    unmasked: list[str]  # ids of images without a mask, sorted
    metadata: str  # "csv" | "ClinicalReadings"
    metadata_path: str  # raw relative path of the file or folder used
    metadata_note: str = ""


def preprocess_cxr(raw: Path, out: Path, cfg: dict, *, seed: int) -> None:
    """Turn a raw CXR dataset folder into the processed layout of the module docstring.

    `cfg` is the resolved ``dataset_defs.<name>`` dict (``preprocess`` and ``split``
    fractions, checked by the config layer) and `seed` the top-level params seed.
    """
    raw, out = Path(raw), Path(out)
    size, threshold, score_size = _preprocess_settings(cfg["preprocess"])
    method = cfg["preprocess"]["normalise"]
    window_pct = cfg["preprocess"]["window_pct"]
    fractions = split_fractions(cfg["split"])
    scan = scan_raw(raw)
    split_of = stratified_split(
        [c.id for c in scan.cases], [c.stratum for c in scan.cases], fractions, seed
    )

    with staged_dir(out) as work:
        folders = ("images", "masks", UNIT_DIR) + ((SCORE_MASKS,) if score_size != size else ())
        for folder in folders:
            (work / folder).mkdir()
        train_parts: list[tuple[int, float, float]] = []
        rows: list[dict[str, Any]] = []
        for case in progress(scan.cases, desc="read chest X-rays", unit="image"):
            image = unit_intensities(_read(raw / case.source), raw / case.source)
            mask = _mask_255(_read(raw / case.mask_source), raw / case.mask_source)
            if mask.shape != image.shape:
                raise DataError(
                    f"{raw / case.mask_source}: mask size {_hw(mask.shape)} does not match "
                    f"image {raw / case.source} size {_hw(image.shape)}; expected the same "
                    f"height and width"
                )
            scaled = resize_image(image, (size, size))
            write_png(
                work / "masks" / f"{case.id}.png", resize_image(mask, (size, size)) >= threshold
            )
            if score_size != size:
                score_mask = resize_image(mask, (score_size, score_size)) >= threshold
                write_png(work / SCORE_MASKS / f"{case.id}.png", score_mask)
            if split_of[case.id] == "train":
                m = float(scaled.mean())
                train_parts.append((scaled.size, m, float(np.square(scaled - m).sum())))
            write_float_tiff(work / UNIT_DIR / f"{case.id}.tif", scaled.astype(np.float32), level=1)
            rows.append(_row(case, split_of[case.id], image.shape))

        mean, std = _combine_stats(train_parts)
        if not std > 0:
            raise DataError(f"{raw}: train images are constant (std 0); expected X-rays")
        record = normalisation_for(method, mean=mean, std=std, window_pct=window_pct)
        for case in progress(scan.cases, desc="normalise chest X-rays", unit="image"):
            scaled = read_float_tiff(work / UNIT_DIR / f"{case.id}.tif")
            write_float_tiff(work / "images" / f"{case.id}.tif", normalise(scaled, record), level=1)

        table = pd.DataFrame(rows, columns=SPLIT_COLUMNS).sort_values("id", ignore_index=True)
        table.to_csv(work / "split.csv", index=False)
        ids, strata = [c.id for c in scan.cases], [c.stratum for c in scan.cases]
        k = folds_k(cfg, len(ids), raw)
        if k is not None:
            write_folds(work, stratified_folds(ids, strata, k, seed))
        (work / "stats.json").write_text(
            json.dumps(
                _stats(table, scan, record, (mean, std), (size, score_size), threshold, fractions),
                indent=2,
            )
            + "\n"
        )


def scan_raw(raw: Path) -> Scan:
    """Pair images with masks by id and attach each pair's reading, without reading pixels.

    Errors (DataError, naming the file): no images, a mask without an image, a file in
    masks/ not named ``<id>_mask.png``, no metadata, an unparseable metadata row, or an image
    with a mask that the metadata does not list.
    """
    raw = Path(raw)
    image_dir, mask_dir = raw / IMAGE_DIR, raw / MASK_DIR
    expected = f"{IMAGE_DIR}/<id>.png and {MASK_DIR}/<id>{MASK_SUFFIX}"
    if not image_dir.is_dir():
        raise DataError(f"{raw}: no chest X-rays found; expected {expected}")
    images = {p.stem: p for p in _visible(image_dir) if p.suffix.lower() == ".png" and p.is_file()}
    if not images:
        raise DataError(f"{image_dir}: no images found; expected {IMAGE_DIR}/<id>.png")
    if not mask_dir.is_dir():
        raise DataError(f"{raw}: no {MASK_DIR}/ folder; expected {expected}")
    masks: dict[str, Path] = {}
    for path in sorted(_visible(mask_dir)):
        if not (path.is_file() and path.name.lower().endswith(MASK_SUFFIX)):
            raise DataError(
                f"{path}: not a lung mask; expected only <id>{MASK_SUFFIX} files in {mask_dir}"
            )
        sid = path.name[: -len(MASK_SUFFIX)]
        if sid not in images:
            raise DataError(f"{path}: mask has no image; expected {IMAGE_DIR}/{sid}.png in {raw}")
        masks[sid] = path
    if not masks:
        raise DataError(f"{mask_dir}: no masks found; expected {MASK_DIR}/<id>{MASK_SUFFIX}")
    unmasked = sorted(set(images) - set(masks))
    if unmasked:
        log.warning(
            "%s: left out %d image(s) without a mask (e.g. %s)",
            raw,
            len(unmasked),
            ", ".join(unmasked[:3]),
        )

    readings, metadata, metadata_path, note = _metadata(raw)
    cases = []
    for sid in sorted(masks):
        if sid not in readings:
            raise DataError(
                f"{images[sid]}: image has no metadata in {raw / metadata_path}; expected "
                + (f"a row with study_id {sid}.png" if metadata == "csv" else f"{sid}.txt")
            )
        cases.append(
            Case(
                sid,
                images[sid].relative_to(raw).as_posix(),
                masks[sid].relative_to(raw).as_posix(),
                readings[sid],
            )
        )
    return Scan(cases, unmasked, metadata, metadata_path, note)


def read_metadata_csv(path: Path) -> dict[str, Reading]:
    """Readings by id from a ``study_id,sex,age,findings`` CSV (study_id ``<id>.png``)."""
    path = Path(path)
    header_text = ",".join(METADATA_COLUMNS)
    readings: dict[str, Reading] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or [h.strip().lower() for h in header] != list(METADATA_COLUMNS):
                raise DataError(
                    f"{path}: line 1: header {','.join(header or [])!r}; expected {header_text}"
                )
            for row in reader:
                where = f"{path}: line {reader.line_num}"
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(METADATA_COLUMNS):
                    raise DataError(
                        f"{where}: {len(row)} column(s); expected {len(METADATA_COLUMNS)} "
                        f"({header_text})"
                    )
                study, sex, age, text = (cell.strip() for cell in row)
                sid = study[:-4] if study.lower().endswith(".png") else study
                if not sid:
                    raise DataError(f"{where}: empty study_id; expected <id>.png")
                if not re.fullmatch(r"[0-9]+", age):
                    raise DataError(f"{where}: age {age!r}; expected whole years (e.g. 45)")
                _add(readings, sid, _reading(sid, sex, int(age), text, where))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc}); expected a CSV file") from exc
    return readings


def read_clinical_readings(folder: Path) -> dict[str, Reading]:
    """Readings by id from NLM ``ClinicalReadings/<id>.txt`` files (sex and age, findings)."""
    folder = Path(folder)
    readings: dict[str, Reading] = {}
    for path in sorted(_visible(folder)):
        if path.suffix.lower() != ".txt" or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc}); expected a reading") from exc
        lines = [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
        if not lines:
            raise DataError(f"{path}: empty; expected 'male 45yrs' and a finding line")
        number, first = lines[0]
        where = f"{path}: line {number}"
        sex, age = parse_sex_age(first, where)
        findings = ", ".join(line for _, line in lines[1:])
        _add(readings, path.stem, _reading(path.stem, sex, age, findings, where))
    return readings


def parse_sex_age(text: str, where: str = "reading") -> tuple[str, int]:
    """``male 45yrs`` -> (``male``, 45); ages in months count in whole years (``8month`` -> 0),
    ages in days or weeks as 0."""
    match = _FIRST_LINE.fullmatch(text.strip())
    unit = match["unit"].lower() if match else ""
    sex = _SEXES.get((match["sex"] or "").lower()) if match else None
    if sex is None or unit not in _YEARS | _MONTHS | _DAYS:
        raise DataError(
            f"{where}: {text.strip()!r}; expected sex and age such as 'male 45yrs', "
            f"'Female 35 yr' or 'male 8month'"
        )
    age = int(match["age"])
    if unit in _MONTHS:
        return sex, age // 12
    return sex, 0 if unit in _DAYS else age


def _metadata(raw: Path) -> tuple[dict[str, Reading], str, str, str]:
    """Readings from the CSV, else from ClinicalReadings/; (readings, kind, path, note)."""
    csv_path, txt_dir = raw / METADATA_CSV, raw / READINGS_DIR
    if csv_path.is_file():
        note = (
            f"both {METADATA_CSV} and {READINGS_DIR}/ exist; used {METADATA_CSV}"
            if txt_dir.is_dir()
            else ""
        )
        return read_metadata_csv(csv_path), "csv", METADATA_CSV, note
    if txt_dir.is_dir():
        return read_clinical_readings(txt_dir), READINGS_DIR, READINGS_DIR, ""
    raise DataError(
        f"{raw}: no metadata found; expected {METADATA_CSV} ({','.join(METADATA_COLUMNS)}) "
        f"or {READINGS_DIR}/<id>.txt"
    )


def _reading(sid: str, sex: str, age: int, text: str, where: str) -> Reading:
    """Check and normalise one metadata entry; `where` is ``file: line N``."""
    sex_name = _SEXES.get(sex.strip().lower())
    if sex_name is None:
        raise DataError(f"{where}: sex {sex!r}; expected Male or Female")
    if not text.strip():
        raise DataError(f"{where}: empty findings; expected 'normal' or the finding text")
    finding = "normal" if text.strip().lower() == "normal" else "abnormal"
    suffix = re.fullmatch(r".*_([01])", sid)
    if suffix and _SUFFIX_FINDING[suffix[1]] != finding:
        raise DataError(
            f"{where}: {sid} ends in _{suffix[1]} ({_SUFFIX_FINDING[suffix[1]]}) but its "
            f"findings read {text.strip()!r}; expected _0 exactly for 'normal'"
        )
    return Reading(sex_name, age, finding, text.strip(), where)


def _add(readings: dict[str, Reading], sid: str, reading: Reading) -> None:
    if sid in readings:
        raise DataError(f"{reading.where}: {sid} is listed again; first at {readings[sid].where}")
    readings[sid] = reading


def _visible(folder: Path) -> Iterable[Path]:
    """Entries of a folder, without hidden ones (.DS_Store, editor files)."""
    return (p for p in folder.iterdir() if not p.name.startswith("."))


def _read(path: Path) -> np.ndarray:
    try:
        return read_gray(path)
    except ImageError as exc:
        raise DataError(str(exc)) from exc


def _mask_255(mask: np.ndarray, path: Path) -> np.ndarray:
    """A mask on the 0-255 scale in float64; a {0, 1} integer mask counts as {0, 255}."""
    if mask.dtype == bool or (
        np.issubdtype(mask.dtype, np.integer)
        and mask.min(initial=0) >= 0
        and mask.max(initial=0) <= 1
    ):
        return mask.astype(np.float64) * 255.0
    return unit_intensities(mask, path) * 255.0


def _combine_stats(parts: list[tuple[int, float, float]]) -> tuple[float, float]:
    """Mean and population std of all train pixels from per-image (count, mean, M2)."""
    total = sum(n for n, _, _ in parts)
    mean = sum(n * m for n, m, _ in parts) / total
    m2 = sum(s + n * (m - mean) ** 2 for n, m, s in parts)
    return mean, float(np.sqrt(m2 / total))


def _preprocess_settings(pre: Mapping[str, Any]) -> tuple[int, int, int]:
    """(size, label_threshold, score_size), as the config layer checked them."""
    return int(pre["size"]), int(pre["label_threshold"]), int(pre["score_size"])


def _hw(shape: tuple[int, ...]) -> str:
    return f"{shape[0]}x{shape[1]}"


def _row(case: Case, split: str, shape: tuple[int, ...]) -> dict[str, Any]:
    r = case.reading
    return {
        "id": case.id,
        "split": split,
        "source": case.source,
        "mask_source": case.mask_source,
        "height": shape[0],
        "width": shape[1],
        "sex": r.sex,
        "age": r.age,
        "finding": r.finding,
        "findings": r.findings,
    }


def _stats(
    table: pd.DataFrame,
    scan: Scan,
    record: dict[str, Any],
    train_stats: tuple[float, float],
    sizes: tuple[int, int],
    threshold: int,
    fractions: Mapping[str, Fraction],
) -> dict[str, Any]:
    strata = table["sex"] + "_" + table["finding"]
    by_stratum = {
        name: {
            str(k): int(v) for k, v in sorted(strata[table["split"] == name].value_counts().items())
        }
        for name in fractions
    }
    size, score_size = sizes
    resized = int(((table["height"] != size) | (table["width"] != size)).sum())
    stats: dict[str, Any] = {
        "mean": train_stats[0],
        "std": train_stats[1],
        "computed_on": "train",
        "normalisation": record,
        "scaling": "intensities divided by the dtype maximum to [0, 1] and resized (unit/), "
        f"then normalised by {record['method']} (images/)",
        "size": size,
        "resize": "bilinear to size x size (edge mode, anti-aliased when shrinking), "
        "aspect ratio not kept",
        "n_resized": resized,
        "score_size": score_size,
        "score_masks": score_size != size,
        "labels": LABEL_NAMES,
        "label_convention": f"mask 1 = lung (raw mask >= {threshold} on the 0-255 scale), "
        "0 = background",
        "label_threshold": threshold,
        "fractions": {name: float(f) for name, f in fractions.items()},
        "counts": {name: int((table["split"] == name).sum()) for name in fractions},
        "counts_by_stratum": by_stratum,
        "n_pairs": len(table),
        "n_unmasked": len(scan.unmasked),
        "unmasked": scan.unmasked,
        "metadata": scan.metadata,
        "metadata_path": scan.metadata_path,
    }
    if scan.metadata_note:
        stats["metadata_note"] = scan.metadata_note
    return stats
