"""Cross-validation folds: every labelled image tested exactly once, validation never in the
test fold, EM folds contiguous, chest X-ray folds stratified within one image."""

from __future__ import annotations

from collections import Counter
from math import ceil, floor
from pathlib import Path

import pytest

from unetflow.data.cxr import scan_raw
from unetflow.data.folds import contiguous_folds, stratified_folds
from unetflow.io.processed import DataError, fold_split

SLICES = [f"slice_{i:02d}" for i in range(30)]


def assert_folds_partition(fold_of: dict[str, int], k: int) -> None:
    """Each fold's split: test = its own images, val = the next fold's, no overlap; over the k
    folds every image is tested exactly once."""
    tested = Counter()
    for fold in range(k):
        split = fold_split(fold_of, fold, k)
        by = {name: {sid for sid, s in split.items() if s == name} for name in ("train", "val")}
        test = {sid for sid, s in split.items() if s == "test"}
        assert test == {sid for sid, f in fold_of.items() if f == fold}
        assert by["val"] == {sid for sid, f in fold_of.items() if f == (fold + 1) % k}
        assert not (test & by["val"]) and not (test & by["train"]) and by["train"]
        tested.update(test)
    assert tested == Counter(dict.fromkeys(fold_of, 1))


def test_isbi_folds_are_six_blocks_of_five_contiguous_slices():
    fold_of = contiguous_folds(SLICES, 6)
    assert [fold_of[s] for s in SLICES] == [f for f in range(6) for _ in range(5)]
    assert_folds_partition(fold_of, 6)
    split = fold_split(fold_of, 5, 6)  # the last fold validates on the first block
    assert [s for s in SLICES if split[s] == "val"] == SLICES[:5]
    assert Counter(split.values()) == {"train": 20, "val": 5, "test": 5}


def test_uneven_folds_differ_by_at_most_one_and_stay_contiguous():
    fold_of = contiguous_folds(SLICES[:23], 5)
    sizes = Counter(fold_of.values())
    assert sorted(sizes.values()) == [4, 4, 5, 5, 5]
    order = [fold_of[s] for s in SLICES[:23]]
    assert order == sorted(order)


@pytest.mark.parametrize("k", [2, 31])
def test_bad_k_is_refused(k):
    with pytest.raises(ValueError, match=f"k = {k} folds of 30 images"):
        contiguous_folds(SLICES, k)


def test_fold_out_of_range_is_refused():
    with pytest.raises(DataError, match="fold 6: expected 0 <= fold < k = 6"):
        fold_split(contiguous_folds(SLICES, 6), 6, 6)


def assert_strata_shares(fold_of: dict[str, int], strata: dict[str, str], k: int) -> None:
    for stratum, n in Counter(strata.values()).items():
        per_fold = Counter(fold_of[s] for s in strata if strata[s] == stratum)
        for f in range(k):
            assert floor(n / k) <= per_fold[f] <= ceil(n / k), (stratum, f, per_fold)


def test_stratified_folds_keep_each_stratum_within_one_image_and_are_seeded():
    strata = {f"img{i:03d}": ("a", "b", "c")[i % 3] + ("x" if i % 7 else "y") for i in range(101)}
    ids, labels = list(strata), list(strata.values())
    fold_of = stratified_folds(ids, labels, 5, seed=3)
    assert_strata_shares(fold_of, strata, 5)
    assert_folds_partition(fold_of, 5)
    assert sorted(Counter(fold_of.values()).values()) == [20, 20, 20, 20, 21]
    assert stratified_folds(ids[::-1], labels[::-1], 5, seed=3) == fold_of
    assert stratified_folds(ids, labels, 5, seed=4) != fold_of


def test_shenzhen_folds_pool_to_all_566_masked_images(mirror: Path):
    strata = {c.id: c.stratum for c in scan_raw(mirror / "shenzhen").cases}
    fold_of = stratified_folds(list(strata), list(strata.values()), 5, seed=2015)
    assert len(fold_of) == 566
    assert sorted(Counter(fold_of.values()).values()) == [113, 113, 113, 113, 114]
    assert_strata_shares(fold_of, strata, 5)
    assert_folds_partition(fold_of, 5)
