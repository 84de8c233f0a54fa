"""Acquisition shifts: each does what its name says, on images and on masks."""

from __future__ import annotations

import numpy as np
import pytest

from project import SHENZHEN
from unetflow.data.shifts import (
    ACQUISITION_PARAMS,
    SHIFT_TEST,
    apply_shift,
    marker,
    random_acquisition,
    zoom,
)
from unetflow.io.images import resize_image

ACQUISITION = {**SHENZHEN["augment"]["acquisition"], "marker_p": 0.5}
SHIFTS = {s.name: s for s in SHIFT_TEST}


def chest(size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic chest: two elliptic lungs (mask) darker than the body around them."""
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size
    lungs = np.zeros((size, size), dtype=np.uint8)
    for cx in (0.32, 0.68):
        lungs |= (((x - cx) / 0.13) ** 2 + ((y - 0.5) / 0.28) ** 2 <= 1).astype(np.uint8)
    image = 0.75 - 0.45 * lungs + 0.1 * y
    return np.clip(image, 0, 1), lungs


def test_the_shift_test_has_the_shifts_the_issue_names_in_order():
    assert [s.name for s in SHIFT_TEST] == [
        "exposure_dark",
        "exposure_bright",
        "window_narrow",
        "window_wide",
        "gamma_low",
        "gamma_high",
        "zoom_out",
        "zoom_in",
        "blur",
        "noise",
        "text_box",
    ]


@pytest.mark.parametrize("name, factor", [("zoom_out", 0.49), ("zoom_in", 1.44)])
def test_zoom_scales_the_lung_area_by_the_square_of_the_scale(name, factor):
    image, lungs = chest(256)
    shifted, mask = apply_shift(image, lungs, SHIFTS[name], np.random.default_rng(0))
    assert set(np.unique(mask)) <= {0, 1}
    assert mask.sum() / lungs.sum() == pytest.approx(factor, rel=0.03)
    # the image moves with the mask: the lungs stay the dark part
    assert shifted[mask > 0].mean() < shifted[mask == 0].mean() - 0.3


def test_zoom_is_the_same_geometry_at_every_resolution():
    _, lungs = chest(256)
    small = (resize_image(lungs.astype(float), (64, 64)) >= 0.5).astype(np.uint8)
    at_64 = zoom(small, 0.7, mask=True)
    at_256 = zoom(lungs, 0.7, mask=True)
    back = resize_image(at_256.astype(float), (64, 64)) >= 0.5
    assert (back != (at_64 > 0)).mean() < 0.01


def test_zoom_out_fills_the_border_with_edge_pixels_and_background_in_the_mask():
    image, lungs = chest(128)
    out = zoom(image, 0.7)
    np.testing.assert_allclose(out[:5, 64], image[0, 64], atol=0.02)
    assert not zoom(np.ones_like(lungs), 0.7, mask=True)[:10].any()


@pytest.mark.parametrize("name", [s.name for s in SHIFT_TEST if s.kind != "zoom"])
def test_intensity_shifts_leave_the_mask_unchanged_and_change_the_image(name):
    image, lungs = chest()
    shifted, mask = apply_shift(image, lungs, SHIFTS[name], np.random.default_rng(0))
    assert mask is lungs
    assert shifted.shape == image.shape and shifted.min() >= 0 and shifted.max() <= 1
    assert np.abs(shifted - image).max() > 0.02


def test_intensity_shifts_do_what_they_say():
    image, lungs = chest()
    rng = np.random.default_rng(0)
    render = {name: apply_shift(image, lungs, SHIFTS[name], rng)[0] for name in SHIFTS}
    np.testing.assert_allclose(render["exposure_dark"], image * 0.6)
    np.testing.assert_allclose(render["exposure_bright"], np.clip(image * 1.4, 0, 1))
    lo, hi = np.percentile(image, [5, 95])
    np.testing.assert_allclose(render["window_narrow"], np.clip((image - lo) / (hi - lo), 0, 1))
    np.testing.assert_allclose(render["gamma_low"], np.sqrt(image))
    np.testing.assert_allclose(render["gamma_high"], image**2)
    # blur σ 2 px at 512 is σ 0.5 px at 128: edges soften, the mean stays
    assert np.abs(np.diff(render["blur"], axis=1)).max() < np.abs(np.diff(image, axis=1)).max()
    assert render["blur"].mean() == pytest.approx(image.mean(), abs=1e-3)
    inner = render["noise"][lungs > 0] - image[lungs > 0]
    assert inner.std() == pytest.approx(0.05, rel=0.1)
    box = render["text_box"] != image
    assert box.mean() == pytest.approx(0.05, rel=0.1)
    assert render["text_box"][box].max() == 1.0


def test_the_text_box_fits_the_image_wherever_it_is_asked_for():
    out = marker(np.zeros((50, 40)), 0.06, top=0.99, left=0.99)
    assert (out > 0).mean() == pytest.approx(0.06, rel=0.15) and out[-1, -1] == 1.0


def test_random_acquisition_is_seeded_binary_and_recorded():
    image, lungs = chest()
    first = random_acquisition(image, lungs, np.random.default_rng(5), ACQUISITION)
    again = random_acquisition(image, lungs, np.random.default_rng(5), ACQUISITION)
    assert first[0].tobytes() == again[0].tobytes() and first[2] == again[2]
    assert set(first[2]) == set(ACQUISITION_PARAMS)
    assert set(np.unique(first[1])) <= {0, 1} and first[0].min() >= 0 and first[0].max() <= 1
    drawn = [
        random_acquisition(image, lungs, np.random.default_rng(s), ACQUISITION)[2]
        for s in range(40)
    ]
    for key in ("exposure", "gamma", "zoom"):
        lo, hi = ACQUISITION[key]
        values = [d[key] for d in drawn]
        assert lo <= min(values) and max(values) <= hi and max(values) - min(values) > (hi - lo) / 3
    assert 0 < np.mean([d["marker_area"] > 0 for d in drawn]) < 1


def test_one_strength_does_not_change_the_other_draws():
    image, lungs = chest()
    base = random_acquisition(image, lungs, np.random.default_rng(3), ACQUISITION)[2]
    other = {**ACQUISITION, "blur_px": 0.0, "noise_std": 0.0}
    changed = random_acquisition(image, lungs, np.random.default_rng(3), other)[2]
    assert changed["blur_px"] == 0 and changed["noise_std"] == 0
    assert {k: v for k, v in changed.items() if k not in ("blur_px", "noise_std")} == {
        k: v for k, v in base.items() if k not in ("blur_px", "noise_std")
    }


def test_identity_strengths_leave_image_and_mask_unchanged():
    image, lungs = chest()
    image = (image - image.min()) / (image.max() - image.min())  # window 0-100 % is then a no-op
    identity = {
        **ACQUISITION,
        **{k: [1.0, 1.0] for k in ("exposure", "gamma", "zoom", "aspect")},
        **{k: 0.0 for k in ("brightness", "window_pct", "blur_px", "noise_std", "marker_p")},
    }
    out, mask, _ = random_acquisition(image, lungs, np.random.default_rng(0), identity)
    np.testing.assert_allclose(out, image, atol=1e-12)
    assert (mask == lungs).all()
