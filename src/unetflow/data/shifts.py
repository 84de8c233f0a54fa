"""Acquisition shifts of chest X-rays: what another hospital's scanner does to an image.

Every shift acts on an image on the [0, 1] scale, before any normalisation, and the
geometric ones on its mask alike. Two uses share these functions:

- the **shift test** of evaluate (:data:`SHIFT_TEST`): the test split re-rendered under a fixed
  set of shifts, each scored like the clean test;
- **acquisition-shift augmentation** in the augment stage (:func:`random_acquisition`), with
  the strengths drawn from the ranges of ``augment.acquisition``.

Geometry is resolution-free: a zoom by `scale` about the image centre maps the relative
position u in [0, 1] to 0.5 + (u - 0.5) / scale at every size, so an image zoomed at the
processed size and its mask zoomed at the scoring size stay aligned. Zooming out (scale < 1)
brings more of the body into view: the border is filled with the image's edge pixels and
with background in the mask. Blur radii are given at 512 px and scaled to the image's size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

REFERENCE_PX = 512  # the size blur radii and marker text are stated at


@dataclass(frozen=True)
class Shift:
    """One named shift of the shift test: `kind` (a function below) at strength `value`."""

    name: str
    kind: str
    value: float | tuple[float, float]
    label: str


#: The shift test of evaluate, in the order of its table and figure.
SHIFT_TEST = (
    Shift("exposure_dark", "exposure", 0.6, "exposure ×0.6"),
    Shift("exposure_bright", "exposure", 1.4, "exposure ×1.4"),
    Shift("window_narrow", "window", (5.0, 95.0), "window 5–95 %"),
    Shift("window_wide", "window", (0.5, 99.5), "window 0.5–99.5 %"),
    Shift("gamma_low", "gamma", 0.5, "gamma 0.5"),
    Shift("gamma_high", "gamma", 2.0, "gamma 2.0"),
    Shift("zoom_out", "zoom", 0.7, "zoom out to 70 %"),
    Shift("zoom_in", "zoom", 1.2, "zoom in to 120 %"),
    Shift("blur", "blur", 2.0, "blur σ 2 px at 512"),
    Shift("noise", "noise", 0.05, "noise σ 0.05"),
    Shift("text_box", "marker", 0.05, "white text box, 5 % of the image"),
)
SHIFT_NAMES = tuple(s.name for s in SHIFT_TEST)
#: The parameters :func:`random_acquisition` draws, in the order it records them.
ACQUISITION_PARAMS = (
    "exposure",
    "gamma",
    "zoom",
    "aspect",
    "brightness",
    "window_low_pct",
    "window_high_pct",
    "blur_px",
    "noise_std",
    "marker_area",
    "marker_top",
    "marker_left",
)


def exposure(image: np.ndarray, factor: float, offset: float = 0.0) -> np.ndarray:
    """Gain `factor` and `offset` on the [0, 1] scale, clipped back to [0, 1]."""
    return np.clip(image * float(factor) + float(offset), 0.0, 1.0)


def window(image: np.ndarray, low_pct: float, high_pct: float) -> np.ndarray:
    """The image's own `low_pct`-th to `high_pct`-th percentile remapped to [0, 1], clipped."""
    lo, hi = np.percentile(image, [float(low_pct), float(high_pct)])
    if not hi > lo:
        return np.clip(image, 0.0, 1.0)
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0)


def gamma(image: np.ndarray, value: float) -> np.ndarray:
    """The gamma curve x ** `value` on [0, 1]."""
    return np.power(np.clip(image, 0.0, 1.0), float(value))


def zoom(array: np.ndarray, scale: float, *, mask: bool = False, aspect: float = 1.0) -> np.ndarray:
    """Zoom by `scale` about the centre (module docstring), the width by `scale` × `aspect`.

    Images are interpolated linearly with edge pixels beyond the border; masks (`mask`) are
    interpolated linearly as {0, 1} and thresholded at 0.5, with background beyond the border,
    so they stay binary.
    """
    h, w = array.shape
    scales = np.array([float(scale), float(scale) * float(aspect)])
    sizes = np.array([h, w], dtype=np.float64)
    # input index = (output index + 0.5 - n/2) / s + n/2 - 0.5
    offset = (sizes / 2.0 - 0.5) * (1.0 - 1.0 / scales)
    values = np.asarray(array, dtype=np.float64)
    if mask:
        values = (values > 0).astype(np.float64)
    out = ndi.affine_transform(
        values,
        1.0 / scales,
        offset=offset,
        order=1,
        mode="constant" if mask else "nearest",
        cval=0.0,
    )
    return (out >= 0.5).astype(np.uint8) if mask else out


def blur(image: np.ndarray, sigma_px_512: float) -> np.ndarray:
    """Gaussian blur of σ `sigma_px_512` pixels at 512 px, scaled to the image's size."""
    sigma = float(sigma_px_512) * image.shape[0] / REFERENCE_PX
    if sigma <= 0:
        return image
    return ndi.gaussian_filter(image, sigma, mode="nearest")


def noise(image: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of standard deviation `std` on the [0, 1] scale, clipped."""
    return np.clip(image + rng.normal(0.0, float(std), size=image.shape), 0.0, 1.0)


def marker(
    image: np.ndarray, area: float, top: float = 0.05, left: float = 0.05, aspect: float = 2.0
) -> np.ndarray:
    """A burned-in white text box over the fraction `area` of the image, `aspect` times as wide
    as high, its top-left corner at the relative position (`top`, `left`) (clipped to fit).
    Three dark text lines run across it, as in a printed label or patient tag."""
    out = np.array(image, dtype=np.float64)
    h, w = out.shape
    box_h = max(1, round(h * np.sqrt(float(area) / aspect)))
    box_w = max(1, min(w, round(float(area) * h * w / box_h)))
    box_h = min(box_h, h)
    y0 = min(round(top * h), h - box_h)
    x0 = min(round(left * w), w - box_w)
    out[y0 : y0 + box_h, x0 : x0 + box_w] = 1.0
    line = max(1, box_h // 9)
    for k in (2, 4, 6):
        y = y0 + k * box_h // 8
        out[y : y + line, x0 + box_w // 10 : x0 + box_w - box_w // 10] = 0.15
    return out


def apply_shift(
    image: np.ndarray, mask: np.ndarray, shift: Shift, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`image` ([0, 1], any size) and `mask` ({0, 1}, any size) under one shift of the test;
    the mask changes only under a zoom. `rng` draws the noise."""
    image = np.asarray(image, dtype=np.float64)
    kind, value = shift.kind, shift.value
    if kind == "zoom":
        return zoom(image, float(value)), zoom(mask, float(value), mask=True)
    if kind == "exposure":
        return exposure(image, float(value)), mask
    if kind == "window":
        low, high = value  # type: ignore[misc]
        return window(image, low, high), mask
    if kind == "gamma":
        return gamma(image, float(value)), mask
    if kind == "blur":
        return blur(image, float(value)), mask
    if kind == "noise":
        return noise(image, float(value), rng), mask
    if kind == "marker":
        return marker(image, float(value)), mask
    raise ValueError(f"shift {shift.name!r}: unknown kind {kind!r}")


def random_acquisition(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, cfg: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """One random acquisition shift of a [0, 1] `image` and its `mask` (the augment stage).

    `cfg` is ``augment.acquisition``: log-uniform ranges ``exposure`` (gain), ``gamma``,
    ``zoom`` and ``aspect`` (width against height), a uniform ``brightness`` offset in ±value,
    ``window_pct`` (up to this percentile clipped at either end, drawn per end), ``blur_px``
    (σ up to this at 512 px) and ``noise_std`` (σ up to this), and ``marker_p``, the chance of
    a white text box of 1–6 % of the image at a random place. The parameters are drawn alike
    whatever the strengths (only a zero noise strength draws no noise). The window follows the
    exposure, as an export follows the detector, so gain and offset survive it only as the
    saturation they cause. Returns the image, the mask and the drawn parameters.
    """
    p = _draw(rng, cfg)
    image = zoom(np.asarray(image, dtype=np.float64), p["zoom"], aspect=p["aspect"])
    mask = zoom(mask, p["zoom"], mask=True, aspect=p["aspect"])
    image = blur(image, p["blur_px"])
    image = exposure(image, p["exposure"], p["brightness"])
    image = window(image, p["window_low_pct"], p["window_high_pct"])
    image = gamma(image, p["gamma"])
    image = noise(image, p["noise_std"], rng) if p["noise_std"] > 0 else image
    if p["marker_area"] > 0:
        image = marker(image, p["marker_area"], p["marker_top"], p["marker_left"])
    return image, mask, p


def _draw(rng: np.random.Generator, cfg: Mapping[str, Any]) -> dict[str, float]:
    """The parameters of one random acquisition shift (see :func:`random_acquisition`)."""

    def log_uniform(key: str) -> float:
        lo, hi = np.log(np.asarray(cfg[key], dtype=np.float64))
        return float(np.exp(rng.uniform(lo, hi)))

    values = {key: log_uniform(key) for key in ("exposure", "gamma", "zoom", "aspect")}
    values["brightness"] = float(rng.uniform(-1.0, 1.0) * float(cfg["brightness"]))
    low, high = rng.uniform(0.0, float(cfg["window_pct"]), size=2)
    values["window_low_pct"], values["window_high_pct"] = float(low), 100.0 - float(high)
    values["blur_px"] = float(rng.uniform(0.0, float(cfg["blur_px"])))
    values["noise_std"] = float(rng.uniform(0.0, float(cfg["noise_std"])))
    draw_marker, area, top, left = rng.random(4)
    drawn = draw_marker < float(cfg["marker_p"])
    values["marker_area"] = float(0.01 + 0.05 * area) if drawn else 0.0
    values["marker_top"], values["marker_left"] = float(0.9 * top), float(0.7 * left)
    return values
