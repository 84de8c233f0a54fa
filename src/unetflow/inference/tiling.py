"""Overlap-tile prediction (Ronneberger et al. 2015, Fig. 2) of one image of any size.

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
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

from unetflow.io.images import resize_image
from unetflow.model.device import AMP_DTYPES, autocast
from unetflow.model.unet import MeanMask, evaluating, foreground_probability

BLENDS = ("mean", "gaussian")


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
    check_settings(overlap=overlap, blend=blend, batch_size=batch_size, amp=amp)
    device = torch.device(device)
    with evaluating(model), torch.inference_mode(), autocast(device, amp):
        if isinstance(model, MeanMask):
            return _whole_image(model, image, device)
        return _overlap_tile(model, image, tile, overlap, blend, tta, batch_size, device)


def check_settings(*, overlap: float, blend: str, batch_size: int, amp: str) -> None:
    """InferenceError naming the infer key that is out of range or unknown."""
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


def resized_probability(prob: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A probability map stretched to `shape` (bilinear, as images are resized) and clipped to
    [0, 1], in float32: how a prediction reaches the size it is scored or delivered at."""
    return np.clip(resize_image(prob, tuple(shape)), 0.0, 1.0).astype(np.float32)


def to_mask(prob: np.ndarray, threshold: float) -> np.ndarray:
    """0/255 uint8 mask: foreground where the probability is above `threshold`."""
    return np.where(prob > float(threshold), 255, 0).astype(np.uint8)
