"""Intensity normalisation: how an image on the [0, 1] scale becomes what a model sees.

One function, :func:`normalise`, serves preprocess, the augment stage, `unetflow predict` and
the shift test of evaluate, so that a model meets every image exactly as it met its training
data. The method is a per-dataset choice (``preprocess.normalise``), recorded in
``stats.json`` and in ``model.pt`` as a plain dict:

- ``{"method": "train_zscore", "mean": m, "std": s}``: the [0, 1] image minus the train
  split's mean pixel, divided by its standard deviation. Every image gets the same affine map,
  so an X-ray with another exposure or windowing keeps its offset and lands away from
  everything the network saw. The EM sets use it, as every chest X-ray set did before the
  choice existed.
- ``{"method": "image_zscore", "window_pct": [lo, hi]}``: each image clipped to its own
  ``lo``-th and ``hi``-th percentile (default 1 and 99), then z-scored with its own mean and
  std (nnU-Net's default for non-CT images, with a window against outliers).
- ``{"method": "image_window", "window_pct": [lo, hi]}``: each image's own percentile window
  mapped to [0, 1] (clipped), then standardised with the mean and standard deviation of a
  uniform grey level (0.5 and 1/√12), so that inputs have about unit variance. This is the
  windowing of a radiograph viewer, done per image.
- ``{"method": "image_histeq"}``: each image's histogram equalised: every pixel replaced by its
  rank among the image's pixels, as a fraction in (0, 1) (equal grey levels share their mean
  rank), then standardised as a uniform grey level like the window. Ranks do not move under any
  increasing map of the grey levels (gain, offset, gamma, windowing), only where such a map
  clips and so ties pixels together.

The per-image methods map an image and its affine change a·x + b (a > 0) to the same array,
so exposure, gain and offset, what scanners and exports differ in most, no longer reach the
network, and no statistic of any dataset is needed. They differ in what else moves the
result: the z-score and the ranks depend on the proportions of the whole image (a wider
border or more body in view moves every pixel), the window only on two percentiles, which a
change of field of view hardly moves. ``image_window`` is the chest X-ray default for that
reason (docs/shifts.md has the measurements).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

METHODS = ("train_zscore", "image_zscore", "image_window", "image_histeq")
UNIFORM_MEAN, UNIFORM_STD = 0.5, 1.0 / np.sqrt(12.0)
DEFAULT_WINDOW_PCT = (1.0, 99.0)


def normalisation_for(
    method: str, *, mean: float, std: float, window_pct: Sequence[float] = DEFAULT_WINDOW_PCT
) -> dict[str, Any]:
    """The normalisation record of `method`: the train statistics for ``train_zscore``, the
    percentile window for the per-image window and z-score, nothing more for equalisation."""
    if method == "train_zscore":
        return {"method": method, "mean": float(mean), "std": float(std)}
    if method == "image_histeq":
        return {"method": method}
    if method in ("image_zscore", "image_window"):
        lo, hi = (float(p) for p in window_pct)
        return {"method": method, "window_pct": [lo, hi]}
    raise ValueError(f"normalise: {method!r} is not a method; expected one of {list(METHODS)}")


def normalise(image: np.ndarray, record: Mapping[str, Any]) -> np.ndarray:
    """A [0, 1] image as the model sees it, by the normalisation `record` (module docstring).

    A record without ``method`` (checkpoints written before the choice existed) is a train
    z-score. ``train_zscore`` computes in the image's own float type, so a float32 image gives
    the bytes preprocess has always written.
    """
    method = record.get("method", "train_zscore")
    if method == "train_zscore":
        image = np.asarray(image, dtype=np.float32)
        return ((image - float(record["mean"])) / float(record["std"])).astype(np.float32)
    if method == "image_zscore":
        return _window_zscore(np.asarray(image, dtype=np.float64), record["window_pct"])
    if method == "image_window":
        return _window_unit(np.asarray(image, dtype=np.float64), record["window_pct"])
    if method == "image_histeq":
        return _equalised(np.asarray(image, dtype=np.float64))
    raise ValueError(
        f"normalisation method {method!r} is not known; expected one of {list(METHODS)}"
    )


def _window_zscore(image: np.ndarray, window_pct: Sequence[float]) -> np.ndarray:
    """Clip to the image's own percentile window, then z-score with its own mean and std; a
    constant image gives zeros."""
    lo, hi = np.percentile(image, [float(p) for p in window_pct])
    clipped = np.clip(image, lo, hi)
    std = float(clipped.std())
    if not std > 0:
        return np.zeros(image.shape, dtype=np.float32)
    return ((clipped - float(clipped.mean())) / std).astype(np.float32)


def _window_unit(image: np.ndarray, window_pct: Sequence[float]) -> np.ndarray:
    """The image's own percentile window mapped to [0, 1], then standardised as a uniform grey
    level; a constant image gives zeros."""
    lo, hi = np.percentile(image, [float(p) for p in window_pct])
    if not hi > lo:
        return np.zeros(image.shape, dtype=np.float32)
    return _uniform_levels(np.clip((image - lo) / (hi - lo), 0.0, 1.0))


def _equalised(image: np.ndarray) -> np.ndarray:
    """Each pixel's rank among the image's pixels as a fraction in (0, 1) (ties: their mean
    rank), standardised as a uniform grey level; a constant image gives zeros."""
    ranks = stats.rankdata(image.ravel(), method="average").reshape(image.shape)
    return _uniform_levels((ranks - 0.5) / image.size)


def _uniform_levels(unit: np.ndarray) -> np.ndarray:
    """Grey levels on [0, 1] standardised with a uniform grey level's mean and standard
    deviation, the one scale the window and the equalisation share."""
    return ((unit - UNIFORM_MEAN) / UNIFORM_STD).astype(np.float32)
