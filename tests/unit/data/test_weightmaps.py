"""The paper's border weight map on hand-made masks, and against brute-force distances."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import label

from unetflow.data.weightmaps import border_weight_map, class_weights, nearest_two_distances


def two_cells() -> np.ndarray:
    """64 x 64: two 24 x 20 cells separated by a 2-pixel membrane (columns 28 and 29)."""
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[20:44, 8:28] = 1
    mask[20:44, 30:50] = 1
    return mask


def test_two_cells_border_and_far_away():
    mask = two_cells()
    n, n_fg = mask.size, int(mask.sum())
    w_bg, w_fg = n / (2 * (n - n_fg)), n / (2 * n_fg)
    weights = border_weight_map(mask, w0=10, sigma=5)
    ridge = 10 * math.exp(-((1 + 2) ** 2) / 50)  # d1 = 1 (cell A), d2 = 2 (cell B)
    assert weights[30, 28] == pytest.approx(w_bg + ridge, rel=1e-6)
    assert weights[30, 29] == pytest.approx(w_bg + ridge, rel=1e-6)
    assert weights[30, 27] == pytest.approx(w_fg + ridge, rel=1e-6)  # in A: d1 = 0, d2 = 3
    assert weights[0, 63] == pytest.approx(w_bg, abs=1e-6)  # far from both cells
    assert weights[31, 17] == pytest.approx(w_fg + 10 * math.exp(-(13**2) / 50), rel=1e-6)
    outside = border_weight_map(mask, w0=10, sigma=5, where="background")
    assert outside[30, 28] == pytest.approx(weights[30, 28])
    assert outside[30, 27] == pytest.approx(w_fg, rel=1e-6)
    assert weights.dtype == np.float32 and weights[30, 28] == weights[mask == 0].max()


def test_class_weights_balance_the_classes():
    mask = two_cells()
    wc = class_weights(mask)
    assert wc.mean() == pytest.approx(1.0)
    assert wc[mask > 0].sum() == pytest.approx(wc[mask == 0].sum())
    assert (class_weights(np.zeros((4, 4))) == 1).all()


def brute_force(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cells = label(mask > 0, connectivity=1)
    stack = np.stack(
        [ndimage.distance_transform_edt(cells != k) for k in range(1, cells.max() + 1)]
    )
    stack.sort(axis=0)
    return stack[0], stack[1]


def test_matches_brute_force_distances_on_random_cells():
    rng = np.random.default_rng(3)
    mask = ndimage.binary_opening(rng.random((96, 80)) < 0.55)
    d1, d2 = nearest_two_distances(mask, reach=30.0)
    want1, want2 = brute_force(mask)
    near = want2 <= 30.0
    assert label(mask, connectivity=1).max() > 10
    np.testing.assert_allclose(d1[near], want1[near])
    np.testing.assert_allclose(d2[near], want2[near])
    assert np.isinf(d2[~near]).all()
    exact = class_weights(mask) + 10 * np.exp(-np.square(want1 + want2) / 50)
    np.testing.assert_allclose(border_weight_map(mask), exact, atol=1e-6)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="weight_map.where: unknown 'inside'"):
        border_weight_map(two_cells(), where="inside")
    with pytest.raises(ValueError, match="sigma > 0"):
        border_weight_map(two_cells(), sigma=0)
