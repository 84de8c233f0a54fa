"""The U-Net paper's border weight map (Ronneberger et al. 2015, eq. 2):

    w(x) = w_c(x) + w0 · exp(−(d1(x) + d2(x))² / (2σ²))

``w_c`` balances the class frequencies of the mask (each class weighted by
``pixels / (2 · class pixels)``, so that both classes carry the same total weight and the
mean of ``w_c`` is 1); ``d1`` and ``d2`` are the Euclidean distances to the nearest and the
second-nearest cell, where cells are the 4-connected components of the foreground (the EM
cell interiors) and a pixel inside a cell is at distance 0 from it. The border term is large
on the thin background ridges separating two touching cells and vanishes far from them; with
``where="background"`` it is added to background (membrane) pixels only, a common reading of
the paper (docs/design.md, "The paper's ambiguities").

Distances are computed per cell in its bounding box grown by the distance beyond which the
border term is below 1e-8 · w0 (about 6.1 σ), so the map is exact to that tolerance while
costing one small distance transform per cell instead of one over the whole image.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from skimage.measure import label, regionprops

WHERE = ("all", "background")
#: The paper's constants; params.yaml `preprocess.weight_map` may change them.
DEFAULTS = {"w0": 10.0, "sigma": 5.0, "where": "all"}
#: The border term is negligible (< 1e-8 · w0) once d1 + d2 exceeds this many sigmas.
REACH_SIGMAS = math.sqrt(2 * math.log(1e8))


def class_weights(mask: np.ndarray) -> np.ndarray:
    """w_c: each pixel weighted by ``pixels / (2 · pixels of its class)``; 1 everywhere when
    the mask has a single class."""
    fg = np.asarray(mask) > 0
    n, n_fg = fg.size, int(fg.sum())
    if n_fg in (0, n):
        return np.ones(fg.shape, dtype=np.float32)
    return np.where(fg, n / (2 * n_fg), n / (2 * (n - n_fg))).astype(np.float32)


def nearest_two_distances(mask: np.ndarray, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """(d1, d2): per pixel the distance to the nearest and second-nearest 4-connected
    foreground component; inf where that component is farther than `reach` pixels."""
    cells = label(np.asarray(mask) > 0, connectivity=1)
    shape = cells.shape
    d1 = np.full(shape, np.inf)
    d2 = np.full(shape, np.inf)
    grow = int(math.ceil(reach))
    for region in regionprops(cells):
        r0, c0, r1, c1 = region.bbox
        r0, c0 = max(r0 - grow, 0), max(c0 - grow, 0)
        r1, c1 = min(r1 + grow, shape[0]), min(c1 + grow, shape[1])
        window = (slice(r0, r1), slice(c0, c1))
        dist = ndimage.distance_transform_edt(cells[window] != region.label)
        dist[dist > reach] = np.inf
        near1, near2 = d1[window], d2[window]
        d2[window] = np.minimum(near2, np.maximum(near1, dist))
        d1[window] = np.minimum(near1, dist)
    return d1, d2


def border_weight_map(
    mask: np.ndarray, *, w0: float = 10.0, sigma: float = 5.0, where: str = "all"
) -> np.ndarray:
    """The paper's weight map of a binary mask (non-zero = cell), float32, see the module
    docstring; `where` is ``all`` (the formula as printed) or ``background``."""
    if where not in WHERE:
        raise ValueError(f"weight_map.where: unknown '{where}'; expected one of {list(WHERE)}")
    if not (w0 >= 0 and sigma > 0):
        raise ValueError(f"weight_map: expected w0 >= 0 and sigma > 0, got {w0}, {sigma}")
    mask = np.asarray(mask) > 0
    d1, d2 = nearest_two_distances(mask, REACH_SIGMAS * sigma)
    border = w0 * np.exp(-np.square(d1 + d2) / (2 * sigma**2))
    if where == "background":
        border[mask] = 0.0
    return (class_weights(mask) + border).astype(np.float32)
