"""Metrics against hand-worked values and independent computations (SciPy, scikit-image)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from skimage.metrics import adapted_rand_error, variation_of_information

from unetflow.evaluation.metrics import (
    ISBI_THRESHOLDS,
    assd,
    dice,
    hd95,
    info_scores,
    iou,
    pixel_error,
    precision,
    rand_and_info_scores,
    rand_scores,
    recall,
    thin_borders,
)

# --- overlap metrics ---------------------------------------------------------------------------

# 3x4 masks: truth has 4 pixels, prediction 3, they share 2; 12 pixels, 3 disagree.
TRUTH = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=np.uint8)
PRED = np.array([[0, 1, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=np.uint8) * 255


def test_overlap_metrics_on_hand_made_masks() -> None:
    assert dice(PRED, TRUTH) == pytest.approx(2 * 2 / (3 + 4))
    assert iou(PRED, TRUTH) == pytest.approx(2 / 5)
    assert pixel_error(PRED, TRUTH) == pytest.approx(3 / 12)
    assert precision(PRED, TRUTH) == pytest.approx(2 / 3)
    assert recall(PRED, TRUTH) == pytest.approx(2 / 4)
    assert pixel_error(TRUTH, TRUTH) == 0.0
    assert pixel_error(TRUTH, 1 - TRUTH) == 1.0


def test_empty_mask_conventions() -> None:
    empty = np.zeros((3, 4), dtype=bool)
    for fn in (dice, iou, precision, recall):
        assert fn(empty, empty) == 1.0, fn.__name__
        assert fn(empty, TRUTH) == 0.0, fn.__name__
        assert fn(TRUTH, empty) == 0.0, fn.__name__
    assert pixel_error(empty, empty) == 0.0
    assert pixel_error(empty, TRUTH) == pytest.approx(4 / 12)


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(2, 2\)"):
        dice(TRUTH, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="same size"):
        hd95(TRUTH, np.zeros((2, 2)))


# --- ISBI scores on label images, worked out by hand -------------------------------------------

TWO_CELLS = np.array([[1, 1, 1, 1, 2, 2, 2, 2]])


def test_perfect_segmentation_scores_one_whatever_the_label_values() -> None:
    truth = np.array([[1, 1, 0, 2, 2]])
    pred = np.array([[5, 5, 0, 7, 7]])
    assert rand_scores(truth, pred) == {"f": 1.0, "split": 1.0, "merge": 1.0}
    assert info_scores(truth, pred) == {"f": 1.0, "split": 1.0, "merge": 1.0}
    # Large, negative or float label values are only names.
    assert rand_scores(truth * 2**40, np.array([[-5, -5, 0, 2.5, 2.5]]))["f"] == 1.0
    odd = np.array([[-5, 2**40, 0, 2.5, 2.5]])  # splits truth cell 1 in two
    assert rand_scores(truth, odd) == rand_scores(truth, np.array([[1, 3, 0, 2, 2]]))


def test_split_case() -> None:
    # Truth cell 1 (4 px) is split 2 + 2; n_ij = 2, 2, 4; a = 4, 4; b = 2, 2, 4.
    pred = np.array([[1, 1, 3, 3, 2, 2, 2, 2]])
    rand = rand_scores(TWO_CELLS, pred)
    assert rand["split"] == pytest.approx(24 / 32)
    assert rand["merge"] == pytest.approx(1.0)
    assert rand["f"] == pytest.approx(48 / 56)
    # H(T) = ln 2, H(S) = H(S,T) = 1.5 ln 2, so I = ln 2.
    info = info_scores(TWO_CELLS, pred)
    assert info["split"] == pytest.approx(1 / 1.5)
    assert info["merge"] == pytest.approx(1.0)
    assert info["f"] == pytest.approx(2 / 2.5)


def test_merge_case() -> None:
    # Both truth cells in one predicted segment: n_ij = 4, 4; a = 4, 4; b = 8.
    pred = np.ones_like(TWO_CELLS)
    rand = rand_scores(TWO_CELLS, pred)
    assert rand["split"] == pytest.approx(1.0)
    assert rand["merge"] == pytest.approx(32 / 64)
    assert rand["f"] == pytest.approx(64 / 96)
    # H(S) = 0 so I = 0: nothing was split (1.0), everything was merged (0.0).
    assert info_scores(TWO_CELLS, pred) == {"f": 0.0, "split": 1.0, "merge": 0.0}


def test_truth_membrane_is_excluded_and_predicted_membrane_is_singletons() -> None:
    # Truth membrane pixel is predicted as cell 1: not counted.
    assert rand_scores(np.array([[1, 1, 0, 2, 2]]), np.array([[1, 1, 1, 2, 2]]))["f"] == 1.0
    # Two truth-cell pixels predicted as membrane: singletons, n_ij = 2, 1, 1; a = 4; b = 2, 1, 1.
    rand = rand_scores(np.array([[1, 1, 1, 1]]), np.array([[1, 1, 0, 0]]))
    assert rand["split"] == pytest.approx(6 / 16)
    assert rand["merge"] == pytest.approx(1.0)
    assert rand["f"] == pytest.approx(12 / 22)


def test_thin_borders_assigns_nearest_segment() -> None:
    labels = np.array([[1, 0, 0, 0, 0, 2]])
    assert thin_borders(labels)[0, 1] == 1 and thin_borders(labels)[0, 4] == 2
    assert set(np.unique(thin_borders(labels))) == {1, 2}
    blank = np.zeros((2, 3), dtype=int)
    np.testing.assert_array_equal(thin_borders(blank), blank)


def _two_cells_4x11() -> np.ndarray:
    """Truth: 4x11 image, 1-px membrane in column 5, two cells of 20 px."""
    truth = np.ones((4, 11), dtype=np.uint8)
    truth[:, 5] = 0
    return truth * 255


def test_thinning_forgives_thick_predicted_borders_but_rand_error_does_not() -> None:
    truth = _two_cells_4x11()
    membrane = np.zeros((4, 11))
    membrane[:, 4:7] = 1.0  # 3-px membrane: columns 4 and 6 are truth cell pixels
    scores = rand_and_info_scores(membrane, truth)
    assert scores["vrand"] == pytest.approx(1.0)
    assert scores["vinfo"] == pytest.approx(1.0)
    # Unthinned: predicted cells of 16 px each, 8 singletons; a = 20, 20.
    # sum n^2 = 2 * 256 + 8 = 520, sum a^2 = 800, sum b^2 = 520 -> F = 1040 / 1320.
    assert scores["rand_error"] == pytest.approx(1 - 1040 / 1320)
    assert scores["vrand_threshold"] == 0.0  # every threshold ties; the lowest wins


def test_thinning_does_not_hide_a_merge() -> None:
    truth = _two_cells_4x11()
    scores = rand_and_info_scores(np.zeros((4, 11)), truth)  # no membrane predicted
    assert scores["vrand"] == pytest.approx(1600 / 2400)
    assert scores["vrand_merge"] == pytest.approx(0.5)
    assert scores["vrand_split"] == pytest.approx(1.0)
    assert scores["vinfo"] == pytest.approx(0.0)
    assert scores["rand_error"] == pytest.approx(1 / 3)


def test_best_threshold_on_a_graded_probability_map() -> None:
    truth = _two_cells_4x11()
    membrane = np.full((4, 11), 0.05)
    membrane[:, 5] = 0.35  # cell prob 0.65: the membrane appears for t >= 0.7 only
    scores = rand_and_info_scores(membrane, truth)
    assert scores["vrand"] == pytest.approx(1.0)
    assert scores["vrand_threshold"] == 0.7
    assert scores["vinfo_threshold"] == 0.7
    assert scores["rand_error"] == pytest.approx(0.0)
    # Restricted to thresholds where the cells merge, the score drops to the merge case.
    low = rand_and_info_scores(membrane, truth, thresholds=(0.0, 0.3, 0.6))
    assert low["vrand"] == pytest.approx(2 / 3)


def test_all_membrane_prediction_and_cell_free_truth() -> None:
    truth = _two_cells_4x11()
    scores = rand_and_info_scores(np.ones((4, 11)), truth)
    # 40 singletons: sum n^2 = 40, sum a^2 = 800, sum b^2 = 40.
    assert scores["vrand"] == pytest.approx(80 / 840)
    # H(S) = ln 40, H(T) = ln 2, H(S,T) = ln 40, I = ln 2.
    assert scores["vinfo"] == pytest.approx(2 * math.log(2) / math.log(80))
    blank = rand_and_info_scores(np.ones((4, 11)), np.zeros((4, 11)))
    assert (blank["vrand"], blank["vinfo"], blank["rand_error"]) == (1.0, 1.0, 0.0)


def test_scores_are_finite_and_keys_stable_on_random_maps() -> None:
    rng = np.random.default_rng(0)
    prob = rng.random((32, 32))
    truth = rng.random((32, 32)) > 0.3
    scores = rand_and_info_scores(prob, truth)
    assert set(scores) == {
        "vrand",
        "vrand_threshold",
        "vrand_split",
        "vrand_merge",
        "vinfo",
        "vinfo_threshold",
        "vinfo_split",
        "vinfo_merge",
        "rand_error",
        "rand_error_threshold",
    }
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in scores.values())
    assert scores["vrand_threshold"] in ISBI_THRESHOLDS


def test_bad_probability_inputs_are_rejected() -> None:
    truth = _two_cells_4x11()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rand_and_info_scores(np.full((4, 11), 255.0), truth)
    with pytest.raises(ValueError, match="same size"):
        rand_and_info_scores(np.zeros((4, 10)), truth)
    with pytest.raises(ValueError, match="2-D"):
        rand_and_info_scores(np.zeros((1, 4, 11)), truth[None])


# --- cross-checks with scikit-image ------------------------------------------------------------


def _random_labels(rng: np.random.Generator, shape: tuple[int, int], k: int) -> np.ndarray:
    return rng.integers(1, k + 1, size=shape)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rand_matches_skimage_adapted_rand_error(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = _random_labels(rng, (20, 30), 6)
    truth[rng.random(truth.shape) < 0.2] = 0  # truth membrane, ignored by both
    pred = _random_labels(rng, truth.shape, 4)  # no predicted 0: skimage has no singletons
    _, sk_p, sk_r = adapted_rand_error(truth, pred, ignore_labels=(0,))
    # skimage counts pairs of distinct pixels (sum x^2 - n); we include self-pairs (sum x^2),
    # as Fiji's N^2 normalisation. Recover skimage's pair counts from the truth sizes alone.
    inside = truth > 0
    n = int(inside.sum())
    sizes = np.bincount(truth[inside])
    sum_a = int(sizes @ sizes) - n
    joint = sk_p * sum_a  # skimage's "precision" is sum n_ij^2 / sum a_i^2 (truth sizes)
    sum_b = joint / sk_r
    ours = rand_scores(truth, pred)
    assert ours["split"] == pytest.approx((joint + n) / (sum_a + n), rel=1e-12)
    assert ours["merge"] == pytest.approx((joint + n) / (sum_b + n), rel=1e-12)
    assert ours["f"] == pytest.approx(2 * (joint + n) / (sum_a + sum_b + 2 * n), rel=1e-12)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_info_matches_skimage_variation_of_information(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = _random_labels(rng, (20, 30), 6)
    truth[rng.random(truth.shape) < 0.2] = 0
    pred = _random_labels(rng, truth.shape, 4)
    false_split, false_merge = variation_of_information(truth, pred, ignore_labels=(0,))
    inside = truth > 0

    def entropy_bits(values: np.ndarray) -> float:
        p = np.bincount(values)[np.bincount(values) > 0] / values.size
        return float(-(p * np.log2(p)).sum())

    h_truth, h_pred = entropy_bits(truth[inside]), entropy_bits(pred[inside])
    ours = info_scores(truth, pred)
    assert ours["split"] == pytest.approx(1 - false_split / h_pred, rel=1e-9)
    assert ours["merge"] == pytest.approx(1 - false_merge / h_truth, rel=1e-9)
    mutual = h_pred - false_split
    assert ours["f"] == pytest.approx(2 * mutual / (h_pred + h_truth), rel=1e-9)


# --- boundary distances against brute force ----------------------------------------------------


def _boundary_coords(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask or off the image, by explicit shifts."""
    padded = np.pad(mask, 1, constant_values=False)
    core = padded[1:-1, 1:-1]
    interior = core & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return np.argwhere(mask & ~interior).astype(float)


def _brute_force(pred: np.ndarray, truth: np.ndarray, spacing=(1.0, 1.0)) -> tuple[float, float]:
    a = _boundary_coords(pred) * spacing
    b = _boundary_coords(truth) * spacing
    d = cdist(a, b)
    d_ab, d_ba = d.min(axis=1), d.min(axis=0)
    return float(np.percentile(np.concatenate([d_ab, d_ba]), 95)), (d_ab.mean() + d_ba.mean()) / 2


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_hd95_and_assd_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:40, :48]
    truth = (yy - 20) ** 2 / 150 + (xx - 22) ** 2 / 200 < 1
    pred = (yy - 20 - rng.integers(-3, 4)) ** 2 / 120 + (xx - 25) ** 2 / 260 < 1
    pred |= rng.random(pred.shape) > 0.995  # stray pixels far from the truth
    want_hd, want_assd = _brute_force(pred, truth)
    assert hd95(pred, truth) == pytest.approx(want_hd, rel=1e-12)
    assert assd(pred, truth) == pytest.approx(want_assd, rel=1e-12)
    want_hd, want_assd = _brute_force(pred, truth, spacing=(2.0, 0.5))
    assert hd95(pred, truth, spacing=(2.0, 0.5)) == pytest.approx(want_hd, rel=1e-12)
    assert assd(pred, truth, spacing=(2.0, 0.5)) == pytest.approx(want_assd, rel=1e-12)


def test_boundary_distances_by_hand_and_empty_conventions() -> None:
    a = np.zeros((3, 4), dtype=bool)
    b = np.zeros((3, 4), dtype=bool)
    a[0, 0], b[2, 3] = True, True  # 2 rows and 3 columns apart
    assert hd95(a, b) == pytest.approx(math.hypot(2, 3))
    assert assd(a, b) == pytest.approx(math.hypot(2, 3))
    assert hd95(a, b, spacing=(2.0, 1.0)) == pytest.approx(5.0)
    assert hd95(TRUTH, TRUTH) == 0.0 and assd(TRUTH, TRUTH) == 0.0
    empty = np.zeros((3, 4), dtype=bool)
    assert hd95(empty, empty) == 0.0 and assd(empty, empty) == 0.0
    assert hd95(empty, b) == pytest.approx(5.0)  # diagonal of a 3x4 image
    assert assd(a, empty) == pytest.approx(5.0)
    assert hd95(empty, b, spacing=2.0) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="spacing"):
        hd95(a, b, spacing=0.0)
