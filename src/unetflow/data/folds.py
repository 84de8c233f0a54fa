"""Cross-validation folds of the labelled images, so that every labelled image is tested once
and per-image scores pool over folds (n = 30 ISBI slices, n = 566 Shenzhen images).

Fold ``f`` tests its own images, validates on fold ``(f + 1) % k`` and trains on the rest
(:func:`unetflow.io.processed.fold_split`):
with k = 6 on ISBI's 30 slices that is 20 / 5 / 5 slices, with k = 5 on Shenzhen 60 / 20 / 20 %,
the proportions of the fixed splits. Validation never touches the test fold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path

import pandas as pd

from unetflow.data.splits import split_sizes, stratified_split
from unetflow.io.processed import FOLDS_FILE, DataError


def contiguous_folds(ids: Sequence[str], k: int) -> dict[str, int]:
    """Fold of each id in `ids` (in slice order): k blocks of contiguous slices, block sizes
    differing by at most one (the earlier blocks get the extra slices), as EM stacks need:
    neighbouring slices are nearly alike, so a shuffled fold would test on near-copies of
    training slices."""
    _check_k(len(ids), k)
    sizes = split_sizes(len(ids), {f: Fraction(1, k) for f in range(k)})
    fold_of: dict[str, int] = {}
    start = 0
    for f in range(k):
        fold_of.update(dict.fromkeys(ids[start : start + sizes[f]], f))
        start += sizes[f]
    return fold_of


def stratified_folds(
    ids: Sequence[str], strata: Sequence[str], k: int, seed: int
) -> dict[str, int]:
    """Fold of each id: seeded, and each stratum (sex x finding) within one image of its share
    in every fold (the guarantees of :func:`stratified_split` with k equal fractions)."""
    _check_k(len(ids), k)
    names = [str(f) for f in range(k)]
    split = stratified_split(ids, strata, dict.fromkeys(names, Fraction(1, k)), seed)
    return {sid: int(name) for sid, name in split.items()}


def folds_k(cfg: Mapping, n: int, where: Path) -> int | None:
    """The dataset definition's ``folds`` (k), checked against the `n` labelled images; None
    where the definition has none (a library caller's partial one: no folds.csv then)."""
    if cfg.get("folds") is None:
        return None
    k = int(cfg["folds"])
    if k > n:
        raise DataError(
            f"{where}: {n} labelled images cannot make folds: {k} folds; expected folds <= {n}"
        )
    return k


def write_folds(folder: Path, fold_of: Mapping[str, int]) -> None:
    """``<folder>/folds.csv``: ``id,fold`` sorted by id."""
    table = pd.DataFrame(sorted(fold_of.items()), columns=["id", "fold"])
    table.to_csv(Path(folder) / FOLDS_FILE, index=False)


def _check_k(n: int, k: int) -> None:
    if not 3 <= k <= n:
        raise ValueError(f"k = {k} folds of {n} images: expected 3 <= k <= {n}")
