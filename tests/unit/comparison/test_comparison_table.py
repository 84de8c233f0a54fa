"""compare(): seed averaging, the paired checks and the layout of comparison.json."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from unetflow.comparison.compare import compare

IMAGES = [f"slice{i:02d}" for i in range(8)]


def scores(shifts: dict[str, float], seeds: tuple[int, ...] = (0, 1)) -> pd.DataFrame:
    """Per-image scores of variants that differ by `shifts` in Dice (and the opposite in
    HD95); seed s adds 0.02 s to every Dice of its run; images in two folds of four."""
    base = np.linspace(0.70, 0.90, len(IMAGES)) + np.array([0, 3, 1, 4, 1, 5, 2, 6]) * 0.004
    rows = [
        {
            "variant": variant,
            "image": image,
            "seed": seed,
            "fold": i // 4,
            "dice": base[i] + shift + 0.02 * seed,
            "hd95": 20.0 - 10 * base[i] - 10 * shift,
        }
        for variant, shift in shifts.items()
        for seed in seeds
        for i, image in enumerate(IMAGES)
    ]
    return pd.DataFrame(rows)


TWO = {"unet_a": 0.05, "unet_b": 0.0}
THREE = {"unet_a": 0.05, "unet_b": 0.0, "baseline": -0.3}


def test_each_image_is_its_mean_over_seeds_and_the_seed_spread_is_apart():
    table = scores(TWO)
    result = compare(table, ["dice"], seed=0, n_boot=999)
    entry = result["per_variant"]["unet_a"]["dice"]
    per_image = table[table.variant == "unet_a"].groupby("image")["dice"].mean()
    assert entry["n"] == len(IMAGES) and entry["n_seeds"] == 2
    assert entry["mean"] == pytest.approx(per_image.mean(), rel=1e-5)
    assert entry["sd"] == pytest.approx(per_image.std(ddof=1), rel=1e-5)
    assert entry["seed_sd"] == pytest.approx(0.02 / np.sqrt(2), rel=1e-5)  # means m, m + 0.02
    assert entry["ci_low"] < entry["mean"] < entry["ci_high"]
    assert result["replicates"]["unet_a"] == {"seeds": [0, 1], "folds": [0, 1]}
    one_seed = compare(scores(TWO, seeds=(0,)), ["dice"], seed=0, n_boot=999)
    assert one_seed["per_variant"]["unet_a"]["dice"]["seed_sd"] is None


def test_two_variants_layout_and_pair_values():
    result = compare(scores(TWO), ["dice", "hd95"], seed=0, n_boot=999)
    assert result["variants"] == ["unet_a", "unet_b"]
    assert result["metrics"] == {"dice": "higher", "hd95": "lower"}
    assert result["n_images"] == len(IMAGES)
    assert set(result["per_variant"]["unet_b"]["hd95"]) == {
        "n", "mean", "sd", "ci_low", "ci_high", "ci_note", "seed_sd", "n_seeds", "rank",
    }  # fmt: skip
    pair = result["pairs"]["unet_a_vs_unet_b"]
    assert (pair["a"], pair["b"]) == ("unet_a", "unet_b")
    dice, hd95 = pair["metrics"]["dice"], pair["metrics"]["hd95"]
    assert dice["mean_diff"] == pytest.approx(0.05)
    assert hd95["mean_diff"] == pytest.approx(-0.5)
    for entry in (dice, hd95):  # a is better on every image, by both metrics' directions
        assert (entry["wins"], entry["ties"], entry["losses"]) == (8, 0, 0)
        assert entry["effect"] == 1.0
        assert entry["p"] == pytest.approx(2 / 2**8)  # exact signed-rank, all positive
        assert entry["p_holm"] == entry["p"] and entry["significant"] is True
    assert result["per_variant"]["unet_a"]["hd95"]["rank"] == 1
    assert "friedman" not in result and "rank_frequencies" not in result
    json.dumps(result, allow_nan=False)


def test_three_variants_add_friedman_ranks_and_holm_over_pairs():
    result = compare(scores(THREE), ["dice"], seed=0, n_boot=999)
    assert list(result["pairs"]) == [
        "unet_a_vs_unet_b", "unet_a_vs_baseline", "unet_b_vs_baseline",
    ]  # fmt: skip
    p = [pair["metrics"]["dice"]["p"] for pair in result["pairs"].values()]
    holm = [pair["metrics"]["dice"]["p_holm"] for pair in result["pairs"].values()]
    assert holm == pytest.approx([min(1.0, 3 * p[0])] * 3)  # three equal p-values
    friedman = result["friedman"]["dice"]
    assert (friedman["df1"], friedman["df2"]) == (2, 14) and friedman["p"] == 0.0
    assert result["rank_frequencies"]["dice"]["unet_a"] == {"1": 1.0, "2": 0.0, "3": 0.0}
    assert result["rank_frequencies"]["dice"]["baseline"]["3"] == 1.0
    assert result["headline"]["friedman"] == {"dice_p": 0.0}
    json.dumps(result, allow_nan=False)


def test_headline_is_flat_for_dvc_metrics():
    headline = compare(scores(TWO), ["dice", "hd95"], seed=0, n_boot=999)["headline"]
    assert set(headline) == {"unet_a", "unet_b", "unet_a_vs_unet_b"}
    assert set(headline["unet_a"]) == {
        f"{m}_{k}" for m in ("dice", "hd95") for k in ("mean", "ci_low", "ci_high")
    }
    assert set(headline["unet_a_vs_unet_b"]) == {
        "dice_diff", "dice_p_holm", "hd95_diff", "hd95_p_holm",
    }  # fmt: skip
    assert all(not isinstance(v, dict) for d in headline.values() for v in d.values())


def test_results_repeat_and_do_not_depend_on_other_metrics():
    table = scores(THREE)
    alone = compare(table, ["dice"], seed=3, n_boot=999)
    assert compare(table, ["dice"], seed=3, n_boot=999) == alone
    both = compare(table, ["hd95", "dice"], seed=3, n_boot=999)
    assert both["per_variant"]["unet_b"]["dice"] == alone["per_variant"]["unet_b"]["dice"]
    assert both["rank_frequencies"]["dice"] == alone["rank_frequencies"]["dice"]
    other = compare(table, ["dice"], seed=4, n_boot=999)
    assert other["per_variant"]["unet_b"]["dice"] != alone["per_variant"]["unet_b"]["dice"]


def test_a_variant_without_every_image_is_named_with_the_images():
    table = scores(TWO)
    table = table[~((table.variant == "unet_b") & table.image.isin(["slice03", "slice05"]))]
    with pytest.raises(ValueError, match=r"'unet_b'.*2 of the 8.*slice03, slice05"):
        compare(table, ["dice"], seed=0, n_boot=999)


def test_a_seed_without_every_image_is_named():
    table = scores(TWO)
    table = table[~((table.variant == "unet_a") & (table.seed == 1) & (table.image == "slice07"))]
    with pytest.raises(ValueError, match=r"'unet_a' \(seed 1\).*slice07"):
        compare(table, ["dice"], seed=0, n_boot=999)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop(columns="fold"), r"lack the columns \['fold'\]"),
        (lambda t: t.drop(columns="hd95"), r"lack the columns \['hd95'\]"),
        (lambda t: t.iloc[:0], "no rows"),
        (lambda t: t.assign(dice=t.dice.where(t.index != 3, np.nan)), "dice: not a finite"),
        (lambda t: pd.concat([t, t.iloc[:1]]), "scored twice.*unet_a:slice00"),
    ],
    ids=["no-fold", "no-metric", "empty", "nan", "duplicate"],
)
def test_bad_tables_are_clear_errors(change, message):
    with pytest.raises(ValueError, match=message):
        compare(change(scores(TWO)), ["dice", "hd95"], seed=0, n_boot=999)


def test_a_metric_without_a_direction_is_an_error():
    with pytest.raises(ValueError, match="'dice_std' has no known direction"):
        compare(scores(TWO).assign(dice_std=0.0), ["dice_std"], seed=0, n_boot=999)


def test_identical_variants_give_no_difference_and_no_crash():
    table = scores(TWO)
    twin = table[table.variant == "unet_b"].assign(variant="unet_c")
    result = compare(pd.concat([table, twin]), ["dice"], seed=0, n_boot=999)
    entry = result["pairs"]["unet_b_vs_unet_c"]["metrics"]["dice"]
    assert entry["mean_diff"] == 0.0 and (entry["ci_low"], entry["ci_high"]) == (0.0, 0.0)
    assert entry["p"] == 1.0 and entry["effect"] == 0.0 and entry["ties"] == 8
    assert entry["significant"] is False
    json.dumps(result, allow_nan=False)
