"""comparison.md and the comparison figure from a small comparison."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from unetflow.comparison.compare import compare
from unetflow.comparison.report import comparison_markdown
from unetflow.plots import comparison_figure


def result(variants: dict[str, float], n: int = 12) -> dict:
    """A comparison of variants whose Dice differ by the given shifts plus noise."""
    rng = np.random.default_rng(5)
    rows = [
        {
            "variant": name,
            "image": f"img{i:02d}",
            "seed": seed,
            "fold": 0,
            "dice": 0.85 + shift + rng.normal(0, 0.02),
            "hd95": 8.0 - 10 * shift + rng.normal(0, 0.5),
        }
        for name, shift in variants.items()
        for seed in (0, 1)
        for i in range(n)
    ]
    return compare(pd.DataFrame(rows), ["dice", "hd95"], seed=0, n_boot=999)


THREE = {"unet_modern": 0.003, "unet_paper": 0.0, "baseline_mean": -0.3}


def test_markdown_has_every_table_and_a_verdict_per_metric():
    found = result(THREE)
    text = comparison_markdown(found)
    assert text.startswith("# Comparison of the variants")
    for metric in ("dice", "hd95"):
        assert f"## {metric} (" in text
    modern = found["per_variant"]["unet_modern"]["dice"]
    row = f"| `unet_modern` | 12 | {modern['mean']:.4f} ± {modern['sd']:.4f} | "
    row += f"[{modern['ci_low']:.4f}, {modern['ci_high']:.4f}] |"
    assert row in text
    assert "| `unet_modern` vs `baseline_mean` | " in text
    assert "| 12/0/0 | yes |" in text  # unet_modern beats the baseline on every image
    assert text.count("Friedman (Iman–Davenport): F(2, 22) = ") == 2
    assert text.count("| variant | rank 1 | rank 2 | rank 3 |") == 2
    assert "**dice**: holds up: `unet_modern` better than `baseline_mean`" in text
    assert "not shown (Holm p ≥ 0.05): `unet_modern` vs `unet_paper`" in text
    assert "**hd95**: holds up: `unet_modern` better than `baseline_mean`" in text


def test_markdown_of_two_variants_has_no_omnibus():
    text = comparison_markdown(result({"unet_modern": 0.0, "unet_andersen": 0.0}))
    assert "Friedman" not in text and "Ranking stability" not in text
    assert "| `unet_modern` vs `unet_andersen` | " in text


def test_markdown_of_one_variant_says_there_is_nothing_to_compare():
    text = comparison_markdown(result({"unet_modern": 0.0}))
    assert "**dice**: a single variant; nothing to compare." in text


@pytest.mark.parametrize("variants", [THREE, {"unet_modern": 0.0}], ids=["three", "one"])
def test_figure_is_written(tmp_path, variants):
    path = tmp_path / "comparison.png"
    comparison_figure(result(variants)).savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
