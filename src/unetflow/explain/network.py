"""Applying a network to whole images for the explain stage.

An image is mirror-padded to the smallest input size the network takes whose output covers it
(for a valid-convolution U-Net, with the margin it loses on the top/left), and the output is
cropped back to the image. For valid padding the feature maps therefore include the mirrored
margin. Deterministic on the CPU.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from unetflow.config.geometry import output_size, valid_input_sizes
from unetflow.model.unet import UNet


class ExplainError(ValueError):
    """Explain settings or inputs that cannot be used; the message names the key or file."""


def input_geometry(model: nn.Module, height: int, width: int) -> tuple[int, int]:
    """(input size, margin): the smallest square input the network takes whose output covers
    an image of `height` x `width`, and the margin its output loses on each side. Models other
    than `UNet` must map an image to an output of the same size (size, 0)."""
    size = max(int(height), int(width))
    if not isinstance(model, UNet):
        return size, 0
    for low in range(size, size + 4096, 64):
        for candidate in valid_input_sizes(model.depth, model.padding, low, low + 63):
            out = output_size(candidate, model.depth, model.padding)
            if out >= size:
                return candidate, (candidate - out) // 2
    raise ExplainError(f"no input size up to {size + 4096} px covers a {size} px image")


def network_input(model: nn.Module, images: np.ndarray, device: torch.device | str) -> Tensor:
    """N x 1 x S x S input of N x H x W images (float32), mirror-padded to the size S of
    :func:`input_geometry`, channels-last (about twice as fast convolutions on the CPU)."""
    n, height, width = images.shape
    size, margin = input_geometry(model, height, width)
    pad = ((0, 0), (margin, size - height - margin), (margin, size - width - margin))
    padded = np.pad(images, pad, mode="reflect") if size != height or size != width else images
    x = torch.from_numpy(np.ascontiguousarray(padded, dtype=np.float32))[:, None].to(device)
    return x.contiguous(memory_format=torch.channels_last)


def full_logits(model: nn.Module, images: np.ndarray, device: torch.device | str) -> Tensor:
    """N x C x H x W logits of N x H x W images (float32) at their own size (module docstring)."""
    n, height, width = images.shape
    x = network_input(model, images, device)
    size = x.shape[-1]
    logits = model(x)
    if logits.shape[-2] < height or logits.shape[-1] < width:
        raise ExplainError(
            f"model: output {tuple(logits.shape[-2:])} for a {size} px input does not cover "
            f"a {height} x {width} image"
        )
    return logits[..., :height, :width].float()
