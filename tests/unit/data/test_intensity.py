"""Intensity normalisation: the train z-score's exact bytes, the per-image methods' invariance."""

from __future__ import annotations

import numpy as np
import pytest

from unetflow.data.intensity import normalisation_for, normalise


def radiograph(seed: int = 0, size: int = 64) -> np.ndarray:
    """A smooth [0.2, 0.6] image with structure, so percentiles and moments are not trivial."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = 0.4 + 0.1 * np.sin(6 * x) * np.cos(4 * y) + 0.05 * rng.standard_normal((size, size))
    return np.clip(image, 0.2, 0.6)


@pytest.mark.parametrize("method", ["image_zscore", "image_window", "image_histeq"])
@pytest.mark.parametrize("a, b", [(1.5, 0.1), (0.5, 0.3), (1.0, -0.15), (2.0, -0.3)])
def test_per_image_methods_map_an_affine_change_to_the_same_array(method, a, b):
    image = radiograph()
    changed = a * image + b
    assert changed.min() >= 0 and changed.max() <= 1  # no clipping in the change itself
    record = normalisation_for(method, mean=0, std=1, window_pct=[1, 99])
    assert np.abs(normalise(changed, record) - normalise(image, record)).max() < 1e-5
    assert not np.allclose(changed, image)  # so that the check above can fail


def test_image_zscore_clips_each_image_to_its_own_percentiles_then_zscores():
    image = radiograph(1)
    image[:4, :4] = 1.0  # a burned-in white marker: above the 99th percentile
    out = normalise(image, {"method": "image_zscore", "window_pct": [1.0, 99.0]})
    assert out.dtype == np.float32
    assert out.mean() == pytest.approx(0.0, abs=1e-5) and out.std() == pytest.approx(1.0, abs=1e-5)
    lo, hi = np.percentile(image, [1, 99])
    clipped = np.clip(image, lo, hi)
    expected = (clipped - clipped.mean()) / clipped.std()
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert out[:4, :4].max() == pytest.approx(out.max())  # the marker is cut to the window


def test_image_window_maps_each_images_own_window_to_unit_variance_levels():
    image = radiograph(1)
    image[:4, :4] = 1.0  # a burned-in white marker: above the 99th percentile
    out = normalise(image, {"method": "image_window", "window_pct": [1.0, 99.0]})
    lo, hi = np.percentile(image, [1, 99])
    expected = (np.clip((image - lo) / (hi - lo), 0, 1) - 0.5) * np.sqrt(12)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert out.min() == pytest.approx(-np.sqrt(3)) and out.max() == pytest.approx(np.sqrt(3))


def test_image_histeq_ranks_pixels_so_only_clipping_moves_them():
    image = radiograph(3)
    record = normalisation_for("image_histeq", mean=0, std=1)
    assert record == {"method": "image_histeq"}
    out = normalise(image, record)
    assert out.dtype == np.float32
    # ranks are spread evenly: standardised as a uniform grey level, mean 0 and variance ~1
    assert out.mean() == pytest.approx(0.0, abs=1e-6) and out.var() == pytest.approx(1.0, abs=1e-3)
    # an increasing map that is not affine (gamma) leaves every rank where it was
    np.testing.assert_allclose(normalise(image**0.5, record), out, atol=1e-6)
    # a gain that clips the brightest fifth ties them at their mean rank; the rest stay put
    bright = np.clip(image * (1.0 / np.percentile(image, 80)), 0.0, 1.0)
    clipped = bright >= 1.0
    moved = normalise(bright, record)
    np.testing.assert_allclose(moved[~clipped], out[~clipped], atol=1e-6)
    assert np.unique(moved[clipped]).size == 1
    assert moved[clipped][0] == pytest.approx(out[clipped].mean(), abs=1e-5)


def test_a_wider_black_border_moves_the_z_score_and_the_ranks_but_not_the_window():
    image = np.pad(radiograph(1)[3:-3, 3:-3], 3)  # collimated: a black border of 3 px
    wider = np.pad(image, 16)  # more of the field collimated
    moved = {}
    for method in ("image_window", "image_zscore", "image_histeq"):
        record = {"method": method, "window_pct": [1.0, 99.0]}
        inner = normalise(wider, record)[16:-16, 16:-16]
        moved[method] = float(np.abs(inner - normalise(image, record)).mean())
    # the window moves only with the 99th percentile, the z-score and the ranks with every
    # pixel (why image_window, not image_histeq, is the chest X-ray default)
    assert moved["image_window"] < 0.2 * moved["image_zscore"], moved
    assert moved["image_window"] < 0.2 * moved["image_histeq"], moved


def test_train_zscore_gives_the_bytes_preprocess_always_wrote():
    image = radiograph(2).astype(np.float32)
    mean, std = 0.41234567891, 0.0712345678
    old = (image - mean) / std  # preprocess before the choice: float32 minus a Python float
    new = normalise(image, normalisation_for("train_zscore", mean=mean, std=std))
    assert new.dtype == np.float32 and new.tobytes() == old.tobytes()
    # checkpoints written before the choice carry only mean and std
    assert normalise(image, {"mean": mean, "std": std}).tobytes() == old.tobytes()


def test_a_constant_image_gives_zeros_and_an_unknown_method_is_named():
    for record in ({"method": "image_window", "window_pct": [1, 99]}, {"method": "image_histeq"}):
        assert not normalise(np.full((8, 8), 0.3), record).any()
    with pytest.raises(ValueError, match="'clahe'.*train_zscore"):
        normalise(np.zeros((4, 4)), {"method": "clahe"})
    with pytest.raises(ValueError, match="normalise: 'zscore'"):
        normalisation_for("zscore", mean=0, std=1)
