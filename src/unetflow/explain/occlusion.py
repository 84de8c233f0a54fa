"""Occlusion sensitivity (the Shenzhen study's explanation of what a U-Net looks at).

Every ``patch`` x ``patch`` square (``stride`` px apart, the last one flush with the border) is
replaced by the same square of one seeded Gaussian noise field (mean 0, ``noise_std``: the
images are z-scored, so 1.0 has the data's spread), and the *training loss* of the model
against the ground truth is recorded; the map holds, per pixel, the mean increase over the
unoccluded image's loss of the patches covering it. ``batch_size`` occluded copies go through
the network at once (channels-last memory format, about twice as fast on the CPU).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from unetflow.explain.network import ExplainError, full_logits
from unetflow.inference.tiling import tile_starts
from unetflow.model.unet import evaluating
from unetflow.training.losses import loss_value


def per_image_losses(
    logits: Tensor, truth: Tensor, loss: str, pos_weight: Tensor | None = None
) -> np.ndarray:
    """The training loss (`loss_value`) of each image of a batch against one H x W truth."""
    return np.array(
        [
            float(loss_value(loss, logits[i : i + 1], truth[None], None, pos_weight))
            for i in range(logits.shape[0])
        ],
        dtype=np.float64,
    )


def occlusion_map(
    model: nn.Module,
    image: np.ndarray,
    truth: np.ndarray,
    *,
    loss: str,
    patch: int,
    stride: int | None = None,
    noise_std: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    pos_weight: float | None = None,
) -> tuple[np.ndarray, float]:
    """(H x W float32 map of the loss increase when the patches covering each pixel are
    replaced by noise, the unoccluded image's loss); see the module docstring."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2 or np.asarray(truth).shape != image.shape:
        raise ExplainError(
            f"image {image.shape} and truth {np.asarray(truth).shape}: expected one H x W shape"
        )
    stride = int(stride or patch)
    if int(patch) < 1 or stride < 1 or int(batch_size) < 1:
        raise ExplainError(
            f"explain: patch {patch}, stride {stride}, batch_size {batch_size}; expected >= 1"
        )
    patch = int(patch)
    device = torch.device(device)
    height, width = image.shape
    noise = np.random.default_rng(seed).normal(0.0, noise_std, image.shape).astype(np.float32)
    target = torch.from_numpy(np.asarray(truth) > 0).float().to(device)
    weight = None if pos_weight is None else torch.tensor(float(pos_weight), device=device)
    positions = [
        (y, x)
        for y in tile_starts(height, patch, stride)
        for x in tile_starts(width, patch, stride)
    ]
    total = np.zeros(image.shape, dtype=np.float64)
    count = np.zeros(image.shape, dtype=np.float64)
    with evaluating(model), torch.inference_mode():
        base = float(
            per_image_losses(full_logits(model, image[None], device), target, loss, weight)[0]
        )
        for start in range(0, len(positions), int(batch_size)):
            batch = positions[start : start + int(batch_size)]
            copies = np.repeat(image[None], len(batch), axis=0)
            for i, (y, x) in enumerate(batch):
                copies[i, y : y + patch, x : x + patch] = noise[y : y + patch, x : x + patch]
            losses = per_image_losses(full_logits(model, copies, device), target, loss, weight)
            for (y, x), value in zip(batch, losses, strict=True):
                total[y : y + patch, x : x + patch] += value - base
                count[y : y + patch, x : x + patch] += 1
    return (total / np.maximum(count, 1)).astype(np.float32), base
