"""One image's scores: the metrics of each dataset kind, and a prediction read beside its
ground truth. Kept apart from the evaluate stage (which also draws figures and reads models),
so that scoring against other masks (the noise study's noisy test masks) imports no torch.

Metric definitions and their empty-mask conventions are those of
:mod:`unetflow.evaluation.metrics`; for EM, V_Rand, V_Info and the Rand error come from the
*membrane* probability (1 - cell probability) against the ground-truth cells.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unetflow.evaluation import metrics as m
from unetflow.io.images import ImageError, read_float_tiff, read_gray
from unetflow.io.processed import DataError, scoring_mask_path

COMMON_METRICS = ("dice", "iou", "pixel_error", "precision", "recall", "hd95", "assd")
RAND_METRICS = ("vrand", "vinfo", "rand_error")
METRICS = COMMON_METRICS + RAND_METRICS
CXR_METRICS = COMMON_METRICS
#: EM per-image diagnostics (per_image.csv only): split/merge parts and best thresholds.
RAND_DETAILS = (
    "vrand_split",
    "vrand_merge",
    "vrand_threshold",
    "vinfo_split",
    "vinfo_merge",
    "vinfo_threshold",
    "rand_error_threshold",
)
KINDS = ("em", "cxr")


def metric_names(kind: str) -> tuple[str, ...]:
    """The metrics evaluated for a dataset kind ("em": with V_Rand/V_Info/Rand error)."""
    if kind not in KINDS:
        raise ValueError(f"kind: {kind!r} is not a dataset kind; expected one of {list(KINDS)}")
    return METRICS if kind == "em" else CXR_METRICS


def per_image_names(kind: str) -> tuple[str, ...]:
    """The metric columns of per_image.csv: the metrics, then (EM) the Rand/Info details."""
    return metric_names(kind) + (RAND_DETAILS if kind == "em" else ())


def image_metrics(
    pred: np.ndarray, truth: np.ndarray, prob: np.ndarray, kind: str
) -> dict[str, float]:
    """Every per-image value of one image (:func:`per_image_names`): binary `pred` and `truth`
    (non-zero = foreground) and the foreground probability `prob` (for the EM scores)."""
    names = per_image_names(kind)
    pred, truth = np.asarray(pred) > 0, np.asarray(truth) > 0
    values = {
        "dice": m.dice(pred, truth),
        "iou": m.iou(pred, truth),
        "pixel_error": m.pixel_error(pred, truth),
        "precision": m.precision(pred, truth),
        "recall": m.recall(pred, truth),
        "hd95": m.hd95(pred, truth),
        "assd": m.assd(pred, truth),
    }
    if kind == "em":
        membrane = 1.0 - np.asarray(prob, dtype=np.float64)
        scores = m.rand_and_info_scores(membrane, truth)
        values.update({name: scores[name] for name in RAND_METRICS + RAND_DETAILS})
    return {name: float(values[name]) for name in names}


def load_pair(
    processed: Path, predictions: Path, sid: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prediction mask, truth mask and foreground probability of image `sid`, checked."""
    truth_path = scoring_mask_path(processed, sid)
    pred_path = predictions / "masks" / f"{sid}.png"
    prob_path = predictions / "probabilities" / f"{sid}.tif"
    for path, what in (
        (truth_path, "the ground-truth mask of a val/test row of split.csv"),
        (pred_path, "the predicted mask written by the infer stage"),
        (prob_path, "the probability map written by the infer stage"),
    ):
        if not path.is_file():
            raise DataError(f"{path}: not found; expected {what}")
    truth = read_gray(truth_path) > 0
    pred = read_gray(pred_path) > 0
    try:
        prob = read_float_tiff(prob_path)
    except Exception as exc:  # tifffile raises several types for damaged files
        raise ImageError(f"{prob_path}: cannot read float TIFF ({exc})") from exc
    for path, array in ((pred_path, pred), (prob_path, prob)):
        if array.shape != truth.shape:
            raise DataError(
                f"{path}: shape {array.shape} differs from the ground truth {truth_path} "
                f"{truth.shape}; expected predictions at the processed image size"
            )
    if not np.isfinite(prob).all() or prob.min() < 0 or prob.max() > 1:
        raise DataError(f"{prob_path}: expected finite probabilities in [0, 1]")
    return pred, truth, prob
