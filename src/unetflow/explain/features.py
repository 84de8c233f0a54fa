"""Feature maps: the mean over channels of the output of every encoder block, the bottleneck
and every decoder block (forward hooks on :func:`unet_blocks`), at each block's own
resolution; :func:`resized` brings them to one size (``skimage.transform.resize``, bilinear).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from skimage.transform import resize
from torch import Tensor, nn

from unetflow.explain.network import ExplainError, full_logits
from unetflow.model.unet import UNet, evaluating, foreground_probability


def unet_blocks(model: UNet) -> list[tuple[str, nn.Module]]:
    """(label, module) of every encoder block, the bottleneck and every decoder block, in
    forward order: ``encoder 1`` (``inc``) ... ``encoder <depth>`` (``downs``),
    ``bottleneck`` (the last of ``downs``), ``decoder <depth>`` ... ``decoder 1`` (``ups``)."""
    if not isinstance(model, UNet):
        raise ExplainError(f"model: {type(model).__name__} has no U-Net blocks to explain")
    encoders = [model.inc, *model.downs]
    bottleneck = encoders.pop()
    blocks = [(f"encoder {i + 1}", block) for i, block in enumerate(encoders)]
    blocks.append(("bottleneck", bottleneck))
    depth = len(model.ups)
    blocks += [(f"decoder {depth - i}", block) for i, block in enumerate(model.ups)]
    return blocks


@contextmanager
def _recording(modules: Sequence[tuple[str, nn.Module]]) -> Iterator[dict[str, Tensor]]:
    """Forward hooks that keep the latest output of each module under its label."""
    outputs: dict[str, Tensor] = {}
    handles = [
        module.register_forward_hook(
            lambda _m, _i, out, label=label: outputs.__setitem__(label, out.detach())
        )
        for label, module in modules
    ]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def block_activations(
    model: UNet, image: np.ndarray, device: torch.device | str = "cpu"
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({label: mean over channels of the block's output, at its own resolution}, the H x W
    foreground probability), for one image; labels as in :func:`unet_blocks`."""
    image = np.asarray(image, dtype=np.float32)
    with evaluating(model), torch.inference_mode(), _recording(unet_blocks(model)) as outputs:
        logits = full_logits(model, image[None], device)
        maps = {label: out[0].float().mean(0).cpu().numpy() for label, out in outputs.items()}
    probability = foreground_probability(logits)[0].cpu().numpy()
    return {label: maps[label] for label, _ in unet_blocks(model)}, probability


def resized(maps: dict[str, np.ndarray], shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Every map brought to `shape` by ``skimage.transform.resize`` (bilinear, edge mode)."""
    return {
        label: resize(m, shape, order=1, mode="edge", preserve_range=True).astype(np.float32)
        for label, m in maps.items()
    }
