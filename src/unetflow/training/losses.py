"""The training losses of the U-Net family, shared by the train and explain stages.

``ce``: 2-class softmax cross-entropy, multiplied by the per-pixel weight map when there is
one; ``bce``: sigmoid binary cross-entropy with ``pos_weight``; ``dice``: soft Dice (per
image, smoothed by 1); ``dice_ce``: soft Dice + (weighted) cross-entropy. ce/dice_ce models
have 2 output channels, bce/dice ones 1.
"""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from unetflow.model.unet import foreground_probability

LOSSES = ("ce", "bce", "dice", "dice_ce")
EPS = 1e-6


def out_channels_for(loss: str) -> int:
    """2 softmax channels for ce/dice_ce, 1 sigmoid channel for bce/dice."""
    return 2 if loss in ("ce", "dice_ce") else 1


def soft_dice_loss(prob: Tensor, target: Tensor) -> Tensor:
    """1 - soft Dice per image (smoothed by 1), averaged over the batch."""
    dims = tuple(range(1, prob.ndim))
    inter = (prob * target).sum(dims)
    total = prob.sum(dims) + target.sum(dims)
    return 1.0 - ((2.0 * inter + 1.0) / (total + 1.0)).mean()


def loss_value(
    loss: str,
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    pos_weight: Tensor | None = None,
) -> Tensor:
    """The training loss of N x C x h x w logits against N x h x w {0, 1} targets (float32)."""
    logits = logits.float()
    value = logits.new_zeros(())
    if loss in ("ce", "dice_ce"):
        ce = F.cross_entropy(logits, target.long(), reduction="none")
        if weight is not None:
            ce = ce * weight
        value = value + ce.mean()
    if loss == "bce":
        value = value + F.binary_cross_entropy_with_logits(
            logits[:, 0], target.float(), pos_weight=pos_weight
        )
    if loss in ("dice", "dice_ce"):
        value = value + soft_dice_loss(foreground_probability(logits), target.float())
    return value


def probability_bce(prob: np.ndarray, truth: np.ndarray) -> float:
    """Mean binary cross-entropy of a probability map against a {0, 1} mask."""
    p = np.clip(prob.astype(np.float64), EPS, 1.0 - EPS)
    t = truth.astype(bool)
    return float(-np.where(t, np.log(p), np.log1p(-p)).mean())
