"""The statistics of the compare stage, as thin wrappers over scipy and statsmodels.

Every function takes plain arrays (one value per image, variants in columns) and returns
plain floats, so that the stage and its tests see the same numbers. None of them raises on
small or degenerate samples: a value that cannot be computed is NaN with a note saying why.

Conventions (the issue left them open):

- a metric's direction is :data:`DIRECTION` (``"higher"`` or ``"lower"`` is better);
- paired differences are ``a - b``; win/tie/loss and the rank-biserial correlation are from
  ``a``'s side with the direction applied (a win is an image where ``a`` is better; effect
  > 0 means ``a`` tends to be better);
- the Wilcoxon test drops zero differences (``zero_method="wilcox"``), and so does the
  rank-biserial correlation; both rank ``|d|`` with ties averaged;
- ranks of variants (1 = best) are competition ranks: tied means share the best rank.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests

#: Which way is better, per metric (names of per_image.csv's columns).
DIRECTION = {
    "dice": "higher",
    "iou": "higher",
    "precision": "higher",
    "recall": "higher",
    "vrand": "higher",
    "vinfo": "higher",
    "hd95": "lower",
    "assd": "lower",
    "pixel_error": "lower",
    "rand_error": "lower",
}
CONFIDENCE = 0.95
#: The smallest sample a BCa interval is computed for (its jackknife needs a few values).
MIN_BOOTSTRAP_N = 3


@dataclass(frozen=True)
class Interval:
    """A confidence interval; NaN bounds with a `note` saying why where there is none."""

    low: float
    high: float
    note: str = ""


@dataclass(frozen=True)
class Paired:
    """Variant a against variant b on the same images for one metric (see the module notes)."""

    n: int
    mean_diff: float
    ci: Interval
    p: float
    effect: float
    wins: int
    ties: int
    losses: int


def sign(metric: str) -> int:
    """+1 where higher values of `metric` are better, -1 where lower are; an error naming the
    known metrics otherwise."""
    if metric not in DIRECTION:
        raise ValueError(f"metric {metric!r} has no known direction; known: {sorted(DIRECTION)}")
    return 1 if DIRECTION[metric] == "higher" else -1


def mean_ci(
    values: np.ndarray, seed: int | np.random.Generator, n_resamples: int = 9999
) -> Interval:
    """The BCa bootstrap `CONFIDENCE` interval of the mean of `values` (scipy's
    ``stats.bootstrap``, seeded by `seed`). All values equal: (mean, mean), as every resample
    has that mean; fewer than :data:`MIN_BOOTSTRAP_N` values, or a BCa that cannot be
    computed: NaN bounds with a note."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return Interval(math.nan, math.nan, "no values")
    if np.all(values == values[0]):
        return Interval(float(values[0]), float(values[0]), "all values equal")
    if len(values) < MIN_BOOTSTRAP_N:
        return Interval(math.nan, math.nan, f"fewer than {MIN_BOOTSTRAP_N} values")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a degenerate BCa warns and gives NaN, noted below
        result = stats.bootstrap(
            (values,),
            np.mean,
            n_resamples=n_resamples,
            confidence_level=CONFIDENCE,
            method="BCa",
            rng=np.random.default_rng(seed),
        )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        return Interval(math.nan, math.nan, "BCa interval not computable")
    return Interval(low, high)


def wilcoxon_p(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of paired differences (scipy, zero differences
    dropped, exact distribution where scipy chooses it); 1.0 when every difference is zero,
    NaN without differences."""
    diff = np.asarray(diff, dtype=np.float64)
    if len(diff) == 0:
        return math.nan
    if np.all(diff == 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few non-zero differences: scipy warns, p stays valid
        return float(stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)


def rank_biserial(diff: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation (Kerby's simple difference formula): (sum of
    the ranks of positive differences - sum of those of negative ones) / sum of all ranks,
    ranking |d| with ties averaged after dropping zero differences; in [-1, 1], 0.0 when
    every difference is zero, NaN without differences."""
    diff = np.asarray(diff, dtype=np.float64)
    if len(diff) == 0:
        return math.nan
    diff = diff[diff != 0]
    if len(diff) == 0:
        return 0.0
    ranks = stats.rankdata(np.abs(diff))
    return float((ranks[diff > 0].sum() - ranks[diff < 0].sum()) / ranks.sum())


def win_tie_loss(diff: np.ndarray, tolerance: float = 0.0) -> tuple[int, int, int]:
    """Counts of differences above `tolerance`, within it (|d| <= tolerance; exact equality
    by default) and below -`tolerance`: wins, ties and losses of the side `diff` favours."""
    diff = np.asarray(diff, dtype=np.float64)
    wins = int(np.sum(diff > tolerance))
    losses = int(np.sum(diff < -tolerance))
    return wins, len(diff) - wins - losses, losses


def paired(
    a: np.ndarray,
    b: np.ndarray,
    metric: str,
    seed: int | np.random.Generator,
    n_resamples: int = 9999,
    tolerance: float = 0.0,
) -> Paired:
    """a against b, paired by position (the same images): the mean of a - b with its BCa
    interval (a bootstrap of the differences), the Wilcoxon p, and the rank-biserial effect
    and win/tie/loss counts from a's side with `metric`'s direction applied."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    diff = a - b
    better = sign(metric) * diff
    wins, ties, losses = win_tie_loss(better, tolerance)
    return Paired(
        n=len(diff),
        mean_diff=float(diff.mean()) if len(diff) else math.nan,
        ci=mean_ci(diff, seed, n_resamples),
        p=wilcoxon_p(diff),
        effect=rank_biserial(better),
        wins=wins,
        ties=ties,
        losses=losses,
    )


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values (statsmodels' ``multipletests``), in the input order; NaN
    entries stay NaN and do not count towards the family."""
    p = np.asarray(pvalues, dtype=np.float64)
    adjusted = np.full(len(p), math.nan)
    finite = np.isfinite(p)
    if finite.any():
        adjusted[finite] = multipletests(p[finite], method="holm")[1]
    return [float(v) for v in adjusted]


def iman_davenport(table: np.ndarray) -> dict[str, float]:
    """Friedman's test over `table` (images in rows, k >= 3 variants in columns; scipy's
    ``friedmanchisquare``) with the Iman-Davenport F: F = (N-1) chi2 / (N (k-1) - chi2) on
    (k-1, (k-1)(N-1)) degrees of freedom. Every image ranking the variants alike gives F
    infinite (returned as NaN) and p 0; no differences at all give F 0 and p 1."""
    table = np.asarray(table, dtype=np.float64)
    n, k = table.shape
    out = {"chi2": math.nan, "F": math.nan, "df1": float(k - 1), "df2": float((k - 1) * (n - 1))}
    if k < 3 or n < 2:
        return out | {"p": math.nan}
    if np.all(table == table[:, :1]):
        return out | {"chi2": 0.0, "F": 0.0, "p": 1.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chi2 = float(stats.friedmanchisquare(*table.T).statistic)
    denominator = n * (k - 1) - chi2
    if denominator <= 1e-12 * n * k:
        return out | {"chi2": chi2, "p": 0.0}
    f = (n - 1) * chi2 / denominator
    return out | {"chi2": chi2, "F": f, "p": float(stats.f.sf(f, k - 1, (k - 1) * (n - 1)))}


def ranks(means: np.ndarray, metric: str) -> np.ndarray:
    """Competition ranks (1 = best, ties share the best rank) of each column's mean, with
    `metric`'s direction; `means` may have leading dimensions (one row per resample)."""
    scores = -sign(metric) * np.asarray(means, dtype=np.float64)
    return stats.rankdata(scores, method="min", axis=-1).astype(int)


def rank_frequencies(
    table: np.ndarray, metric: str, seed: int | np.random.Generator, n_resamples: int = 9999
) -> np.ndarray:
    """How often each variant (column of `table`, images in rows) holds each rank when the
    images are resampled with replacement `n_resamples` times (the same images for every
    variant): a (k, k) array, row = variant, column = rank 1..k, each row summing to 1."""
    table = np.asarray(table, dtype=np.float64)
    n, k = table.shape
    if n == 0:
        return np.full((k, k), math.nan)
    rng = np.random.default_rng(seed)
    counts = np.zeros((k, k))
    for start in range(0, n_resamples, 1000):  # batches bound the memory at 1000 x n x k
        rows = rng.integers(0, n, size=(min(1000, n_resamples - start), n))
        held = ranks(table[rows].mean(axis=1), metric)
        for rank in range(1, k + 1):
            counts[:, rank - 1] += (held == rank).sum(axis=0)
    return counts / n_resamples
