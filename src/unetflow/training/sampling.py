"""The training data and the seeded batches drawn from them.

Data. The training pairs are the processed ``train`` rows plus every augmented copy (loaded
into memory: float32 images, {0, 1} masks and, for cross-entropy, ``weights/<id>.tif`` beside
``images/`` when every pair has one). Validation uses the processed ``val`` rows as whole
images.

Sampling. Every batch is drawn from ``numpy.random.default_rng([seed, epoch, step, index])``
(pair, crop position and, with ``flips``, one of the 8 flips/rotations; only where the
dataset's ``augment.flip`` allows flips, so never for chest X-rays), so the data never
depend on DataLoader workers, and a resumed run sees the batches an uninterrupted one would.
Images are mirror-padded by the margin a valid-convolution model loses (``(tile - out) / 2``),
so border pixels are targets too; the target is the centred ``out`` x ``out`` crop. Images
smaller than the output tile are mirror-padded up to it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from unetflow.io.images import read_float_tiff, read_gray, read_processed_image
from unetflow.io.processed import read_split
from unetflow.io.progress import progress
from unetflow.training.errors import TrainingError

# --------------------------------------------------------------------------- data


@dataclass
class Pairs:
    """Images (float32), masks ({0, 1} uint8) and optional weight maps, with their ids."""

    ids: list[str] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    weights: list[np.ndarray | None] = field(default_factory=list)
    weight_paths: list[Path] = field(default_factory=list)

    def extend(self, other: Pairs) -> None:
        """Append the pairs of `other`, in their order."""
        for name in ("ids", "images", "masks", "weights", "weight_paths"):
            getattr(self, name).extend(getattr(other, name))


@dataclass
class Data:
    """The training and validation pairs, the files read (for the resume fingerprint) and the
    normalisation of the processed set."""

    train: Pairs
    val: Pairs
    files: list[tuple[str, int]]
    normalisation: dict[str, Any]
    n_processed_train: int


def read_mask(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The {0, 1} mask at `path`, of the size of its image."""
    if not path.is_file():
        raise TrainingError(f"{path}: not found; expected the mask of a training/val image")
    mask = read_gray(path)
    if mask.shape != shape:
        raise TrainingError(f"{path}: size {mask.shape} differs from its image {shape}")
    if mask.max(initial=0) > 1:
        raise TrainingError(
            f"{path}: values up to {int(mask.max())}; expected a {{0, 1}} mask (processed layout)"
        )
    return mask.astype(np.uint8)


def _read_weight(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    weight = read_float_tiff(path)
    if weight.shape != shape or not np.isfinite(weight).all() or weight.min() < 0:
        raise TrainingError(f"{path}: expected finite non-negative weights of size {shape}")
    return weight


def load_pairs(folder: Path, ids: list[str], files: list[tuple[str, int]], label: str) -> Pairs:
    """Read images/<id>.tif, masks/<id>.png and weights/<id>.tif (when present) of `ids`;
    append each file read, with its size, to `files`."""
    pairs = Pairs()
    for sid in progress(ids, desc=f"load {label}", unit="image"):
        image_path = folder / "images" / f"{sid}.tif"
        mask_path = folder / "masks" / f"{sid}.png"
        image = read_processed_image(image_path)
        mask = read_mask(mask_path, image.shape)
        weight_path = folder / "weights" / f"{sid}.tif"
        weight = None
        if weight_path.is_file():
            weight = _read_weight(weight_path, image.shape)
            files.append((f"{label}/weights/{sid}.tif", weight_path.stat().st_size))
        files.append((f"{label}/images/{sid}.tif", image_path.stat().st_size))
        files.append((f"{label}/masks/{sid}.png", mask_path.stat().st_size))
        pairs.ids.append(sid)
        pairs.images.append(image)
        pairs.masks.append(mask)
        pairs.weights.append(weight)
        pairs.weight_paths.append(weight_path)
    return pairs


def _normalisation(stats_path: Path) -> dict[str, Any]:
    """The normalisation record of stats.json (``normalisation``; a set preprocessed before
    the choice existed gives its train ``mean`` and ``std``), for model.pt."""
    try:
        stats = json.loads(stats_path.read_text())
        if "normalisation" in stats:
            return dict(stats["normalisation"])
        return {"method": "train_zscore", "mean": float(stats["mean"]), "std": float(stats["std"])}
    except FileNotFoundError as exc:
        raise TrainingError(f"{stats_path}: not found; expected the normalisation stats") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise TrainingError(
            f"{stats_path}: expected JSON with a 'normalisation' record or numbers 'mean' and "
            f"'std' ({exc})"
        ) from exc


def _split_ids(table: pd.DataFrame, split_path: Path) -> tuple[list[str], list[str]]:
    """The train and val ids of the split table; neither may be empty."""
    train_ids = list(table.loc[table["split"] == "train", "id"])
    val_ids = list(table.loc[table["split"] == "val", "id"])
    if not train_ids:
        raise TrainingError(f"{split_path}: no train rows; expected at least one")
    if not val_ids:
        raise TrainingError(
            f"{split_path}: no val rows; expected at least one for validation "
            "and the choice of the best checkpoint"
        )
    return train_ids, val_ids


def _load_augmented(augmented: Path, train_ids: list[str], files: list[tuple[str, int]]) -> Pairs:
    """The copies of `train_ids` in an augmented set, in the order of its index.csv (which
    holds copies of every labelled image, for every cross-validation fold)."""
    index_path = augmented / "index.csv"
    try:
        index = pd.read_csv(index_path, dtype={"id": str, "source_id": str})
        aug_ids = list(index.loc[index["source_id"].isin(train_ids), "id"])
    except FileNotFoundError as exc:
        raise TrainingError(
            f"{index_path}: not found; expected the index of an augmented set"
        ) from exc
    except (KeyError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise TrainingError(
            f"{index_path}: expected a CSV with 'id' and 'source_id' columns"
        ) from exc
    files.append(("augmented/index.csv", index_path.stat().st_size))
    return load_pairs(augmented, aug_ids, files, "augmented")


def load_data(
    processed: Path, augmented: Path | None, *, need_train: bool = True, fold: int | None = None
) -> Data:
    """The processed train pairs, then their augmented copies (unless `need_train` is false:
    the baseline reads the processed masks only), and the val pairs; of cross-validation
    fold `fold` when given, else of split.csv."""
    files: list[tuple[str, int]] = []
    table = read_split(processed, fold)
    files.append(("processed/split.csv", (processed / "split.csv").stat().st_size))
    normalisation = _normalisation(processed / "stats.json")
    train_ids, val_ids = _split_ids(table, processed / "split.csv")
    train = load_pairs(processed, train_ids, files, "processed")
    n_processed = len(train.ids)
    if augmented is not None and need_train:
        train.extend(_load_augmented(augmented, train_ids, files))
    val = load_pairs(processed, val_ids, files, "processed")
    return Data(train, val, files, normalisation, n_processed)


def use_weight_maps(pairs: Pairs, loss: str) -> bool:
    """Weight maps apply to cross-entropy when every training pair has one."""
    have = [w is not None for w in pairs.weights]
    if loss not in ("ce", "dice_ce") or not any(have):
        return False
    if not all(have):
        missing = pairs.weight_paths[have.index(False)]
        raise TrainingError(
            f"{missing}: missing while other training pairs have a weight map; expected one "
            "for every training pair (processed and augmented) or none"
        )
    return True


# --------------------------------------------------------------------------- batches


def dataset_allows_flips(dataset_cfg: dict) -> bool:
    """Whether training may flip and rotate a dataset's tiles (its ``augment.flip``): EM
    sections look alike in any orientation, chest X-rays have a left and a right, a top and a
    bottom."""
    return bool((dataset_cfg.get("augment") or {}).get("flip", True))


def mirror_pad(array: np.ndarray, pad: tuple[tuple[int, int], tuple[int, int]]) -> np.ndarray:
    """numpy reflect padding (repeated reflection when the pad exceeds the size)."""
    if not any(p for side in pad for p in side):
        return array
    return np.pad(array, pad, mode="reflect")


def _dihedral(a: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """`a` turned by `turns` quarter turns, then mirrored left-right when `flip`."""
    a = np.rot90(a, turns)
    return np.ascontiguousarray(a[:, ::-1] if flip else a)


class TileBatches(torch.utils.data.Dataset):
    """Seeded training batches: item k is step k % steps of epoch first_epoch + k // steps.

    Each batch holds ``image`` (B x 1 x tile x tile float32), ``mask`` (B x out x out uint8) and,
    with weight maps, ``weight`` (B x out x out float32). Sample b of a step comes from
    ``default_rng([seed, epoch, step, b])``, so any worker computes the same batch.
    """

    def __init__(
        self,
        pairs: Pairs,
        *,
        tile: int,
        out: int,
        batch_size: int,
        steps: int,
        first_epoch: int,
        epochs: int,
        seed: int,
        flips: bool,
        weights: bool,
    ) -> None:
        self.tile, self.out, self.margin = tile, out, (tile - out) // 2
        self.batch_size, self.steps = batch_size, steps
        self.first_epoch, self.epochs = first_epoch, epochs
        self.seed, self.flips = seed, flips
        self.images, self.masks, self.weights, self.shapes = [], [], [], []
        for k, (image, mask) in enumerate(zip(pairs.images, pairs.masks, strict=True)):
            pad = self._pad(image.shape)
            self.images.append(mirror_pad(image, pad))
            self.masks.append(mirror_pad(mask, pad))
            self.weights.append(mirror_pad(pairs.weights[k], pad) if weights else None)
            self.shapes.append(tuple(max(s, out) for s in image.shape))

    def _pad(self, shape: tuple[int, ...]) -> tuple[tuple[int, int], tuple[int, int]]:
        """Mirror pad up to the output tile, then by the margin on every side."""
        up = [max(0, self.out - s) for s in shape]
        return (
            (self.margin + up[0] // 2, self.margin + up[0] - up[0] // 2),
            (self.margin + up[1] // 2, self.margin + up[1] - up[1] // 2),
        )

    def __len__(self) -> int:
        return (self.epochs - self.first_epoch) * self.steps

    def __getitem__(self, k: int) -> dict[str, Tensor]:
        epoch, step = divmod(int(k), self.steps)
        return self.batch(self.first_epoch + epoch, step)

    def batch(self, epoch: int, step: int) -> dict[str, Tensor]:
        """The batch of `step` (0-based) in `epoch` (0-based)."""
        images, masks, weights = [], [], []
        for b in range(self.batch_size):
            crops = self._sample(np.random.default_rng([self.seed, epoch, step, b]))
            images.append(crops[0])
            masks.append(crops[1])
            if len(crops) == 3:
                weights.append(crops[2])
        batch = {
            "image": torch.from_numpy(np.stack(images)[:, None].astype(np.float32)),
            "mask": torch.from_numpy(np.stack(masks)),
        }
        if weights:
            batch["weight"] = torch.from_numpy(np.stack(weights).astype(np.float32))
        return batch

    def _sample(self, rng: np.random.Generator) -> list[np.ndarray]:
        """One sample's input tile, target crop and (with weight maps) weight crop: the pair,
        the crop position and the flip/rotation drawn from `rng`, in that order."""
        t, o, m = self.tile, self.out, self.margin
        i = int(rng.integers(len(self.images)))
        height, width = self.shapes[i]
        y = int(rng.integers(height - o + 1))
        x = int(rng.integers(width - o + 1))
        turns, flip = (int(rng.integers(4)), bool(rng.integers(2))) if self.flips else (0, 0)
        crops = [
            self.images[i][y : y + t, x : x + t],
            self.masks[i][y + m : y + m + o, x + m : x + m + o],
        ]
        if self.weights[i] is not None:
            crops.append(self.weights[i][y + m : y + m + o, x + m : x + m + o])
        return [_dihedral(c, turns, flip) for c in crops]
