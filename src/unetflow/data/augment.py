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

Every random number comes from ``numpy.random.default_rng`` seeded by (seed, image key),
where the key is derived from the image id, so a copy does not depend on processing order
or on which other images exist. ``elasticdeform.deform_random_grid`` is not used because
it draws from numpy's global RNG.
"""

from __future__ import annotations

import hashlib
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
from unetflow.io.images import read_float_tiff, read_gray, write_float_tiff, write_png
from unetflow.io.outputs import staged_dir
from unetflow.io.processed import DataError, read_split
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
    """Write ``cfg["copies"]`` augmented copies of every train image of `processed` to `out`.

    Output: ``images/<id>_aug<kk>.tif`` (float32), ``masks/<id>_aug<kk>.png`` ({0, 1}),
    ``index.csv`` (one row per copy with every drawn parameter) and ``examples.png``.
    Images are spread over `workers` processes (0: one per CPU); each is seeded by its id, so
    the output does not depend on the number of workers.
    Returns ``{"images": n, "seconds": t, "images_per_s": r}`` and logs the same.
    """
    processed, out = Path(processed), Path(out)
    import_elasticdeform()  # here, so that a broken install is named before any work
    table = read_split(processed)
    train_ids = list(table.loc[table["split"] == "train", "id"])
    if not train_ids:
        raise DataError(f"{processed / 'split.csv'}: no train rows; expected at least one")
    copies = int(cfg["copies"])
    width = max(2, len(str(copies - 1)))
    workers = int(workers) or os.cpu_count() or 1

    start = time.perf_counter()
    with staged_dir(out) as work:
        (work / "images").mkdir()
        (work / "masks").mkdir()
        if (processed / "weights").is_dir():  # the paper's weight maps travel along
            (work / "weights").mkdir()
        job = partial(_augment_image, processed, work, cfg, seed, copies, width)
        with ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
            results = pool.map(job, train_ids) if pool else map(job, train_ids)
            bar = progress(results, total=len(train_ids), desc="augment", unit="image")
            rows = [row for image_rows in bar for row in image_rows]
        index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
        index.to_csv(work / "index.csv", index=False)
        examples = [
            (*_read_pair(processed, train_ids[i]), *_read_augmented(work, train_ids[i], k, width))
            for i, k in _example_slots(len(train_ids), copies, example_pairs)
        ]
        examples_figure(examples).savefig(work / "examples.png", dpi=80)
    seconds = time.perf_counter() - start

    n = len(rows)
    rate = n / seconds if seconds > 0 else float("inf")
    log.info("augment: %d images in %.1f s (%.1f images/s)", n, seconds, rate)
    return {"images": n, "seconds": seconds, "images_per_s": rate}


def _aug_id(sid: str, copy: int, width: int) -> str:
    return f"{sid}_aug{copy:0{width}d}"


def _augment_image(
    processed: Path, work: Path, cfg: dict, seed: int, copies: int, width: int, sid: str
) -> list[dict[str, Any]]:
    """Write the augmented copies of one train image; its rows of index.csv."""
    image, mask = _read_pair(processed, sid)
    weight_path = processed / "weights" / f"{sid}.tif"
    weights = read_float_tiff(weight_path) if weight_path.is_file() else None
    rng = np.random.default_rng([int(seed), _id_key(sid)])
    rows = []
    for k in range(copies):
        aug_image, aug_mask, aug_weights, params = augment_arrays(image, mask, weights, rng, cfg)
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
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
    """:func:`augment_pair` with an optional weight map deformed by the same resampling:
    bicubic like the image (so all three stay aligned), clipped at 0 against overshoot, and
    without the grey-value variation. Returns (image, mask, weights or None, parameters)."""
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
    h, w = image.shape
    pad, shift_max, grid = int(cfg["pad_px"]), int(cfg["shift_px"]), int(cfg["elastic_grid"])

    displacement = rng.normal(0.0, 1.0, size=(2, grid, grid)) * float(cfg["elastic_sigma_px"])
    angle = float(rng.uniform(-1.0, 1.0) * float(cfg["rotation_deg"]))
    shift_y, shift_x = (int(v) for v in rng.integers(-shift_max, shift_max + 1, size=2))
    flips = rng.random(2) < 0.5
    flip_ud, flip_lr = (bool(f) and bool(cfg["flip"]) for f in flips)
    gamma = float(np.exp(rng.uniform(*np.log(np.asarray(cfg["gamma"], dtype=float)))))
    brightness = float(rng.uniform(-1.0, 1.0) * float(cfg["brightness"]))
    contrast = float(rng.uniform(*(float(c) for c in cfg["contrast"])))

    padded_image = np.pad(image, pad, mode="reflect")
    padded_mask = np.pad((mask > 0).astype(np.uint8), pad, mode="reflect")
    crop = (
        slice(pad + shift_y, pad + shift_y + h),
        slice(pad + shift_x, pad + shift_x + w),
    )
    arrays, orders = [padded_image, padded_mask], [3, 0]
    if weights is not None:
        arrays.append(np.pad(np.asarray(weights, dtype=np.float32), pad, mode="reflect"))
        orders.append(3)
    deformed = import_elasticdeform().deform_grid(
        arrays, displacement, order=orders, mode="mirror", crop=crop, rotate=angle
    )
    if flip_ud:
        deformed = [a[::-1] for a in deformed]
    if flip_lr:
        deformed = [a[:, ::-1] for a in deformed]
    out_image, out_mask = deformed[0], deformed[1]
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
    return (
        np.ascontiguousarray(out_image, dtype=np.float32),
        np.ascontiguousarray(out_mask, dtype=np.uint8),
        out_weights,
        params,
    )


def _gray_value(x: np.ndarray, gamma: float, contrast: float, brightness: float) -> np.ndarray:
    """Gamma on the image's own min-max range, then contrast and brightness in std units."""
    lo, hi = float(x.min()), float(x.max())
    if gamma != 1.0 and hi > lo:
        x = lo + (hi - lo) * ((x - lo) / (hi - lo)) ** gamma
    mean, std = float(x.mean()), float(x.std())
    return (x - mean) * contrast + mean + brightness * std


def _id_key(sid: str) -> int:
    """A stable 64-bit integer for an id (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(sid.encode()).digest()[:8], "little")


def _read_pair(processed: Path, sid: str) -> tuple[np.ndarray, np.ndarray]:
    image_path = processed / "images" / f"{sid}.tif"
    mask_path = processed / "masks" / f"{sid}.png"
    for path in (image_path, mask_path):
        if not path.is_file():
            raise DataError(f"{path}: missing; split.csv lists {sid} as a train image")
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
