"""The processed-dataset contract: what preprocess writes and every later stage reads.

``data/processed/<dataset>/`` holds ``split.csv`` (one row per image: ``id``, ``split`` and,
from preprocess, ``source``, ``index``, ``height``, ``width``), ``images/<id>.tif``,
``masks/<id>.png`` and, for chest X-rays, ``unit/<id>.tif`` (the image before normalisation)
and, when scored at another size, ``score_masks/<id>.png``.
Kept apart from the preprocessing code so that a change of how a dataset is preprocessed
re-runs preprocess, not every stage that only reads its output.
"""

from __future__ import annotations

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


class DataError(ValueError):
    """Input data that cannot be used; the message names the file (or key) and what was expected."""


def read_split(processed: Path) -> pd.DataFrame:
    """Read ``<processed>/split.csv``; ids and split names stay strings (no NA parsing)."""
    path = Path(processed) / "split.csv"
    try:
        table = pd.read_csv(path, dtype={"id": str, "split": str}, keep_default_na=False)
    except FileNotFoundError as exc:
        raise DataError(
            f"{path}: not found; expected the split table of a preprocessed set"
        ) from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot parse as CSV ({exc})") from exc
    missing = [c for c in ("id", "split") if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected at least id,split")
    if table["id"].duplicated().any():
        dups = sorted(table.loc[table["id"].duplicated(), "id"].unique())[:5]
        raise DataError(f"{path}: duplicate id(s) {dups}; expected unique ids")
    return table


def scoring_mask_path(processed: Path, sid: str) -> Path:
    """The mask image `sid` is scored against: ``score_masks/<id>.png`` when the processed set
    has a score_masks/ folder, else ``masks/<id>.png`` (the training masks)."""
    processed = Path(processed)
    folder = SCORE_MASKS if (processed / SCORE_MASKS).is_dir() else "masks"
    return processed / folder / f"{sid}.png"
