"""The processed-dataset contract: what preprocess writes and every later stage reads.

``data/processed/<dataset>/`` holds ``split.csv`` (one row per image: ``id``, ``split`` and,
from preprocess, ``source``, ``index``, ``height``, ``width``), ``images/<id>.tif``,
``masks/<id>.png`` and, for chest X-rays, ``unit/<id>.tif`` (the image before normalisation)
and, when scored at another size, ``score_masks/<id>.png``; ``folds.csv`` (``id``, ``fold``)
assigns every labelled image to one cross-validation fold (``read_split(..., fold=f)``).
Kept apart from the preprocessing code so that a change of how a dataset is preprocessed
re-runs preprocess, not every stage that only reads its output.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

SPLIT_NAMES = ("train", "val", "test")
PREDICT_SPLIT = "predict"
SPLIT_COLUMNS = ["id", "split", "source", "index", "height", "width"]
# Masks at the scoring resolution, written by CXR preprocessing when it differs from the
# training resolution (``preprocess.score_size``); absent otherwise (scored on ``masks/``).
SCORE_MASKS = "score_masks"
# Chest X-rays on the [0, 1] scale at the processed size, before normalisation: what the
# acquisition shifts of augment and of evaluate's shift test act on.
UNIT_DIR = "unit"
FOLDS_FILE = "folds.csv"


class DataError(ValueError):
    """Input data that cannot be used; the message names the file (or key) and what was expected."""


def read_split(processed: Path, fold: int | None = None) -> pd.DataFrame:
    """Read ``<processed>/split.csv``; ids and split names stay strings (no NA parsing).

    With `fold`, the labelled images take their split in that cross-validation fold
    (:func:`fold_split` of ``folds.csv``); images to predict only keep theirs."""
    path = Path(processed) / "split.csv"
    table = _read_csv(path, "the split table of a preprocessed set", {"id": str, "split": str})
    missing = [c for c in ("id", "split") if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected at least id,split")
    if table["id"].duplicated().any():
        dups = sorted(table.loc[table["id"].duplicated(), "id"].unique())[:5]
        raise DataError(f"{path}: duplicate id(s) {dups}; expected unique ids")
    if fold is None:
        return table
    fold_of, k = read_folds(processed)
    labelled = table["split"].isin(SPLIT_NAMES)
    if set(table.loc[labelled, "id"]) != set(fold_of):
        odd = sorted(set(table.loc[labelled, "id"]) ^ set(fold_of))[:5]
        raise DataError(
            f"{Path(processed) / FOLDS_FILE}: ids {odd} differ from the labelled ids of "
            f"split.csv; expected one fold for each labelled image"
        )
    split = fold_split(fold_of, fold, k)
    table.loc[labelled, "split"] = table.loc[labelled, "id"].map(split)
    return table


def read_folds(processed: Path) -> tuple[dict[str, int], int]:
    """``folds.csv`` as ``{id: fold}`` and the number of folds k (folds 0..k-1, none empty)."""
    path = Path(processed) / FOLDS_FILE
    table = _read_csv(path, "the cross-validation folds of preprocess", {"id": str})
    if list(table.columns) != ["id", "fold"] or not pd.api.types.is_integer_dtype(table["fold"]):
        raise DataError(f"{path}: expected the columns id,fold with integer folds")
    k = int(table["fold"].max()) + 1
    if sorted(table["fold"].unique()) != list(range(k)):
        raise DataError(f"{path}: folds {sorted(table['fold'].unique())}; expected 0..{k - 1}")
    return dict(zip(table["id"], table["fold"].astype(int), strict=True)), k


def fold_split(fold_of: Mapping[str, int], fold: int, k: int) -> dict[str, str]:
    """The split of cross-validation fold `fold`: its images test, fold ``(fold + 1) % k``
    validates, the rest trains, so validation never touches the test fold."""
    if not 0 <= fold < k:
        raise DataError(f"fold {fold}: expected 0 <= fold < k = {k}")
    val = (fold + 1) % k
    return {
        sid: "test" if f == fold else "val" if f == val else "train" for sid, f in fold_of.items()
    }


def _read_csv(path: Path, what: str, dtype: dict[str, type]) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=dtype, keep_default_na=False)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: not found; expected {what}") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot parse as CSV ({exc})") from exc


def scoring_mask_path(processed: Path, sid: str) -> Path:
    """The mask image `sid` is scored against: ``score_masks/<id>.png`` when the processed set
    has a score_masks/ folder, else ``masks/<id>.png`` (the training masks)."""
    processed = Path(processed)
    folder = SCORE_MASKS if (processed / SCORE_MASKS).is_dir() else "masks"
    return processed / folder / f"{sid}.png"
