"""Seeded, materialised augmentation of a processed training set (the U-Net paper's recipe).

Per pair, as the TU Delft reproduction did: mirror-pad by ``pad_px``, then one resampling
(``elasticdeform.deform_grid``) applies the elastic deformation (random displacements on an
``elastic_grid`` x ``elastic_grid`` grid, standard deviation ``elastic_sigma_px`` pixels,
cubic B-spline interpolated), the rotation by a uniform angle in ±``rotation_deg`` and an
integer shift of up to ±``shift_px`` (as the offset of the crop back to the original size).
Image and mask go through the same call, so they stay aligned: the image with bicubic
interpolation (order 3), the mask with nearest neighbour (order 0), so it stays exactly
binary; a weight map of the processed set (``weights/<id>.tif``, the U-Net paper's border
weights) goes through the same call, bicubic like the image and clipped at 0, and is written
to ``weights/`` of the augmented set, so all three stay aligned. Random flips
follow, then grey-value variation on the image only: a gamma curve on the image's own
min-max range, a contrast factor around its mean, a brightness offset and gaussian noise,
the last two in units of the image's own standard deviation (so they mean the same whatever
the dataset's normalisation).

Chest X-ray sets with ``acquisition`` settings start from the [0, 1] image of ``unit/``
instead: after the resampling and flips, a random acquisition shift
(:func:`unetflow.data.shifts.random_acquisition`: zoom and aspect, blur, exposure, windowing,
gamma, noise, a burned-in marker) acts on image and mask, the image is normalised by the
record in the processed set's stats.json, and the grey-value variation follows. Its drawn
values go to index.csv as ``acq_<name>`` columns.

Every random number comes from ``numpy.random.default_rng`` seeded by (seed, image key),
where the key is derived from the image id, so a copy does not depend on processing order
or on which other images exist. ``elasticdeform.deform_random_grid`` is not used because
it draws from numpy's global RNG.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from unetflow.data.elastic import import_elasticdeform
from unetflow.data.intensity import normalise
from unetflow.data.seeding import image_rng
from unetflow.data.shifts import ACQUISITION_PARAMS, random_acquisition
from unetflow.io.images import read_float_tiff, read_gray, write_float_tiff, write_png
from unetflow.io.outputs import staged_dir
from unetflow.io.processed import SPLIT_NAMES, UNIT_DIR, DataError, read_split
from unetflow.io.progress import progress
from unetflow.plots import examples_figure

log = logging.getLogger(__name__)

INDEX_COLUMNS = [
    "id",
    "source_id",
    "copy",
    "angle",
    "shift_y",
    "shift_x",
    "flip_ud",
    "flip_lr",
    "gamma",
    "brightness",
    "contrast",
    "noise_std",
    "elastic_displacement",
]


def augment_dataset(
    processed: Path, out: Path, cfg: dict, *, example_pairs: int, seed: int, workers: int = 1
) -> dict[str, float]:
    """Write ``cfg["copies"]`` augmented copies of every labelled image (train, val and test:
    each trains in some cross-validation fold) of `processed` to `out`; train uses those of
    its own train images.

    Output: ``images/<id>_aug<kk>.tif`` (float32), ``masks/<id>_aug<kk>.png`` ({0, 1}),
    ``index.csv`` (one row per copy with every drawn parameter) and ``examples.png``.
    Images are spread over `workers` processes (0: one per CPU); each is seeded by its id, so
    the output does not depend on the number of workers.
    Returns ``{"images": n, "seconds": t, "images_per_s": r}`` and logs the same.
    """
    processed, out = Path(processed), Path(out)
    import_elasticdeform()  # here, so that a broken install is named before any work
    table = read_split(processed)
    if not (table["split"] == "train").any():
        raise DataError(f"{processed / 'split.csv'}: no train rows; expected at least one")
    # every labelled image trains in some cross-validation fold; train picks its own copies
    labelled_ids = list(table.loc[table["split"].isin(SPLIT_NAMES), "id"])
    copies = int(cfg["copies"])
    width = max(2, len(str(copies - 1)))
    workers = int(workers) or os.cpu_count() or 1

    start = time.perf_counter()
    with staged_dir(out) as work:
        (work / "images").mkdir()
        (work / "masks").mkdir()
        if (processed / "weights").is_dir():  # the paper's weight maps travel along
            (work / "weights").mkdir()
        record = _normalisation(processed) if cfg.get("acquisition") else None
        job = partial(_augment_image, processed, work, cfg, seed, copies, width, record)
        with ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
            results = pool.map(job, labelled_ids) if pool else map(job, labelled_ids)
            bar = progress(results, total=len(labelled_ids), desc="augment", unit="image")
            rows = [row for image_rows in bar for row in image_rows]
        index = pd.DataFrame(rows, columns=index_columns(cfg))
        index.to_csv(work / "index.csv", index=False)
        examples = [
            (
                *_read_pair(processed, labelled_ids[i]),
                *_read_augmented(work, labelled_ids[i], k, width),
            )
            for i, k in _example_slots(len(labelled_ids), copies, example_pairs)
        ]
        examples_figure(examples).savefig(work / "examples.png", dpi=80)
    seconds = time.perf_counter() - start

    n = len(rows)
    rate = n / seconds if seconds > 0 else float("inf")
    log.info("augment: %d images in %.1f s (%.1f images/s)", n, seconds, rate)
    return {"images": n, "seconds": seconds, "images_per_s": rate}


def _aug_id(sid: str, copy: int, width: int) -> str:
    return f"{sid}_aug{copy:0{width}d}"


def index_columns(cfg: dict) -> list[str]:
    """The columns of index.csv: every drawn parameter, and those of the acquisition shifts
    (``acq_<name>``) when ``acquisition`` is set."""
    extra = [f"acq_{name}" for name in ACQUISITION_PARAMS] if cfg.get("acquisition") else []
    return INDEX_COLUMNS + extra


def _augment_image(
    processed: Path,
    work: Path,
    cfg: dict,
    seed: int,
    copies: int,
    width: int,
    normalisation: dict | None,
    sid: str,
) -> list[dict[str, Any]]:
    """Write the augmented copies of one labelled image; its rows of index.csv. With acquisition
    shifts (`normalisation` given) the copies are made from the [0, 1] image of ``unit/``."""
    image, mask = _read_pair(processed, sid)
    if normalisation is not None:
        image = _read_unit(processed, sid, image.shape)
    weight_path = processed / "weights" / f"{sid}.tif"
    weights = read_float_tiff(weight_path) if weight_path.is_file() else None
    rng = image_rng(seed, sid)
    rows = []
    for k in range(copies):
        aug_image, aug_mask, aug_weights, params = augment_arrays(
            image, mask, weights, rng, cfg, normalisation
        )
        aid = _aug_id(sid, k, width)
        write_float_tiff(work / "images" / f"{aid}.tif", aug_image, level=1)
        write_png(work / "masks" / f"{aid}.png", aug_mask)
        if aug_weights is not None:
            write_float_tiff(work / "weights" / f"{aid}.tif", aug_weights, level=1)
        rows.append({"id": aid, "source_id": sid, "copy": k, **params})
    return rows


def _read_augmented(work: Path, sid: str, copy: int, width: int) -> tuple[Any, ...]:
    """An augmented pair read back for the examples figure, with its ids."""
    aid = _aug_id(sid, copy, width)
    image = read_float_tiff(work / "images" / f"{aid}.tif")
    return image, read_gray(work / "masks" / f"{aid}.png"), sid, aid


def augment_pair(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, cfg: dict
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One augmented copy of an (image, mask) pair, and the parameters drawn for it.

    The same number of random values is drawn whatever the strengths in `cfg`, so changing
    one strength does not change the others' draws. Returns (float32 image, uint8 {0, 1}
    mask of the same shape, parameters).
    """
    out_image, out_mask, _, params = augment_arrays(image, mask, None, rng, cfg)
    return out_image, out_mask, params


def augment_arrays(
    image: np.ndarray,
    mask: np.ndarray,
    weights: np.ndarray | None,
    rng: np.random.Generator,
    cfg: dict,
    normalisation: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
    """:func:`augment_pair` with an optional weight map deformed by the same resampling:
    bicubic like the image (so all three stay aligned), clipped at 0 against overshoot, and
    without the grey-value variation. Returns (image, mask, weights or None, parameters).

    With ``cfg["acquisition"]``, `image` is on the [0, 1] scale (``unit/``) and `normalisation`
    its dataset's record: after the resampling and flips, a random acquisition shift
    (:func:`unetflow.data.shifts.random_acquisition`) acts on image and mask, the image is
    normalised, and the grey-value variation follows as without."""
    image, mask = _checked(image, mask, weights, cfg, normalisation)
    shift_max, grid = int(cfg["shift_px"]), int(cfg["elastic_grid"])

    displacement = rng.normal(0.0, 1.0, size=(2, grid, grid)) * float(cfg["elastic_sigma_px"])
    angle = float(rng.uniform(-1.0, 1.0) * float(cfg["rotation_deg"]))
    shift_y, shift_x = (int(v) for v in rng.integers(-shift_max, shift_max + 1, size=2))
    flips = rng.random(2) < 0.5
    flip_ud, flip_lr = (bool(f) and bool(cfg["flip"]) for f in flips)
    gamma = float(np.exp(rng.uniform(*np.log(np.asarray(cfg["gamma"], dtype=float)))))
    brightness = float(rng.uniform(-1.0, 1.0) * float(cfg["brightness"]))
    contrast = float(rng.uniform(*(float(c) for c in cfg["contrast"])))

    arrays = [image, (mask > 0).astype(np.uint8)]
    if weights is not None:
        arrays.append(np.asarray(weights, dtype=np.float32))
    deformed = _resample(
        arrays, int(cfg["pad_px"]), displacement, angle, (shift_y, shift_x), (flip_ud, flip_lr)
    )
    out_image, out_mask = deformed[0], deformed[1]
    if cfg.get("acquisition"):
        out_image, out_mask, acquired = _acquire(out_image, out_mask, rng, cfg, normalisation)
    out_weights = (
        np.ascontiguousarray(np.clip(deformed[2], 0.0, None), dtype=np.float32)
        if weights is not None
        else None
    )

    out_image = _gray_value(out_image.astype(np.float64), gamma, contrast, brightness)
    noise_std = float(cfg["noise_std"])
    if noise_std > 0:
        out_image += rng.normal(0.0, noise_std * out_image.std(), size=out_image.shape)

    params = {
        "angle": angle,
        "shift_y": shift_y,
        "shift_x": shift_x,
        "flip_ud": flip_ud,
        "flip_lr": flip_lr,
        "gamma": gamma,
        "brightness": brightness,
        "contrast": contrast,
        "noise_std": noise_std,
        "elastic_displacement": json.dumps(np.round(displacement, 4).tolist()),
    }
    if cfg.get("acquisition"):
        params.update({f"acq_{name}": acquired[name] for name in ACQUISITION_PARAMS})
    return (
        np.ascontiguousarray(out_image, dtype=np.float32),
        np.ascontiguousarray(out_mask, dtype=np.uint8),
        out_weights,
        params,
    )


def _checked(
    image: np.ndarray,
    mask: np.ndarray,
    weights: np.ndarray | None,
    cfg: dict,
    normalisation: dict | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The image as float32 and the mask as an array, once their shapes fit each other (and
    the weight map's), and acquisition shifts have a normalisation and no weight map."""
    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(mask)
    if image.ndim != 2 or image.shape != mask.shape:
        raise ValueError(
            f"augment_pair: expected a 2-D image and a mask of the same shape, "
            f"got {image.shape} and {mask.shape}"
        )
    if weights is not None and np.shape(weights) != image.shape:
        raise ValueError(
            f"augment_pair: weight map of shape {np.shape(weights)}; expected {image.shape}"
        )
    if cfg.get("acquisition") and (weights is not None or normalisation is None):
        raise ValueError("augment: acquisition shifts need a normalisation and no weight map")
    return image, mask


def _resample(
    arrays: list[np.ndarray],
    pad: int,
    displacement: np.ndarray,
    angle: float,
    shift: tuple[int, int],
    flips: tuple[bool, bool],
) -> list[np.ndarray]:
    """Image, mask (and weight map) mirror-padded by `pad`, deformed and rotated by one
    resampling (bicubic, nearest for the mask), cropped at the `shift` offset, then flipped."""
    h, w = arrays[0].shape
    crop = (
        slice(pad + shift[0], pad + shift[0] + h),
        slice(pad + shift[1], pad + shift[1] + w),
    )
    padded = [np.pad(a, pad, mode="reflect") for a in arrays]
    orders = [3, 0, 3][: len(arrays)]
    deformed = import_elasticdeform().deform_grid(
        padded, displacement, order=orders, mode="mirror", crop=crop, rotate=angle
    )
    if flips[0]:
        deformed = [a[::-1] for a in deformed]
    if flips[1]:
        deformed = [a[:, ::-1] for a in deformed]
    return deformed


def _acquire(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, cfg: dict, record: dict
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """A random acquisition shift of a resampled [0, 1] image (clipped against the bicubic
    overshoot) and its mask, then the dataset's normalisation."""
    unit = np.clip(image.astype(np.float64), 0.0, 1.0)
    shifted, mask, drawn = random_acquisition(unit, mask, rng, cfg["acquisition"])
    return normalise(shifted, record), mask, drawn


def _normalisation(processed: Path) -> dict:
    """The normalisation record preprocess wrote to stats.json."""
    path = processed / "stats.json"
    try:
        return dict(json.loads(path.read_text())["normalisation"])
    except (FileNotFoundError, KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"{path}: no normalisation record ({exc}); expected the stats of a chest X-ray set "
            "preprocessed with preprocess.normalise"
        ) from exc


def _read_unit(processed: Path, sid: str, shape: tuple[int, ...]) -> np.ndarray:
    """The [0, 1] image of `sid` (``unit/``), of the processed image's shape."""
    path = processed / UNIT_DIR / f"{sid}.tif"
    if not path.is_file():
        raise DataError(f"{path}: missing; expected the [0, 1] image acquisition shifts act on")
    unit = read_float_tiff(path)
    if unit.shape != shape:
        raise DataError(f"{path}: size {unit.shape} differs from the image's {shape}")
    return unit


def _gray_value(x: np.ndarray, gamma: float, contrast: float, brightness: float) -> np.ndarray:
    """Gamma on the image's own min-max range, then contrast and brightness in std units."""
    lo, hi = float(x.min()), float(x.max())
    if gamma != 1.0 and hi > lo:
        x = lo + (hi - lo) * ((x - lo) / (hi - lo)) ** gamma
    mean, std = float(x.mean()), float(x.std())
    return (x - mean) * contrast + mean + brightness * std


def _read_pair(processed: Path, sid: str) -> tuple[np.ndarray, np.ndarray]:
    image_path = processed / "images" / f"{sid}.tif"
    mask_path = processed / "masks" / f"{sid}.png"
    for path in (image_path, mask_path):
        if not path.is_file():
            raise DataError(f"{path}: missing; split.csv lists {sid} as a labelled image")
    image = read_float_tiff(image_path)
    mask = read_gray(mask_path)
    if mask.shape != image.shape:
        raise DataError(f"{mask_path}: size {mask.shape} differs from the image's {image.shape}")
    values = np.unique(mask)
    if not set(values.tolist()) <= {0, 1}:
        raise DataError(f"{mask_path}: found values {values[:10].tolist()}; expected {{0, 1}}")
    return image, mask


def _example_slots(n_images: int, copies: int, pairs: int) -> list[tuple[int, int]]:
    """Which (image, copy) pairs to show: the first copy of distinct images first."""
    slots = [(i, k) for k in range(copies) for i in range(n_images)]
    return slots[: max(0, int(pairs))]
