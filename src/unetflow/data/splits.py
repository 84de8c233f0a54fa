"""Seeded, stratified train/val/test splits of a dataset whose images fall into strata (the
chest X-ray sets: sex x finding). The EM sets split by contiguous slice ranges instead.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from fractions import Fraction
from math import floor

import numpy as np

from unetflow.io.processed import SPLIT_NAMES, DataError


def split_fractions(split: Mapping[str, float]) -> dict[str, Fraction]:
    """The ``split`` fractions (checked by the config layer to sum to 1) as exact fractions
    that sum to 1 exactly."""
    exact = {name: Fraction(split[name]).limit_denominator(10**9) for name in SPLIT_NAMES}
    return {name: f / sum(exact.values()) for name, f in exact.items()}


def split_sizes(n: int, fractions: Mapping[str, Fraction | float]) -> dict[str, int]:
    """Largest-remainder rounding of ``n * fraction`` (ties go to the split listed first)."""
    quotas = {name: n * Fraction(f) for name, f in fractions.items()}
    sizes = {name: floor(q) for name, q in quotas.items()}
    by_remainder = sorted(quotas, key=lambda s: -(quotas[s] - sizes[s]))  # stable on ties
    for name in by_remainder[: n - sum(sizes.values())]:
        sizes[name] += 1
    return sizes


def stratified_split(
    ids: Sequence[str],
    strata: Sequence[str],
    fractions: Mapping[str, Fraction | float],
    seed: int,
) -> dict[str, str]:
    """Assign each id a split, seeded and stratified; returns ``{id: split}``.

    Guarantees: the split sizes are :func:`split_sizes` of the total; in every stratum each
    split gets ``floor`` or ``ceil`` of ``stratum size * fraction``; the result depends only
    on the (id, stratum) pairs and the seed, not on their order. The per-stratum counts
    start at the floors; the remaining units go to the cells with the largest fractional
    parts (ties in seeded random order) while rows and columns still need them, and an
    augmenting-path search completes the allocation whenever the greedy pass gets stuck
    (a bipartite b-matching between strata and splits). The members of each stratum are
    then shuffled with the seed and dealt to the splits in order.

    ``scipy.sparse.csgraph.maximum_flow`` could complete the table too, but it picks other
    paths: on random tables that need the completion it gives a different (valid) split in
    a third to a half of them, and a changed split changes every later result. The Shenzhen
    table (566 images, 2000 seeds) and synthetic CXR ones (1800 tries) never needed it.
    """
    if len(ids) != len(strata):
        raise ValueError(f"{len(ids)} ids but {len(strata)} strata; expected one per id")
    pairs = sorted(zip(ids, strata, strict=True))
    if len({sid for sid, _ in pairs}) != len(pairs):
        raise ValueError("duplicate ids; expected each id once")
    names = list(fractions)
    fracs = [Fraction(fractions[name]) for name in names]
    groups: dict[str, list[str]] = {}
    for sid, stratum in pairs:
        groups.setdefault(stratum, []).append(sid)
    keys = sorted(groups)
    sizes = [len(groups[k]) for k in keys]
    totals = split_sizes(len(pairs), dict(zip(names, fracs, strict=True)))
    rng = np.random.default_rng(seed)
    counts = _round_table(sizes, fracs, [totals[n] for n in names], rng)
    split_of: dict[str, str] = {}
    for k, key in enumerate(keys):
        members = [groups[key][i] for i in rng.permutation(sizes[k])]
        bounds = np.cumsum([0, *counts[k]])
        for j, name in enumerate(names):
            split_of.update(dict.fromkeys(members[bounds[j] : bounds[j + 1]], name))
    return split_of


def _round_table(
    sizes: list[int], fracs: list[Fraction], totals: list[int], rng: np.random.Generator
) -> list[list[int]]:
    """Round ``sizes[k] * fracs[j]`` to floor or ceil with exact row sums and column `totals`."""
    quotas = [[s * f for f in fracs] for s in sizes]
    counts = [[floor(q) for q in row] for row in quotas]
    row_need = [s - sum(row) for s, row in zip(sizes, counts, strict=True)]
    col_need = [t - sum(row[j] for row in counts) for j, t in enumerate(totals)]
    cells = [(k, j) for k, row in enumerate(quotas) for j, q in enumerate(row) if q != floor(q)]
    ties = rng.permutation(len(cells))
    order = sorted(range(len(cells)), key=lambda i: (-(_frac(quotas, cells[i])), ties[i]))
    up: set[tuple[int, int]] = set()
    for k, j in (cells[i] for i in order):
        if row_need[k] > 0 and col_need[j] > 0:
            up.add((k, j))
            row_need[k] -= 1
            col_need[j] -= 1
    eligible = set(cells)
    for k in range(len(sizes)):
        while row_need[k] > 0:
            if not _augment(k, eligible, up, col_need, len(totals)):
                raise DataError(  # not expected: a rounding exists for every table tried
                    f"cannot round the split of strata {sizes} to split sizes {totals} "
                    f"within 1 of each stratum's share; choose other fractions"
                )
            row_need[k] -= 1
    return [[c + ((k, j) in up) for j, c in enumerate(row)] for k, row in enumerate(counts)]


def _frac(quotas: list[list[Fraction]], cell: tuple[int, int]) -> Fraction:
    q = quotas[cell[0]][cell[1]]
    return q - floor(q)


def _augment(
    start: int,
    eligible: set[tuple[int, int]],
    up: set[tuple[int, int]],
    col_need: list[int],
    n_cols: int,
) -> bool:
    """Give row `start` one more rounded-up cell along an alternating path (breadth first).

    A path row -> column (a free eligible cell) -> row (that column's rounded-up cell) ...
    ends at a column that still needs a unit; each row on it moves its unit one column on.
    """
    col_parent: dict[int, int] = {}  # column -> the row that reached it
    row_parent: dict[int, int] = {start: -1}  # row -> the column it was reached through
    queue = deque([start])
    while queue:
        row = queue.popleft()
        for col in range(n_cols):
            if col in col_parent or (row, col) not in eligible or (row, col) in up:
                continue
            col_parent[col] = row
            if col_need[col] > 0:
                col_need[col] -= 1
                while col >= 0:
                    r = col_parent[col]
                    up.add((r, col))
                    col = row_parent[r]
                    up.discard((r, col))
                return True
            for other, c in list(up):
                if c == col and other not in row_parent:
                    row_parent[other] = col
                    queue.append(other)
    return False
