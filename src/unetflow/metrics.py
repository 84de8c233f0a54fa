"""Overlap metrics of binary masks.

Convention for empty masks: when both the prediction and the truth are empty the masks agree
perfectly (1.0); when exactly one is empty they share nothing (0.0). This keeps per-image
means defined for images without foreground (some Shenzhen images, EM crops of one cell).
"""

from __future__ import annotations

import numpy as np


def _pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as bool arrays of the same shape (anything non-zero is foreground)."""
    pred, truth = np.asarray(pred).astype(bool), np.asarray(truth).astype(bool)
    if pred.shape != truth.shape:
        raise ValueError(
            f"prediction shape {pred.shape} differs from truth shape {truth.shape}; "
            "expected masks of the same size"
        )
    return pred, truth


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient 2|P∩T| / (|P| + |T|); 1.0 when both are empty."""
    pred, truth = _pair(pred, truth)
    total = int(pred.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, truth).sum()) / total


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union |P∩T| / |P∪T| (Jaccard); 1.0 when both are empty."""
    pred, truth = _pair(pred, truth)
    union = int(np.logical_or(pred, truth).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(pred, truth).sum()) / union
