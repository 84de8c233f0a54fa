"""Variants compared on the same test images: the dict behind comparison.json.

Input: a long table, one row per variant × image × training seed, with the columns
``variant, image, seed, fold`` and one column per metric (per-image test scores, as
per_image.csv has them). Each image's value for a variant is its mean over the seeds; the
spread across seeds is reported apart from the spread across images (``seed_sd``: the SD
across seeds of each seed's mean over the images). Every variant must have every image,
once per seed: the comparison is paired.

Output (JSON-ready: floats to 6 significant digits, NaN and infinity as None)::

    {"settings": {"seed", "n_boot", "confidence", "alpha", "tolerance"},
     "variants": [<variant>, ...],                 # the order of first appearance
     "replicates": {<variant>: {"seeds": [...], "folds": [...]}},
     "metrics": {<metric>: "higher" | "lower"},    # which way is better
     "n_images": N,
     "per_variant": {<variant>: {<metric>: {"n", "mean", "sd", "ci_low", "ci_high",
                                            "ci_note", "seed_sd", "n_seeds", "rank"}}},
     "pairs": {"<a>_vs_<b>": {"a", "b", "metrics": {<metric>: {"n", "mean_diff", "ci_low",
               "ci_high", "ci_note", "p", "p_holm", "effect", "wins", "ties", "losses",
               "significant"}}}},
     "friedman": {<metric>: {"chi2", "F", "df1", "df2", "p"}},        # 3 or more variants
     "rank_frequencies": {<metric>: {<variant>: {"1": f, "2": f, ...}}},   # likewise
     "headline": see :func:`headline`}

``sd`` is the sample SD over images (ddof 1); ``rank`` is the competition rank of the mean
(1 = best); ``mean_diff`` is a - b; ``effect`` (matched-pairs rank-biserial), wins, ties and
losses are from a's side with the metric's direction; Holm adjusts each metric's p-values
over its pairs; ``significant`` is ``p_holm < alpha``.
"""

from __future__ import annotations

import itertools
import math
import zlib
from typing import Any

import numpy as np
import pandas as pd

from unetflow.comparison.stats import (
    CONFIDENCE,
    DIRECTION,
    holm,
    iman_davenport,
    mean_ci,
    paired,
    rank_frequencies,
    ranks,
    sign,
)

KEYS = ("variant", "image", "seed", "fold")
ALPHA = 0.05
DIGITS = 6  # significant digits of every float written


def compare(
    scores: pd.DataFrame,
    metrics: list[str],
    seed: int,
    n_boot: int,
    tolerance: float = 0.0,
) -> dict[str, Any]:
    """The comparison of every variant in `scores` for each of `metrics` (module docstring),
    bootstrapped `n_boot` times with generators derived from `seed` and the names involved,
    so that a result does not change when other metrics or variants are added."""
    for metric in metrics:
        sign(metric)
    check_scores(scores, metrics)
    variants = [str(v) for v in pd.unique(scores["variant"])]
    tables = {metric: image_table(scores, metric, variants) for metric in metrics}
    result: dict[str, Any] = {
        "settings": settings(seed, n_boot, tolerance),
        "variants": variants,
        "replicates": replicates(scores, variants),
        "metrics": {metric: DIRECTION[metric] for metric in metrics},
        "n_images": int(scores["image"].nunique()),
        "per_variant": {
            v: {m: variant_entry(scores, tables[m], m, v, seed, n_boot) for m in metrics}
            for v in variants
        },
        "pairs": pair_entries(tables, variants, seed, n_boot, tolerance),
    }
    if len(variants) >= 3:
        result["friedman"] = {m: iman_davenport(tables[m].to_numpy()) for m in metrics}
        result["rank_frequencies"] = {m: frequencies(tables[m], m, seed, n_boot) for m in metrics}
    result = clean(result)
    result["headline"] = headline(result)
    return result


def settings(seed: int, n_boot: int, tolerance: float) -> dict[str, Any]:
    """What the numbers depend on besides the scores, written beside them."""
    return {
        "seed": seed,
        "n_boot": n_boot,
        "confidence": CONFIDENCE,
        "alpha": ALPHA,
        "tolerance": tolerance,
    }


def check_scores(scores: pd.DataFrame, metrics: list[str]) -> None:
    """A ValueError that names what is wrong: a missing column, a non-finite score, an image
    twice for one variant and seed, or a variant (or one of its seeds) without every image."""
    missing = [c for c in (*KEYS, *metrics) if c not in scores.columns]
    if missing:
        raise ValueError(f"scores lack the columns {missing}; they have {list(scores.columns)}")
    if scores.empty:
        raise ValueError("scores: no rows to compare")
    for metric in metrics:
        bad = scores[~np.isfinite(scores[metric].to_numpy(dtype=np.float64))]
        if len(bad):
            where = _names(bad["variant"] + ":" + bad["image"].astype(str))
            raise ValueError(f"{metric}: not a finite score for {where}")
    twice = scores[scores.duplicated(["variant", "image", "seed"], keep=False)]
    if len(twice):
        where = _names(twice["variant"] + ":" + twice["image"].astype(str))
        raise ValueError(f"an image scored twice for one variant and seed: {where}")
    images = set(scores["image"].astype(str))
    for (variant, run), rows in scores.groupby(["variant", "seed"], sort=False):
        lacking = images - set(rows["image"].astype(str))
        if lacking:
            raise ValueError(
                f"variant {variant!r} (seed {run}) lacks {len(lacking)} of the {len(images)} "
                f"images the other variants have: {_names(lacking)}"
            )


def _names(values: Any, most: int = 10) -> str:
    """Up to `most` sorted distinct names, with how many more there are."""
    names = sorted({str(v) for v in values})
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def image_table(scores: pd.DataFrame, metric: str, variants: list[str]) -> pd.DataFrame:
    """Images (sorted) in rows, `variants` in columns: each image's mean over the seeds."""
    means = scores.groupby(["image", "variant"])[metric].mean().unstack("variant")
    return means[variants].sort_index()


def replicates(scores: pd.DataFrame, variants: list[str]) -> dict[str, dict[str, list[int]]]:
    """The training seeds and folds each variant's scores come from."""
    return {
        v: {
            "seeds": sorted(int(s) for s in scores.loc[scores["variant"] == v, "seed"].unique()),
            "folds": sorted(int(f) for f in scores.loc[scores["variant"] == v, "fold"].unique()),
        }
        for v in variants
    }


def generator(seed: int, *names: str) -> np.random.Generator:
    """A generator for one quantity, from `seed` and the names of what it resamples."""
    return np.random.default_rng([seed, zlib.crc32("|".join(names).encode())])


def variant_entry(
    scores: pd.DataFrame, table: pd.DataFrame, metric: str, variant: str, seed: int, n_boot: int
) -> dict[str, Any]:
    """One variant's mean, SD and CI over images, its rank, and the spread across seeds."""
    values = table[variant].to_numpy()
    ci = mean_ci(values, generator(seed, "mean", metric, variant), n_boot)
    rows = scores[scores["variant"] == variant]
    per_seed = rows.groupby("seed")[metric].mean()
    position = list(table.columns).index(variant)
    return {
        "n": len(values),
        "mean": float(values.mean()),
        "sd": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
        "ci_low": ci.low,
        "ci_high": ci.high,
        "ci_note": ci.note or None,
        "seed_sd": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else math.nan,
        "n_seeds": len(per_seed),
        "rank": int(ranks(table.mean().to_numpy(), metric)[position]),
    }


def pair_entries(
    tables: dict[str, pd.DataFrame],
    variants: list[str],
    seed: int,
    n_boot: int,
    tolerance: float,
) -> dict[str, dict[str, Any]]:
    """Every pair a, b (a listed before b) per metric; Holm over each metric's pairs."""
    pairs = list(itertools.combinations(variants, 2))
    out = {f"{a}_vs_{b}": {"a": a, "b": b, "metrics": {}} for a, b in pairs}
    for metric, table in tables.items():
        found = [
            paired(
                table[a], table[b], metric, generator(seed, "diff", metric, a, b), n_boot, tolerance
            )
            for a, b in pairs
        ]
        adjusted = holm([f.p for f in found])
        for (a, b), f, p_holm in zip(pairs, found, adjusted, strict=True):
            out[f"{a}_vs_{b}"]["metrics"][metric] = {
                "n": f.n,
                "mean_diff": f.mean_diff,
                "ci_low": f.ci.low,
                "ci_high": f.ci.high,
                "ci_note": f.ci.note or None,
                "p": f.p,
                "p_holm": p_holm,
                "effect": f.effect,
                "wins": f.wins,
                "ties": f.ties,
                "losses": f.losses,
                "significant": bool(p_holm < ALPHA),
            }
    return out


def frequencies(table: pd.DataFrame, metric: str, seed: int, n_boot: int) -> dict[str, Any]:
    """How often each variant holds each rank (1 = best) over bootstrap resamples of images."""
    found = rank_frequencies(table.to_numpy(), metric, generator(seed, "ranks", metric), n_boot)
    return {
        variant: {str(rank + 1): float(f) for rank, f in enumerate(row)}
        for variant, row in zip(table.columns, found, strict=True)
    }


def clean(value: Any) -> Any:
    """`value` with every float at :data:`DIGITS` significant digits, NaN and infinity None,
    and numpy scalars as Python ones, through dicts and lists."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(f"{value:.{DIGITS}g}") if math.isfinite(value) else None
    return value


def headline(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A flat view for ``dvc metrics diff``: per variant ``<metric>_mean``, ``_ci_low``,
    ``_ci_high``; per pair ``<metric>_diff``, ``_p_holm``; ``friedman``: ``<metric>_p``."""
    out: dict[str, dict[str, Any]] = {}
    for variant, entries in result["per_variant"].items():
        out[variant] = {
            f"{metric}_{key}": entry[key]
            for metric, entry in entries.items()
            for key in ("mean", "ci_low", "ci_high")
        }
    for name, pair in result["pairs"].items():
        out[name] = {}
        for metric, entry in pair["metrics"].items():
            out[name] |= {f"{metric}_diff": entry["mean_diff"], f"{metric}_p_holm": entry["p_holm"]}
    if "friedman" in result:
        out["friedman"] = {f"{m}_p": entry["p"] for m, entry in result["friedman"].items()}
    return out
