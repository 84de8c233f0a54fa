"""Overlap-tile inference (Ronneberger et al. 2015, Fig. 2), the infer stage and `unetflow predict`.

How an image of any size is predicted (:func:`predict_probability`):

- The model maps an input tile of ``tile`` px to a centred output of
  ``out = model.output_size(tile)`` px; a valid-convolution U-Net loses a margin
  ``m = (tile - out) / 2`` on every side, a same-padding one none.
- Output tiles of ``out`` px are laid on a grid with stride ``floor(out * (1 - overlap))``, the
  last tile flush with the bottom/right border, so every pixel is covered. Each output tile reads
  the input tile around it from the image mirror-padded by ``m`` (numpy ``reflect``, repeated
  when the image is smaller than the pad, so tiny images work too). Images smaller than one
  output tile are mirror-padded up to it and the result is cropped.
- Overlapping tile outputs (foreground probabilities) are blended by a weighted mean: equal
  weights (``mean``) or a Gaussian window with sigma = out/8 (``gaussian``, lowers the weight of
  tile borders, where a same-padding model sees zero padding instead of context). The sum is
  divided by the summed weights.
- ``tta`` averages the probabilities of the 8 dihedral transforms (flips and 90° rotations) of
  each tile, each transform inverted on the output.
- Models that are not translation-equivariant (the mean-mask baseline) are applied to the whole
  image at once.

The infer stage (:func:`infer_dataset`) writes, for every val/test/predict image of a processed
dataset, into ``results/<dataset>/<model>/predictions/``:

- ``probabilities/<id>.tif``: float32 foreground probability in [0, 1] (cell for EM, lung for
  CXR), zlib-compressed single-page TIFF, the processed image's size, or the scoring size
  where preprocessing wrote ``score_masks/`` (a CXR set trained at a lower resolution than it
  is scored at): then the probability is resized bilinearly before thresholding.
- ``masks/<id>.png``: uint8, 255 where the probability is above ``infer.threshold``, else 0.
- ``index.csv``: ``id,split,height,width,foreground_fraction`` (fraction of mask pixels = 255).
- ``isbi_submission.tif`` (EM datasets with unlabeled ``predict`` slices only): an uncompressed
  32-bit float multi-page TIFF, one page per predict slice in slice order, holding the
  *membrane* probability (1 - cell probability), the layout the ISBI 2012 challenge server takes.

`unetflow predict` (:func:`predict_files`) applies a checkpoint to arbitrary PNG/TIFF images; see
its docstring for the pre- and post-processing.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from unetflow.io.images import (
    ImageError,
    read_gray,
    read_processed_image,
    resize_image,
    unit_intensities,
    write_float_tiff,
    write_png,
)
from unetflow.io.outputs import atomic_file, staged_dir
from unetflow.io.processed import SCORE_MASKS, read_split
from unetflow.io.progress import progress
from unetflow.model.checkpoint import load_model
from unetflow.model.device import AMP_DTYPES, autocast, resolve_device
from unetflow.model.unet import MeanMask, evaluating, foreground_probability

BLENDS = ("mean", "gaussian")
INFER_SPLITS = ("val", "test", "predict")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
# Defaults of `unetflow predict`, the same as params.yaml `infer:`.
PREDICT_DEFAULTS = {"overlap": 0.25, "blend": "gaussian", "batch_size": 4, "threshold": 0.5}


class InferenceError(ValueError):
    """Inference settings or inputs that cannot be used; the message names the key or file."""


def tile_starts(size: int, out: int, stride: int) -> list[int]:
    """Start offsets of output tiles of `out` px along an axis of `size` px, last one flush."""
    if size <= out:
        return [0]
    starts = list(range(0, size - out, stride))
    starts.append(size - out)
    return starts


def blend_window(out: int, blend: str) -> np.ndarray:
    """Weights of one output tile: ones (mean) or a separable Gaussian, sigma = out/8."""
    if blend == "mean":
        return np.ones((out, out), dtype=np.float64)
    centre = (out - 1) / 2
    sigma = out / 8
    g = np.exp(-0.5 * ((np.arange(out) - centre) / sigma) ** 2)
    return np.outer(g, g)


@functools.lru_cache(maxsize=8)
def _device_window(out: int, blend: str, device: torch.device) -> torch.Tensor:
    """blend_window as a float32 tensor on `device`, kept for the next image of the same size."""
    return torch.from_numpy(blend_window(out, blend)).to(device, torch.float32)


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 flips/rotations (k in 0..7) of the last two dimensions."""
    if k >= 4:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k % 4, dims=(-2, -1))


def dihedral_inverse(x: torch.Tensor, k: int) -> torch.Tensor:
    """Undo :func:`dihedral` ``k``."""
    x = torch.rot90(x, -(k % 4), dims=(-2, -1))
    if k >= 4:
        x = torch.flip(x, dims=(-1,))
    return x


def predict_probability(
    model: nn.Module,
    image: np.ndarray,
    *,
    tile: int,
    overlap: float,
    blend: str,
    tta: bool,
    batch_size: int,
    device: torch.device | str,
    amp: str = "none",
) -> np.ndarray:
    """Foreground probability (H×W float32 in [0, 1]) of a normalised H×W image, by overlap-tile.

    The model must already be on `device`; it is put in eval mode for the call and its previous
    mode is restored afterwards (training calls this for validation). `amp` (bf16/fp16) applies
    autocast on CUDA only. See the module docstring for the tiling and blending.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2 or image.size == 0:
        raise InferenceError(f"image: expected a non-empty 2-D array, got shape {image.shape}")
    _check_settings(overlap=overlap, blend=blend, batch_size=batch_size, amp=amp)
    device = torch.device(device)
    with evaluating(model), torch.inference_mode(), autocast(device, amp):
        if isinstance(model, MeanMask):
            return _whole_image(model, image, device)
        return _overlap_tile(model, image, tile, overlap, blend, tta, batch_size, device)


def _check_settings(*, overlap: float, blend: str, batch_size: int, amp: str) -> None:
    if not 0 <= overlap < 1:
        raise InferenceError(f"infer.overlap: {overlap!r} is outside [0, 1)")
    if blend not in BLENDS:
        raise InferenceError(f"infer.blend: unknown '{blend}'; expected one of {list(BLENDS)}")
    if int(batch_size) < 1:
        raise InferenceError(f"infer.batch_size: {batch_size!r}; expected at least 1")
    if amp != "none" and amp not in AMP_DTYPES:
        raise InferenceError(f"amp: unknown '{amp}'; expected none, bf16 or fp16")


def _whole_image(model: nn.Module, image: np.ndarray, device: torch.device) -> np.ndarray:
    """Apply a model that is not translation-equivariant (MeanMask) to the image at once."""
    x = torch.from_numpy(image)[None, None].to(device)
    prob = foreground_probability(model(x).float())[0]
    return prob.clamp(0, 1).cpu().numpy().astype(np.float32)


def _overlap_tile(
    model: nn.Module,
    image: np.ndarray,
    tile: int,
    overlap: float,
    blend: str,
    tta: bool,
    batch_size: int,
    device: torch.device,
) -> np.ndarray:
    out = int(model.output_size(int(tile)))
    shrink = int(tile) - out
    if out < 1 or shrink < 0 or shrink % 2:
        raise InferenceError(
            f"tile: the model maps {tile} px to {out} px; expected a centred output no larger "
            f"than the tile"
        )
    margin = shrink // 2
    height, width = image.shape
    stride = max(1, math.floor(out * (1 - overlap)))
    rows, cols = tile_starts(height, out, stride), tile_starts(width, out, stride)
    covered = (max(height, out), max(width, out))
    pad = ((margin, covered[0] - height + margin), (margin, covered[1] - width + margin))
    padded = np.pad(image, pad, mode="reflect") if max(max(pad)) > 0 else image
    # Tiles are cut and blended on the device: one copy in, one copy out.
    source = torch.from_numpy(np.ascontiguousarray(padded)).to(device)
    window = _device_window(out, blend, device)
    total = torch.zeros(covered, dtype=torch.float32, device=device)
    weights = torch.zeros(covered, dtype=torch.float32, device=device)
    positions = [(y, x) for y in rows for x in cols]
    for start in range(0, len(positions), int(batch_size)):
        batch = positions[start : start + int(batch_size)]
        tiles = torch.stack([source[y : y + tile, x : x + tile] for y, x in batch])[:, None]
        probs = _tile_probabilities(model, tiles, tta, out)
        for (y, x), prob in zip(batch, probs, strict=True):
            total[y : y + out, x : x + out] += window * prob
            weights[y : y + out, x : x + out] += window
    result = (total[:height, :width] / weights[:height, :width]).clamp(0.0, 1.0)
    return result.cpu().numpy()


def _tile_probabilities(model: nn.Module, tiles: torch.Tensor, tta: bool, out: int) -> torch.Tensor:
    """N×out×out foreground probabilities of a batch of N×1×tile×tile input tiles."""
    transforms = range(8) if tta else range(1)
    total = None
    for k in transforms:
        logits = model(dihedral(tiles, k)).float()
        if logits.shape[-2:] != (out, out):
            raise InferenceError(
                f"model: output of shape {tuple(logits.shape)} for a {tiles.shape[-1]} px tile; "
                f"expected {out}×{out} as model.output_size says"
            )
        prob = dihedral_inverse(foreground_probability(logits), k)
        total = prob if total is None else total + prob
    return total / len(transforms)


def infer_dataset(
    *,
    checkpoint: Path,
    processed: Path,
    out: Path,
    infer_cfg: dict,
    device: str = "auto",
    amp: str = "none",
) -> dict:
    """Predict every val/test/predict image of a processed dataset into `out` (module docstring).

    Atomic: the files appear at `out` only once all are written. Returns a summary with the
    number of images, the seconds taken and the throughput in megapixels per second.
    """
    processed, out = Path(processed), Path(out)
    torch_device = resolve_device(device)
    settings = infer_settings(infer_cfg)
    model, meta = load_model(checkpoint, torch_device)
    table = read_split(processed)
    rows = table[table["split"].isin(INFER_SPLITS)]
    kind = meta.get("dataset", {}).get("kind")
    started = time.perf_counter()
    pixels = 0
    with staged_dir(out) as work:
        (work / "probabilities").mkdir()
        (work / "masks").mkdir()
        index = []
        submission: list[tuple[Any, str, np.ndarray]] = []  # (slice index, id, membrane)
        for row in progress(rows.to_dict("records"), desc="infer", unit="image"):
            sid, split = str(row["id"]), str(row["split"])
            image = read_processed_image(processed / "images" / f"{sid}.tif")
            prob = predict_probability(
                model, image, tile=int(meta["tile"]), device=torch_device, amp=amp, **settings
            )
            score_mask = processed / SCORE_MASKS / f"{sid}.png"
            if score_mask.is_file():  # scored at another resolution than trained at
                prob = np.clip(resize_image(prob, read_gray(score_mask).shape), 0, 1).astype(
                    np.float32
                )
            mask = _mask(prob, infer_cfg["threshold"])
            write_float_tiff(work / "probabilities" / f"{sid}.tif", prob, level=1)
            write_png(work / "masks" / f"{sid}.png", mask)
            index.append(
                {
                    "id": sid,
                    "split": split,
                    "height": prob.shape[0],
                    "width": prob.shape[1],
                    "foreground_fraction": float((mask > 0).mean()),
                }
            )
            if kind == "em" and split == "predict":
                submission.append((int(row.get("index", 0)), sid, 1.0 - prob))
            pixels += image.size
        columns = ["id", "split", "height", "width", "foreground_fraction"]
        pd.DataFrame(index, columns=columns).to_csv(work / "index.csv", index=False)
        if submission:
            submission.sort(key=lambda page: page[:2])
            _write_submission(work / "isbi_submission.tif", [page for *_, page in submission])
    seconds = time.perf_counter() - started
    return {
        "images": len(index),
        "seconds": seconds,
        "megapixels_per_s": pixels / 1e6 / seconds if seconds > 0 else float("nan"),
        "device": str(torch_device),
    }


def infer_settings(infer_cfg: dict) -> dict:
    """The predict_probability keywords of params.yaml `infer:` (checked by the config layer);
    the infer stage and the train stage's validation predict with them."""
    return {key: infer_cfg[key] for key in ("overlap", "blend", "tta", "batch_size")}


def _mask(prob: np.ndarray, threshold: float) -> np.ndarray:
    """0/255 uint8 mask: foreground where the probability is above `threshold`."""
    return np.where(prob > float(threshold), 255, 0).astype(np.uint8)


def _write_submission(path: Path, pages: list[np.ndarray]) -> None:
    """Uncompressed 32-bit float multi-page TIFF, one page per slice (ISBI 2012 server layout)."""
    import tifffile

    stack = np.stack(pages).astype(np.float32)
    tifffile.imwrite(path, stack, photometric="minisblack")


def list_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Image files named by `inputs`: files as given, folders by their PNG/TIFF files (sorted).

    Output files are named by the input stem, so two inputs with the same stem are an error.
    """
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(
                p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise FileNotFoundError(f"{item}: no .png/.tif/.tiff images in this folder")
            files.extend(found)
        elif item.is_file():
            if item.suffix.lower() not in IMAGE_SUFFIXES:
                raise ImageError(f"{item}: unsupported file type; expected .png, .tif or .tiff")
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    if not files:
        raise FileNotFoundError("--input: no images given")
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen:
            raise ImageError(
                f"{path}: same name as {seen[path.stem]}; outputs are named by the input name, "
                f"expected distinct names"
            )
        seen[path.stem] = path
    return files


def prepare_image(raw: np.ndarray, path: Path, meta: dict) -> np.ndarray:
    """A raw image as the model saw its training data: [0, 1], resized (CXR), z-scored."""
    image = unit_intensities(raw, path).astype(np.float32)
    size = (meta.get("dataset", {}).get("preprocess") or {}).get("size")
    if size:
        image = resize_image(image, (int(size), int(size))).astype(np.float32)
    norm = meta["normalisation"]
    return ((image - float(norm["mean"])) / float(norm["std"])).astype(np.float32)


def predict_files(
    *,
    model_path: Path,
    inputs: Sequence[str | os.PathLike[str]],
    output: Path,
    device: str = "auto",
    tta: bool = False,
    threshold: float = PREDICT_DEFAULTS["threshold"],
    overlap: float = PREDICT_DEFAULTS["overlap"],
    blend: str = PREDICT_DEFAULTS["blend"],
    batch_size: int = PREDICT_DEFAULTS["batch_size"],
    amp: str = "none",
) -> dict:
    """Apply a checkpoint to arbitrary images; write ``<output>/masks/<stem>.png`` (0/255) and
    ``<output>/probabilities/<stem>.tif`` (float32) at each input's own size.

    Each image is read as grey (RGB/RGBA/palette converted), scaled to [0, 1] by its dtype
    maximum, and, when the checkpoint's dataset was resized in preprocessing
    (``preprocess.size``, the chest X-rays), stretched to size×size without keeping the aspect
    ratio, as the 512×512 Shenzhen copies were made. The probability is stretched back to the
    input size (bilinear) before thresholding. Every file is written atomically, so an error
    (which names the bad file) leaves only complete outputs of the images before it.
    """
    files = list_inputs(inputs)
    torch_device = resolve_device(device)
    _check_settings(overlap=overlap, blend=blend, batch_size=batch_size, amp=amp)
    model, meta = load_model(model_path, torch_device)
    output = Path(output)
    (output / "masks").mkdir(parents=True, exist_ok=True)
    (output / "probabilities").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for path in progress(files, desc="predict", unit="image"):
        raw = read_gray(path)
        image = prepare_image(raw, path, meta)
        prob = predict_probability(
            model,
            image,
            tile=int(meta["tile"]),
            overlap=overlap,
            blend=blend,
            tta=tta,
            batch_size=batch_size,
            device=torch_device,
            amp=amp,
        )
        prob = np.clip(resize_image(prob, raw.shape), 0.0, 1.0).astype(np.float32)
        with atomic_file(output / "probabilities" / f"{path.stem}.tif") as tmp:
            write_float_tiff(tmp, prob)
        with atomic_file(output / "masks" / f"{path.stem}.png") as tmp:
            write_png(tmp, _mask(prob, threshold))
    return {"images": len(files), "seconds": time.perf_counter() - started, "output": str(output)}
